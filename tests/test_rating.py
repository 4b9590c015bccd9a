"""Golden numbers of the rating engine: the worked examples of docs/rating.md, one line each.

Service 61400000003 is on plan P2 (card TB, 4 decimals, half up), has the bolt-on ROAM (card RC)
from 1 to 20 October, one override rate, a 12.5 % data discount, and its account a per-unit
discount from 26 October. Billing time zone UTC; 6 October 2026 is a public holiday.
"""

import datetime as dt
from decimal import Decimal

import pytest

from billing.models import (
    Discount,
    Holiday,
    Plan,
    Product,
    Rate,
    RateCard,
    Subscription,
    SubscriptionPeriod,
    TimeBand,
)
from usage.models import FileRecord

from .test_mediation import HEADER, outcome

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("both_gate_plans")]


def rate(card=None, service=None, usage_type="voice", prefix="", price="0.20", unit="minute", **extra):
    category = extra.pop("category", "telephony")
    return Rate.objects.create(
        rate_card=card,
        service=service,
        category=category,
        usage_type=usage_type,
        destination_prefix=prefix,
        unit=unit,
        price_per_unit=Decimal(price),
        **extra,
    )


@pytest.fixture
def priced(world, make_service):
    night = TimeBand.objects.create(code="NIGHT", name="Weeknights", days="12345", starts=dt.time(19), ends=dt.time(7))
    offpeak = TimeBand.objects.create(code="OFFPEAK", name="Weekends and holidays", days="67H")
    Holiday.objects.create(date=dt.date(2026, 10, 6), name="Test holiday")
    tb = RateCard.objects.create(code="TB", name="Banded", rounding_decimals=4)
    rate(
        tb,
        price="0.20",
        connect_fee=Decimal("0.10"),
        first_increment=60,
        increment=1,
        minimum_charge=Decimal("0.32"),
    )
    rate(tb, price="0.05", time_band=night)
    rate(tb, price="0.02", time_band=offpeak)
    rate(tb, usage_type="video", price="1.00", maximum_charge=Decimal("2.00"))
    rate(tb, usage_type="sms", unit="message", price="0.25", effective_to=dt.date(2026, 10, 14))
    rate(tb, usage_type="sms", unit="message", price="0.30", effective_from=dt.date(2026, 10, 15))
    rate(tb, category="data", usage_type="data", unit="mib", price="0.02", increment=1024)
    roam = RateCard.objects.create(code="RC", name="Roaming bolt-on card", rounding_decimals=4)
    rate(roam, prefix="44", price="0.15")

    s3 = make_service(identifier="61400000003", plan=False)
    Subscription.objects.create(
        service=s3, plan=Plan.objects.create(code="P2", name="Plan P2", rate_card=tb), starts_on=dt.date(2025, 1, 1)
    )
    bolt_on = Product.objects.create(code="ROAM", name="Roaming", kind="bolt_on", rate_card=roam)
    Subscription.objects.create(
        service=s3, product=bolt_on, starts_on=dt.date(2026, 10, 1), ends_on=dt.date(2026, 10, 20)
    )
    rate(service=s3, prefix="4412", price="0.01")
    SubscriptionPeriod.objects.create(service=s3, start_date=dt.date(2026, 10, 1), end_date=dt.date(2026, 10, 31))
    Discount.objects.create(
        service=s3, category="data", kind="percent", percent=Decimal("12.5"), effective_from=dt.date(2026, 10, 1)
    )
    Discount.objects.create(
        account=s3.account,
        kind="per_unit",
        amount_per_unit=Decimal("0.05"),
        effective_from=dt.date(2026, 10, 26),
    )
    collector = world["collector"]
    collector.category_rules = {
        **collector.category_rules,
        "video": "telephony",
        "ring": "telephony",
        "late": "telephony",
    }
    collector.save()
    return {**world, "s3": s3, "tb": tb}


