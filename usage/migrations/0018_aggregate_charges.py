import django.db.models.deletion
from django.db import migrations, models

from usage.record_view import create_view, drop_view

HELP = (
    "Covered by this aggregate charge (the first, if several): not priced by itself, but by the period's "
    "aggregate at Main Billing."
)


def field():
    return models.ForeignKey(
        blank=True,
        db_constraint=False,
        db_index=False,
        help_text=HELP,
        null=True,
        on_delete=django.db.models.deletion.PROTECT,
        related_name="+",
        to="billing.aggregatecharge",
    )


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0021_aggregate_charges"),
        ("usage", "0017_collector_accepts_credits"),
    ]

    operations = [
        migrations.RunPython(drop_view, create_view),
        migrations.AddField(model_name="quarantinedrecord", name="aggregate_charge", field=field()),
        migrations.AddField(model_name="usagerecord", name="aggregate_charge", field=field()),
        migrations.RunPython(create_view, drop_view),
    ]
