"""Stream execution (seed 003), set-based: a handful of statements per execution, whatever the
number of records or meters.

    1. flush and reset the meters whose period end has passed;
    2. guide the mediated records since the stream's watermark into meters (one aggregate, one upsert);
    3. flush by period end: scan again; flush by stream execution: flush and reset every meter.

Steps 1-3, the readings and the watermark commit together: an execution killed at any point
leaves nothing, and the next one processes the same records (exactly once per meter).
"""

import datetime as dt
import io
import time

from django.db import connection, transaction
from django.utils import timezone

from billing import audit
from console import tracking
from console.models import ProcessKind
from usage.store import USAGE_WRITE_LOCK

from .guiding import guided_input
from .models import Meter, MeterReading, MeterType, Stream, StreamExecution
from .schedules import period_containing

INPUT_TABLE = "metering_input"
DELTA_TABLE = "metering_delta"
PERIOD_TABLE = "metering_periods"
OF_METER = "p.meter_type_id = metering_meter.meter_type_id"


class StreamBusy(Exception):
    """Another execution of the stream holds its lock."""


def _db(value: dt.datetime):
    return connection.ops.adapt_datetimefield_value(value)


def high_mark(cursor) -> int:
    """The highest usage record id, taken while no mediation batch is inserting (PostgreSQL: they
    hold USAGE_WRITE_LOCK shared), so no record at or below it can commit later. SQLite has one writer."""
    if connection.vendor == "postgresql":
        cursor.execute("SELECT pg_advisory_lock(%s)", [USAGE_WRITE_LOCK])
        try:
            cursor.execute("SELECT COALESCE(MAX(id), 0) FROM usage_usagerecord")
            return cursor.fetchone()[0]
        finally:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [USAGE_WRITE_LOCK])
    cursor.execute("SELECT COALESCE(MAX(id), 0) FROM usage_usagerecord")
    return cursor.fetchone()[0]


def do_run_stream(actor, stream: Stream, *, trigger: str = "manual", now: dt.datetime | None = None, retry_of=None):
    """Execute the stream as a process run (seen in the Process Console); its execution row, with
    `.run`. Raises StreamBusy while another execution of the stream is running."""
    try:
        with tracking.tracked(
            actor,
            ProcessKind.METERING,
            f"stream:{stream.pk}",
            f"{stream.code} {stream.name}",
            params={"stream": stream.pk, "trigger": trigger},
            retry_of=retry_of,
        ) as run:
            execution = do_execute_stream(actor, stream, now=now, trigger=trigger)
            tracking.progress(run, execution.records, expected=execution.records)
    except tracking.RunBusy as exc:
        raise StreamBusy(f"Stream {stream.code} is already executing (run {exc.run.pk}).") from exc
    execution.run = run
    return execution


def retry_stream_run(actor, run):
    stream = Stream.objects.get(pk=run.params["stream"])
    return do_run_stream(actor, stream, trigger="retry", retry_of=run).run


def do_execute_stream(actor, stream: Stream, *, now: dt.datetime | None = None, trigger: str = "manual"):
    """Run the stream once; its execution row. Raises StreamBusy if it is already running."""
    now = now or timezone.now()
    started = time.monotonic()
    execution = StreamExecution.objects.create(stream=stream, trigger=trigger, started_at=now)
    try:
        with transaction.atomic():
            locked = Stream.objects.select_for_update(skip_locked=True).filter(pk=stream.pk).first()
            if locked is None:
                raise StreamBusy(f"Stream {stream.code} is already executing.")
            # Executions that were killed left their rows running: the lock says they are gone.
            StreamExecution.objects.filter(stream=locked, status=StreamExecution.Status.RUNNING).exclude(
                pk=execution.pk
            ).update(status=StreamExecution.Status.FAILED, error="Interrupted (the worker stopped).")
            counts = _execute(locked, execution, now)
            finished = now + dt.timedelta(seconds=time.monotonic() - started)
            StreamExecution.objects.filter(pk=execution.pk).update(
                status=StreamExecution.Status.COMPLETED, finished_at=finished, **counts
            )
            audit.record(
                actor, "metering.execute", locked, summary=f"{counts['records']} records", object_type="stream"
            )
    except StreamBusy as exc:
        StreamExecution.objects.filter(pk=execution.pk).update(
            status=StreamExecution.Status.FAILED, finished_at=timezone.now(), error=str(exc)
        )
        raise
    except Exception as exc:
        StreamExecution.objects.filter(pk=execution.pk).update(
            status=StreamExecution.Status.FAILED, finished_at=timezone.now(), error=f"{type(exc).__name__}: {exc}"
        )
        raise
    execution.refresh_from_db()
    return execution


