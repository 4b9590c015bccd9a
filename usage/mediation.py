"""Mediation File Processing: drains a collector's queue strictly in upload order.

One worker at a time holds a collector's lease (a conditional UPDATE, so it works alike on
PostgreSQL and SQLite); different collectors run in parallel. A file is mediated in batches;
each batch commits its records together with the file's progress marker `lines_done`, so a
worker killed at any point leaves either a whole batch or none of it, and the next worker
resumes after the last committed batch.
"""

import datetime as dt
import logging
import os
import queue
import shutil
import socket
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.db import OperationalError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from console import tracking
from console.models import RunStatus

from . import corrections, pipeline, staging
from .engine import duck, reference
from .engine.timing import phase
from .gates import parse_duck
from .gates.parse import FileRejected, Parser, api_view
from .models import MediationFile, UsageCollector
from .selectors import queue_head
from .services import queue_mediation_run, refresh_file_counts

log = logging.getLogger(__name__)


class LeaseLost(Exception):
    pass


LOAD_CHUNK = 50_000  # rows a parse-ahead chunk carries into the file table


def batch_size() -> int:
    return int(getattr(settings, "TOLLGATE_MEDIATION_BATCH", 200_000))


def lease_seconds() -> int:
    return int(getattr(settings, "TOLLGATE_COLLECTOR_LEASE_SECONDS", 120))


def new_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def claim(collector_id: int, owner: str) -> bool:
    now = timezone.now()
    with transaction.atomic():
        return bool(
            UsageCollector.objects.filter(pk=collector_id)
            .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now) | Q(lease_owner=owner))
            .update(lease_owner=owner, lease_until=now + dt.timedelta(seconds=lease_seconds()))
        )


def release(collector_id: int, owner: str) -> None:
    UsageCollector.objects.filter(pk=collector_id, lease_owner=owner).update(lease_owner="", lease_until=None)


def next_file(collector_id: int):
    """The collector's next file in upload order, or None when there is none or the earliest
    unfinished file failed: later files wait until it is retried or skipped (`blocking_file`)."""
    head = queue_head(collector_id)
    if head is None or head.status == MediationFile.Status.FAILED:
        return None
    return head


def process_collector_queue(
    collector_id: int, *, until: str = "tax", owner: str | None = None, only: int | None = None, report=None
) -> int:
    """Process the collector's queued files in order; return how many this call finished.

    `only`: mediate that file if it is next in the queue, and nothing else (an API request must
    not work through the files queued before its own; the workers do). `report`, a list, gets
    (file, final status) for each file this call worked on."""
    owner = owner or new_owner()
    finished = 0
    while True:
        if not claim(collector_id, owner):
            return finished  # another worker is draining this collector
        try:
            while (mediation_file := next_file(collector_id)) is not None:
                if only is not None and mediation_file.pk != only:
                    break
                outcome = process_file(mediation_file, owner, until=until)
                finished += 1
                if report is not None:
                    report.append((mediation_file, outcome))
                if only is not None:
                    return finished
        finally:
            release(collector_id, owner)
        # A file queued while we held the lease found it taken: look once more after releasing.
        if only is not None or next_file(collector_id) is None:
            return finished


