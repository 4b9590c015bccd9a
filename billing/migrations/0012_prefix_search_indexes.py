"""Indexes for the operators' case-insensitive prefix search (billing.selectors.services_matching).

PostgreSQL compares `UPPER(column::text) LIKE UPPER('term%')`: an expression index with
text_pattern_ops serves it as a range scan. SQLite's LIKE is already case-insensitive for ASCII and
its tables are small; it gets no extra index.
"""

from django.db import migrations

INDEXES = [
    ("billing_service_service_id_prefix", "billing_service", "service_id"),
    ("billing_service_sub_id_prefix", "billing_service", "sub_id"),
    ("billing_identifier_value_prefix", "billing_serviceidentifier", "value"),
    ("billing_account_number_prefix", "billing_account", "number"),
    ("billing_account_name_prefix", "billing_account", "name"),
]


def create(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name, table, column in INDEXES:
        schema_editor.execute(
            f'CREATE INDEX IF NOT EXISTS {name} ON {table} (UPPER("{column}"::text) text_pattern_ops)'
        )


def drop(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name, _, _ in INDEXES:
        schema_editor.execute(f"DROP INDEX IF EXISTS {name}")


class Migration(migrations.Migration):
    dependencies = [("billing", "0011_invoice_usage_fingerprint")]

    operations = [migrations.RunPython(create, drop)]
