"""Golden numbers for calls split at time bands (docs/rating.md, section 1, "Split at band edges").

Cards SPLIT (splits) and WHOLE (does not) have the same rates, 4 decimals, per second: voice
0.20/min, NIGHT (weekdays 19:00-07:00) 0.05/min, OFFPEAK (Saturday, Sunday, holidays) 0.02/min;
voice60 (60/60 increments) 0.20/min and 0.05/min at NIGHT. Time zone UTC; 5 October 2026 is a Monday.
Plan SPA is the SPLIT card with 60 voice seconds included.
"""

import datetime as dt
from decimal import Decimal

import pytest

from billing.models import IncludedValue, Plan, RateCard, Subscription, SubscriptionPeriod, TimeBand
from usage.models import FileRecord

from .test_mediation import HEADER
from .test_rating import rate

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("both_gate_plans")]

CALLS = [
    ("S1", "2026-10-05T18:58:00Z", 240, "voice"),  # 120 s peak, 120 s night
    ("S2", "2026-10-05T18:59:30Z", 61, "voice60"),  # rated 120: 30 s peak, 31 s + 59 s rounding night
    ("S3", "2026-10-09T23:59:00Z", 120, "voice"),  # Friday night 60 s, then Saturday 60 s off-peak
    ("S4", "2026-10-12T10:00:00Z", 60, "voice"),  # no edge crossed
]
EXPECTED = {
    "SP": {"S1": "0.5", "S2": "0.175", "S3": "0.07", "S4": "0.2"},
    "WH": {"S1": "0.8", "S2": "0.4", "S3": "0.1", "S4": "0.2"},
    # The 60 included seconds cover the start of S1 (peak): 60 s peak + 120 s night charged.
    "SPA": {"S1": "0.3", "S2": "0.175", "S3": "0.07", "S4": "0.2"},
}


@pytest.fixture
def banded(world, make_service):
    night = TimeBand.objects.create(code="NIGHT", name="Weeknights", days="12345", starts=dt.time(19), ends=dt.time(7))
    offpeak = TimeBand.objects.create(code="OFFPEAK", name="Weekends and holidays", days="67H")
    plans = {}
    for code, split in (("SPLIT", True), ("WHOLE", False)):
        card = RateCard.objects.create(code=code, name=code, rounding_decimals=4, split_time_bands=split)
        rate(card, price="0.20")
        rate(card, price="0.05", time_band=night)
        rate(card, price="0.02", time_band=offpeak)
        rate(card, usage_type="voice60", price="0.20", first_increment=60, increment=60)
        rate(card, usage_type="voice60", price="0.05", time_band=night, first_increment=60, increment=60)
        plans[code[:2]] = Plan.objects.create(code=code[:2], name=code, rate_card=card)
    plans["SPA"] = Plan.objects.create(code="SPA", name="Split with minutes", rate_card=plans["SP"].rate_card)
    IncludedValue.objects.create(
        plan=plans["SPA"], category="telephony", usage_type="voice", quantity=60, unit="second"
    )
    collector = world["collector"]
    collector.category_rules = {**collector.category_rules, "voice60": "telephony"}
    collector.save()
    services = {}
    for n, (code, plan) in enumerate(plans.items()):
        service = make_service(identifier=f"6140000003{n}", plan=False)
        Subscription.objects.create(service=service, plan=plan, starts_on=dt.date(2025, 1, 1))
        SubscriptionPeriod.objects.create(
            service=service, start_date=dt.date(2026, 10, 1), end_date=dt.date(2026, 10, 31)
        )
        services[code] = service
    return services


def test_calls_split_at_band_edges_on_a_splitting_card(banded, mediate):
    lines = [
        f"{rid}-{n},6140000003{n},{start},{seconds},,,300000,{usage_type},"
        for n in range(3)
        for rid, start, seconds, usage_type in CALLS
    ]
    received = mediate(HEADER + "\n".join(lines) + "\n")
    assert received.mediated == 12, list(FileRecord.objects.exclude(status="mediated").values_list("message"))
    for code, service in banded.items():
        charges = {r.record_id.split("-")[0]: r.charge for r in FileRecord.objects.filter(service=service)}
        assert charges == {rid: Decimal(charge) for rid, charge in EXPECTED[code].items()}, code
    s1 = FileRecord.objects.get(service=banded["SPA"], record_id="S1-2")
    assert (s1.included_quantity, s1.charged_quantity) == (60, 180)
    assert s1.rate.time_band is None  # the record keeps the rate of its start
