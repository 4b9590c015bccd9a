"""Writes of process runs: every asynchronous process reports its runs and activities here.

A run is claimed by a conditional UPDATE (works alike on PostgreSQL and SQLite), so a task that
django-q2 hands out twice is executed once. A worker renews the run's lease as it goes; a run whose
lease lapsed lost its worker and is marked failed by the next look (`reap_lost_runs`).
Each write here is its own short transaction, so the console sees progress while the work runs.
"""

import contextlib
import datetime as dt
import os
import socket
import time

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone
from django.utils.module_loading import import_string

from billing import audit

from .models import ACTIVE_STATUSES, ProcessActivity, ProcessKind, ProcessRun, RunStatus

# How each kind of failed run is tried again: a function (actor, failed run) -> new run.
RETRY_HANDLERS = {
    ProcessKind.MEDIATION: "usage.services.retry_mediation_run",
    ProcessKind.MAIN_BILLING: "billing.invoicing.retry_main_billing_run",
    ProcessKind.REPROCESS: "usage.services.retry_reprocess_run",
    ProcessKind.REBALANCE: "usage.rebalance.retry_rebalance_run",
    ProcessKind.METERING: "metering.services.retry_stream_run",
}


class RunBusy(Exception):
    """The process is already active for that subject; `run` is the active run."""

    def __init__(self, run: ProcessRun):
        self.run = run
        super().__init__(f"{run.get_kind_display()} is already {run.status} for {run.label} (run {run.pk}).")


def lease_seconds() -> int:
    return int(getattr(settings, "TOLLGATE_RUN_LEASE_SECONDS", 3600))


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _actor_fields(actor) -> dict:
    user = actor if getattr(actor, "is_authenticated", False) else None
    label = actor.get_username() if user else str(actor or "system")
    return {"requested_by": user, "requested_label": label[:150]}


def active_run(kind: str, subject: str) -> ProcessRun | None:
    return ProcessRun.objects.filter(kind=kind, subject=subject, status__in=ACTIVE_STATUSES).first()


def queue_run(
    actor,
    kind: str,
    subject: str,
    label: str,
    *,
    queue: str = "",
    params: dict | None = None,
    expected: int | None = None,
    scheduled_for: dt.datetime | None = None,
    retry_of: ProcessRun | None = None,
) -> tuple[ProcessRun, bool]:
    """The active run of this process for `subject`, or a new queued (or scheduled) one."""
    existing = active_run(kind, subject)
    if existing is not None:
        return existing, False
    status = RunStatus.SCHEDULED if scheduled_for and scheduled_for > timezone.now() else RunStatus.QUEUED
    try:
        with transaction.atomic():
            run = ProcessRun.objects.create(
                kind=kind,
                subject=subject,
                label=label[:200],
                queue=queue,
                status=status,
                params=params or {},
                records_expected=expected,
                scheduled_for=scheduled_for,
                retry_of=retry_of,
                **_actor_fields(actor),
            )
    except IntegrityError:
        # Another request queued it between our look and our insert: theirs is the run.
        existing = active_run(kind, subject)
        if existing is None:
            raise
        return existing, False
    return run, True


def start_run(run_id: int, *, take_over: bool = False) -> ProcessRun | None:
    """Claim a queued, scheduled or waiting run (or one whose worker was lost) for this worker.

    None when the run is finished or another live worker holds it. `take_over` claims any active
    run: for callers that hold the subject's own lock (a collector's lease, a stream's row lock)."""
    now = timezone.now()
    claimable = Q(status__in=[RunStatus.QUEUED, RunStatus.SCHEDULED]) | Q(
        status__in=[RunStatus.RUNNING, RunStatus.WAITING], lease_until__lt=now
    )
    if take_over:
        claimable = Q(status__in=ACTIVE_STATUSES)
    claimed = ProcessRun.objects.filter(claimable, pk=run_id).update(
        status=RunStatus.RUNNING,
        worker=worker_name(),
        lease_until=now + dt.timedelta(seconds=lease_seconds()),
        waiting_for="",
    )
    if not claimed:
        return None
    ProcessRun.objects.filter(pk=run_id, started_at__isnull=True).update(started_at=now)
    return ProcessRun.objects.get(pk=run_id)


class RunCancelled(Exception):
    """An operator cancelled the run while its worker held it (waiting): the worker stops."""


def renew(run: ProcessRun, *, status: str = RunStatus.RUNNING, waiting_for: str = "") -> None:
    """Extend the worker's lease (and set running or waiting); RunCancelled if it was cancelled."""
    run.status, run.waiting_for = status, waiting_for
    run.lease_until = timezone.now() + dt.timedelta(seconds=lease_seconds())
    renewed = ProcessRun.objects.filter(pk=run.pk, status__in=[RunStatus.RUNNING, RunStatus.WAITING]).update(
        status=status, waiting_for=waiting_for[:200], lease_until=run.lease_until
    )
    if not renewed:
        raise RunCancelled(f"Run {run.pk} was cancelled.")


def progress(run: ProcessRun, done: int, expected: int | None = None) -> None:
    fields = {"records_done": done, "lease_until": timezone.now() + dt.timedelta(seconds=lease_seconds())}
    if expected is not None:
        fields["records_expected"] = expected
        run.records_expected = expected
    run.records_done = done
    ProcessRun.objects.filter(pk=run.pk).update(**fields)


def add_progress(run: ProcessRun, records: int) -> None:
    run.records_done += records
    ProcessRun.objects.filter(pk=run.pk).update(
        records_done=F("records_done") + records, lease_until=timezone.now() + dt.timedelta(seconds=lease_seconds())
    )


