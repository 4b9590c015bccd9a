"""Reset schedule boundaries: month ends, weeks, cron, and days and hours around DST changes."""

import datetime as dt

import pytest

from metering.models import MeterType
from metering.schedules import period_containing

UTC = dt.UTC


def at(*args):
    return dt.datetime(*args, tzinfo=UTC)


def mt(reset, tz="UTC", cron=""):
    return MeterType(code="T", name="T", aggregation="count", reset=reset, time_zone=tz, cron=cron)


@pytest.mark.parametrize(
    ("reset", "tz", "instant", "start", "end"),
    [
        # Month ends, including February of a non-leap year and a leap year.
        ("monthly", "UTC", at(2026, 1, 31, 23, 59, 59), at(2026, 1, 1), at(2026, 2, 1)),
        ("monthly", "UTC", at(2026, 2, 1), at(2026, 2, 1), at(2026, 3, 1)),
        ("monthly", "UTC", at(2028, 2, 29, 12), at(2028, 2, 1), at(2028, 3, 1)),
        ("monthly", "UTC", at(2026, 12, 31, 12), at(2026, 12, 1), at(2027, 1, 1)),
        # Sydney's month starts at local midnight: 13:00 UTC the day before (UTC+11 in summer).
        ("monthly", "Australia/Sydney", at(2026, 10, 31, 13, 30), at(2026, 10, 31, 13), at(2026, 11, 30, 13)),
        ("monthly", "Australia/Sydney", at(2026, 10, 31, 12, 59), at(2026, 9, 30, 14), at(2026, 10, 31, 13)),
        # Sydney moves to DST on 4 October 2026 (02:00 -> 03:00): that day lasts 23 hours.
        ("daily", "Australia/Sydney", at(2026, 10, 4, 5), at(2026, 10, 3, 14), at(2026, 10, 4, 13)),
        # London leaves DST on 25 October 2026 (02:00 BST -> 01:00 GMT): a 25-hour day.
        ("daily", "Europe/London", at(2026, 10, 25, 12), at(2026, 10, 24, 23), at(2026, 10, 26, 0)),
        # The repeated hour 01:00-02:00 local on that day is two hourly periods.
        ("hourly", "Europe/London", at(2026, 10, 25, 0, 30), at(2026, 10, 25, 0), at(2026, 10, 25, 1)),
        ("hourly", "Europe/London", at(2026, 10, 25, 1, 30), at(2026, 10, 25, 1), at(2026, 10, 25, 2)),
        # India's offset is +05:30: local hours start at :30 UTC.
        ("hourly", "Asia/Kolkata", at(2026, 10, 5, 10, 10), at(2026, 10, 5, 9, 30), at(2026, 10, 5, 10, 30)),
        ("weekly", "UTC", at(2026, 10, 11, 23, 59), at(2026, 10, 5), at(2026, 10, 12)),  # Sunday: Monday's week
        ("weekly", "UTC", at(2026, 10, 12), at(2026, 10, 12), at(2026, 10, 19)),
        ("daily", "UTC", at(2026, 10, 5), at(2026, 10, 5), at(2026, 10, 6)),  # the boundary belongs to the new day
    ],
)
def test_period_containing(reset, tz, instant, start, end):
    assert period_containing(mt(reset, tz), instant) == (start, end)


def test_cron_periods_in_a_time_zone_across_dst():
    every_6am = mt("cron", "Europe/London", "0 6 * * *")
    # 06:00 BST is 05:00 UTC before the change, 06:00 GMT after it.
    assert period_containing(every_6am, at(2026, 10, 25, 3)) == (at(2026, 10, 24, 5), at(2026, 10, 25, 6))
    assert period_containing(every_6am, at(2026, 10, 25, 6)) == (at(2026, 10, 25, 6), at(2026, 10, 26, 6))
    quarter = mt("cron", "UTC", "*/15 * * * *")
    assert period_containing(quarter, at(2026, 10, 5, 10, 14, 59)) == (at(2026, 10, 5, 10), at(2026, 10, 5, 10, 15))
