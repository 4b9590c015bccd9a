"""A collector's "kb" and "mb" volumes meant 1,024 and 1,024^2 bytes: renamed to KiB and MiB, which
they always were; kB and MB are now decimal."""

from django.db import migrations, models


BINARY = {"kb": "kib", "mb": "mib"}


def rename(apps, names: dict) -> None:
    collector = apps.get_model("usage", "UsageCollector")
    for old, new in names.items():
        collector.objects.filter(volume_unit=old).update(volume_unit=new)


def to_binary(apps, schema_editor):
    rename(apps, BINARY)


def to_old_names(apps, schema_editor):
    rename(apps, {new: old for old, new in BINARY.items()})


class Migration(migrations.Migration):
    dependencies = [
        ("usage", "0015_quarantine_table"),
    ]

    operations = [
        migrations.AlterField(
            model_name="usagecollector",
            name="volume_unit",
            field=models.CharField(
                choices=[
                    ("byte", "bytes"),
                    ("kb", "kB (1,000 bytes)"),
                    ("mb", "MB (10^6 bytes)"),
                    ("kib", "KiB (1,024 bytes)"),
                    ("mib", "MiB (2^20 bytes)"),
                ],
                default="byte",
                max_length=8,
            ),
        ),
        migrations.RunPython(to_binary, to_old_names),
    ]
