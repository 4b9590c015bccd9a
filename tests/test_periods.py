import datetime as dt
import zoneinfo

import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings

from billing import services
from billing.models import AuditEvent, SubscriptionPeriod

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "first,last,bill_day,expected",
    [
        ("2026-10-01", "2026-11-30", 1, [("2026-10-01", "2026-10-31"), ("2026-11-01", "2026-11-30")]),
        ("2026-10-20", "2026-10-20", 15, [("2026-10-15", "2026-11-14")]),
        ("2026-10-05", "2026-10-05", 15, [("2026-09-15", "2026-10-14")]),
        ("2026-12-20", "2027-01-20", 15, [("2026-12-15", "2027-01-14"), ("2027-01-15", "2027-02-14")]),
        ("2028-02-01", "2028-02-29", 1, [("2028-02-01", "2028-02-29")]),
    ],
)
def test_cycles_follow_the_bill_day(first, last, bill_day, expected):
    got = list(services.cycles_between(dt.date.fromisoformat(first), dt.date.fromisoformat(last), bill_day))
    assert got == [(dt.date.fromisoformat(a), dt.date.fromisoformat(b)) for a, b in expected]


def test_generation_is_idempotent_and_respects_existing_periods(make_service):
    a = make_service(bill_day=1)
    b = make_service(bill_day=15)
    make_service(status="cancelled")
    # A hand-made period on `a` covering part of October: October's cycle is left alone.
    SubscriptionPeriod.objects.create(service=a, start_date=dt.date(2026, 10, 10), end_date=dt.date(2026, 10, 20))
    created = services.do_generate_subscription_periods("test", start=dt.date(2026, 10, 1), end=dt.date(2026, 11, 30))
    # a: November only (2); b: Sep 15, Oct 15, Nov 15 cycles (3); cancelled: none.
    assert created == 1 + 3
    assert services.do_generate_subscription_periods("test", start=dt.date(2026, 10, 1), end=dt.date(2026, 11, 30)) == 0
    assert list(b.periods.values_list("start_date", "end_date")) == [
        (dt.date(2026, 9, 15), dt.date(2026, 10, 14)),
        (dt.date(2026, 10, 15), dt.date(2026, 11, 14)),
        (dt.date(2026, 11, 15), dt.date(2026, 12, 14)),
    ]
    assert AuditEvent.objects.filter(action="periods.generate").count() == 2


@override_settings(TIME_ZONE="Australia/Sydney")
def test_period_instants_are_the_days_in_the_billing_time_zone(make_service):
    svc = make_service()
    services.do_generate_subscription_periods("test", start=dt.date(2026, 10, 1), end=dt.date(2026, 10, 31))
    period = svc.periods.get()
    sydney = zoneinfo.ZoneInfo("Australia/Sydney")
    # Sydney moves to daylight time on 4 October 2026: +10:00 at the start, +11:00 at the end.
    assert period.starts_at == dt.datetime(2026, 10, 1, tzinfo=sydney)
    assert period.starts_at.astimezone(dt.UTC) == dt.datetime(2026, 9, 30, 14, tzinfo=dt.UTC)
    assert period.ends_at.astimezone(dt.UTC) == dt.datetime(2026, 10, 31, 13, tzinfo=dt.UTC)


def test_status_changes_and_invoiced_periods_stay_invoiced(make_service):
    svc = make_service()
    services.do_generate_subscription_periods("test", start=dt.date(2026, 10, 1), end=dt.date(2026, 11, 30))
    assert services.do_set_period_status("test", svc.periods.all(), "closed") == 2
    svc.periods.filter(start_date=dt.date(2026, 10, 1)).update(status="invoiced")
    with pytest.raises(Exception, match="Invoiced periods cannot be reopened"):
        services.do_set_period_status("test", svc.periods.all(), "open")


def test_generate_periods_command(make_service, capsys):
    svc = make_service()
    call_command("generate_periods", "--from", "2026-01-01", "--to", "2026-03-31", "--service", svc.service_id)
    assert "Generated 3 subscription periods" in capsys.readouterr().out
    with pytest.raises(CommandError, match="Unknown service ID"):
        call_command("generate_periods", "--from", "2026-01-01", "--to", "2026-01-31", "--service", "NOPE")
    with pytest.raises(CommandError, match="end date must not be before"):
        call_command("generate_periods", "--from", "2026-02-01", "--to", "2026-01-31")
