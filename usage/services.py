"""Writes for usage: receiving files into a collector's queue, reprocessing quarantine."""

import hashlib
import io
import json
import tempfile
import uuid
from collections import Counter

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files import File
from django.db import connection, transaction
from django.db.models import Count, Sum
from django.db.models.expressions import RawSQL
from django.utils import timezone

from billing import audit
from console import tracking
from console.models import ProcessKind, ProcessRun, RunStatus

from . import pipeline, store
from .models import FileRecord, MediationFile, QuarantinedRecord, Reason, UsageCollector, UsageRecord

CHUNK = 1 << 20
REPROCESS_SELECTION = "usage_reprocess_selection"


def max_upload_bytes() -> int:
    return int(getattr(settings, "TOLLGATE_MAX_UPLOAD_BYTES", 64 << 20))


def upload_too_large_message(size: int) -> str:
    limit = max_upload_bytes()
    return (
        f"The upload is {size / (1 << 20):,.1f} MB; at most {limit / (1 << 20):,.0f} MB is taken here "
        "(TOLLGATE_MAX_UPLOAD_BYTES). Split the file, or receive it with `manage.py receive`."
    )


class DuplicateFile(ValidationError):
    def __init__(self, earlier: MediationFile):
        self.earlier = earlier
        super().__init__(
            f"The same content was already received as {earlier.name!r} (file {earlier.pk}, "
            f"#{earlier.sequence} of collector {earlier.collector.code}, {earlier.uploaded_at:%Y-%m-%d %H:%M})."
        )


def do_receive_file(
    actor,
    collector: UsageCollector,
    name: str,
    content,
    *,
    via: str = "admin",
    source_format: str = "collector",
    enqueue: bool = True,
) -> MediationFile:
    """Store a file and queue it behind the collector's earlier files; refuse content seen before.

    `content` is a binary file object; it is streamed (hashed and copied) without being held in memory.
    The collector's worker is started once the transaction commits (unless the caller works the
    queue itself: `enqueue=False`).
    """
    if not collector.is_active:
        raise ValidationError(f"Collector {collector.code} is not active.")
    digest = hashlib.sha256()
    size = lines = 0
    last_byte = b"\n"
    spool = tempfile.TemporaryFile()
    for chunk in iter(lambda: content.read(CHUNK), b""):
        digest.update(chunk)
        size += len(chunk)
        lines += chunk.count(b"\n")
        last_byte = chunk[-1:]
        spool.write(chunk)
    spool.seek(0)
    sha = digest.hexdigest()
    with transaction.atomic():
        locked = UsageCollector.objects.select_for_update().get(pk=collector.pk)
        earlier = MediationFile.objects.filter(collector=locked, sha256=sha).select_related("collector").first()
        if earlier is not None:
            raise DuplicateFile(earlier)
        last = locked.files.order_by("-sequence").values_list("sequence", flat=True).first() or 0
        user = actor if getattr(actor, "is_authenticated", False) else None
        mediation_file = MediationFile(
            collector=locked,
            sequence=last + 1,
            name=name[:255],
            sha256=sha,
            size=size,
            uploaded_by=user,
            uploaded_via=via,
            source_format=source_format,
        )
        mediation_file.raw.save(name[-100:], File(spool), save=False)
        mediation_file.save()
        queue_mediation_run(actor, mediation_file, expected=lines + (last_byte != b"\n"))
        audit.record(actor, "file.receive", mediation_file, after={"name": name, "size": size, "sha256": sha})
        if enqueue:
            transaction.on_commit(lambda: enqueue_collector(locked.pk))
    return mediation_file


def do_ingest_records(actor, collector: UsageCollector, records: list[dict]) -> MediationFile:
    """Records sent to the API: received like a file (JSON lines in Tollgate's field names, queued
    behind the collector's earlier files, refused if the same batch came before) and mediated now
    through the same gates, if it is next in the collector's queue. Files queued before it, or a
    worker holding the queue, leave it queued for the workers (status queued or processing): the
    request never works through other files."""
    from .mediation import next_file, process_collector_queue

    body = "".join(json.dumps(record, separators=(",", ":"), default=str) + "\n" for record in records).encode()
    name = f"api-{timezone.now():%Y%m%dT%H%M%S%f}.jsonl"
    received = do_receive_file(actor, collector, name, io.BytesIO(body), via="api", source_format="api", enqueue=False)
    process_collector_queue(collector.pk, only=received.pk)
    received.refresh_from_db()
    if received.status in (MediationFile.Status.QUEUED, MediationFile.Status.PROCESSING) or next_file(collector.pk):
        enqueue_collector(collector.pk)
    return received


