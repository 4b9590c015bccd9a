"""Main Billing Processing for a cycle: `manage.py run_main_billing 2026-10-01` (thin wrapper)."""

import datetime as dt

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from billing import invoicing
from billing.models import Invoice


class Command(BaseCommand):
    help = "Run Main Billing Processing for the cycle of periods starting on a date, here (or --queue it)."

    def add_arguments(self, parser):
        parser.add_argument("cycle_start", type=dt.date.fromisoformat, help="The periods' first day, YYYY-MM-DD.")
        parser.add_argument("--queue", action="store_true", help="Queue it for a worker instead of running here.")
        parser.add_argument(
            "--close-early", metavar="REASON", default="", help="Bill a cycle that has not ended (audited)."
        )

    def handle(self, *args, cycle_start, queue, close_early, **options):
        try:
            run = invoicing.request_main_billing(
                "command:run_main_billing", cycle_start, close_early_reason=close_early
            )
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from exc
        if queue:
            self.stdout.write(f"run {run.pk} {run.status}")
            return
        worked = invoicing.execute_main_billing(run.pk)
        if worked is None:
            raise CommandError(f"Run {run.pk} is held by another worker ({run.status}).")
        for activity in worked.activities.all():
            self.stdout.write(f"  {activity.name}: {activity.status}, {activity.records} records. {activity.detail}")
        for invoice in Invoice.objects.filter(cycle_start=cycle_start).select_related("account"):
            self.stdout.write(
                f"  {invoice.account.number} {invoice.get_status_display()}: subtotal {invoice.subtotal:f}, "
                f"tax {invoice.tax:f}, total {invoice.total:f}"
            )
        self.stdout.write(f"run {worked.pk} {worked.status}{': ' + worked.error if worked.error else ''}")
        if worked.status != "completed":
            raise CommandError(f"Main Billing run {worked.pk} failed: {worked.error}")
