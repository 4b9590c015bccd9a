import datetime as dt

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from billing import services
from billing.models import Service


class Command(BaseCommand):
    help = "Create open billing-cycle periods covering a date range (idempotent)."

    def add_arguments(self, parser):
        parser.add_argument("--from", dest="start", type=dt.date.fromisoformat, required=True, help="YYYY-MM-DD")
        parser.add_argument("--to", dest="end", type=dt.date.fromisoformat, required=True, help="YYYY-MM-DD")
        parser.add_argument("--service", action="append", default=[], help="Service ID (repeatable); default all.")

    def handle(self, *args, start, end, service, **options):
        qs = Service.objects.filter(service_id__in=service) if service else None
        if service and qs.count() != len(set(service)):
            found = set(qs.values_list("service_id", flat=True))
            raise CommandError(f"Unknown service ID(s): {', '.join(sorted(set(service) - found))}")
        try:
            created = services.do_generate_subscription_periods(
                "command:generate_periods", start=start, end=end, services=qs
            )
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from exc
        self.stdout.write(f"Generated {created} subscription periods for {start} to {end}.")
