from django.db import migrations


def room_for_updates(apps, schema_editor):
    """Period counters are updated in place by every batch that draws: with room on each page,
    PostgreSQL updates them without touching the index (HOT updates)."""
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("ALTER TABLE usage_periodcounter SET (fillfactor = 50)")


class Migration(migrations.Migration):
    dependencies = [
        ("usage", "0012_record_key_table"),
    ]

    operations = [migrations.RunPython(room_for_updates, migrations.RunPython.noop)]