# (record id, start, duration, volume, quantity, destination, usage type) -> (charge, tax)
EXAMPLES = [
    ("E1", "2026-10-05T10:00:00Z", 121, "", "", "300000", "voice", "0.5033", "0.0503"),
    ("E2", "2026-10-05T10:00:00Z", 5, "", "", "300000", "voice", "0.32", "0.032"),
    ("E3", "2026-10-05T19:00:00Z", 120, "", "", "300000", "voice", "0.1", "0.01"),
    ("E4", "2026-10-05T18:59:59Z", 120, "", "", "300000", "voice", "0.5", "0.05"),
    ("E5", "2026-10-06T03:00:00Z", 120, "", "", "300000", "voice", "0.04", "0.004"),
    ("E6", "2026-10-10T12:00:00Z", 60, "", "", "300000", "voice", "0.02", "0.002"),
    ("E7", "2026-10-05T10:00:00Z", 300, "", "", "300000", "video", "2", "0.2"),
    ("E8a", "2026-10-14T23:59:59Z", "", "", "", "", "sms", "0.25", "0.025"),
    ("E8b", "2026-10-15T00:00:00Z", "", "", "", "", "sms", "0.3", "0.03"),
    ("E9", "2026-10-05T10:00:00Z", 61, "", "", "4420000000", "voice", "0.1525", "0.0153"),
    ("E10", "2026-10-05T10:00:00Z", 61, "", "", "4412345678", "voice", "0.0102", "0.001"),
    ("E11", "2026-10-21T10:00:00Z", 61, "", "", "4420000000", "voice", "0.32", "0.032"),
    ("E12", "2026-10-05T10:00:00Z", "", 1048576, "", "", "data", "0.0175", "0.0018"),
    ("E13", "2026-10-26T10:00:00Z", 121, "", "", "300000", "voice", "0.4025", "0.0403"),
]


def test_worked_examples_of_the_rating_doc(priced, mediate):
    lines = [
        f"{rid},61400000003,{start},{duration},{volume},{qty},{dest},{usage_type},"
        for rid, start, duration, volume, qty, dest, usage_type, *_ in EXAMPLES
    ]
    received = mediate(HEADER + "\n".join(lines) + "\n")
    got = outcome(received)
    expected = {n: ("mediated", "", charge, tax) for n, (*_, charge, tax) in enumerate(EXAMPLES, start=2)}
    assert got == expected
    records = {r.record_id: r for r in received.records.all()}
    assert records["E1"].rated_quantity == 121 and records["E2"].rated_quantity == 60  # first increment 60
    assert records["E9"].rate.rate_card.code == "RC"  # bolt-on card beats the plan card
    assert records["E10"].rate.service_id == priced["s3"].pk  # the override beats the bolt-on
    assert records["E11"].rate.rate_card.code == "TB"  # the bolt-on has ended
    assert records["E12"].discount.percent == Decimal("12.5")
    assert records["E13"].discount.kind == "per_unit" and records["E1"].discount is None


@pytest.mark.parametrize(
    ("mode", "seconds", "charge"),
    [
        ("half_up", 91, "0.30"),  # 91/60 x 0.20 = 0.30333...
        ("up", 91, "0.31"),
        ("down", 91, "0.30"),
        ("half_up", 99, "0.33"),  # 0.33 exactly: no rounding in any mode
        ("down", 99, "0.33"),
        ("half_up", 93, "0.31"),  # 0.31 exactly
        ("down", 92, "0.30"),  # 0.30666...
        ("half_up", 92, "0.31"),
    ],
)
def test_rounding_modes_round_once(priced, mediate, mode, seconds, charge):
    card = RateCard.objects.create(code="R2", name="Two decimals", rounding_decimals=2, rounding_mode=mode)
    rate(card, usage_type="ring", price="0.20")
    service = priced["s3"]
    Subscription.objects.filter(service=service, plan__isnull=False).update(
        plan=Plan.objects.create(code="P3", name="Plan P3", rate_card=card)
    )
    received = mediate(HEADER + f"M1,61400000003,2026-10-05T10:00:00Z,{seconds},,,300000,ring,\n")
    (record,) = received.records.all()
    assert (record.status, record.charge) == ("mediated", Decimal(charge))


