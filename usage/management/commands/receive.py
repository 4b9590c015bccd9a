from pathlib import Path

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from usage import services
from usage.models import UsageCollector


class Command(BaseCommand):
    help = "Queue usage files (or every file of a drop folder, by name) on a collector."

    def add_arguments(self, parser):
        parser.add_argument("--collector", required=True, help="Collector code.")
        parser.add_argument("paths", nargs="+", help="Files or drop folders.")

    def handle(self, *args, collector, paths, **options):
        try:
            target = UsageCollector.objects.get(code=collector)
        except UsageCollector.DoesNotExist as exc:
            raise CommandError(f"No collector with code {collector!r}.") from exc
        files = []
        for raw in paths:
            path = Path(raw)
            if path.is_dir():
                files += sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
            elif path.is_file():
                files.append(path)
            else:
                raise CommandError(f"{raw}: no such file or folder.")
        queued = refused = 0
        for path in files:
            with path.open("rb") as handle:
                try:
                    received = services.do_receive_file("command:receive", target, path.name, handle, via="command")
                except ValidationError as exc:
                    refused += 1
                    self.stderr.write(f"{path}: refused. {' '.join(exc.messages)}")
                    continue
            queued += 1
            self.stdout.write(f"{path}: queued as #{received.sequence} of {target.code} (file {received.pk}).")
        self.stdout.write(f"{queued} queued, {refused} refused.")
