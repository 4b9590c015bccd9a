"""kB, MB and GB become decimal (10^3, 10^6, 10^9 bytes); KiB, MiB and GiB are the binary units.

Until now "kb", "mb" and "gb" meant 1,024, 1,024^2 and 1,024^3 bytes: every rate and allowance in
them is renamed to the binary unit it always was, so no price or allowance changes."""

from django.db import migrations, models

BINARY = {"kb": "kib", "mb": "mib", "gb": "gib"}


def rename(apps, names: dict) -> None:
    for model_name in ("Rate", "IncludedValue"):
        model = apps.get_model("billing", model_name)
        for old, new in names.items():
            model.objects.filter(unit=old).update(unit=new)


def to_binary(apps, schema_editor):
    rename(apps, BINARY)


def to_old_names(apps, schema_editor):
    rename(apps, {new: old for old, new in BINARY.items()})


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0016_subscription_quantity"),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name="includedvalue",
            name="billing_included_unit_fits_category",
        ),
        migrations.AlterField(
            model_name="includedvalue",
            name="unit",
            field=models.CharField(
                choices=[
                    ("second", "second"),
                    ("minute", "minute"),
                    ("hour", "hour"),
                    ("kb", "kB"),
                    ("mb", "MB"),
                    ("gb", "GB"),
                    ("kib", "KiB"),
                    ("mib", "MiB"),
                    ("gib", "GiB"),
                    ("message", "message"),
                    ("each", "each"),
                    ("money", "money (card currency)"),
                ],
                max_length=8,
            ),
        ),
        migrations.AlterField(
            model_name="rate",
            name="unit",
            field=models.CharField(
                choices=[
                    ("second", "second"),
                    ("minute", "minute"),
                    ("hour", "hour"),
                    ("kb", "kB"),
                    ("mb", "MB"),
                    ("gb", "GB"),
                    ("kib", "KiB"),
                    ("mib", "MiB"),
                    ("gib", "GiB"),
                    ("message", "message"),
                    ("each", "each"),
                ],
                max_length=8,
            ),
        ),
        migrations.RunPython(to_binary, to_old_names),
        migrations.AddConstraint(
            model_name="includedvalue",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    ("unit", "money"),
                    models.Q(("category", "telephony"), ("unit__in", ["second", "minute", "hour", "message", "each"])),
                    models.Q(
                        ("category", "data"),
                        ("unit__in", ["kb", "mb", "gb", "kib", "mib", "gib", "second", "minute", "hour"]),
                    ),
                    models.Q(("category", "misc"), ("unit__in", ["message", "each"])),
                    _connector="OR",
                ),
                name="billing_included_unit_fits_category",
                violation_error_message="That unit cannot measure usage of this category: telephony in time or messages, data in volume or time, service & equipment in items (or an allowance in money, for any).",
            ),
        ),
    ]
