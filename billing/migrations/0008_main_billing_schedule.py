from django.db import migrations

NAME = "Main Billing: cycles that ended"


def add_schedule(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.update_or_create(
        name=NAME,
        defaults={"func": "billing.tasks.bill_ended_cycles", "schedule_type": "D", "repeats": -1},
    )


def remove_schedule(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name=NAME).delete()


class Migration(migrations.Migration):
    """Daily, Main Billing is queued for every cycle whose periods ended and were not billed since."""

    dependencies = [("billing", "0007_invoices_and_charges"), ("django_q", "0018_task_success_index")]
    operations = [migrations.RunPython(add_schedule, remove_schedule)]
