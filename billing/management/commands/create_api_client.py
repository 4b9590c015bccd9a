"""Create an integration client and print its first token once: `manage.py create_api_client NAME`."""

from django.core.management.base import BaseCommand, CommandError

from billing.api.auth import do_create_integration_client, do_issue_token
from billing.models import IntegrationClient


class Command(BaseCommand):
    help = "Create an API integration client (role: API client) and print a token for it; --new-token for another."

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--new-token", action="store_true", help="Issue another token for an existing client.")

    def handle(self, *args, name, new_token, **options):
        existing = IntegrationClient.objects.filter(name=name).first()
        if new_token:
            if existing is None:
                raise CommandError(f"No integration client {name!r}.")
            key = do_issue_token("command:create_api_client", existing)
        else:
            if existing is not None:
                raise CommandError(f"Client {name!r} exists; use --new-token for another token.")
            _, key = do_create_integration_client("command:create_api_client", name)
        self.stdout.write(key)
