"""Fractional quantities kept exactly as received (docs/rating.md, section 2).

A collector reading fractions *exact* (the default for a new collector) keeps a duration, volume or
quantity to the thousandth of its base unit: 2.5 s stays 2.5 s, 1,500 ms is 1.5 s. Increments
apply to that exact value; sums over records (aggregate charges, meters) add the exact values.

Card EX (4 decimals): voice 0.06/min billed 30/6; voice to 99 at 0.10/min, the first 60 s per
minute, then per second (a tier of its own increment from 1 minute); data 0.02/MB per kB. No allowance, no tax
beyond the small world's default 10 %.
"""

import datetime as dt
from decimal import Decimal

import pytest

from billing.formatting import duration as shown_duration
from billing.models import AggregateCharge, Plan, RateCard, RateTier, Subscription, SubscriptionPeriod
from metering.models import GuidingRule, Meter, MeterType, Stream
from metering.services import do_execute_stream
from usage.models import FileRecord, QuarantinedRecord, UsageCollector

from .test_aggregates import saas  # noqa: F401 (a fixture)
from .test_mediation import HEADER
from .test_rating import rate

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("both_gate_plans")]
IDENT = "61400000040"


@pytest.fixture
def exact_plan(world, make_service):
    UsageCollector.objects.filter(code="DEMO").update(fraction_rounding="exact", accept_negative=True)
    card = RateCard.objects.create(code="EX", name="Exact card", rounding_decimals=4)
    rate(card, price="0.06", first_increment=30, increment=6)
    video = rate(card, prefix="99", price="0.10", first_increment=60, increment=60)
    RateTier.objects.create(rate=video, from_quantity=Decimal("1"), price_per_unit=Decimal("0.10"), increment=1)
    rate(card, category="data", usage_type="data", unit="mb", price="0.02", increment=1000)
    plan = Plan.objects.create(code="EX", name="Plan EX", rate_card=card)
    service = make_service(identifier=IDENT, plan=False)
    Subscription.objects.create(service=service, plan=plan, starts_on=dt.date(2025, 1, 1))
    SubscriptionPeriod.objects.create(service=service, start_date=dt.date(2026, 10, 1), end_date=dt.date(2026, 10, 31))
    return service


def line(rid, seconds="", volume="", kind="voice", destination="612345"):
    return f"{rid},{IDENT},2026-10-05T10:00:00Z,{seconds},{volume},,{destination},{kind},\n"


# record: (duration as written, kept, rated seconds, charge)
VOICE = {
    "A1": ("2.5", "2.5", 30, "0.03"),  # the first 30 s
    "A2": ("30.001", "30.001", 36, "0.036"),  # a thousandth past 30 s takes the next 6 s step
    "A3": ("59.999", "59.999", 60, "0.06"),
    "A4": ("-1.5", "-1.5", -30, "-0.03"),  # a credit: the same usage priced positively, negated
    "B1": ("60.4", "60.4", 61, "0.1017"),  # to 99: 60 s, then 0.4 s rounded up to the second: 61 x 0.10/60
}


def test_exact_quantities_are_kept_and_increments_apply_to_them(exact_plan, mediate):
    body = "".join(
        line(r, written, destination="99123" if r == "B1" else "612345") for r, (written, *_) in VOICE.items()
    )
    received = mediate(HEADER + body + line("D1", volume="1.0000005", kind="data"))
    assert received.mediated == len(VOICE)  # D1 is in bytes here: 1.0000005 B is finer than a thousandth
    records = {r.record_id or r.line_no: r for r in FileRecord.objects.filter(file=received)}
    got = {r: (str(records[r].duration.normalize()), records[r].rated_quantity, records[r].charge) for r in VOICE}
    assert got == {r: (kept, rated, Decimal(charge)) for r, (_, kept, rated, charge) in VOICE.items()}
    assert records[7].reason == "PARSE_ERROR"
    assert records[7].message == (
        "Line 7: volume '1.0000005' is 1.0000005 bytes, finer than the thousandth of a byte the collector keeps "
        "exactly (its fraction rounding setting)."
    )