def process_file(mediation_file: MediationFile, owner: str, *, until: str = "tax") -> str:
    """Mediate one file to its end; its final status. A failure keeps what was committed (counts
    and response file say so) and names the batch and lines it happened in."""
    collector = mediation_file.collector
    MediationFile.objects.filter(pk=mediation_file.pk, started_at__isnull=True).update(started_at=timezone.now())
    MediationFile.objects.filter(pk=mediation_file.pk).update(status=MediationFile.Status.PROCESSING)
    # The collector's lease makes this worker the file's only one: it takes over the file's run.
    run = tracking.start_run(queue_mediation_run("mediation worker", mediation_file).pk, take_over=True)
    parser = batches = None
    with duck.session() as engine_db:
        try:
            source = api_view(collector) if mediation_file.source_format == "api" else collector
            parser = Parser(source, settings.TIME_ZONE)
            # The whole file is staged first, numbered in time order: batches then go through the gates
            # in the order records draw allowances, so charges do not depend on the batch size.
            tracking.step(run, "Reading the file and ordering its records by usage time")
            with mediation_file.raw.open("rb") as raw, phase("parse and stage"):
                if parse_duck.eligible(parser):
                    total = parse_duck.stage(parser, raw, engine_db)
                else:
                    total = staging.load_file(engine_db, parsed_ahead(parser.rows(raw), LOAD_CHUNK))
            tracking.step(run, f"Loading the identifiers, rates and periods for {total:,} records")
            with phase("reference"):
                reference.load(engine_db, connection, staging.identifiers(engine_db))
            batches = Batches(engine_db, mediation_file, collector, owner, until, run)
            if overlapped(total - mediation_file.lines_done, batches.size):
                batches.overlapped(total)
            else:
                batches.one_by_one(total)
            if until == "tax":
                corrections.note_file(engine_db, mediation_file)
                if corrections.open_count([mediation_file.pk]):  # noted now, or by a run cut off before applying
                    tracking.step(run, "Applying the file's corrections and re-rating their cycles")
                    corrections.apply_for_file(mediation_file)
        except FileRejected as exc:
            _finish(mediation_file, MediationFile.Status.REJECTED, str(exc), run)
            return MediationFile.Status.REJECTED
        except LeaseLost:
            raise
        except Exception as exc:
            log.exception("mediation of file %s failed", mediation_file.pk)
            refresh_file_counts([mediation_file.pk])
            batch = batches.failed if batches is not None else None
            _finish(mediation_file, MediationFile.Status.FAILED, failure_message(exc, batch, parser, engine_db), run)
            return MediationFile.Status.FAILED
    MediationFile.objects.filter(pk=mediation_file.pk).update(
        physical_lines=parser.physical_lines,
        header_lines=parser.header_lines,
        blank_lines=parser.blank_lines,
        continuation_lines=parser.continuation_lines,
    )
    refresh_file_counts([mediation_file.pk])
    _finish(mediation_file, MediationFile.Status.COMPLETED, "", run)
    return MediationFile.Status.COMPLETED


def failure_message(exc: Exception, batch, parser, engine_db) -> str:
    """Where an unexpected failure happened, what it was, and what the operator can do."""
    if batch is not None:
        number, done, size = batch
        taken = staging.batch_lines(engine_db, done, size)
        where = f"Batch {number} (lines {taken.first_line:,}–{taken.last_line:,}, {taken.count:,} records)"
    elif parser is not None and parser.physical_lines:
        where = f"Reading line {parser.physical_lines:,}"
    else:
        where = "Opening the file"
    return (
        f"{where}: {type(exc).__name__}: {exc}. The batches before it are committed; later files of the "
        "collector wait until this file is retried (it resumes after its last committed batch) or skipped."
    )


# A batch the database aborted for a deadlock or a serialization conflict wrote nothing (its
# transaction rolled back whole): it is simply run again.
TRANSIENT_CODES = {"40P01", "40001"}
TRANSIENT_ATTEMPTS = 5


def is_transient(exc: Exception) -> bool:
    return getattr(exc.__cause__, "pgcode", None) in TRANSIENT_CODES


def overlapped(remaining: int, size: int) -> bool:
    """Whether a file's batches overlap (the next one computed while the last is written): on
    PostgreSQL, for more than one batch, unless TOLLGATE_MEDIATION_OVERLAP is off. Not inside an
    outer transaction (the writer's connection would not see its rows)."""
    return (
        bool(getattr(settings, "TOLLGATE_MEDIATION_OVERLAP", True))
        and connection.vendor == "postgresql"
        and not connection.in_atomic_block
        and remaining > size
    )


