"""Metering streams (seed 003): aggregations, reset and flush, exactly once (docs/metering.md)."""

import datetime as dt
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from metering.models import GuidingRule, Meter, MeterReading, MeterType, Stream, StreamExecution
from metering.services import do_execute_stream

from .test_mediation import HEADER

pytestmark = pytest.mark.django_db
UTC = dt.UTC

# Service TS00001 (61400000001) and TS00002 (61400000002) of the small world; 5 October 2026.
USAGE = [
    ("R1", "61400000001", "2026-10-05T10:00:00Z", 60, "", "300000", "voice"),
    ("R2", "61400000001", "2026-10-05T10:05:00Z", 120, "", "300001", "voice"),
    ("R3", "61400000001", "2026-10-05T10:10:00Z", 30, "", "300000", "voice"),
    ("R4", "61400000002", "2026-10-05T10:00:00Z", 300, "", "300000", "voice"),
    ("R5", "61400000001", "2026-10-05T11:00:00Z", "", 2048, "", "data"),
    ("R6", "61400000001", "2026-10-05T09:00:00Z", "", 4096, "", "data"),
]


def lines(rows, suffix=""):
    body = [
        f"{rid}{suffix},{ident},{start},{sec},{vol},,{dest},{kind}," for rid, ident, start, sec, vol, dest, kind in rows
    ]
    return HEADER + "\n".join(body) + "\n"


@pytest.fixture
def metered(world, mediate):
    types = {
        "seconds": MeterType.objects.create(code="SEC", name="Voice seconds", aggregation="sum", field="duration"),
        "calls": MeterType.objects.create(code="CALLS", name="Calls", aggregation="count"),
        "longest": MeterType.objects.create(code="LONG", name="Longest call", aggregation="max", field="duration"),
        "numbers": MeterType.objects.create(
            code="DEST", name="Numbers called", aggregation="unique", field="destination"
        ),
        "last": MeterType.objects.create(code="LAST", name="Last data volume", aggregation="latest", field="volume"),
    }
    stream = Stream.objects.create(code="S1", name="Voice and data")
    voice = [["category", "=", "telephony"]]
    for n, key in enumerate(("seconds", "calls", "longest", "numbers"), 1):
        GuidingRule.objects.create(stream=stream, position=n, conditions=voice, meter_type=types[key])
    GuidingRule.objects.create(
        stream=stream, position=9, conditions=[["usage_type", "=", "data"]], meter_type=types["last"]
    )
    return {"types": types, "stream": stream, "mediate": mediate}


def values(stream):
    return {
        (m.meter_type.code, m.key): m.value.normalize()
        for m in Meter.objects.filter(stream=stream).select_related("meter_type")
    }


def service_key(n):
    from billing.models import ServiceIdentifier

    return str(ServiceIdentifier.objects.get(value=f"6140000000{n}").service_id)


def test_every_aggregation_set_based(metered):
    received = metered["mediate"](lines(USAGE))
    assert received.mediated == 6
    stream = metered["stream"]
    execution = do_execute_stream("test", stream, now=dt.datetime(2026, 10, 5, 12, tzinfo=UTC))
    a, b = service_key(1), service_key(2)
    assert values(stream) == {
        ("SEC", a): 210,
        ("SEC", b): 300,
        ("CALLS", a): 3,
        ("CALLS", b): 1,
        ("LONG", a): 120,
        ("LONG", b): 300,
        ("DEST", a): 2,
        ("DEST", b): 1,
        ("LAST", a): 2048,  # R5 (11:00) is later in usage time than R6 (09:00), whatever the file order
    }
    assert (execution.status, execution.records, execution.meter_updates, execution.flushed) == ("completed", 6, 9, 0)
    meter = Meter.objects.get(stream=stream, meter_type__code="SEC", key=a)
    assert (meter.period_start, meter.period_end) == (
        dt.datetime(2026, 10, 5, tzinfo=UTC),
        dt.datetime(2026, 10, 6, tzinfo=UTC),
    )
    # A second execution finds nothing new: every record counted once.
    again = do_execute_stream("test", stream, now=dt.datetime(2026, 10, 5, 13, tzinfo=UTC))
    assert (again.records, again.meter_updates) == (0, 0)
    assert values(stream)[("SEC", a)] == 210

    # New records add to the same period: sum adds, max keeps the larger, unique adds new numbers only.
    metered["mediate"](
        lines(
            [
                ("R7", "61400000001", "2026-10-05T12:30:00Z", 500, "", "300002", "voice"),
                ("R8", "61400000001", "2026-10-05T12:40:00Z", 10, "", "300000", "voice"),
            ],
            "b",
        ),
        name="b.csv",
    )
    do_execute_stream("test", stream, now=dt.datetime(2026, 10, 5, 14, tzinfo=UTC))
    after = values(stream)
    assert (after[("SEC", a)], after[("CALLS", a)], after[("LONG", a)], after[("DEST", a)]) == (720, 5, 500, 3)


