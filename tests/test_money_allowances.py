"""Golden numbers for money allowances (docs/rating.md, section 5.3).

Service 61400000020 is on plan MON (card MON, 4 decimals: voice 0.10/min per second, data 0.02/MB
per KB) with 2 voice minutes and 0.50 of telephony included. Tax 10 %. The minutes are drawn first,
from the rated quantity; the money then covers what is left of each charge, in time order.
"""

import datetime as dt
from decimal import Decimal

import pytest

from billing.models import IncludedValue, Plan, RateCard, Subscription, SubscriptionPeriod
from usage.models import FileRecord, PeriodCounter
from usage.rebalance import do_rebalance

from .test_allowances import usage_file
from .test_rating import rate

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("both_gate_plans")]
MB = 1024 * 1024

# record id: (start, seconds, bytes, destination, type) -> charge before money, money covered, charge, tax
TIMELINE = {
    "M1": ("2026-10-05T10:00:00Z", 180, "", "612345", "voice"),  # 120 s included, 60 s = 0.10, all covered
    "M2": ("2026-10-05T11:00:00Z", 300, "", "612345", "voice"),  # 0.50: 0.40 covered, 0.10 charged
    "M3": ("2026-10-05T12:00:00Z", 60, "", "612345", "voice"),  # 0.10, the money is gone
    "M4": ("2026-10-05T13:00:00Z", "", MB, "", "data"),  # data: not covered by a telephony allowance
}
EXPECTED = {
    "M1": (120, Decimal("0.1"), Decimal("0"), Decimal("0")),
    "M2": (0, Decimal("0.4"), Decimal("0.1"), Decimal("0.01")),
    "M3": (0, Decimal("0"), Decimal("0.1"), Decimal("0.01")),
    "M4": (0, Decimal("0"), Decimal("0.02"), Decimal("0.002")),
}


@pytest.fixture
def money_plan(world, make_service):
    card = RateCard.objects.create(code="MON", name="Money allowance card", rounding_decimals=4)
    rate(card, price="0.10")
    rate(card, category="data", usage_type="data", unit="mib", price="0.02", increment=1024)
    plan = Plan.objects.create(code="MON", name="Plan MON", rate_card=card)
    minutes = IncludedValue.objects.create(
        plan=plan, category="telephony", usage_type="voice", quantity=2, unit="minute"
    )
    money = IncludedValue.objects.create(plan=plan, category="telephony", quantity=Decimal("0.50"), unit="money")

    def customer(identifier):
        service = make_service(identifier=identifier, plan=False)
        Subscription.objects.create(service=service, plan=plan, starts_on=dt.date(2025, 1, 1))
        SubscriptionPeriod.objects.create(
            service=service, start_date=dt.date(2026, 10, 1), end_date=dt.date(2026, 10, 31)
        )
        return service

    return {"customer": customer, "minutes": minutes, "money": money}


def outcome(service):
    return {
        r.record_id: (r.included_quantity, r.included_amount, r.charge, r.tax)
        for r in FileRecord.objects.filter(service=service, status="mediated")
    }


def test_money_allowance_covers_charges_in_time_order_after_minutes(money_plan, mediate):
    service = money_plan["customer"]("61400000020")
    received = mediate(usage_file("61400000020", [(r, TIMELINE[r]) for r in ["M3", "M4", "M2", "M1"]]))
    assert received.mediated == 4
    assert outcome(service) == EXPECTED
    by_id = {r.record_id: r for r in received.records.all()}
    assert by_id["M1"].allowance == money_plan["minutes"]  # first drawn: the minutes
    assert by_id["M2"].allowance == money_plan["money"]
    assert by_id["M3"].allowance is None
    totals = {c.ref_id: c.total for c in PeriodCounter.objects.filter(period__service=service)}
    assert totals == {money_plan["minutes"].pk: 120, money_plan["money"].pk: 500_000}  # micro-units
    assert received.charge == Decimal("0.22")


def test_rebalance_redistributes_money_allowance(money_plan, mediate):
    service = money_plan["customer"]("61400000021")
    mediate(usage_file("61400000021", [(r, TIMELINE[r]) for r in ["M2", "M3", "M4"]]))
    assert outcome(service)["M3"][1:3] == (Decimal("0.1"), Decimal("0"))  # 0.50 - 0.30 of M2
    mediate(usage_file("61400000021", [("M1", TIMELINE["M1"])]), name="late.csv")
    assert outcome(service)["M1"] == (0, Decimal("0.1"), Decimal("0.2"), Decimal("0.02"))  # 0.10 of money left

    result = do_rebalance("test", service.account, dt.date(2026, 10, 20))
    assert (result.records, result.changed) == (4, 3)  # M4 (data) keeps its charge
    assert (result.old_total, result.new_total) == (Decimal("0.22"), Decimal("0.22"))
    assert outcome(service) == EXPECTED
    totals = {c.ref_id: c.total for c in PeriodCounter.objects.filter(period__service=service)}
    assert totals == {money_plan["minutes"].pk: 120, money_plan["money"].pk: 500_000}


def test_money_allowance_in_admin_validation(money_plan):
    """The unit list of an allowance offers money; a rate's does not."""
    from billing.models import Rate

    assert "money" in dict(IncludedValue._meta.get_field("unit").choices)
    assert "money" not in dict(Rate._meta.get_field("unit").choices)