def _execute(stream: Stream, execution: StreamExecution, now: dt.datetime) -> dict:
    rules = list(stream.rules.select_related("meter_type"))
    meter_types = {rule.meter_type_id: rule.meter_type for rule in rules}
    meter_types.update({m.pk: m for m in MeterType.objects.filter(meters__stream=stream).distinct()})
    flushed = flush_due(stream, execution, meter_types, now, due_only=True)
    with connection.cursor() as cursor:
        low, high = stream.watermark, high_mark(cursor)
        cursor.execute("SELECT COUNT(*) FROM usage_usagerecord WHERE id > %s AND id <= %s", [low, high])
        records = cursor.fetchone()[0]
        updates = guide(cursor, stream, rules, meter_types, low, high, now) if rules and high > low else 0
    flushed += flush_due(stream, execution, meter_types, now, due_only=stream.flush == Stream.Flush.PERIOD_END)
    Stream.objects.filter(pk=stream.pk).update(watermark=max(low, high))
    return {
        "from_record": low,
        "to_record": max(low, high),
        "records": records,
        "meter_updates": updates,
        "flushed": flushed,
    }


def _period_table(cursor, meter_types: dict, now: dt.datetime) -> None:
    cursor.execute(f"DROP TABLE IF EXISTS {PERIOD_TABLE}")
    cursor.execute(
        f"CREATE TEMP TABLE {PERIOD_TABLE} (meter_type_id BIGINT PRIMARY KEY, aggregation VARCHAR(8), "
        "period_start TIMESTAMP WITH TIME ZONE, period_end TIMESTAMP WITH TIME ZONE)"
        if connection.vendor == "postgresql"
        else f"CREATE TEMP TABLE {PERIOD_TABLE} (meter_type_id INTEGER PRIMARY KEY, aggregation TEXT, "
        "period_start TEXT, period_end TEXT)"
    )
    for meter_type in meter_types.values():
        start, end = period_containing(meter_type, now)
        cursor.execute(
            f"INSERT INTO {PERIOD_TABLE} VALUES (%s, %s, %s, %s)",
            [meter_type.pk, meter_type.aggregation, _db(start), _db(end)],
        )


