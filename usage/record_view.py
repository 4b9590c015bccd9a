"""The `usage_filerecord` view over both record tables (usage.models.FileRecord), for migrations:
it names its columns, so a migration that adds a record column, or that makes SQLite rebuild a
record table, drops it first and makes it again after."""


def _columns(apps):
    return ", ".join(f.column for f in apps.get_model("usage", "QuarantinedRecord")._meta.concrete_fields)


def drop_view(apps, schema_editor):
    schema_editor.execute("DROP VIEW IF EXISTS usage_filerecord")


def create_view(apps, schema_editor):
    columns = _columns(apps)
    schema_editor.execute(
        f"CREATE VIEW usage_filerecord AS SELECT {columns} FROM usage_usagerecord "
        f"UNION ALL SELECT {columns} FROM usage_quarantinedrecord"
    )
