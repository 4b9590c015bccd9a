"""Mediation through a real django-q2 cluster process, including one killed mid-file."""

import datetime as dt
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from usage import services
from usage.management.commands.make_usage_file import write_usage
from usage.models import FileRecord, MediationFile, UsageCollector

ROOT = Path(__file__).resolve().parent.parent


def database_url() -> str:
    db = connection.settings_dict
    if connection.vendor == "postgresql":
        return f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    return f"sqlite:///{db['NAME']}"


def start_cluster(batch: int = 200_000, **extra_env) -> subprocess.Popen:
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "MEDIA_ROOT": str(settings.MEDIA_ROOT),
        "Q_WORKERS": "2",
        "Q_SYNC": "0",
        "TOLLGATE_MEDIATION_BATCH": str(batch),
        "TOLLGATE_COLLECTOR_LEASE_SECONDS": "3",
        "LOG_LEVEL": "WARNING",
        **extra_env,
    }
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    return subprocess.Popen(
        [sys.executable, "manage.py", "qcluster"],
        cwd=ROOT,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def stop(cluster: subprocess.Popen, sig=signal.SIGTERM):
    if cluster.poll() is None:
        os.killpg(cluster.pid, sig)
        try:
            cluster.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(cluster.pid, signal.SIGKILL)
            cluster.wait()


def wait_for(condition, timeout=120, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def usage_file(records: int, seed: int) -> bytes:
    text = io.StringIO()
    write_usage(
        text,
        records,
        2,
        seed,
        dt.date(2026, 10, 1),
        dt.date(2026, 10, 31),
        0.04,
    )
    return text.getvalue().encode()


def outcome(mediation_file):
    return list(
        FileRecord.objects.filter(file=mediation_file)
        .order_by("line_no")
        .values_list("line_no", "status", "reason", "charge_micros", "tax_micros", "service_id", "period_id")
    )


def second_collector(world):
    first = world["collector"]
    return UsageCollector.objects.create(
        code="DEMO2",
        name="Second carrier",
        field_mapping=first.field_mapping,
        category_rules=first.category_rules,
        dedup_fields=first.dedup_fields,
    )


@pytest.mark.django_db(transaction=True)
def test_a_real_cluster_drains_collectors_in_parallel_each_in_order(world):
    other = second_collector(world)
    cluster = start_cluster(batch=500)
    try:
        a1 = services.do_receive_file("test", world["collector"], "a1.csv", io.BytesIO(usage_file(3000, 1)))
        a2 = services.do_receive_file("test", world["collector"], "a2.csv", io.BytesIO(usage_file(3000, 2)))
        b1 = services.do_receive_file("test", other, "b1.csv", io.BytesIO(usage_file(3000, 3)))
        wait_for(lambda: MediationFile.objects.filter(status="completed").count() == 3, what="three files")
    finally:
        stop(cluster)
    a1.refresh_from_db(), a2.refresh_from_db(), b1.refresh_from_db()
    assert a1.finished_at <= a2.started_at  # strictly in upload order within a collector
    for f in (a1, a2, b1):
        assert f.total_lines == 3000 and f.lines_done == 3000
        assert f.mediated > 2000  # the small world prices no feature or mms usage
        assert f.total_lines == f.mediated + f.quarantined + f.duplicates + f.rejected_lines


@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_file_resumes_to_the_same_outcome(world, monkeypatch):
    from django_q.conf import Conf

    content = usage_file(20000, 7)
    reference_collector = second_collector(world)
    # The uninterrupted run, in this process.
    monkeypatch.setattr(Conf, "SYNC", True)
    reference = services.do_receive_file("test", reference_collector, "ref.csv", io.BytesIO(content))
    reference.refresh_from_db()
    assert reference.status == "completed"

    monkeypatch.setattr(Conf, "SYNC", False)
    cluster = start_cluster(batch=1000)
    try:
        victim = services.do_receive_file("test", world["collector"], "victim.csv", io.BytesIO(content))
        wait_for(lambda: MediationFile.objects.get(pk=victim.pk).lines_done >= 3000, what="a few batches")
        stop(cluster, signal.SIGKILL)
    finally:
        stop(cluster, signal.SIGKILL)
    victim.refresh_from_db()
    assert victim.status == "processing" and 0 < victim.lines_done < 20000, victim.lines_done
    assert FileRecord.objects.filter(file=victim).count() == victim.lines_done  # whole batches only

    # The dead worker's claim on the collector lapses after the lease (3 s here).
    lease_end = UsageCollector.objects.get(pk=world["collector"].pk).lease_until
    assert lease_end is not None
    time.sleep(max(0.0, (lease_end - timezone.now()).total_seconds()) + 0.2)
    cluster = start_cluster(batch=1000)
    try:
        from usage.tasks import sweep_collectors

        assert sweep_collectors() == 1  # the periodic safety net re-enqueues the interrupted collector
        try:
            wait_for(
                lambda: MediationFile.objects.get(pk=victim.pk).status == "completed",
                timeout=60,
                what="the resumed file",
            )
        except AssertionError:
            stop(cluster)
            f = MediationFile.objects.get(pk=victim.pk)
            raise AssertionError(
                f"{f.status} {f.lines_done} {f.error} {cluster.stderr.read().decode()[-3000:]}"
            ) from None
    finally:
        stop(cluster)
    victim.refresh_from_db()
    assert victim.lines_done == 20000
    assert outcome(victim) == outcome(reference)
    assert (victim.mediated, victim.quarantined, victim.rejected_lines, victim.charge_micros, victim.tax_micros) == (
        reference.mediated,
        reference.quarantined,
        reference.rejected_lines,
        reference.charge_micros,
        reference.tax_micros,
    )


@pytest.mark.django_db(transaction=True)
def test_kill_loop_at_random_points_loses_and_doubles_nothing(world, monkeypatch):
    """kill -9 of a real worker at random points, again and again until the file completes; then
    every record is there once, with the outcome and sums of an uninterrupted run."""
    import random

    from django.db.models import Count, Sum
    from django_q.conf import Conf

    from usage.tasks import sweep_collectors

    content = usage_file(30000, 11)
    monkeypatch.setattr(Conf, "SYNC", True)
    reference = services.do_receive_file("test", second_collector(world), "ref.csv", io.BytesIO(content))
    reference.refresh_from_db()
    monkeypatch.setattr(Conf, "SYNC", False)
    victim = services.do_receive_file("test", world["collector"], "victim.csv", io.BytesIO(content))
    rng = random.Random(15)
    kills = interrupted = 0
    while MediationFile.objects.get(pk=victim.pk).status != "completed" and kills < 8:
        lease_end = UsageCollector.objects.get(pk=world["collector"].pk).lease_until
        if lease_end is not None:  # the killed worker's claim lapses after the lease (3 s here)
            time.sleep(max(0.0, (lease_end - timezone.now()).total_seconds()) + 0.2)
        before = MediationFile.objects.get(pk=victim.pk).lines_done
        cluster = start_cluster(batch=1000)
        sweep_collectors()
        if kills % 3 == 2:  # now and then while the file is still being staged, before any batch
            time.sleep(rng.uniform(0.1, 1.0))
        else:  # else at a random point after the worker committed another batch
            wait_for(
                lambda before=before: (
                    MediationFile.objects.get(pk=victim.pk).lines_done > before
                    or MediationFile.objects.get(pk=victim.pk).status == "completed"
                ),
                60,
                "another batch",
            )
            time.sleep(rng.uniform(0.0, 1.0))
        stop(cluster, signal.SIGKILL)
        kills += 1
        at_kill = MediationFile.objects.get(pk=victim.pk)
        interrupted += at_kill.status == "processing" and 0 < at_kill.lines_done < 30000
    if MediationFile.objects.get(pk=victim.pk).status != "completed":
        time.sleep(3.5)
        cluster = start_cluster(batch=1000)
        try:
            sweep_collectors()
            wait_for(lambda: MediationFile.objects.get(pk=victim.pk).status == "completed", 90, "the last resume")
        finally:
            stop(cluster)
    victim.refresh_from_db()
    per_line = FileRecord.objects.filter(file=victim).values("line_no").annotate(n=Count("id"))
    doubled = sum(row["n"] - 1 for row in per_line if row["n"] > 1)
    lost = reference.total_lines - per_line.count()
    mismatched = len(set(outcome(victim)) ^ set(outcome(reference)))
    sums = FileRecord.objects.filter(file=victim, status="mediated").aggregate(
        c=Sum("charge_micros"), t=Sum("tax_micros")
    )
    print(
        f"kill_loop kills={kills} mid_file={interrupted} records={victim.total_lines} lost={lost} doubled={doubled} "
        f"mismatched={mismatched} charge={sums['c']} reference_charge={reference.charge_micros}"
    )
    assert interrupted >= 2  # killed mid-file at least twice
    assert (lost, doubled, mismatched) == (0, 0, 0)
    assert (sums["c"], sums["t"]) == (reference.charge_micros, reference.tax_micros)
    assert (victim.mediated, victim.quarantined, victim.rejected_lines) == (
        reference.mediated,
        reference.quarantined,
        reference.rejected_lines,
    )


@pytest.mark.django_db(transaction=True)
def test_the_console_sees_the_batch_in_progress_before_it_commits(world, client, admin_user):
    """A batch's records count when it commits; meanwhile the run's step names the batch in progress,
    on the run and in Collector Activity History."""
    import re

    from console.models import ProcessKind, ProcessRun

    cluster = start_cluster(batch=1000, TOLLGATE_TEST_PAUSE="mediation commit:1.5")
    client.force_login(admin_user)
    seen = []
    try:
        received = services.do_receive_file("test", world["collector"], "big.csv", io.BytesIO(usage_file(3000, 4)))
        run = ProcessRun.objects.get(kind=ProcessKind.MEDIATION, subject=f"file:{received.pk}")

        def batch_two_shown():
            page = client.get(f"/console/collectors/{world['collector'].pk}/history/?fragment=1").content.decode()
            if "Batch 2 of 3 (records 1,001–2,000)" in page:
                seen.append(re.search(r'<td class="progress">([^<]*)<', page).group(1))
                return True
            return False

        wait_for(batch_two_shown, 90, "batch 2 to be shown in progress")
        wait_for(lambda: MediationFile.objects.get(pk=received.pk).status == "completed", 90, "the file")
    finally:
        stop(cluster)
    # Batch 2 is not committed yet; batch 1 is, or is being written (batches overlap on PostgreSQL).
    received.refresh_from_db()
    expected = f"{received.physical_lines:,}"  # the lines counted as the file was received
    assert seen[0] in (f"0 of {expected} (0%)", f"1,000 of {expected} (33%)"), seen[0]
    run.refresh_from_db()
    assert run.step == "" and run.records_done == 3000 and run.status == "completed"
