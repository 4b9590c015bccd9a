from django.db import migrations


def bytewise(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute('ALTER TABLE usage_usagerecord ALTER COLUMN record_key TYPE varchar(255) COLLATE "C"')


def linguistic(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            'ALTER TABLE usage_usagerecord ALTER COLUMN record_key TYPE varchar(255) COLLATE "default"'
        )


class Migration(migrations.Migration):
    """Record keys compare bytewise on PostgreSQL (SQLite's default collation already does)."""

    dependencies = [("usage", "0003_records_without_fk_triggers")]
    operations = [migrations.RunPython(bytewise, linguistic)]
