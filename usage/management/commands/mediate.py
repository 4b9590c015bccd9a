from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from billing.formatting import plural
from usage import pipeline, services
from usage.mediation import process_collector_queue
from usage.models import MediationFile, UsageCollector
from usage.selectors import blocking_file


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
                    MediationFile.objects.filter(status__in=["queued", "processing", "failed"])
                    .values_list("collector_id", flat=True)
                    .distinct()
                )
            )
            report = []
            for cid in ids:
                process_collector_queue(cid, until=until, report=report)
            for mediation_file, status in report:
                self.stdout.write(f"{mediation_file}: {status}")
            problems = [f"{f} failed: {MediationFile.objects.get(pk=f.pk).error}" for f, s in report if s == "failed"]
            for cid in ids:
                blocker = blocking_file(cid)
                if blocker is not None and all(f.pk != blocker.pk for f, _ in report):
                    problems.append(f"{blocker.collector.code} is blocked: {blocker} failed earlier; retry or skip it.")
            self.stdout.write(f"Processed {plural(len(report), 'file')}.")
            if problems:
                raise CommandError("\n".join(problems))
            return
        try:
            count = services.do_advance_stage(
                "command:mediate", stage, collector=target, include_quarantined=quarantined
            )
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from exc
        self.stdout.write(f"{stage}: {plural(count, 'record')} advanced.")