def queue_mediation_run(actor, mediation_file: MediationFile, *, expected=None, retry_of=None):
    """The file's Mediation File Processing run, queued behind the collector's earlier files.
    `expected` is the file's line count (counted as it was received; an earlier run's otherwise)."""
    subject = f"file:{mediation_file.pk}"
    if expected is None:
        expected = (
            ProcessRun.objects.filter(kind=ProcessKind.MEDIATION, subject=subject)
            .values_list("records_expected", flat=True)
            .first()
        )
    return tracking.queue_run(
        actor,
        ProcessKind.MEDIATION,
        subject,
        f"{mediation_file.collector.code} #{mediation_file.sequence} {mediation_file.name}",
        queue=f"collector:{mediation_file.collector_id}",
        params={"file": mediation_file.pk, "collector": mediation_file.collector_id},
        expected=expected,
        retry_of=retry_of,
    )[0]


def retry_mediation_run(actor, run):
    """Queue a failed run's file again: it resumes after its last committed batch."""
    return do_retry_file(actor, MediationFile.objects.select_related("collector").get(pk=run.params["file"]), run)


def do_retry_file(actor, mediation_file: MediationFile, retry_of=None):
    """Queue a failed file again (its new run); anything else has nothing to retry."""
    if mediation_file.status == MediationFile.Status.REJECTED:
        raise ValidationError(
            f"{mediation_file.name} was rejected as a whole ({mediation_file.error}); send a corrected file instead."
        )
    if mediation_file.status != MediationFile.Status.FAILED:
        raise ValidationError(
            f"Nothing to retry: {mediation_file} is {mediation_file.get_status_display().lower()} "
            f"({mediation_file.lines_done:,} records committed)."
        )
    return do_requeue_files(actor, MediationFile.objects.filter(pk=mediation_file.pk), retry_of=retry_of)[0]


@transaction.atomic
def do_requeue_files(actor, files, *, retry_of=None) -> list:
    """Queue failed files again and start their collectors' workers; their new runs."""
    runs = []
    for mediation_file in files.filter(status=MediationFile.Status.FAILED).select_related("collector"):
        MediationFile.objects.filter(pk=mediation_file.pk).update(status=MediationFile.Status.QUEUED, error="")
        runs.append(queue_mediation_run(actor, mediation_file, retry_of=retry_of))
        audit.record(actor, "file.requeue", mediation_file, summary=f"Queued {mediation_file} again")
        transaction.on_commit(lambda cid=mediation_file.collector_id: enqueue_collector(cid))
    return runs


@transaction.atomic
def do_skip_file(actor, mediation_file: MediationFile, reason: str = "") -> MediationFile:
    """An operator gives up on a failed file so that the collector's later files go on. What it
    committed stays (and is billed); its other records are not mediated, and the audit row and the
    file's error say how many were committed."""
    locked = MediationFile.objects.select_for_update().select_related("collector").get(pk=mediation_file.pk)
    if locked.status != MediationFile.Status.FAILED:
        raise ValidationError(f"Only a failed file can be skipped; {locked} is {locked.get_status_display().lower()}.")
    refresh_file_counts([locked.pk])
    locked.refresh_from_db()
    who = getattr(actor, "username", None) or str(actor)
    what = (
        f"Skipped by {who}{': ' + reason if reason else ''}. {locked.lines_done:,} records were committed "
        f"({locked.mediated:,} mediated, charge {locked.charge}); the file's other records are not mediated."
    )
    before = {"status": locked.status, "error": locked.error}
    MediationFile.objects.filter(pk=locked.pk).update(
        status=MediationFile.Status.SKIPPED, error=f"{what}\nFailure: {locked.error}"[:4000], finished_at=timezone.now()
    )
    audit.record(
        actor,
        "file.skip",
        locked,
        summary=f"Skipped {locked}: {locked.lines_done:,} records committed, the rest not mediated",
        before=before,
        after={"status": MediationFile.Status.SKIPPED, "lines_done": locked.lines_done, "reason": reason},
    )
    transaction.on_commit(lambda: enqueue_collector(locked.collector_id))
    locked.refresh_from_db()
    return locked


def enqueue_collector(collector_id: int):
    from django_q.tasks import async_task

    async_task("usage.tasks.process_collector", collector_id, task_name=f"collector-{collector_id}", group="mediation")


