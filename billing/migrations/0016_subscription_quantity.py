"""A subscription's quantity (seats, lines, units). On SQLite adding the column rebuilds the table,
which drops the one-plan-at-a-time triggers: they are put back."""

import django.core.validators
from django.db import migrations, models

from billing import overlaps


def plan_rule_back(apps, schema_editor):
    overlaps.reinstall_sqlite_triggers(schema_editor, [overlaps.PLAN_OVERLAP.name])


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0015_allowance_priority"),
    ]

    operations = [
        migrations.AddField(
            model_name="subscription",
            name="quantity",
            field=models.PositiveIntegerField(
                default=1,
                help_text="Seats, lines or units subscribed: multiplies the fee or price and every allowance it brings.",
                validators=[
                    django.core.validators.MinValueValidator(1),
                    django.core.validators.MaxValueValidator(1_000_000),
                ],
            ),
        ),
        migrations.AddConstraint(
            model_name="subscription",
            constraint=models.CheckConstraint(
                condition=models.Q(("quantity__gte", 1)), name="billing_subscription_quantity_positive"
            ),
        ),
        migrations.RunPython(plan_rule_back, migrations.RunPython.noop),
    ]