def guide(cursor, stream, rules, meter_types, low: int, high: int, now: dt.datetime) -> int:
    """Add the records (low, high] to the stream's meters; the number of meters updated."""
    select, params = guided_input(rules, low, high)
    cursor.execute(f"DROP TABLE IF EXISTS {INPUT_TABLE}")
    cursor.execute(f"CREATE TEMP TABLE {INPUT_TABLE} AS {select}", params)
    cursor.execute(f"DROP TABLE IF EXISTS {DELTA_TABLE}")
    cursor.execute(
        f"CREATE TEMP TABLE {DELTA_TABLE} AS SELECT meter_type_id, meter_key, COUNT(*) AS n, SUM(num) AS total, "
        f"MAX(num) AS top, MAX(usage_at) AS last_at, CAST(NULL AS NUMERIC) AS latest FROM {INPUT_TABLE} "
        "GROUP BY meter_type_id, meter_key"
    )
    latest_types = [pk for pk, mt in meter_types.items() if mt.aggregation == MeterType.Aggregation.LATEST]
    if latest_types:
        cursor.execute(
            f"UPDATE {DELTA_TABLE} SET latest = (SELECT i.num FROM {INPUT_TABLE} i "
            f"WHERE i.meter_type_id = {DELTA_TABLE}.meter_type_id AND i.meter_key = {DELTA_TABLE}.meter_key "
            "ORDER BY i.usage_at DESC, i.record_id DESC LIMIT 1) "
            f"WHERE meter_type_id IN ({', '.join(str(pk) for pk in latest_types)})"
        )
    _period_table(cursor, meter_types, now)
    first_value = (
        "CASE p.aggregation WHEN 'sum' THEN d.total WHEN 'count' THEN d.n WHEN 'max' THEN d.top "
        "WHEN 'latest' THEN d.latest ELSE 0 END"
    )
    old = "metering_meter"
    aggregation = f"(SELECT aggregation FROM {PERIOD_TABLE} p WHERE {OF_METER})"
    combined = (
        f"CASE WHEN {old}.records = 0 THEN excluded.value "
        f"WHEN {aggregation} IN ('sum', 'count') THEN {old}.value + excluded.value "
        f"WHEN {aggregation} = 'max' THEN CASE WHEN excluded.value > {old}.value THEN excluded.value "
        f"ELSE {old}.value END WHEN {aggregation} = 'latest' THEN CASE WHEN excluded.latest_at >= {old}.latest_at "
        f"THEN excluded.value ELSE {old}.value END ELSE {old}.value END"
    )
    cursor.execute(
        "INSERT INTO metering_meter (stream_id, meter_type_id, key, period_start, period_end, value, latest_at, "
        "records, updated_at) "
        f"SELECT %s, d.meter_type_id, d.meter_key, p.period_start, p.period_end, COALESCE({first_value}, 0), "
        f"d.last_at, d.n, %s FROM {DELTA_TABLE} d JOIN {PERIOD_TABLE} p ON p.meter_type_id = d.meter_type_id "
        "WHERE 1 = 1 "  # SQLite: an upsert after INSERT … SELECT needs a WHERE
        f"ON CONFLICT (stream_id, meter_type_id, key) DO UPDATE SET value = {combined}, "
        f"latest_at = CASE WHEN {old}.latest_at IS NULL OR excluded.latest_at > {old}.latest_at "
        f"THEN excluded.latest_at ELSE {old}.latest_at END, "
        f"records = {old}.records + excluded.records, updated_at = excluded.updated_at",
        [stream.pk, _db(now)],
    )
    updated = cursor.rowcount
    unique_types = [pk for pk, mt in meter_types.items() if mt.aggregation == MeterType.Aggregation.UNIQUE]
    if unique_types:
        types = ", ".join(str(pk) for pk in unique_types)
        cursor.execute(
            "INSERT INTO metering_metervalue (meter_id, value) SELECT DISTINCT m.id, i.text FROM "
            f"{INPUT_TABLE} i JOIN metering_meter m ON m.stream_id = %s AND m.meter_type_id = i.meter_type_id "
            f"AND m.key = i.meter_key WHERE i.meter_type_id IN ({types}) AND i.text IS NOT NULL "
            "ON CONFLICT (meter_id, value) DO NOTHING",
            [stream.pk],
        )
        cursor.execute(
            "UPDATE metering_meter SET value = (SELECT COUNT(*) FROM metering_metervalue v "
            "WHERE v.meter_id = metering_meter.id) "
            f"WHERE stream_id = %s AND meter_type_id IN ({types}) AND updated_at = %s",
            [stream.pk, _db(now)],
        )
    cursor.execute(f"DROP TABLE {INPUT_TABLE}")
    cursor.execute(f"DROP TABLE {DELTA_TABLE}")
    return updated


def flush_due(stream, execution, meter_types: dict, now: dt.datetime, *, due_only: bool) -> int:
    """Flush the meters whose period has ended (or all, `due_only` False) to the next processor
    and start their new period; the number of readings. `meter_types` holds the type of every
    meter of the stream (the caller adds the types of meters whose rule is gone)."""
    with connection.cursor() as cursor:
        due = f"stream_id = %s{' AND period_end <= %s' if due_only else ''}"
        due_params = [stream.pk, _db(now)] if due_only else [stream.pk]
        cursor.execute(
            "INSERT INTO metering_meterreading (stream_id, meter_type_id, key, period_start, period_end, value, "
            "records, flushed_at, execution_id) SELECT stream_id, meter_type_id, key, period_start, "
            f"CASE WHEN period_end > %s THEN %s ELSE period_end END, value, records, %s, %s FROM metering_meter "
            f"WHERE {due} AND records > 0",
            [_db(now), _db(now), _db(now), execution.pk, *due_params],
        )
        flushed = cursor.rowcount
        cursor.execute(
            f"DELETE FROM metering_metervalue WHERE meter_id IN (SELECT id FROM metering_meter WHERE {due})", due_params
        )
        _period_table(cursor, meter_types, now)
        cursor.execute(
            "UPDATE metering_meter SET value = 0, records = 0, latest_at = NULL, last_flush_at = %s, "
            f"period_start = (SELECT period_start FROM {PERIOD_TABLE} p WHERE {OF_METER}), "
            f"period_end = (SELECT period_end FROM {PERIOD_TABLE} p WHERE {OF_METER}) "
            f"WHERE {due}",
            [_db(now), *due_params],
        )
    if flushed and stream.emit_collector_id:
        emit_readings(stream, execution)
    return flushed