def refresh_file_counts(file_ids) -> None:
    """Recount the outcome of files from their records (after processing and every reprocess)."""
    for file_id in set(file_ids):
        rows = (
            FileRecord.objects.filter(file_id=file_id)
            .values("status", "reason")
            .annotate(n=Count("id"), charge=Sum("charge_micros"), tax=Sum("tax_micros"))
            .order_by()
        )
        counts = {"mediated": 0, "quarantined": 0, "duplicates": 0, "rejected_lines": 0, "pending": 0, "void": 0}
        charge = tax = total = 0
        for row in rows:
            total += row["n"]
            if row["status"] == UsageRecord.Status.MEDIATED:
                counts["mediated"] += row["n"]
                charge += row["charge"] or 0
                tax += row["tax"] or 0
            elif row["status"] == UsageRecord.Status.PENDING:
                counts["pending"] += row["n"]
            elif row["status"] == UsageRecord.Status.VOID:
                counts["void"] += row["n"]
            elif row["reason"] == Reason.DUPLICATE:
                counts["duplicates"] += row["n"]
            elif row["reason"] == Reason.PARSE_ERROR:
                counts["rejected_lines"] += row["n"]
            else:
                counts["quarantined"] += row["n"]
        MediationFile.objects.filter(pk=file_id).update(
            total_lines=total, charge_micros=charge, tax_micros=tax, **counts
        )


def named_subquery(queryset, prefix="q", columns=("id",)):
    """A queryset's subquery (its `id` by default) as SQL with named parameters, to embed in a gate
    statement."""
    sql, params = queryset.values_list(*columns).query.sql_with_params()
    named = {}
    for i, value in enumerate(params):
        sql = sql.replace("%s", f"%({prefix}{i})s", 1)
        named[f"{prefix}{i}"] = value
    return sql, named


@transaction.atomic
def do_reprocess_records(actor, records) -> dict:
    """Send quarantined (or waiting) records (a QuarantinedRecord queryset) through the gates again,
    each from the gate it is at; those that pass every gate move to the records table.

    Duplicates and parse errors are final: a duplicate is never billed, and a line that could not
    be parsed is fixed by sending a corrected file (its lines already mediated become duplicates).
    A record that failed at tax re-enters at rate, since its charge was not kept.
    """
    if records.model is not QuarantinedRecord:
        raise TypeError("Reprocess takes quarantined records (a QuarantinedRecord queryset).")
    chosen = records.filter(stage__in=pipeline.REPROCESSABLE)
    before = dict(chosen.values_list("status").annotate(n=Count("id")).order_by())
    if not before:
        return {"records": 0, "mediated": 0, "quarantined": 0}
    # Snapshot the selection (record and the stage it waits at) in one statement: each record then
    # goes through its gates exactly once, whatever stage an earlier group leaves it at, and no id
    # list passes through Python (33,000 records on SQLite: 28 s with the list, 5 s without).
    subquery, params = named_subquery(chosen, columns=("id", "collector_id", "stage"))
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {REPROCESS_SELECTION}")
        cursor.execute(
            f"CREATE TEMP TABLE {REPROCESS_SELECTION} (id BIGINT PRIMARY KEY, collector_id BIGINT, stage VARCHAR(8))"
        )
        cursor.execute(f"INSERT INTO {REPROCESS_SELECTION} (id, collector_id, stage) {subquery}", params)
        cursor.execute(f"SELECT DISTINCT collector_id, stage FROM {REPROCESS_SELECTION}")
        groups = sorted(cursor.fetchall())
    selected = QuarantinedRecord.objects.filter(pk__in=RawSQL(f"SELECT id FROM {REPROCESS_SELECTION}", []))
    collectors = {c.pk: c for c in UsageCollector.objects.filter(pk__in={g[0] for g in groups})}
    files_by_collector = set(selected.values_list("collector_id", "file_id").distinct())
    file_ids = {file_id for _, file_id in files_by_collector}
    after = Counter()
    for collector_id, stage in groups:
        first = "rate" if stage == "tax" else stage
        # stage: our own name. Written as EXISTS: for an IN list SQLite guesses a handful of rows and then
        # joins each record's rate choice by a scan (quadratic: 4,000 records took 2 s, 33,000 minutes).
        where = f"EXISTS (SELECT 1 FROM {REPROCESS_SELECTION} x WHERE x.id = u.id AND x.stage = '{stage}')"
        with connection.cursor() as cursor:
            ran = pipeline.advance(cursor, collectors[collector_id], first, "tax", where, tables=(store.WAITING,))
        after.update(ran.statuses)
    corrected = _apply_corrections(actor, files_by_collector)
    refresh_file_counts(file_ids)
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE {REPROCESS_SELECTION}")
    total = sum(after.values())
    outcome = {
        "records": total,
        "mediated": after.get("mediated", 0) - corrected.refused - corrected.cancellations,
        "quarantined": after.get("quarantined", 0) + corrected.refused,
    }
    if corrected.applied or corrected.refused:
        outcome.update(corrections_applied=corrected.applied, corrections_refused=corrected.refused)
    audit.record(
        actor,
        "quarantine.reprocess",
        object_type="usage.quarantinedrecord",
        summary=f"Reprocessed {total} records: {outcome['mediated']} mediated",
        before={"status": before},
        after=outcome,
    )
    return outcome