def test_a_volume_in_mb_keeps_its_fraction_of_a_byte_and_milliseconds_stay_exact(exact_plan, mediate):
    UsageCollector.objects.filter(code="DEMO").update(volume_unit="mb", duration_unit="ms")
    received = mediate(
        HEADER
        + line("D1", volume="1.0000005", kind="data")  # 1,000,000.5 bytes
        + line("M1", seconds="1500")  # 1.5 s
        + line("M2", seconds="1500.5")  # 1.5005 s: finer than a millisecond
    )
    records = {r.record_id or r.line_no: r for r in FileRecord.objects.filter(file=received)}
    assert records["D1"].volume == Decimal("1000000.5")
    assert (records["D1"].rated_quantity, records["D1"].charge) == (1_001_000, Decimal("0.0200"))  # per kB
    assert (records["M1"].duration, records["M1"].rated_quantity) == (Decimal("1.5"), 30)
    assert records[4].message == (
        "Line 4: duration '1500.5' is 1.5005 seconds, finer than the thousandth of a second the collector keeps "
        "exactly (its fraction rounding setting)."
    )


def test_a_period_sum_adds_the_exact_values_not_rounded_ones(saas, mediate):  # noqa: F811
    from billing.aggregates import period_aggregates

    seconds = AggregateCharge.objects.create(
        plan=Plan.objects.get(code="API"),
        code="SECS",
        name="Compute seconds",
        aggregation="sum",
        field="duration",
        unit="second",
        usage_type="compute",
        charge_model="standard",
        price_per_unit=Decimal("0.01"),
    )
    period = SubscriptionPeriod.objects.get(service=saas)

    def metric(rounding, name):
        UsageCollector.objects.filter(code="DEMO").update(fraction_rounding=rounding)
        rows = [("2.5", "a"), ("2.5", "b"), ("0.001", "c")]
        mediate(
            HEADER + "".join(f"{name}{r},61400000077,2026-10-05T10:00:00Z,{s},,,,compute,\n" for s, r in rows),
            name=f"{name}.csv",
        )
        (charge,) = [a for a in period_aggregates([period.pk])[0] if a.charge.pk == seconds.pk]
        return charge.records, charge.priced.quantity, charge.priced.amount

    assert metric("exact", "E") == (3, Decimal("5.001"), Decimal("0.05001"))
    # The same usage read rounded up adds 3 + 3 + 1 s to the 5.001 s already there.
    assert metric("up", "U") == (6, Decimal("12.001"), Decimal("0.12001"))
    kept = FileRecord.objects.get(record_id="Ec")
    assert (kept.duration, kept.rated_quantity, kept.charge) == (Decimal("0.001"), Decimal("0.001"), 0)


def test_a_meter_sums_the_exact_values(exact_plan, mediate):
    seconds = MeterType.objects.create(code="SEC", name="Voice seconds", aggregation="sum", field="duration")
    stream = Stream.objects.create(code="S1", name="Voice")
    GuidingRule.objects.create(
        stream=stream, position=1, conditions=[["category", "=", "telephony"]], meter_type=seconds
    )
    mediate(HEADER + line("A1", "2.5") + line("A2", "0.125") + line("A3", "30.001"))
    do_execute_stream("test", stream, now=dt.datetime(2026, 10, 5, 12, tzinfo=dt.UTC))
    (meter,) = Meter.objects.filter(stream=stream)
    assert meter.value == Decimal("32.626")


def test_the_api_and_pages_show_the_exact_value(exact_plan, mediate, api):
    received = mediate(HEADER + line("A1", "2.5") + line("A2", "60"))
    reply = api.get("/api/v1/usage-records/", {"file": received.pk})
    assert reply.status_code == 200
    got = {
        r["record_id"]: (r["duration"], r["rated_quantity"], r["included_quantity"]) for r in reply.json()["results"]
    }
    assert got == {"A1": ("2.5", "30", "0"), "A2": ("60", "60", "0")}
    assert [shown_duration(Decimal(s)) for s in ("2.500", "60.000", "-1.5", "3723.004")] == [
        "0:00:02.5",
        "0:01:00",
        "-0:00:01.5",
        "1:02:03.004",
    ]


def test_a_record_refused_for_its_fraction_can_be_read_exactly_instead(exact_plan, mediate):
    UsageCollector.objects.filter(code="DEMO").update(fraction_rounding="refuse")
    refused = mediate(HEADER + line("A1", "2.5"))
    assert QuarantinedRecord.objects.get(file=refused).reason == "PARSE_ERROR"
    UsageCollector.objects.filter(code="DEMO").update(fraction_rounding="exact")
    kept = mediate(HEADER + line("A2", "2.5"), name="again.csv")
    assert FileRecord.objects.get(file=kept).duration == Decimal("2.5")