def test_a_rate_needs_a_matching_band_or_no_band(priced, mediate):
    """Only banded rates for a usage type and none covers the time: NO_RATE, with the date."""
    night = TimeBand.objects.get(code="NIGHT")
    rate(priced["tb"], usage_type="late", price="0.05", time_band=night)
    received = mediate(HEADER + "N1,61400000003,2026-10-05T12:00:00Z,60,,,300000,late,\n")
    (record,) = received.records.all()
    assert (record.status, record.reason) == ("quarantined", "NO_RATE")
    assert record.message == "No rate for telephony late to 300000 on 2026-10-05"


def test_rates_are_refused_when_inconsistent(priced):
    from django.core.exceptions import ValidationError

    bad = Rate(rate_card=priced["tb"], service=priced["s3"], category="telephony", unit="minute", price_per_unit=1)
    with pytest.raises(ValidationError, match="belongs to a rate card or"):
        bad.full_clean()
    capped = Rate(
        rate_card=priced["tb"],
        category="telephony",
        usage_type="x",
        unit="minute",
        price_per_unit=1,
        minimum_charge=Decimal("2"),
        maximum_charge=Decimal("1"),
    )
    with pytest.raises(ValidationError, match="maximum charge is below the minimum"):
        capped.full_clean()
    band = TimeBand(code="X", name="x", days="18")
    with pytest.raises(ValidationError, match="digits 1"):
        band.full_clean()


@pytest.mark.parametrize(
    "unit, increment, rated, charge",
    [
        # 1,048,577 B in 1 kB steps: 1,049,000 B = 1.049 MB × 0.02 = 0.02098 → 0.0210
        ("mb", 1000, 1_049_000, "0.021"),
        # in 1 KiB steps: 1,049,600 B = 1.0009765625 MiB × 0.02 = 0.02001953… → 0.0200
        ("mib", 1024, 1_049_600, "0.02"),
        # 1 GB steps: 1,000,000,000 B × 5 / GB = 5.0000; a GiB would be 1,073,741,824 B
        ("gb", 1_000_000_000, 1_000_000_000, "5"),
    ],
)
def test_decimal_and_binary_data_units_are_distinct(world, mediate, unit, increment, rated, charge):
    price = "5" if unit == "gb" else "0.02"
    rate(service=world["s2"], category="data", usage_type="data", unit=unit, price=price, increment=increment)
    mediate(HEADER + "U1,61400000002,2026-10-05T10:00:00Z,,1048577,,,data,\n")
    record = FileRecord.objects.get(record_id="U1")
    assert (record.status, record.rated_quantity, record.charge) == ("mediated", rated, Decimal(charge))


@pytest.mark.parametrize("volume_unit, read", [("kb", 3000), ("mb", 3_000_000), ("kib", 3072), ("mib", 3 * 1024**2)])
def test_a_collector_reads_volumes_in_decimal_or_binary_units(world, mediate, volume_unit, read):
    world["collector"].volume_unit = volume_unit
    world["collector"].save()
    mediate(HEADER + "U2,61400000002,2026-10-05T10:00:00Z,,3,,,data,\n")
    assert FileRecord.objects.get(record_id="U2").volume == read


def test_a_price_per_unit_keeps_ten_decimals(world, mediate):
    """0.0000012345 per kB, by the byte, rounded by the rate to 6 decimals: 1,048,577 B = 1,048.577 kB
    × 0.0000012345 = 0.0012944683… → 0.001294 (a price cut to 6 decimals would give 0.001049)."""
    rate(
        service=world["s2"],
        category="data",
        usage_type="data",
        unit="kb",
        price="0.0000012345",
        increment=1,
        rounding_decimals=6,
    )
    mediate(HEADER + "P1,61400000002,2026-10-05T10:00:00Z,,1048577,,,data,\n")
    record = FileRecord.objects.get(record_id="P1")
    assert record.rate.price_per_unit == Decimal("0.0000012345")
    assert (record.status, record.charge) == ("mediated", Decimal("0.001294"))


