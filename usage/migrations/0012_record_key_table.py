import django.db.models.deletion
from django.db import migrations, models

KEYS_OF_RECORDS = (
    "INSERT INTO usage_recordkey (collector_id, record_key, file_id, line_no) "
    "SELECT collector_id, record_key, file_id, line_no FROM usage_usagerecord "
    "WHERE NOT is_duplicate AND record_key IS NOT NULL"
)


def fill(apps, schema_editor):
    """Every key kept so far (one live record per collector and key, as the index it replaces
    guaranteed); on PostgreSQL the key compares in byte order."""
    with schema_editor.connection.cursor() as cursor:
        if schema_editor.connection.vendor == "postgresql":
            cursor.execute('ALTER TABLE usage_recordkey ALTER COLUMN record_key TYPE varchar(255) COLLATE "C"')
        cursor.execute(KEYS_OF_RECORDS)


class Migration(migrations.Migration):
    dependencies = [
        ("usage", "0011_plausibility_and_line_accounting"),
    ]

    operations = [
        migrations.CreateModel(
            name="RecordKey",
            fields=[
                (
                    "pk",
                    models.CompositePrimaryKey(
                        "collector_id", "record_key", blank=True, editable=False, primary_key=True, serialize=False
                    ),
                ),
                (
                    "collector",
                    models.ForeignKey(
                        db_constraint=False,
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="usage.usagecollector",
                    ),
                ),
                ("record_key", models.CharField(max_length=255)),
                (
                    "file",
                    models.ForeignKey(
                        db_constraint=False,
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="usage.mediationfile",
                    ),
                ),
                ("line_no", models.PositiveIntegerField()),
            ],
        ),
        migrations.RunPython(fill, migrations.RunPython.noop),
        migrations.RemoveConstraint(
            model_name="usagerecord",
            name="usage_record_key_once",
        ),
    ]