@pytest.fixture
def metered_energy(exact_plan):
    """On card EX: energy (misc, kWh as items) at 0.30 per item in steps of 0.001, tiered from 2.5
    items at 0.20 (graduated, per record); voice to 98 at 0.06/min per tenth of a second; 10 items
    of energy included."""
    from billing.models import IncludedValue

    card = RateCard.objects.get(code="EX")
    energy = rate(card, category="misc", usage_type="kwh", unit="each", price="0.30", increment=Decimal("0.001"))
    energy.tier_mode = "graduated"
    energy.save()
    RateTier.objects.create(rate=energy, from_quantity=Decimal("2.5"), price_per_unit=Decimal("0.20"))
    rate(card, prefix="98", price="0.06", increment=Decimal("0.1"))
    IncludedValue.objects.create(plan=card.plans.get(), category="misc", usage_type="kwh", quantity=10, unit="each")
    return exact_plan


def kwh(rid, quantity, at="2026-10-05T10:00:00Z"):
    return f"{rid},{IDENT},{at},,,{quantity},,kwh,\n"


def test_a_fractional_increment_rates_the_exact_value_in_its_steps(metered_energy, mediate):
    from usage.models import PeriodCounter

    received = mediate(
        HEADER
        + line("T1", "2.345", destination="98123")  # 2.4 s in tenths: 2.4 x 0.06/60 = 0.0024
        + kwh("K1", "7.6", "2026-10-05T10:00:00Z")  # all of it included
        + kwh("K2", "6.5", "2026-10-05T11:00:00Z")  # 2.4 included, 4.1 charged
        + kwh("K3", "0.125", "2026-10-05T12:00:00Z")  # nothing left included: 0.125 x 0.30
    )
    assert received.mediated == 4
    got = {
        r.record_id: (r.rated_quantity, r.included_quantity, r.charge) for r in FileRecord.objects.filter(file=received)
    }
    # K2's 4.1 charged items are priced per record from the first tier: 2.5 x 0.30 + 1.6 x 0.20.
    assert got == {
        "T1": (Decimal("2.4"), 0, Decimal("0.0024")),
        "K1": (Decimal("7.6"), Decimal("7.6"), 0),
        "K2": (Decimal("6.5"), Decimal("2.4"), Decimal("1.07")),
        "K3": (Decimal("0.125"), 0, Decimal("0.0375")),
    }
    (drawn,) = PeriodCounter.objects.filter(period__service=metered_energy, kind="A").values_list("total", flat=True)
    assert drawn == Decimal("10")


def test_period_tiers_count_exact_quantities_across_batches(metered_energy, mediate):
    from usage.models import PeriodCounter

    card = RateCard.objects.get(code="EX")
    gas = rate(card, category="misc", usage_type="gas", unit="each", price="0.30", increment=Decimal("0.001"))
    gas.tier_mode, gas.tier_scope = "graduated", "period"
    gas.save()
    RateTier.objects.create(rate=gas, from_quantity=Decimal("2.5"), price_per_unit=Decimal("0.20"))
    rows = [("G1", "1.5", "10"), ("G2", "1.5", "11"), ("G3", "1.5", "12"), ("G4", "0.001", "13")]
    received = mediate(
        HEADER
        + line("T0", "1")  # the small batch plan cuts the gas records in two batches
        + "".join(f"{rid},{IDENT},2026-10-05T{h}:00:00Z,,,{q},,gas,\n" for rid, q, h in rows)
    )
    charges = {r.record_id: r.charge for r in FileRecord.objects.filter(file=received, usage_type="gas")}
    # Positions in the period: [0, 1.5) at 0.30; [1.5, 3) half each side of 2.5; [3, 4.5) and on at 0.20.
    assert charges == {"G1": Decimal("0.45"), "G2": Decimal("0.40"), "G3": Decimal("0.30"), "G4": Decimal("0.0002")}
    tier = PeriodCounter.objects.get(period__service=metered_energy, kind="T", ref_id=gas.pk)
    assert tier.total == Decimal("4.501")