def _apply_corrections(actor, files_by_collector):
    """Corrections among reprocessed records are tried again (those now mediated)."""
    from .corrections import Applied, do_apply_corrections

    total = Applied()
    by_collector = {}
    for collector_id, file_id in files_by_collector:
        by_collector.setdefault(collector_id, []).append(file_id)
    for collector_id, files in sorted(by_collector.items()):
        applied = do_apply_corrections(actor, collector_id, files)
        total.applied += applied.applied
        total.refused += applied.refused
        total.cancellations += applied.cancellations
    return total


@transaction.atomic
def do_advance_stage(actor, stage: str, *, collector=None, include_quarantined=False) -> int:
    """Run one gate over the records waiting at it (BillRun-style standalone calculator)."""
    if stage not in pipeline.REPROCESSABLE:
        raise ValidationError(f"Stage must be one of {', '.join(pipeline.REPROCESSABLE)}.")
    statuses = ["pending", "quarantined"] if include_quarantined else ["pending"]
    waiting = QuarantinedRecord.objects.filter(stage=stage, status__in=statuses)
    if collector is not None:
        waiting = waiting.filter(collector=collector)
    total = 0
    for collector_id in waiting.values_list("collector_id", flat=True).distinct():
        chosen = waiting.filter(collector_id=collector_id)
        file_ids = set(chosen.values_list("file_id", flat=True).distinct())
        subquery, params = named_subquery(chosen)
        the_collector = UsageCollector.objects.get(pk=collector_id)
        with connection.cursor() as cursor:
            where = f"u.id IN ({subquery})"
            total += pipeline.advance(
                cursor, the_collector, stage, stage, where, params, tables=(store.WAITING,)
            ).records
        refresh_file_counts(file_ids)
    audit.record(actor, f"mediate.{stage}", object_type="usage.quarantinedrecord", summary=f"{stage}: {total} records")
    return total


def reprocess_selection(params: dict):
    """Quarantined records chosen by ids and/or reason, collector, file (a run's stored selection)."""
    chosen = QuarantinedRecord.objects.filter(status=QuarantinedRecord.Status.QUARANTINED)
    if params.get("ids") is not None:
        chosen = chosen.filter(pk__in=params["ids"])
    for key, field in (("reason", "reason"), ("stage", "stage"), ("collector", "collector_id"), ("file", "file_id")):
        if params.get(key):
            chosen = chosen.filter(**{field: params[key]})
    return chosen


def describe_selection(params: dict) -> str:
    parts = [f"{len(params['ids'])} selected records"] if params.get("ids") is not None else []
    parts += [f"{key} {params[key]}" for key in ("reason", "stage", "collector", "file") if params.get(key)]
    return "Quarantine: " + (", ".join(parts) or "all records")


def queue_reprocess(actor, params: dict, *, enqueue: bool = True, retry_of=None):
    """A Reprocess run over a stored selection, queued for a worker (or for the caller to execute)."""
    run, _ = tracking.queue_run(
        actor,
        ProcessKind.REPROCESS,
        f"reprocess:{uuid.uuid4().hex[:16]}",
        describe_selection(params),
        params=params,
        expected=reprocess_selection(params).count(),
        retry_of=retry_of,
    )
    tracking.plan_activities(run, ["Reprocess"])
    if enqueue:
        transaction.on_commit(lambda: enqueue_reprocess(run.pk))
    return run


def enqueue_reprocess(run_id: int):
    from django_q.tasks import async_task

    async_task("usage.tasks.reprocess", run_id, task_name=f"reprocess-{run_id}", group="reprocess")


def execute_reprocess(run_id: int, actor=None):
    """Work a Reprocess run; (run, outcome), or (None, None) if it is finished or held elsewhere.
    While it runs, Main Billing waits for it."""
    run = tracking.start_run(run_id)
    if run is None:
        return None, None
    actor = actor or run.requested_by or run.requested_label
    try:
        with tracking.activity(run, 1, "Reprocess") as step:
            tracking.test_pause("reprocess")
            outcome = do_reprocess_records(actor, reprocess_selection(run.params))
            step.records = outcome["records"]
            step.detail = f"{outcome['mediated']} mediated, {outcome['quarantined']} still quarantined"
        tracking.progress(run, outcome["records"])
    except Exception as exc:
        tracking.finish(run, RunStatus.FAILED, f"{type(exc).__name__}: {exc}")
        raise
    tracking.finish(run, RunStatus.COMPLETED)
    return run, outcome


def do_reprocess_now(actor, params: dict):
    """Reprocess a selection in this process, as a run others see (and Main Billing waits for)."""
    run = queue_reprocess(actor, params, enqueue=False)
    return execute_reprocess(run.pk, actor)


def retry_reprocess_run(actor, run):
    return queue_reprocess(actor, run.params, retry_of=run)