def step(run: ProcessRun | None, text: str) -> None:
    """Say what the run is doing now. Called outside a batch's transaction (before it opens), so the
    console shows the batch in progress while its records are still uncommitted."""
    if run is None:
        return
    run.step = text[:200]
    ProcessRun.objects.filter(pk=run.pk).update(
        step=run.step, lease_until=timezone.now() + dt.timedelta(seconds=lease_seconds())
    )


def finish(run: ProcessRun, status: str, error: str = "") -> None:
    run.status, run.error, run.finished_at, run.step = status, error[:4000], timezone.now(), ""
    ProcessRun.objects.filter(pk=run.pk).update(
        status=status, error=run.error, finished_at=run.finished_at, lease_until=None, waiting_for="", step=""
    )


def cancel_run(actor, run: ProcessRun) -> None:
    """Cancel a run that has not started (scheduled, queued or waiting). A queued file is not
    cancelled: a collector's files are mediated in upload order, every one of them."""
    if run.kind == ProcessKind.MEDIATION:
        raise ValidationError("A queued file is mediated in its turn; it cannot be cancelled.")
    cancelled = ProcessRun.objects.filter(
        pk=run.pk, status__in=[RunStatus.SCHEDULED, RunStatus.QUEUED, RunStatus.WAITING]
    ).update(status=RunStatus.CANCELLED, finished_at=timezone.now(), lease_until=None, waiting_for="")
    if not cancelled:
        raise ValidationError("Only a scheduled, queued or waiting run can be cancelled.")
    audit.record(actor, "process.cancel", run, summary=f"Cancelled {run}")


def _process_gone(worker: str) -> bool:
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def reap_lost_runs() -> int:
    """Mark failed the runs whose worker is gone: its lease lapsed, or it was a process of this
    machine that no longer exists (killed or crashed)."""
    working = ProcessRun.objects.filter(status__in=[RunStatus.RUNNING, RunStatus.WAITING])
    lost = set(working.filter(lease_until__lt=timezone.now()).values_list("pk", flat=True))
    lost |= {pk for pk, worker in working.values_list("pk", "worker") if _process_gone(worker)}
    if not lost:
        return 0
    return ProcessRun.objects.filter(pk__in=lost, status__in=[RunStatus.RUNNING, RunStatus.WAITING]).update(
        status=RunStatus.FAILED,
        finished_at=timezone.now(),
        lease_until=None,
        waiting_for="",
        error="The worker stopped before the run ended; retry the run.",
    )


@contextlib.contextmanager
def activity(run: ProcessRun, position: int, name: str):
    """A step of the run: shown running while the block runs, then completed (or failed with the
    error). The block may set `.records` and `.detail` on the yielded activity; the run's own
    progress is the caller's to report (`progress`), since steps count different things."""
    renew(run)
    step, _ = ProcessActivity.objects.update_or_create(
        run=run,
        position=position,
        defaults={
            "name": name,
            "status": ProcessActivity.Status.RUNNING,
            "started_at": timezone.now(),
            "finished_at": None,
        },
    )
    try:
        yield step
    except BaseException as exc:
        step.status, step.error = ProcessActivity.Status.FAILED, f"{type(exc).__name__}: {exc}"[:4000]
        step.finished_at = timezone.now()
        step.save(update_fields=["status", "error", "finished_at", "records", "detail"])
        raise
    step.status, step.finished_at = ProcessActivity.Status.COMPLETED, timezone.now()
    step.save(update_fields=["status", "finished_at", "records", "detail"])


def plan_activities(run: ProcessRun, names) -> None:
    """Show the run's steps as pending before it starts them."""
    for position, name in enumerate(names, start=1):
        ProcessActivity.objects.get_or_create(run=run, position=position, defaults={"name": name})


@contextlib.contextmanager
def tracked(actor, kind: str, subject: str, label: str, **queue_kwargs):
    """Run a block of work as a process run: queued and claimed at once, completed when the block
    ends, failed with the error if it raises. Raises RunBusy if a run is already active."""
    reap_lost_runs()
    run, created = queue_run(actor, kind, subject, label, **queue_kwargs)
    if not created:
        raise RunBusy(run)
    claimed = start_run(run.pk)
    if claimed is None:
        raise RunBusy(run)
    try:
        yield claimed
    except BaseException as exc:
        finish(claimed, RunStatus.FAILED, f"{type(exc).__name__}: {exc}")
        raise
    finish(claimed, RunStatus.COMPLETED)


def retry_run(actor, run: ProcessRun) -> ProcessRun:
    """Start a failed run's work again (a new run, linked to the failed one)."""
    if run.status != RunStatus.FAILED:
        raise ValidationError("Only a failed run can be retried.")
    if ProcessRun.objects.filter(retry_of=run).exists():
        raise ValidationError("This run was already retried; retry the newest run instead.")
    new_run = import_string(RETRY_HANDLERS[run.kind])(actor, run)
    audit.record(actor, "process.retry", run, summary=f"Retried {run} as run {new_run.pk}")
    return new_run


def test_pause(point: str) -> None:
    """Sleep at a named point when TOLLGATE_TEST_PAUSE names it ("reprocess:3,mapping:1"): tests
    use it to hold a process mid-run while another worker acts or the process is killed."""
    spec = os.environ.get("TOLLGATE_TEST_PAUSE", "")
    for item in filter(None, spec.split(",")):
        name, _, seconds = item.partition(":")
        if name.strip() == point:
            time.sleep(float(seconds or 1))
