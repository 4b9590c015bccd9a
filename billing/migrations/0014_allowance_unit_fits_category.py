"""Allowances whose unit no usage of their category can be priced in are refused from now on.

Such an allowance was drawn by usage of another measure (a telephony minute by SMS); the engine no
longer lets it be drawn at all. Rather than change a plan silently, the migration stops and names
each one, so the pricing team sets the unit it meant (or money) and runs the migration again."""

from django.db import migrations, models

FITS = {
    "telephony": {"second", "minute", "hour", "message", "each"},
    "data": {"kb", "mb", "gb", "second", "minute", "hour"},
    "misc": {"message", "each"},
}


def refuse_misfits(apps, schema_editor):
    IncludedValue = apps.get_model("billing", "IncludedValue")
    misfits = [
        iv
        for iv in IncludedValue.objects.exclude(unit="money").order_by("pk")
        if iv.unit not in FITS.get(iv.category, set())
    ]
    if misfits:
        names = "; ".join(
            f"#{iv.pk} {iv.quantity} {iv.unit} of {iv.category} "
            f"({'plan ' + str(iv.plan_id) if iv.plan_id else 'product ' + str(iv.product_id)})"
            for iv in misfits
        )
        raise RuntimeError(
            f"{len(misfits)} allowance{'s' if len(misfits) != 1 else ''} with a unit their category's usage is never "
            f"priced in: {names}. "
            "Set each one's unit (time or messages for telephony, volume or time for data, items for service & "
            "equipment, or money) and migrate again."
        )


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0013_main_billing_schedule_at_night"),
    ]

    operations = [
        migrations.RunPython(refuse_misfits, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="includedvalue",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    ("unit", "money"),
                    models.Q(("category", "telephony"), ("unit__in", ["second", "minute", "hour", "message", "each"])),
                    models.Q(("category", "data"), ("unit__in", ["kb", "mb", "gb", "second", "minute", "hour"])),
                    models.Q(("category", "misc"), ("unit__in", ["message", "each"])),
                    _connector="OR",
                ),
                name="billing_included_unit_fits_category",
                violation_error_message=(
                    "That unit cannot measure usage of this category: telephony in time or messages, data in "
                    "volume or time, service & equipment in items (or an allowance in money, for any)."
                ),
            ),
        ),
    ]
