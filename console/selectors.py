"""Reads for the Process Console: runs with their estimated completion, per-process overview,
history throughput. The estimates are the console's figures, so they are computed here once."""

import datetime as dt
from dataclasses import dataclass, field

from django.utils import timezone

from .models import ACTIVE_STATUSES, ProcessKind, ProcessRun, RunStatus

HISTORY_SAMPLE = 20


@dataclass
class Pace:
    """How fast a process went lately: records/second and seconds per run of its last runs."""

    records_per_second: float | None
    seconds_per_run: float | None


def recent_pace(kind: str, queue: str = "") -> Pace:
    """From the last completed runs (of the same queue, if it has any): total records over total
    seconds, so a large run weighs more than a small one."""
    finished = ProcessRun.objects.filter(
        kind=kind, status=RunStatus.COMPLETED, started_at__isnull=False, finished_at__isnull=False
    ).order_by("-finished_at")
    sample = list(finished.filter(queue=queue)[:HISTORY_SAMPLE]) if queue else []
    sample = sample or list(finished[:HISTORY_SAMPLE])
    if not sample:
        return Pace(None, None)
    seconds = sum(r.seconds for r in sample)
    records = sum(r.records_done for r in sample)
    rate = records / seconds if seconds > 0 and records > 0 else None
    return Pace(rate, seconds / len(sample))


def remaining_records(run: ProcessRun) -> int | None:
    if run.records_expected is None:
        return None
    return max(run.records_expected - run.records_done, 0)


def estimated_completion(run: ProcessRun, pace: Pace, now: dt.datetime, start: dt.datetime | None = None):
    """When the run should finish. A running run: from its own progress (records done over the time
    so far). Otherwise from the process's recent records/second over the run's records, starting
    at `start` (when the run ahead of it in its queue should finish), its scheduled time, or now;
    from the recent seconds per run when its size is not known. None with nothing to go on."""
    if run.status in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED):
        return run.finished_at
    remaining = remaining_records(run)
    if run.status == RunStatus.RUNNING and run.started_at and run.records_done and remaining is not None:
        elapsed = (now - run.started_at).total_seconds()
        if elapsed > 0:
            return now + dt.timedelta(seconds=remaining * elapsed / run.records_done)
    start = max(start or now, now)
    if run.status == RunStatus.SCHEDULED and run.scheduled_for and run.scheduled_for > start:
        start = run.scheduled_for
    if remaining is not None and pace.records_per_second:
        return start + dt.timedelta(seconds=remaining / pace.records_per_second)
    if pace.seconds_per_run is not None:
        begun = run.started_at if run.status == RunStatus.RUNNING and run.started_at else start
        return max(begun + dt.timedelta(seconds=pace.seconds_per_run), now)
    return None


def queue_estimates(kind: str, queue: str, now: dt.datetime) -> dict[int, dt.datetime | None]:
    """ETAs of a queue's active runs, worked one after another: each starts when the one ahead ends."""
    pace = recent_pace(kind, queue)
    etas: dict[int, dt.datetime | None] = {}
    ahead_ends = None
    for run in ProcessRun.objects.filter(queue=queue, status__in=ACTIVE_STATUSES).order_by("created_at", "id"):
        etas[run.pk] = estimated_completion(run, pace, now, ahead_ends)
        ahead_ends = etas[run.pk] or ahead_ends
    return etas


def with_estimates(runs, now: dt.datetime | None = None) -> list[ProcessRun]:
    """The runs with `.eta` set."""
    now = now or timezone.now()
    runs = list(runs)
    paces: dict[str, Pace] = {}
    queued: dict[str, dict] = {}
    for run in runs:
        if run.queue and run.is_active:
            if run.queue not in queued:
                queued[run.queue] = queue_estimates(run.kind, run.queue, now)
            run.eta = queued[run.queue].get(run.pk)
            continue
        if run.kind not in paces:
            paces[run.kind] = recent_pace(run.kind)
        run.eta = estimated_completion(run, paces[run.kind], now)
    return runs


