"""Metering as operators run it: schedules follow configuration, preview writes nothing, the
admin warns about streams slower than their meters, a killed execution reruns exactly once, and
the Inspect view in a real browser."""

import datetime as dt
import os
import signal
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings
from django_q.models import Schedule

from metering.models import GuidingRule, Meter, MeterType, Stream, StreamExecution
from metering.services import do_execute_stream, preview_rules

from .conftest import admin_login
from .test_metering import USAGE, lines, service_key, values
from .test_worker import database_url

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
UTC = dt.UTC


def voice_stream(code="VS", **fields):
    seconds, _ = MeterType.objects.get_or_create(
        code="SEC", defaults={"name": "Voice seconds", "aggregation": "sum", "field": "duration", "reset": "daily"}
    )
    stream = Stream.objects.create(code=code, name="Voice seconds per service", **fields)
    GuidingRule.objects.create(stream=stream, conditions=[["category", "=", "telephony"]], meter_type=seconds)
    return stream


@pytest.mark.django_db
def test_saving_a_stream_reschedules_it_and_deactivating_unschedules():
    stream = voice_stream(every_minutes=30)
    schedule = Schedule.objects.get(name=stream.schedule_name)
    assert (schedule.func, schedule.args, schedule.minutes) == ("metering.tasks.execute_stream", str(stream.pk), 30)
    stream.every_minutes = 5
    stream.save()
    assert Schedule.objects.get(name=stream.schedule_name).minutes == 5
    stream.mode = Stream.Mode.REALTIME
    stream.save()
    assert Schedule.objects.get(name=stream.schedule_name).minutes == 1  # the real-time period-end scan
    stream.is_active = False
    stream.save()
    assert not Schedule.objects.filter(name=stream.schedule_name).exists()
    stream.is_active = True
    stream.save()
    stream.delete()
    assert not Schedule.objects.filter(name__startswith="metering-stream-").exists()


@pytest.mark.django_db
def test_the_scheduled_task_executes_the_stream(world, mediate):
    from metering.tasks import execute_stream

    stream = voice_stream()
    mediate(lines(USAGE))
    assert execute_stream(stream.pk) == 6
    assert StreamExecution.objects.get(stream=stream).trigger == "schedule"
    assert values(stream)[("SEC", service_key(1))] == 210


@pytest.mark.django_db
def test_preview_shows_changes_and_writes_nothing(world, mediate):
    stream = voice_stream()
    mediate(lines(USAGE))
    do_execute_stream("test", stream, now=dt.datetime(2026, 10, 5, 12, tzinfo=UTC))
    before = values(stream)
    mediate(lines([("P1", "61400000002", "2026-10-05T12:00:00Z", 40, "", "300000", "voice")], "p"), name="p.csv")
    changes = preview_rules(stream, last=2, now=dt.datetime(2026, 10, 5, 13, tzinfo=UTC))
    b = service_key(2)
    # The last two mediated records: R6 (data, not guided) and P1.
    assert changes == [
        {"meter_type": "SEC", "key": b, "before": Decimal("300"), "after": Decimal("340"), "change": Decimal("40")}
    ]
    assert values(stream) == before
    assert Stream.objects.get(pk=stream.pk).watermark == stream.executions.get().to_record
    assert StreamExecution.objects.filter(stream=stream).count() == 1