@pytest.mark.parametrize(
    "decimals, mode, charge, tax",
    [
        (None, "", "0.1667", "0.0167"),  # the card's: 4 decimals, half up; tax at the same decimals
        (2, "up", "0.17", "0.02"),  # the rate's own: 0.1666… up to 0.17; tax 0.017 → 0.02
        (2, "down", "0.16", "0.02"),  # tax 0.016 → 0.02 (tax rounds half up, at the rate's decimals)
        (0, "", "0", "0"),  # 0.1666… half up to a whole unit
    ],
)
def test_a_rate_rounds_by_its_own_decimals_and_mode_else_its_cards(world, mediate, decimals, mode, charge, tax):
    """100 s at 0.10 per minute, by the second: 0.1666…"""
    rate(service=world["s2"], price="0.10", increment=1, rounding_decimals=decimals, rounding_mode=mode)
    mediate(HEADER + "R1,61400000002,2026-10-05T10:00:00Z,100,,,612345,voice,\n")
    record = FileRecord.objects.get(record_id="R1")
    assert (record.status, record.charge, record.tax) == ("mediated", Decimal(charge), Decimal(tax))


@pytest.mark.parametrize(
    "seconds, rated, charge",
    [
        (1, 60, "0.1"),  # the first minute whole: 60 s x 0.10/min
        (60, 60, "0.1"),
        (61, 61, "0.1017"),  # then by the second: 60 s + 1 s at 0.10/min
        (125, 125, "0.2083"),
    ],
)
def test_a_tier_rounds_by_its_own_increment_first_minute_then_per_second(world, mediate, seconds, rated, charge):
    """BillRun's step intervals: 0.10 per minute, the first 60 s per minute, then per second."""
    from billing.models import RateTier

    voice = rate(service=world["s2"], price="0.10", increment=60, tier_mode="graduated")
    RateTier.objects.create(rate=voice, from_quantity=1, price_per_unit=Decimal("0.10"), increment=1)
    mediate(HEADER + f"I1,61400000002,2026-10-05T10:00:00Z,{seconds},,,612345,voice,\n")
    record = FileRecord.objects.get(record_id="I1")
    assert (record.status, record.rated_quantity, record.charge) == ("mediated", rated, Decimal(charge))


@pytest.mark.parametrize(
    "volume, rated",
    [
        (1, 1_000_000),  # 1 MB steps up to 1 GB
        (999_000_001, 1_000_000_000),
        (1_000_000_001, 1_010_000_000),  # then 10 MB steps
        (1_025_000_000, 1_030_000_000),
    ],
)
def test_data_in_1_mb_steps_up_to_1_gb_then_10_mb_steps(world, mediate, volume, rated):
    from billing.models import RateTier

    data = rate(
        service=world["s2"],
        category="data",
        usage_type="data",
        unit="gb",
        price="2",
        increment=1_000_000,
        tier_mode="graduated",
    )
    RateTier.objects.create(rate=data, from_quantity=1, price_per_unit=Decimal("1"), increment=10_000_000)
    mediate(HEADER + f"I2,61400000002,2026-10-05T10:00:00Z,,{volume},,,data,\n")
    record = FileRecord.objects.get(record_id="I2")
    below, above = min(rated, 10**9), max(rated - 10**9, 0)
    expected = (Decimal(below) * 2 + Decimal(above)) / 10**9  # 2.00/GB in the first GB, 1.00/GB above it
    assert (record.status, record.rated_quantity, record.charge) == (
        "mediated",
        rated,
        expected.quantize(Decimal("0.0001")),
    )


def test_a_tier_increment_needs_per_record_tiers_and_a_start_its_steps_divide(world):
    from django.core.exceptions import ValidationError

    from billing.models import RateTier

    voice = rate(service=world["s2"], price="0.10", increment=60, tier_mode="graduated", tier_scope="period")
    with pytest.raises(ValidationError, match="needs tiers counted per record"):
        RateTier(rate=voice, from_quantity=1, price_per_unit=Decimal("0.1"), increment=1).full_clean()
    voice.tier_scope = "record"
    voice.save()
    with pytest.raises(ValidationError, match="not a whole number of the 60-unit steps"):
        RateTier(rate=voice, from_quantity=Decimal("1.5"), price_per_unit=Decimal("0.1"), increment=1).full_clean()
    RateTier(rate=voice, from_quantity=2, price_per_unit=Decimal("0.1"), increment=1).full_clean()
