"""Process Console: run bookkeeping, the figures it shows (records/second, ETA) against runs of
known sizes, and its pages."""

import datetime as dt
import socket

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils import timezone

from console import selectors, tracking
from console.models import ProcessKind, ProcessRun, RunStatus

NOW = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.UTC)


def at(seconds: float) -> dt.datetime:
    return NOW + dt.timedelta(seconds=seconds)


def make_run(kind=ProcessKind.MEDIATION, queue="collector:1", status=RunStatus.COMPLETED, **fields):
    n = ProcessRun.objects.count() + 1
    return ProcessRun.objects.create(
        kind=kind, subject=f"test:{n}", label=f"run {n}", queue=queue, status=status, **fields
    )


@pytest.mark.django_db
def test_records_per_second_and_eta_from_known_runs():
    # History: 10,000 records in 10 s and 30,000 in 20 s → 40,000 / 30 s = 1,333.3 records/s.
    make_run(records_done=10_000, created_at=at(-300), started_at=at(-300), finished_at=at(-290))
    make_run(records_done=30_000, created_at=at(-200), started_at=at(-200), finished_at=at(-180))
    # Now: one running (1,000 of 5,000 in 2 s: its own pace, 500/s) and two queued behind it.
    running = make_run(
        status=RunStatus.RUNNING, records_expected=5_000, records_done=1_000, created_at=at(-3), started_at=at(-2)
    )
    first = make_run(status=RunStatus.QUEUED, records_expected=4_000, created_at=at(-1))
    second = make_run(status=RunStatus.QUEUED, records_expected=2_000, created_at=at(-0.5))
    pace = selectors.recent_pace(ProcessKind.MEDIATION, "collector:1")
    assert round(pace.records_per_second, 1) == 1333.3
    assert pace.seconds_per_run == 15

    etas = {r.pk: r.eta for r in selectors.with_estimates([running, first, second], NOW)}
    assert etas[running.pk] == at(8)  # 4,000 left at 500/s
    assert etas[first.pk] == at(8 + 3)  # starts when the running one ends; 4,000 at 1,333.3/s
    assert etas[second.pk] == at(11 + 1.5)
    completed = ProcessRun.objects.filter(status="completed").order_by("started_at")
    assert [r.records_per_second for r in completed] == [1000, 1500]


@pytest.mark.django_db
def test_eta_without_a_size_uses_seconds_per_run_and_scheduled_runs_start_later():
    make_run(kind=ProcessKind.MAIN_BILLING, queue="", created_at=at(-100), started_at=at(-100), finished_at=at(-70))
    make_run(kind=ProcessKind.MAIN_BILLING, queue="", created_at=at(-60), started_at=at(-60), finished_at=at(-50))
    queued = make_run(kind=ProcessKind.MAIN_BILLING, queue="", status=RunStatus.QUEUED)
    scheduled = make_run(kind=ProcessKind.MAIN_BILLING, queue="", status=RunStatus.SCHEDULED, scheduled_for=at(3600))
    running = make_run(kind=ProcessKind.MAIN_BILLING, queue="", status=RunStatus.RUNNING, started_at=at(-5))
    etas = {r.pk: r.eta for r in selectors.with_estimates([queued, scheduled, running], NOW)}
    assert etas[queued.pk] == at(20)  # (30 s + 10 s) / 2 runs
    assert etas[scheduled.pk] == at(3620)
    assert etas[running.pk] == at(15)
    assert selectors.estimated_completion(queued, selectors.Pace(None, None), NOW) is None


@pytest.mark.django_db
def test_one_active_run_per_subject_claimed_once():
    run, created = tracking.queue_run("alice", ProcessKind.MAIN_BILLING, "cycle:x", "x")
    again, created_again = tracking.queue_run("bob", ProcessKind.MAIN_BILLING, "cycle:x", "x")
    assert created and not created_again and again.pk == run.pk
    assert tracking.start_run(run.pk).status == RunStatus.RUNNING
    assert tracking.start_run(run.pk) is None  # a second worker does not get it
    tracking.finish(run, RunStatus.COMPLETED)
    assert tracking.queue_run("bob", ProcessKind.MAIN_BILLING, "cycle:x", "x")[1]  # a new one may start


@pytest.mark.django_db
def test_runs_of_lost_workers_are_failed_and_can_be_retried(world):
    gone = make_run(
        kind=ProcessKind.METERING,
        status=RunStatus.RUNNING,
        worker=f"{socket.gethostname()}:999999999",
        lease_until=timezone.now() + dt.timedelta(days=1),
        params={"stream": 0},
    )
    lapsed = make_run(
        kind=ProcessKind.REBALANCE,
        status=RunStatus.RUNNING,
        worker="elsewhere:1",
        lease_until=timezone.now() - dt.timedelta(seconds=1),
    )
    alive = make_run(
        kind=ProcessKind.REPROCESS,
        status=RunStatus.RUNNING,
        worker=tracking.worker_name(),
        lease_until=timezone.now() + dt.timedelta(days=1),
    )
    assert tracking.reap_lost_runs() == 2
    statuses = dict(ProcessRun.objects.values_list("pk", "status"))
    assert statuses[gone.pk] == statuses[lapsed.pk] == RunStatus.FAILED and statuses[alive.pk] == RunStatus.RUNNING
    with pytest.raises(ValidationError, match="Only a failed run"):
        tracking.retry_run("test", alive)