def test_not_executed_nothing_moves_then_period_end_flushes_and_resets(metered):
    stream = metered["stream"]
    metered["mediate"](lines(USAGE))
    assert not Meter.objects.exists()  # mediation alone updates no meter
    do_execute_stream("test", stream, now=dt.datetime(2026, 10, 5, 12, tzinfo=UTC))
    assert MeterReading.objects.count() == 0
    metered["mediate"](
        lines([("R9", "61400000001", "2026-10-06T00:30:00Z", 45, "", "300009", "voice")], "c"), name="c.csv"
    )
    # The day has ended: first flush the old period and reset, then count the new input.
    second = do_execute_stream("test", stream, now=dt.datetime(2026, 10, 6, 1, tzinfo=UTC))
    assert second.flushed == 9
    a = service_key(1)
    reading = MeterReading.objects.get(meter_type__code="SEC", key=a)
    assert (reading.value, reading.period_start, reading.period_end) == (
        Decimal("210"),
        dt.datetime(2026, 10, 5, tzinfo=UTC),
        dt.datetime(2026, 10, 6, tzinfo=UTC),
    )
    assert reading.execution == second
    now = values(stream)
    assert (now[("SEC", a)], now[("CALLS", a)], now[("DEST", a)]) == (45, 1, 1)
    assert now[("SEC", service_key(2))] == 0  # reset, nothing new
    meter = Meter.objects.get(stream=stream, meter_type__code="SEC", key=a)
    assert meter.period_start == dt.datetime(2026, 10, 6, tzinfo=UTC) and meter.last_flush_at is not None


def test_flush_by_stream_execution_flushes_every_meter_each_run(metered):
    stream = metered["stream"]
    stream.flush = Stream.Flush.EXECUTION
    stream.save()
    metered["mediate"](lines(USAGE))
    first = do_execute_stream("test", stream, now=dt.datetime(2026, 10, 5, 12, tzinfo=UTC))
    assert first.flushed == 9
    reading = MeterReading.objects.get(meter_type__code="SEC", key=service_key(1))
    assert (reading.value, reading.period_end) == (Decimal("210"), dt.datetime(2026, 10, 5, 12, tzinfo=UTC))
    assert set(values(stream).values()) == {0}
    second = do_execute_stream("test", stream, now=dt.datetime(2026, 10, 5, 13, tzinfo=UTC))
    assert second.flushed == 0  # meters with nothing counted send no reading


def test_realtime_stream_only_flushes_by_period_end():
    stream = Stream(code="RT", name="Real-time", mode="realtime", flush="execution")
    with pytest.raises(ValidationError, match="real-time stream can only flush by period end"):
        stream.full_clean()
    with pytest.raises(IntegrityError), transaction.atomic():
        stream.save()


def test_guiding_rules_are_validated():
    meter_type = MeterType.objects.create(code="X", name="X", aggregation="count")
    stream = Stream.objects.create(code="V", name="V")
    for conditions, message in [
        ([["colour", "=", "red"]], "Unknown record field 'colour'"),
        ([["duration", "~", 1]], "unknown operator"),
        ([["duration", ">", "long"]], "duration is a number"),
        ([["category"]], "write \\[field, operator, value\\]"),
    ]:
        rule = GuidingRule(stream=stream, conditions=conditions, meter_type=meter_type)
        with pytest.raises(ValidationError, match=message):
            rule.full_clean()
    with pytest.raises(ValidationError, match="need a field"):
        MeterType(code="Y", name="Y", aggregation="sum").full_clean()


def test_prefix_in_and_compound_keys(metered):
    stream = Stream.objects.create(code="S2", name="Per destination")
    GuidingRule.objects.create(
        stream=stream,
        conditions=[
            ["destination", "prefix", "30000"],
            ["usage_type", "in", ["voice", "video"]],
            ["duration", ">=", 60],
        ],
        meter_type=metered["types"]["calls"],
        key_fields="service_id, destination",
    )
    metered["mediate"](lines(USAGE))
    do_execute_stream("test", stream, now=dt.datetime(2026, 10, 5, 12, tzinfo=UTC))
    a, b = service_key(1), service_key(2)
    assert values(stream) == {("CALLS", f"{a}:300000"): 1, ("CALLS", f"{a}:300001"): 1, ("CALLS", f"{b}:300000"): 1}
    assert StreamExecution.objects.filter(stream=stream, status="completed").count() == 1


def test_meter_keys_read_as_service_numbers_and_are_found_by_them(metered, client, viewer):
    from django.urls import reverse

    from metering.selectors import label_keys

    stream = Stream.objects.create(code="S3", name="Per destination")
    GuidingRule.objects.create(
        stream=stream, meter_type=metered["types"]["calls"], key_fields="service_id, destination"
    )
    metered["mediate"](lines(USAGE))
    do_execute_stream("test", stream, now=dt.datetime(2026, 10, 5, 12, tzinfo=UTC))
    shown = sorted(m.key_shown for m in label_keys(Meter.objects.filter(stream=stream)))
    assert shown == [
        "service TS00001 · destination (empty)",
        "service TS00001 · destination 300000",
        "service TS00001 · destination 300001",
        "service TS00002 · destination 300000",
    ]
    client.force_login(viewer)
    page = client.get(reverse("admin:metering_meter_changelist"), {"q": "TS00002"}).content.decode()
    assert "service TS00002 · destination 300000" in page and "TS00001" not in page
