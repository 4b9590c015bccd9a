"""Reset schedules: the meter period containing an instant, in the meter type's time zone.

Periods are local calendar units (an hour, a day, a week from Monday, a month) or the span between
two firings of a cron expression; their ends are exact instants, so a day with a DST change lasts
23 or 25 hours.
"""

import datetime as dt
import zoneinfo

from croniter import croniter


def period_containing(meter_type, at: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) of the meter type's period that contains `at` (aware), as aware UTC instants."""
    tz = zoneinfo.ZoneInfo(meter_type.time_zone)
    local = at.astimezone(tz)
    kind = meter_type.reset
    if kind == "hourly":
        # Absolute hours: a repeated local hour at the end of DST is two periods.
        start = local.replace(minute=0, second=0, microsecond=0)
        start_utc = start.astimezone(dt.UTC)
        if start_utc > at:  # the fold's second hour maps back onto the first one
            start_utc -= dt.timedelta(hours=1)
        return start_utc, start_utc + dt.timedelta(hours=1)
    if kind == "cron":
        it = croniter(meter_type.cron, local + dt.timedelta(microseconds=1))
        start = it.get_prev(dt.datetime)
        end = croniter(meter_type.cron, start).get_next(dt.datetime)
        return start.astimezone(dt.UTC), end.astimezone(dt.UTC)
    day = local.date()
    if kind == "daily":
        first, after = day, day + dt.timedelta(days=1)
    elif kind == "weekly":
        first = day - dt.timedelta(days=day.weekday())
        after = first + dt.timedelta(days=7)
    elif kind == "monthly":
        first = day.replace(day=1)
        after = (first + dt.timedelta(days=32)).replace(day=1)
    else:
        raise ValueError(f"unknown reset schedule {kind!r}")
    return _local_midnight(first, tz), _local_midnight(after, tz)


def _local_midnight(day: dt.date, tz) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(0), tzinfo=tz).astimezone(dt.UTC)


def shortest_period_minutes(meter_type) -> float:
    """The shortest period the schedule can have, for the 'stream runs less often' warning."""
    if meter_type.reset == "cron":
        it = croniter(meter_type.cron, dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
        fires = [it.get_next(dt.datetime) for _ in range(50)]
        return min((b - a).total_seconds() / 60 for a, b in zip(fires, fires[1:], strict=False))
    return {"hourly": 60, "daily": 23 * 60, "weekly": 7 * 24 * 60 - 60, "monthly": 28 * 24 * 60 - 60}[meter_type.reset]