@dataclass
class ProcessSummary:
    kind: str
    label: str
    active: list = field(default_factory=list)
    queue_rows: int = 0
    scheduled_start: dt.datetime | None = None
    last: ProcessRun | None = None
    pace: Pace | None = None

    @property
    def state(self) -> str:
        statuses = {r.status for r in self.active}
        for status in (RunStatus.RUNNING, RunStatus.WAITING, RunStatus.QUEUED, RunStatus.SCHEDULED):
            if status in statuses:
                return RunStatus(status).label
        return "Idle"


def scheduled_starts() -> dict[str, dt.datetime]:
    """The next start of each process's django-q2 schedule."""
    from django_q.models import Schedule

    funcs = {
        "usage.tasks.sweep_collectors": ProcessKind.MEDIATION,
        "billing.tasks.bill_ended_cycles": ProcessKind.MAIN_BILLING,
        "billing.tasks.run_main_billing": ProcessKind.MAIN_BILLING,
        "metering.tasks.execute_stream": ProcessKind.METERING,
    }
    starts: dict[str, dt.datetime] = {}
    for func, next_run in Schedule.objects.filter(func__in=funcs, next_run__isnull=False).values_list(
        "func", "next_run"
    ):
        kind = funcs[func]
        if kind not in starts or next_run < starts[kind]:
            starts[kind] = next_run
    return starts


def process_overview(now: dt.datetime | None = None) -> list[ProcessSummary]:
    now = now or timezone.now()
    starts = scheduled_starts()
    active = with_estimates(
        ProcessRun.objects.filter(status__in=ACTIVE_STATUSES).order_by("created_at", "id")[:500], now
    )
    summaries = []
    for kind, label in ProcessKind.choices:
        mine = [r for r in active if r.kind == kind]
        scheduled = [r.scheduled_for for r in mine if r.status == RunStatus.SCHEDULED and r.scheduled_for]
        candidates = [*scheduled, *([starts[kind]] if kind in starts else [])]
        summaries.append(
            ProcessSummary(
                kind=kind,
                label=label,
                active=mine,
                queue_rows=sum(r.status != RunStatus.RUNNING for r in mine),
                scheduled_start=min(candidates) if candidates else None,
                last=ProcessRun.objects.filter(kind=kind, status__in=[RunStatus.COMPLETED, RunStatus.FAILED])
                .order_by("-finished_at")
                .first(),
                pace=recent_pace(kind),
            )
        )
    return summaries


def throughput_chart(runs, width: int = 720, height: int = 160, ticks: int = 6) -> dict:
    """Bars of records/second per finished run, oldest on the left, as SVG coordinates; under them
    up to `ticks` labels (run number and finish date) evenly spread, so the axis reads the same with
    one run or hundreds. A bar is at most 40 px wide: one run is a bar, not a wall."""
    runs = [r for r in runs if r.finished_at and r.records_per_second is not None]
    runs.sort(key=lambda r: r.finished_at)
    axis = 30  # px under the bars for the labels
    if not runs:
        return {"bars": [], "labels": [], "width": width, "height": height, "max": 0, "base": height - axis}
    top = max(r.records_per_second for r in runs) or 1
    slot = width / len(runs)
    bar_width = min(slot * 0.8, 40.0)
    base = height - axis
    bars = []
    for i, run in enumerate(runs):
        bar_height = max(1.0, (base - 16) * run.records_per_second / top)
        x = i * slot + (slot - bar_width) / 2
        bars.append(
            {
                "x": round(x, 1),
                "y": round(base - bar_height, 1),
                "width": round(bar_width, 1),
                "height": round(bar_height, 1),
                "run": run,
                "failed": run.status == RunStatus.FAILED,
            }
        )
    picked = sorted({round(k * (len(runs) - 1) / max(ticks - 1, 1)) for k in range(ticks)})
    labels = []
    for i in picked:
        centre = bars[i]["x"] + bars[i]["width"] / 2
        anchor = "start" if centre < 40 else "end" if centre > width - 40 else "middle"
        finished = timezone.localtime(runs[i].finished_at)
        labels.append(
            {"x": round(centre, 1), "anchor": anchor, "run": f"#{runs[i].pk}", "date": f"{finished:%m-%d %H:%M}"}
        )
    return {"bars": bars, "labels": labels, "width": width, "height": height, "max": top, "base": base}
