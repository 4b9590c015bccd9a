"""Credits: negative usage from a carrier's refund or correction line (docs/rating.md, section 3).

Plan CR (card CR, 4 decimals): voice 0.10/min per second, data 0.02/MiB per KiB, and calls to 44
at 0.20/min per minute with a 0.10 connect fee and a 0.50 minimum; 10 voice minutes included.
Tax 10 %. A credit is priced as the same usage priced positively at the same rate, then negated;
it draws no allowance and gives none back."""

import datetime as dt
from decimal import Decimal

import pytest

from billing.models import IncludedValue, Plan, RateCard, Subscription, SubscriptionPeriod
from usage.models import FileRecord, PeriodCounter, QuarantinedRecord

from .test_allowances import usage_file
from .test_mediation import HEADER
from .test_rating import rate

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("both_gate_plans")]
MIB = 1024 * 1024

# record id: (start, seconds, bytes, destination, type) -> included, charge, tax
CREDITS = {
    "C1": ("2026-10-05T10:00:00Z", 300, "", "612345", "voice", 300, "0", "0"),  # in the 10 minutes
    "R1": ("2026-10-05T10:30:00Z", -120, "", "612345", "voice", 0, "-0.2", "-0.02"),  # no minutes given back
    "C2": ("2026-10-05T11:00:00Z", 400, "", "612345", "voice", 300, "0.1667", "0.0167"),  # 300 s were left
    "R2": ("2026-10-05T12:00:00Z", -30, "", "4420", "voice", 0, "-0.5", "-0.05"),  # 1 min x 0.20 + 0.10: the minimum
    "R3": ("2026-10-05T13:00:00Z", "", -MIB - 1, "", "data", 0, "-0.02", "-0.002"),  # 1 MiB + 1 KiB: 0.020019…
}


@pytest.fixture
def credits_plan(world, make_service):
    world["collector"].accept_negative = True
    world["collector"].save()
    card = RateCard.objects.create(code="CR", name="Credit card", rounding_decimals=4)
    rate(card, price="0.10")
    rate(card, category="data", usage_type="data", unit="mib", price="0.02", increment=1024)
    rate(
        card,
        prefix="44",
        price="0.20",
        increment=60,
        connect_fee=Decimal("0.10"),
        minimum_charge=Decimal("0.50"),
    )
    plan = Plan.objects.create(code="CR", name="Plan CR", rate_card=card)
    IncludedValue.objects.create(plan=plan, category="telephony", usage_type="voice", quantity=10, unit="minute")
    service = make_service(identifier="61400000030", plan=False)
    Subscription.objects.create(service=service, plan=plan, starts_on=dt.date(2025, 1, 1))
    SubscriptionPeriod.objects.create(service=service, start_date=dt.date(2026, 10, 1), end_date=dt.date(2026, 10, 31))
    return service


def test_a_credit_is_the_negation_of_the_same_usage_and_draws_no_allowance(credits_plan, mediate):
    received = mediate(usage_file("61400000030", [(r, CREDITS[r]) for r in ["R3", "C2", "R1", "R2", "C1"]]))
    assert received.mediated == 5
    records = {r.record_id: r for r in FileRecord.objects.filter(service=credits_plan)}
    got = {rid: (r.included_quantity, str(r.charge.normalize()), str(r.tax.normalize())) for rid, r in records.items()}
    assert got == {rid: tuple(v[5:]) for rid, v in CREDITS.items()}
    # Signed quantities: included + charged = rated, for credits too.
    assert [(records[r].rated_quantity, records[r].charged_quantity) for r in ("R1", "R2", "R3")] == [
        (-120, -120),
        (-60, -60),
        (-(MIB + 1024), -(MIB + 1024)),
    ]
    (minutes,) = IncludedValue.objects.filter(plan__code="CR")
    drawn = PeriodCounter.objects.get(period__service=credits_plan, kind="A", ref_id=minutes.pk).total
    assert drawn == 600  # C1 300 + C2 300; the credits took none and gave none back
    assert received.charge == Decimal("-0.5533")  # 0.1667 - 0.2 - 0.5 - 0.02


def test_milliseconds_of_a_credit_round_up_in_size_like_usage(credits_plan, mediate):
    from usage.models import UsageCollector

    collector = UsageCollector.objects.get(code="DEMO")
    collector.duration_unit = "ms"
    collector.fraction_rounding = "up"
    collector.save()
    mediate(HEADER + "M1,61400000030,2026-10-05T10:00:00Z,-1500,,,612345,voice,\n")
    assert FileRecord.objects.get(record_id="M1").duration == -2  # as 1,500 ms is 2 s


