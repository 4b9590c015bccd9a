from django.db import migrations


def add_schedule(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.update_or_create(
        name="Mediation: resume waiting collectors",
        defaults={"func": "usage.tasks.sweep_collectors", "schedule_type": "I", "minutes": 1, "repeats": -1},
    )


def remove_schedule(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name="Mediation: resume waiting collectors").delete()


class Migration(migrations.Migration):
    """A collector whose worker died (or whose trigger was lost) is picked up again within a minute."""

    dependencies = [("usage", "0001_initial"), ("django_q", "0018_task_success_index")]
    operations = [migrations.RunPython(add_schedule, remove_schedule)]