class Batches:
    """A staged file's batches, in mediation order, each committed with the file's progress marker.

    One by one: each batch computed and written in its transaction, under its counter locks. Overlapped
    (PostgreSQL): batch k+1 is computed in this thread while a writer thread COPYs batch k, so the
    engine and the store work at once. Batch k+1 reads the store's counters without locks, plus batch
    k's deltas when k was not yet committed at that moment (`commit_lock` makes the two exclusive);
    its write checks under its locks that those counters are still the store's, and a batch whose
    counters or keys changed meanwhile (`pipeline.Stale`: another collector drew from the same
    periods) is computed again under its locks, and the rest of the file goes one by one. Either way a
    batch draws from exactly the totals before it."""

    def __init__(self, engine_db, mediation_file, collector, owner, until, run):
        self.engine_db, self.file, self.collector, self.owner = engine_db, mediation_file, collector, owner
        self.until, self.run, self.size = until, run, batch_size()
        self.done = mediation_file.lines_done  # records committed or, overlapped, handed to the writer
        self.number = self.done // self.size  # batches committed before: numbers stay the file's own
        self.failed = None  # the batch an error belongs to: (number, records done before it, size)
        self.commit_lock = threading.Lock()
        self.committed = self.done  # records committed (the writer moves it, under commit_lock)
        self.mark = time.monotonic()  # when the last batch committed: processing time runs from there

    def one_by_one(self, total: int) -> None:
        while self.done < total:
            self.announce(self.done, total, "through the gates")
            self.done += self.retrying(self.done)

    def count(self, total: int) -> int:
        """How many batches a file of `total` records has."""
        return -(-total // self.size)

    def announce(self, done: int, total: int, doing: str, writing: int | None = None) -> None:
        """The run's step: the batch in progress (its records are counted only when it commits)."""
        number, count = done // self.size + 1, self.count(total)
        text = f"Batch {number:,} of {count:,} (records {done + 1:,}–{min(done + self.size, total):,}): {doing}"
        if writing is not None:
            text += f"; batch {writing:,} being written"
        tracking.step(self.run, text)

    def retrying(self, done: int) -> int:
        """Batch `done` + 1 .. computed and written in one transaction, again after a deadlock."""
        self.number += 1
        self.failed = (self.number, done, self.size)
        tracking.test_pause("mediation")
        for attempt in range(1, TRANSIENT_ATTEMPTS + 1):
            try:
                taken = _mediate_batch(
                    self.engine_db, self.file, self.collector, self.owner, done, self.size, self.until, self.run
                )
                break
            except OperationalError as exc:
                if not is_transient(exc) or attempt == TRANSIENT_ATTEMPTS:
                    raise
                log.warning("batch of file %s: %s; trying again (%s)", self.file.pk, exc, attempt)
                time.sleep(0.05 * attempt)
        self.committed = done + taken
        self.mark = time.monotonic()
        self.failed = None
        return taken

    def overlapped(self, total: int) -> None:
        scratch = tempfile.mkdtemp(prefix="tollgate-batches-", dir=settings.TOLLGATE_DUCKDB_TEMP_DIR or None)
        writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mediation-writer")
        in_flight = None  # (future, prepared, records done before it, batch number)
        try:
            while self.done < total or in_flight is not None:
                prepared = None
                if self.done < total:
                    self.number += 1
                    writing = in_flight[3] if in_flight is not None else None
                    self.announce(self.done, total, "computing", writing)
                    tracking.test_pause("mediation")
                    prepared = self.prepare(in_flight, os.path.join(scratch, str(self.number)))
                elif in_flight is not None:
                    tracking.step(self.run, f"Batch {in_flight[3]:,} of {self.count(total):,}: being written")
                if in_flight is not None:
                    future, written, before, number = in_flight
                    in_flight = None
                    self.failed = (number, before, self.size)
                    try:
                        future.result()
                    except (pipeline.Stale, OperationalError) as exc:
                        if isinstance(exc, OperationalError) and not is_transient(exc):
                            raise
                        # Computed again under its locks. Another writer draws from the same periods:
                        # overlapping would now mostly compute batches twice, so the rest of the file
                        # goes one by one, taking turns under the locks (the batch prepared after this
                        # one read its deltas, and is dropped).
                        log.info(
                            "batch %s of file %s is computed again, and the file's next batches one by one: %s",
                            number,
                            self.file.pk,
                            exc,
                        )
                        self.number = number - 1
                        self.done = before + self.retrying(before)
                        self.one_by_one(total)
                        return
                    finally:
                        shutil.rmtree(written.directory, ignore_errors=True)
                    self.failed = None
                if prepared is not None:
                    before = self.done
                    self.done += prepared.count
                    self.engine_db.execute("CREATE OR REPLACE TABLE in_flight_delta AS SELECT * FROM counter_delta")
                    future = writer.submit(self.write, prepared, before)
                    in_flight = (future, prepared, before, self.number)
        finally:
            if in_flight is not None:
                in_flight[0].exception()  # let the writer finish (its transaction commits or rolls back)
            writer.submit(lambda: connection.close()).result()  # the writer thread's own connection
            writer.shutdown()
            shutil.rmtree(scratch, ignore_errors=True)

    def prepare(self, in_flight, directory: str):
        """Compute the next batch (records `self.done` + 1 ..) while the batch in flight is written."""
        os.makedirs(directory, exist_ok=True)
        self.failed = (self.number, self.done, self.size)
        with phase("take batch"):
            staging.take_batch(self.engine_db, self.done, self.size)
        in_flight_end = self.done if in_flight is not None else None

        def read_counters(periods):
            with self.commit_lock:
                reference.load_counters(self.engine_db, connection, periods)
                seen = self.committed
            if in_flight_end is not None and seen < in_flight_end:
                reference.add_in_flight(self.engine_db, "in_flight_delta", periods)

        return pipeline.prepare_intake(
            connection, self.engine_db, self.collector, self.file.pk, self.until, read_counters, directory
        )

    def write(self, prepared, before: int) -> None:
        """The writer thread: one prepared batch in its transaction, with the file's progress marker."""
        acquired = False
        try:
            with transaction.atomic():
                if not claim(self.collector.pk, self.owner):
                    raise LeaseLost(f"lease of collector {self.collector.code} lost")
                pipeline.write_prepared(connection, prepared)
                seconds = time.monotonic() - self.mark
                MediationFile.objects.filter(pk=self.file.pk).update(
                    lines_done=F("lines_done") + prepared.count,
                    processing_seconds=_plus("processing_seconds", seconds),
                )
                if self.run is not None:
                    tracking.add_progress(self.run, prepared.count)
                tracking.test_pause("mediation commit")
                self.commit_lock.acquire()
                acquired = True
            self.committed = before + prepared.count
            self.mark = time.monotonic()
        finally:
            if acquired:
                self.commit_lock.release()


def _mediate_batch(engine_db, mediation_file, collector, owner, done, size, until, run) -> int:
    """The file's next batch (records `done` + 1 .. in mediation order) in one transaction, together
    with the file's progress marker; the number of records it held."""
    started = time.monotonic()
    with transaction.atomic():
        if not claim(collector.pk, owner):
            raise LeaseLost(f"lease of collector {collector.code} lost")
        with phase("take batch"):
            taken = staging.take_batch(engine_db, done, size)
        if taken.count:
            pipeline.intake(connection, engine_db, collector, mediation_file.pk, until)
            MediationFile.objects.filter(pk=mediation_file.pk).update(
                lines_done=F("lines_done") + taken.count,
                processing_seconds=_plus("processing_seconds", time.monotonic() - started),
            )
            if run is not None:
                tracking.add_progress(run, taken.count)
            tracking.test_pause("mediation commit")
    return taken.count


def parsed_ahead(rows, size: int):
    """Yield prepared batches of `rows`, parsing the next batch on a thread while the caller's
    database statement runs (the driver releases the GIL while it waits): parse and SQL overlap
    on the machine's two cores. A parse exception is raised here, in the caller's thread."""
    handoff: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()

    def put(item):
        while not stop.is_set():
            try:
                handoff.put(item, timeout=0.5)
                return True
            except queue.Full:
                continue
        return False

    def work():
        try:
            while not stop.is_set():
                prepared = staging.prepare(rows, size)
                if not put(("batch", prepared)) or prepared.count < size:
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consuming thread
            put(("error", exc))

    thread = threading.Thread(target=work, name="mediation-parse-ahead", daemon=True)
    thread.start()
    try:
        while True:
            kind, item = handoff.get()
            if kind == "error":
                raise item
            yield item
            if item.count < size:
                return
    finally:
        stop.set()
        thread.join(timeout=5)


def _plus(field, seconds):
    from django.db.models.functions import Coalesce

    return Coalesce(F(field), 0.0) + seconds


def _finish(mediation_file, status, error, run):
    MediationFile.objects.filter(pk=mediation_file.pk).update(
        status=status, error=error[:4000], finished_at=timezone.now()
    )
    if run is not None:
        done = MediationFile.objects.values_list("lines_done", flat=True).get(pk=mediation_file.pk)
        completed = status == MediationFile.Status.COMPLETED
        tracking.progress(run, done, expected=done if completed else None)
        tracking.finish(run, RunStatus.COMPLETED if completed else RunStatus.FAILED, error)