@pytest.mark.django_db
def test_mediation_runs_count_lines_queue_and_complete(mediate):
    from .test_mediation import GOLDEN

    mediation_file = mediate(GOLDEN)
    run = ProcessRun.objects.get(kind=ProcessKind.MEDIATION, subject=f"file:{mediation_file.pk}")
    assert run.status == RunStatus.COMPLETED
    assert run.records_done == run.records_expected == 16  # data lines, counted as they were mediated
    assert run.queue == f"collector:{mediation_file.collector_id}" and run.started_at <= run.finished_at


@pytest.mark.django_db
@pytest.mark.parametrize("body, lines", [(b"h\na\nb\n", 3), (b"h\na\nb", 3), (b"", 0), (b"\n", 1)])
def test_a_received_files_expected_records_are_its_lines(world, body, lines):
    """Counted as the file arrives, before mediation: a last line without its newline counts once."""
    import io

    from usage import services

    received = services.do_receive_file("test", world["collector"], "f.csv", io.BytesIO(body), enqueue=False)
    run = ProcessRun.objects.get(kind=ProcessKind.MEDIATION, subject=f"file:{received.pk}")
    assert run.records_expected == lines and run.status == RunStatus.QUEUED


@pytest.mark.django_db
def test_cancel_only_before_start():
    run, _ = tracking.queue_run("test", ProcessKind.MAIN_BILLING, "cycle:y", "y")
    tracking.cancel_run("test", run)
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED and run.finished_at is not None
    with pytest.raises(ValidationError):
        tracking.cancel_run("test", run)


def test_console_pages_for_operator_and_viewer(client, operator, viewer, world, mediate, sync_tasks):
    from .test_mediation import GOLDEN

    mediate(GOLDEN)
    client.force_login(viewer)
    overview = client.get(reverse("console:overview")).content.decode()
    assert "Mediation File Processing" in overview and "Main Billing Processing" in overview
    assert "Run Main Billing" not in overview  # viewers look, operators act
    fragment = client.get(reverse("console:overview"), {"fragment": "1"}).content.decode()
    assert fragment.lstrip().startswith("<table") and "process-overview" in fragment
    history = client.get(reverse("console:process", args=["mediation"])).content.decode()
    assert 'id="throughput"' in history and history.count('class="bar"') == 1
    assert client.get(reverse("console:process", args=["nope"])).status_code == 404
    assert client.post(reverse("console:start_main_billing"), {"cycle_start": "2026-10-01"}).status_code == 403

    client.force_login(operator)
    response = client.post(reverse("console:start_main_billing"), {"cycle_start": "2026-10-01"}, follow=True)
    page = response.content.decode()
    assert "Main Billing for the cycle starting 2026-10-01" in page
    run = ProcessRun.objects.get(kind=ProcessKind.MAIN_BILLING)
    assert response.redirect_chain[-1][0] == reverse("console:run", args=[run.pk])
    bad = client.post(reverse("console:start_main_billing"), {"cycle_start": "2026-10-02"}, follow=True)
    assert "No subscription period starts on 2026-10-02" in bad.content.decode()
    assert client.post(reverse("console:run_retry", args=[run.pk]), follow=True).status_code == 200
    assert ProcessRun.objects.filter(retry_of=run).count() == 0  # only failed runs are retried


@pytest.mark.django_db
def test_a_waiting_run_cancelled_by_an_operator_stops_its_worker():
    run, _ = tracking.queue_run("test", ProcessKind.MAIN_BILLING, "cycle:z", "z")
    claimed = tracking.start_run(run.pk)
    tracking.renew(claimed, status=RunStatus.WAITING, waiting_for="Reprocess run 1")
    tracking.cancel_run("op", claimed)
    with pytest.raises(tracking.RunCancelled):
        tracking.renew(claimed)
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED


def test_a_queued_file_cannot_be_cancelled(world):
    run, _ = tracking.queue_run("test", ProcessKind.MEDIATION, "file:1", "DEMO #1", queue="collector:1")
    assert not run.can_cancel
    with pytest.raises(ValidationError, match="mediated in its turn"):
        tracking.cancel_run("test", run)


@pytest.mark.parametrize("count", [1, 2, 500])
def test_throughput_chart_axis_reads_with_one_run_or_hundreds(count):
    import datetime as dt

    from console.models import ProcessRun
    from console.selectors import throughput_chart

    start = timezone.make_aware(dt.datetime(2026, 11, 1))
    runs = [
        ProcessRun(
            pk=i + 1,
            status="completed",
            records_done=1000 * (i % 7 + 1),
            started_at=start + dt.timedelta(hours=i),
            finished_at=start + dt.timedelta(hours=i, seconds=10),
        )
        for i in range(count)
    ]
    chart = throughput_chart(runs)
    assert len(chart["bars"]) == count and chart["max"] == (700 if count >= 7 else 100 * count)
    assert all(0 < b["width"] <= 40 and 0 <= b["x"] and b["x"] + b["width"] <= chart["width"] for b in chart["bars"])
    labels = chart["labels"]
    assert 1 <= len(labels) <= 6 and labels[0]["run"] == "#1" and labels[-1]["run"] == f"#{count}"
    assert labels[0]["date"] == "11-01 00:00"
    assert all(0 <= label["x"] <= chart["width"] for label in labels)
