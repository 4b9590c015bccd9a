from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from usage import pipeline, services
from usage.mediation import process_collector_queue
from usage.models import MediationFile, UsageCollector


class Command(BaseCommand):
    help = (
        "Run mediation stages by hand, as BillRun's operations: `process` mediates queued files "
        "(optionally only up to a gate); identify/bucket/rate/tax run one gate over the records waiting at it."
    )

    def add_arguments(self, parser):
        parser.add_argument("stage", choices=["process", *pipeline.REPROCESSABLE])
        parser.add_argument("--collector", help="Collector code (default: all).")
        parser.add_argument(
            "--until",
            choices=pipeline.STAGES[1:],
            default="tax",
            help="With process: stop after this gate; records wait at the next one.",
        )
        parser.add_argument(
            "--quarantined", action="store_true", help="With a gate: also retry the records quarantined at it."
        )

    def handle(self, *args, stage, collector, until, quarantined, **options):
        target = None
        if collector:
            target = UsageCollector.objects.filter(code=collector).first()
            if target is None:
                raise CommandError(f"No collector with code {collector!r}.")
        if stage == "process":
            ids = (
                [target.pk]
                if target
                else list(
                    MediationFile.objects.filter(status__in=["queued", "processing"])
                    .values_list("collector_id", flat=True)
                    .distinct()
                )
            )
            done = sum(process_collector_queue(cid, until=until) for cid in ids)
            self.stdout.write(f"Processed {done} file(s).")
            return
        try:
            count = services.do_advance_stage(
                "command:mediate", stage, collector=target, include_quarantined=quarantined
            )
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from exc
        self.stdout.write(f"{stage}: {count} record(s) advanced.")
