"""One engine, three ways in: a generated usage set with every rating feature in play gives the same
records through the file path, the API path and reprocess, and again after a rebalance.

Features: plan and bolt-on minute allowances (one by zone), a money allowance, period-cumulative
graduated data tiers, a card that splits calls at time bands, a service override rate, a service
discount, late usage rolled into the next open period, in-file duplicates and bad lines."""

import datetime as dt
import logging
import random
from decimal import Decimal

import pytest

from billing.models import (
    DestinationZone,
    Discount,
    IncludedValue,
    Plan,
    Product,
    RateCard,
    RateTier,
    ServiceIdentifier,
    Subscription,
    SubscriptionPeriod,
    TimeBand,
    ZonePrefix,
)
from usage.models import FileRecord, QuarantinedRecord
from usage.rebalance import do_rebalance
from usage.services import do_reprocess_records

from .conftest import aware
from .test_allowances import MB, counters
from .test_api import ingest
from .test_mediation import HEADER
from .test_rating import rate

pytestmark = pytest.mark.django_db(transaction=False)


@pytest.fixture
def catalogue(world, make_service):
    europe = DestinationZone.objects.create(code="EU", name="Europe")
    ZonePrefix.objects.create(zone=europe, prefix="44")
    night = TimeBand.objects.create(code="NIGHT", name="Weeknights", days="12345", starts=dt.time(19), ends=dt.time(7))
    card = RateCard.objects.create(code="ALL", name="Every feature", rounding_decimals=4, split_time_bands=True)
    rate(card, price="0.20")
    rate(card, price="0.05", time_band=night)
    rate(card, prefix="44", price="0.60")
    data = rate(card, category="data", usage_type="data", unit="mib", price="0.02", increment=1024)
    data.tier_mode, data.tier_scope = "graduated", "period"
    data.save()
    RateTier.objects.create(rate=data, from_quantity=2, price_per_unit=Decimal("0.01"))
    plan = Plan.objects.create(code="ALL", name="Every feature", rate_card=card)
    IncludedValue.objects.create(plan=plan, category="telephony", usage_type="voice", quantity=5, unit="minute")
    IncludedValue.objects.create(plan=plan, category="telephony", quantity=Decimal("0.40"), unit="money")
    intl_card = RateCard.objects.create(code="ROAM", name="Europe bolt-on", rounding_decimals=4)
    rate(intl_card, price="0.30", zone=europe)
    roam = Product.objects.create(code="ROAM", name="Europe", kind="bolt_on", rate_card=intl_card)
    IncludedValue.objects.create(
        product=roam, category="telephony", usage_type="voice", zone=europe, quantity=3, unit="minute"
    )
    collector = world["collector"]
    collector.late_usage_policy = "roll_forward"
    collector.save()

    def customer(identifier, *, with_identifier=True):
        service = make_service(identifier=identifier if with_identifier else None, plan=False)
        Subscription.objects.create(service=service, plan=plan, starts_on=dt.date(2025, 1, 1))
        Subscription.objects.create(service=service, product=roam, starts_on=dt.date(2026, 10, 1))
        SubscriptionPeriod.objects.create(
            service=service, start_date=dt.date(2026, 9, 1), end_date=dt.date(2026, 9, 30), status="closed"
        )
        SubscriptionPeriod.objects.create(
            service=service, start_date=dt.date(2026, 10, 1), end_date=dt.date(2026, 10, 31)
        )
        rate(service=service, prefix="6199", price="0.01")  # the service's own price to 6199…
        Discount.objects.create(
            service=service, category="data", percent=Decimal("12.5"), effective_from=dt.date(2026, 1, 1)
        )
        return service

    return customer


def usage_rows(seed=16, count=90):
    """(record id, start, seconds, bytes, destination, type) in a shuffled order, with repeats and
    bad lines."""
    rng = random.Random(seed)
    rows = []
    for n in range(count):
        start = dt.datetime(2026, 10, 1, tzinfo=dt.UTC) + dt.timedelta(minutes=rng.randrange(0, 60 * 24 * 20))
        if n % 9 == 8:
            start = dt.datetime(2026, 9, 20, 18, tzinfo=dt.UTC)  # late: September is closed
        when = start.strftime("%Y-%m-%dT%H:%M:%SZ")
        if n % 4 == 3:
            rows.append((f"E{n}", when, "", str(rng.randrange(1, 3 * MB)), "", "data"))
        else:
            destination = rng.choice(["612345", "4420", "619912", "3312"])
            rows.append((f"E{n}", when, str(rng.randrange(1, 900)), "", destination, "voice"))
    rows.append(rows[5])  # a duplicate line
    rows.append(("E-bad", "2026-10-40T00:00:00Z", "60", "", "612345", "voice"))  # no such day
    return rows


def as_file(identifier, rows):
    lines = [
        f"{identifier[-1]}{rid},{identifier},{start},{sec},{vol},,{dest},{kind},"
        for rid, start, sec, vol, dest, kind in rows
    ]
    return HEADER + "\n".join(lines) + "\n"


def as_api(identifier, rows):
    names = HEADER.strip().split(",")[:8]
    return [
        {
            k: v
            for k, v in zip(names, (f"{identifier[-1]}{rid}", identifier, start, sec, vol, "", dest, kind), strict=True)
            if v != ""
        }
        for rid, start, sec, vol, dest, kind in rows
    ]