def test_a_collector_that_refuses_credits_says_so_per_line(credits_plan, mediate):
    from usage.models import QuarantinedRecord, UsageCollector

    UsageCollector.objects.filter(code="DEMO").update(accept_negative=False)
    received = mediate(HEADER + "N1,61400000030,2026-10-05T10:00:00Z,-60,,,612345,voice,\n")
    refused = QuarantinedRecord.objects.get(file=received, line_no=2)
    assert refused.reason == "PARSE_ERROR"
    assert refused.message == "Line 2: duration '-60' must not be negative (the collector does not accept credits)."


def test_credits_are_an_invoice_line_of_their_own(credits_plan, mediate):
    from billing import invoicing
    from billing.models import Charge, Invoice, TaxRule

    assert TaxRule.objects.filter(is_default=True).exists()
    mediate(usage_file("61400000030", [(r, CREDITS[r]) for r in CREDITS]))
    run = invoicing.request_main_billing("test", dt.date(2026, 10, 1))
    invoicing.execute_main_billing(run.pk)
    invoice = Invoice.objects.get(account=credits_plan.account, cycle_start=dt.date(2026, 10, 1))
    lines = {
        c.description: (c.records, c.rated_quantity, str(c.amount.normalize()))
        for c in invoice.charges.filter(kind=Charge.Kind.USAGE)
    }
    assert lines == {
        "Telephony: voice": (2, 700, "0.1667"),
        "Telephony: voice (credits)": (2, -180, "-0.7"),
        "Data: data (credits)": (1, -(MIB + 1024), "-0.02"),
    }
    others = sum(invoice.charges.exclude(kind=Charge.Kind.USAGE).values_list("amount_micros", flat=True))
    assert invoice.subtotal_micros == -553_300 + others


@pytest.mark.parametrize(
    "rounding, unit, written, expected",
    [
        ("up", "second", "1.2", 2),
        ("up", "second", "-1.2", -2),  # a credit's size rounds like usage
        ("nearest", "second", "1.4", 1),
        ("nearest", "second", "1.5", 2),
        ("nearest", "second", "-1.5", -2),
        ("up", "minute", "1.5", 90),  # the unit applies exactly: 1.5 minutes is 90 s, not 2 minutes
        ("nearest", "ms", "1499", 1),
        ("up", "ms", "1001", 2),
        ("refuse", "ms", "3000", 3),
        ("refuse", "minute", "0.25", 15),
    ],
)
def test_a_fraction_of_a_second_is_read_as_the_collector_says(credits_plan, mediate, rounding, unit, written, expected):
    from usage.models import UsageCollector

    UsageCollector.objects.filter(code="DEMO").update(duration_unit=unit, fraction_rounding=rounding)
    mediate(HEADER + f"F1,61400000030,2026-10-05T10:00:00Z,{written},,,612345,voice,\n")
    assert FileRecord.objects.get(record_id="F1").duration == expected


def test_fractional_volumes_are_exact_in_bytes_and_a_refused_fraction_names_the_field(credits_plan, mediate):
    from usage.models import UsageCollector

    UsageCollector.objects.filter(code="DEMO").update(volume_unit="mb", duration_unit="ms", fraction_rounding="refuse")
    received = mediate(
        HEADER
        + "V1,61400000030,2026-10-05T10:00:00Z,,1.5,,,data,\n"  # 1,500,000 bytes, not 2 MB
        + "V2,61400000030,2026-10-05T10:00:00Z,,0.0000005,,,data,\n"  # half a byte
        + "V3,61400000030,2026-10-05T10:00:00Z,1500,,,612345,voice,\n"  # 1.5 s
    )
    assert FileRecord.objects.get(file=received, line_no=2).volume == 1_500_000
    errors = dict(QuarantinedRecord.objects.filter(file=received).values_list("line_no", "message"))
    assert errors == {
        3: "Line 3: volume '0.0000005' is 0.5 bytes, not a whole number of bytes: the collector refuses fractions "
        "(its fraction rounding setting).",
        4: "Line 4: duration '1500' is 1.5 seconds, not a whole number of seconds: the collector refuses fractions "
        "(its fraction rounding setting).",
    }