@pytest.mark.django_db
def test_admin_warns_when_a_stream_runs_less_often_than_its_meters_reset(client, operator):
    hourly = MeterType.objects.create(code="HR", name="Hourly calls", aggregation="count", reset="hourly")
    client.force_login(operator)
    response = client.post(
        "/admin/metering/stream/add/",
        {
            "code": "SLOW",
            "name": "Slow",
            "mode": "batch",
            "flush": "period_end",
            "every_minutes": "120",
            "is_active": "on",
            "emit_usage_type": "",
            "rules-TOTAL_FORMS": "1",
            "rules-INITIAL_FORMS": "0",
            "rules-0-position": "1",
            "rules-0-conditions": "[]",
            "rules-0-meter_type": str(hourly.pk),
            "rules-0-key_fields": "service_id",
        },
        follow=True,
    )
    assert response.status_code == 200
    text = response.content.decode()
    assert "runs every 120 minutes but meter type HR resets every 60 minutes" in text
    stream = Stream.objects.get(code="SLOW")
    assert Schedule.objects.get(name=stream.schedule_name).minutes == 120
    # A real-time stream flushing by execution is refused with the reason, not a 500.
    response = client.post(
        f"/admin/metering/stream/{stream.pk}/change/",
        {
            "code": "SLOW",
            "name": "Slow",
            "mode": "realtime",
            "flush": "execution",
            "every_minutes": "120",
            "is_active": "on",
            "emit_usage_type": "",
            "rules-TOTAL_FORMS": "0",
            "rules-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 200
    assert "A real-time stream can only flush by period end." in response.content.decode()


@pytest.mark.django_db(transaction=True)
def test_an_execution_killed_mid_way_is_rerun_exactly_once(world, mediate):
    stream = voice_stream()
    mediate(lines(USAGE))
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "MEDIA_ROOT": str(settings.MEDIA_ROOT),
        "TOLLGATE_METERING_TEST_PAUSE": "60",
    }
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    victim = subprocess.Popen(
        [sys.executable, "manage.py", "execute_stream", stream.code],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert victim.stdout.readline().strip() == "guided"  # meters updated, not committed yet
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
    finally:
        if victim.poll() is None:
            victim.kill()
    assert not Meter.objects.exists()
    assert Stream.objects.get(pk=stream.pk).watermark == 0
    assert StreamExecution.objects.get(stream=stream).status == "running"  # left behind by the dead process

    rerun = subprocess.run(
        [sys.executable, "manage.py", "execute_stream", stream.code],
        cwd=ROOT,
        env={**env, "TOLLGATE_METERING_TEST_PAUSE": "0"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert rerun.returncode == 0, rerun.stderr
    assert "records=6 meters_updated=2" in rerun.stdout
    assert values(stream) == {("SEC", service_key(1)): 210, ("SEC", service_key(2)): 300}
    statuses = sorted(StreamExecution.objects.filter(stream=stream).values_list("status", "error"))
    assert statuses == [("completed", ""), ("failed", "Interrupted (the worker stopped).")]
    # And once more: nothing is counted twice.
    do_execute_stream("test", stream)
    assert values(stream) == {("SEC", service_key(1)): 210, ("SEC", service_key(2)): 300}


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_inspect_view_in_a_browser(live_server, page, operator, world, mediate):
    stream = voice_stream()
    mediate(lines(USAGE))
    do_execute_stream("test", stream, now=dt.datetime(2026, 10, 5, 12, tzinfo=UTC))
    ARTIFACTS.mkdir(exist_ok=True)
    admin_login(page, live_server.url)
    page.goto(f"{live_server.url}/admin/metering/stream/")
    page.click("text=Inspect")
    page.wait_for_selector("#meters")
    rows = page.locator("#meters tbody tr")
    assert rows.count() == 2
    assert "2026-10-05 00:00" in rows.first.inner_text() and "2026-10-06 00:00" in rows.first.inner_text()
    found = {row.locator("td").nth(1).inner_text(): row.locator("td.value").inner_text() for row in rows.all()}
    assert found == {"service TS00001": "210", "service TS00002": "300"}  # numbers, not database ids
    page.fill("input[name=key]", "TS00002")  # found by the service ID the operator knows
    page.click("#meter-filter input[type=submit]")
    page.wait_for_url("**key=*")
    assert page.locator("#meters tbody tr").count() == 1
    assert "completed" in page.locator("#executions").inner_text()
    page.screenshot(path=str(ARTIFACTS / "metering-inspect.png"), full_page=True)


@pytest.mark.django_db
def test_next_processor_sends_flushed_values_as_usage_to_a_collector(
    world, mediate, django_capture_on_commit_callbacks
):
    from usage.models import MediationFile, UsageRecord

    minutes = MeterType.objects.create(code="DAYSEC", name="Seconds a day", aggregation="sum", field="duration")
    stream = Stream.objects.create(
        code="DAILY",
        name="Daily voice total",
        flush=Stream.Flush.EXECUTION,
        emit_collector=world["collector"],
        emit_usage_type="voice",
    )
    GuidingRule.objects.create(
        stream=stream, conditions=[["category", "=", "telephony"]], meter_type=minutes, key_fields="identifier"
    )
    mediate(lines(USAGE))
    with django_capture_on_commit_callbacks(execute=True):
        execution = do_execute_stream("test", stream, now=dt.datetime(2026, 10, 5, 12, tzinfo=UTC))
    assert execution.flushed == 2
    emitted = MediationFile.objects.get(name=f"DAILY-execution-{execution.pk}.csv")
    assert (emitted.status, emitted.mediated) == ("completed", 2)
    totals = dict(UsageRecord.objects.filter(file=emitted).values_list("identifier", "duration"))
    assert totals == {"61400000001": 210, "61400000002": 300}