def records(service):
    """Every record of the service by record id (less the path's prefix) and status: what rating decided."""
    return {
        (r.record_id[1:], r.status): (
            r.reason,
            r.period.start_date if r.period else None,
            r.is_late,
            r.rate_id is not None,
            r.rated_quantity,
            r.included_quantity,
            r.included_micros,
            r.allowance_id,
            r.discount_id is not None,
            r.charge_micros,
            r.tax_micros,
        )
        for r in FileRecord.objects.filter(service=service)
    }


def test_file_api_and_reprocess_give_the_same_records_and_rebalance_keeps_them(catalogue, mediate, api, settings):
    rows = usage_rows()
    by_file, by_api, by_reprocess = (
        catalogue("61400000041"),
        catalogue("61400000042"),
        catalogue("61400000043", with_identifier=False),
    )
    settings.TOLLGATE_MEDIATION_BATCH = 17
    received = mediate(as_file("61400000041", rows), name="every-feature.csv")
    assert (received.rejected_lines, received.duplicates) == (1, 1)

    in_time = sorted(rows[:-2], key=lambda r: (r[1], r[0]))  # the API's batches arrive in time order
    for k in range(0, len(in_time), 25):
        reply = ingest(api, as_api("61400000042", in_time[k : k + 25]))
        assert reply.status_code == 201, reply.data

    mediate(as_file("61400000043", rows), name="before-the-identifier.csv")
    waiting = QuarantinedRecord.objects.filter(identifier="61400000043", reason="NO_SERVICE")
    assert waiting.count() == len(rows) - 2  # every record but the duplicate and the bad line
    ServiceIdentifier.objects.create(service=by_reprocess, value="61400000043", active_from=aware(2025, 1, 1))
    do_reprocess_records("test", waiting)

    mediated = {key: value for key, value in records(by_file).items() if key[1] == "mediated"}
    assert len(mediated) == len(rows) - 2
    assert sum(v[9] for v in mediated.values()) > 0 and sum(v[5] for v in mediated.values()) > 0
    assert any(v[2] for v in mediated.values()), "late usage rolled forward"
    assert any(v[6] for v in mediated.values()), "the money allowance covered something"
    assert records(by_api) == mediated
    assert {k: v for k, v in records(by_reprocess).items() if k[1] == "mediated"} == mediated
    assert counters(by_file) != {} and sorted(counters(by_file).values()) == sorted(counters(by_api).values())

    for service in (by_file, by_api, by_reprocess):
        result = do_rebalance("test", service.account, dt.date(2026, 10, 15))
        assert result.changed == 0, result.lines
    assert {k: v for k, v in records(by_file).items() if k[1] == "mediated"} == mediated


@pytest.mark.django_db(transaction=True)
def test_overlapped_batches_give_the_records_of_batches_one_by_one(catalogue, mediate, settings, monkeypatch, caplog):
    """PostgreSQL computes batch k+1 while batch k is written; a batch whose counters changed in the
    meantime is computed again under its locks, and the rest of its file goes one by one. Neither
    changes a record."""
    from django.db import connection

    from usage import store
    from usage.engine import timing

    if connection.vendor != "postgresql":
        pytest.skip("batches overlap on PostgreSQL only")
    rows = usage_rows()
    overlapped, stale, one_by_one = (catalogue(f"6140000005{n}") for n in range(3))
    settings.TOLLGATE_MEDIATION_BATCH = 7
    exported = timing.PHASES["export"]
    # Each commit waits a little: the next batch reads the counters before it, with its deltas in flight.
    monkeypatch.setenv("TOLLGATE_TEST_PAUSE", "mediation commit:0.2")
    caplog.set_level(logging.INFO, logger="usage.mediation")
    mediate(as_file("61400000050", rows), name="overlapped.csv")
    monkeypatch.delenv("TOLLGATE_TEST_PAUSE")
    assert timing.PHASES["export"] > exported, "the batches were prepared for a writer thread"
    assert "computed again" not in caplog.text, "each batch read the deltas of the batch in flight"

    checks = []
    unchanged = store.counters_unchanged

    def first_changed(connection, periods, path):
        checks.append(periods)
        return len(checks) > 1 and unchanged(connection, periods, path)

    monkeypatch.setattr(store, "counters_unchanged", first_changed)
    received = mediate(as_file("61400000051", rows), name="stale.csv")
    assert received.status == "completed" and received.lines_done == len(rows)
    # The changed batch is computed again under its locks; the rest of the file goes one by one.
    assert len(checks) == 1 and caplog.text.count("computed again") == 1
    monkeypatch.setattr(store, "counters_unchanged", unchanged)

    settings.TOLLGATE_MEDIATION_OVERLAP = False
    mediate(as_file("61400000052", rows), name="one-by-one.csv")
    expected = records(one_by_one)
    assert len(expected) == len(rows) - 1  # the bad line has no service
    assert sum(v[9] or 0 for v in expected.values()) > 0
    assert records(overlapped) == expected
    assert records(stale) == expected
    assert sorted(counters(overlapped).values()) == sorted(counters(one_by_one).values())
    assert sorted(counters(stale).values()) == sorted(counters(one_by_one).values())
