"""Execute a metering stream now: `manage.py execute_stream CODE`."""

import os
import time

from django.core.management.base import BaseCommand, CommandError

from metering.models import Stream
from metering.services import StreamBusy, do_run_stream


class Command(BaseCommand):
    help = "Execute a metering stream once (flush due meters, guide new records, flush by policy)."

    def add_arguments(self, parser):
        parser.add_argument("stream", help="Stream code")

    def handle(self, *args, **options):
        try:
            stream = Stream.objects.get(code=options["stream"])
        except Stream.DoesNotExist as exc:
            raise CommandError(f"No stream {options['stream']!r}.") from exc
        pause = float(os.environ.get("TOLLGATE_METERING_TEST_PAUSE", "0"))
        if pause:  # tests kill the process here, inside the execution's transaction
            from metering import services

            guide = services.guide

            def slow_guide(*a, **kw):
                updated = guide(*a, **kw)
                self.stdout.write("guided", ending="\n")
                self.stdout.flush()
                time.sleep(pause)
                return updated

            services.guide = slow_guide
        try:
            execution = do_run_stream(f"command execute_stream {stream.code}", stream, trigger="command")
        except StreamBusy as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            f"stream={stream.code} records={execution.records} meters_updated={execution.meter_updates} "
            f"flushed={execution.flushed} seconds={execution.seconds:.2f} records_per_s={execution.records_per_second}"
        )
