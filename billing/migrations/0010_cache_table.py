"""The shared cache's table (settings.CACHES: the API's rate limit and django-q2's monitoring read
it): made by `migrate`, so a deploy that only migrates has it."""

from django.core.management import call_command
from django.db import migrations


def create_cache_table(apps, schema_editor):
    call_command("createcachetable", database=schema_editor.connection.alias, verbosity=0)


class Migration(migrations.Migration):
    dependencies = [("billing", "0009_api_clients_tokens_idempotency")]

    operations = [migrations.RunPython(create_cache_table, migrations.RunPython.noop)]