def emit_readings(stream, execution) -> None:
    """Next processor: the execution's readings as a usage file on the stream's collector, mediated
    and rated like any other file (record id = stream code and reading id: a rerun cannot double it)."""
    from usage.services import do_receive_file

    lines = ["record_id,identifier,start_time,duration,volume,quantity,destination,usage_type,amount"]
    for reading in MeterReading.objects.filter(execution=execution).select_related("meter_type"):
        value = reading.value.normalize()
        column = reading.meter_type.field if reading.meter_type.field in ("duration", "volume") else "quantity"
        cells = {"duration": "", "volume": "", "quantity": ""}
        cells[column] = f"{value:f}"
        lines.append(
            f"{stream.code}-{reading.pk},{reading.key},{reading.period_start.isoformat()},{cells['duration']},"
            f"{cells['volume']},{cells['quantity']},,{stream.emit_usage_type},"
        )
    content = io.BytesIO(("\n".join(lines) + "\n").encode())
    do_receive_file(
        f"stream {stream.code}",
        stream.emit_collector,
        f"{stream.code}-execution-{execution.pk}.csv",
        content,
        via="metering",
    )


def sync_schedule(stream: Stream) -> None:
    """Keep the stream's django-q2 schedule in step with its configuration: saved streams are
    rescheduled at once (the seed asks operators to reschedule by hand); inactive ones are not run."""
    from django_q.models import Schedule

    if not stream.is_active:
        Schedule.objects.filter(name=stream.schedule_name).delete()
        return
    minutes = 1 if stream.mode == Stream.Mode.REALTIME else stream.every_minutes
    Schedule.objects.update_or_create(
        name=stream.schedule_name,
        defaults={
            "func": "metering.tasks.execute_stream",
            "args": str(stream.pk),
            "schedule_type": Schedule.MINUTES,
            "minutes": minutes,
            "repeats": -1,
            "next_run": timezone.now() + dt.timedelta(minutes=minutes),
        },
    )


def schedule_warnings(stream: Stream) -> list[str]:
    """Meter types of the stream that reset more often than the stream runs (their periods would
    be counted late and flushed late)."""
    from .schedules import shortest_period_minutes

    runs_every = 1 if stream.mode == Stream.Mode.REALTIME else stream.every_minutes
    warnings = []
    for meter_type in MeterType.objects.filter(rules__stream=stream).distinct():
        shortest = shortest_period_minutes(meter_type)
        if runs_every > shortest:
            warnings.append(
                f"Stream {stream.code} runs every {runs_every} minutes but meter type {meter_type.code} resets "
                f"every {shortest:g} minutes: run the stream at least as often as its meters reset."
            )
    return warnings


def preview_rules(stream: Stream, *, last: int = 100, now: dt.datetime | None = None) -> list[dict]:
    """What the stream's guiding rules would do with the last `last` mediated records: the meters
    that would change, before and after. Nothing is written (savepoint rolled back)."""
    now = now or timezone.now()
    rules = list(stream.rules.select_related("meter_type"))
    meter_types = {rule.meter_type_id: rule.meter_type for rule in rules}

    def current():
        return {
            (m.meter_type.code, m.key): m.value
            for m in Meter.objects.filter(stream=stream).select_related("meter_type")
        }

    with transaction.atomic():
        savepoint = transaction.savepoint()
        try:
            before = current()
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT COALESCE(MIN(id), 1) - 1, COALESCE(MAX(id), 0) FROM (SELECT id FROM usage_usagerecord "
                    "WHERE status = 'mediated' ORDER BY id DESC LIMIT %s) recent",
                    [last],
                )
                low, high = cursor.fetchone()
                if rules and high > low:
                    guide(cursor, stream, rules, meter_types, low, high, now)
            after = current()
        finally:
            transaction.savepoint_rollback(savepoint)
    changes = []
    for (code, key), value in sorted(after.items()):
        old = before.get((code, key))
        if old != value:
            changes.append(
                {"meter_type": code, "key": key, "before": old, "after": value, "change": value - (old or 0)}
            )
    return changes
