"""Re-rate an account's billing cycle in time order (thin wrapper over usage.rebalance)."""

import datetime as dt

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from billing.models import Account, Service
from console.tracking import RunBusy
from usage.rebalance import do_rebalance, do_run_rebalance


class Command(BaseCommand):
    help = "Rebalance (reset lines): re-rate every not-invoiced record of an account's cycle in time order."

    def add_arguments(self, parser):
        parser.add_argument("account", help="Account number.")
        parser.add_argument("date", type=dt.date.fromisoformat, help="A date in the cycle, YYYY-MM-DD.")
        parser.add_argument("--service", help="Only this service ID.")
        parser.add_argument("--category", default="", help="Only this category (telephony, data, misc).")
        parser.add_argument("--dry-run", action="store_true", help="Show old against new and write nothing.")

    def handle(self, *args, account, date, service, category, dry_run, **options):
        the_account = Account.objects.filter(number=account).first()
        if the_account is None:
            raise CommandError(f"No account {account}.")
        the_service = None
        if service:
            the_service = Service.objects.filter(account=the_account, service_id=service).first()
            if the_service is None:
                raise CommandError(f"Account {account} has no service {service}.")
        try:
            if dry_run:
                result = do_rebalance(
                    "command:rebalance", the_account, date, service=the_service, category=category, dry_run=True
                )
            else:
                result = do_run_rebalance(
                    "command:rebalance", the_account, date, service=the_service, category=category
                )
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from exc
        except RunBusy as exc:
            raise CommandError(str(exc)) from exc
        for line in result.lines:
            self.stdout.write(
                f"{line.usage_at} {line.record_id or line.id} {line.category}: {line.old_status} {line.old_charge} "
                f"(included {line.old_included}) -> {line.new_status} {line.new_charge} (included {line.new_included})"
            )
        self.stdout.write(
            f"{'dry run' if dry_run else 'rebalanced'}: {result.records} records, {result.changed} changed, "
            f"total {result.old_total.normalize():f} -> {result.new_total.normalize():f}"
        )
