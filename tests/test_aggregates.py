"""Aggregate charges: a period's metric priced by a charge model (docs/rating.md, section 8).

The golden numbers are the worked examples of the peers' public documentation: Lago's charge-model
pages (graduated, volume, package, percentage, graduated percentage) and Kill Bill's tiered blocks
(ALL_TIERS and TOP_TIER). Each arrives as several records across the period, in more than one
file, and is priced once, at Main Billing."""

import datetime as dt
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from billing import invoicing
from billing.aggregates import PercentFees, period_aggregates, price
from billing.models import (
    AggregateCharge,
    AggregateTier,
    Charge,
    Invoice,
    Plan,
    Product,
    Subscription,
    SubscriptionPeriod,
)
from usage.models import FileRecord

from .test_mediation import HEADER

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("both_gate_plans")]
OCT = dt.date(2026, 10, 1)


def tiered(model, *tiers, **fields):
    """An unsaved charge and its tiers: (from, price, flat fee[, rate or block size])."""
    charge = AggregateCharge(code="X", name="X", charge_model=model, **fields)
    rows = []
    for start, unit_price, flat, *more in tiers:
        extra = {}
        if more and model == "graduated_percentage":
            extra["rate"] = Decimal(more[0])
        elif more:
            extra["block_size"] = Decimal(more[0])
        rows.append(
            AggregateTier(
                from_quantity=Decimal(start), price_per_unit=Decimal(unit_price), flat_fee=Decimal(flat), **extra
            )
        )
    return charge, rows


def amount(model, quantity, *tiers, **fields):
    charge, rows = tiered(model, *tiers, **fields)
    return price(charge, rows, Decimal(quantity)).amount


LAGO_GRADUATED = (("0", "1", "0"), ("100", "0.50", "0"), ("200", "0.10", "0"))
LAGO_VOLUME = (("0", "0.001", "10"), ("10000", "0.0008", "10"), ("50000", "0.0006", "10"), ("100000", "0.0004", "10"))
LAGO_GRADUATED_PERCENT = (("0", "0", "200", "1"), ("1000", "0", "300", "2"), ("10000", "0", "400", "3"))
# Kill Bill: blocks of 100 units, $1 a block up to 1,000 units, then $0.50 a block.
KILL_BILL_BLOCKS = (("0", "1", "0", "100"), ("1000", "0.50", "0", "100"))


@pytest.mark.parametrize(
    "model, quantity, tiers, expected",
    [
        ("graduated", "250", LAGO_GRADUATED, "155"),  # 100 x 1 + 100 x 0.50 + 50 x 0.10
        ("graduated", "100", LAGO_GRADUATED, "100"),  # the 100th unit is still the first tier's
        ("graduated", "0", LAGO_GRADUATED, "0"),
        ("volume", "65000", LAGO_VOLUME, "49"),  # Lago: 65,000 x 0.0006 + 10
        ("volume", "10000", LAGO_VOLUME, "20"),  # the first tier holds its last unit
        ("volume", "10001", LAGO_VOLUME, "18.0008"),
        ("graduated_percentage", "500", LAGO_GRADUATED_PERCENT, "205"),  # Lago's first transaction alone
        ("graduated_percentage", "5050", LAGO_GRADUATED_PERCENT, "591"),  # 205 + 306 + 80
        ("graduated", "1250", KILL_BILL_BLOCKS, "11.5"),  # ALL_TIERS: 10 blocks x 1 + 3 blocks x 0.50
        ("volume", "1250", KILL_BILL_BLOCKS, "6.5"),  # TOP_TIER: 13 blocks x 0.50
    ],
)
def test_the_charge_models_price_the_peers_worked_examples(model, quantity, tiers, expected):
    assert amount(model, quantity, *tiers) == Decimal(expected)


def test_a_graduated_tier_flat_fee_is_charged_once_the_tier_is_entered():
    tiers = (("0", "1", "5"), ("100", "0.50", "7"))
    assert amount("graduated", "100", *tiers) == Decimal("105")
    assert amount("graduated", "101", *tiers) == Decimal("112.5")


def test_units_below_the_first_tier_are_free():
    assert amount("graduated", "150", ("100", "0.20", "0")) == Decimal("10")
    assert amount("volume", "80", ("100", "0.20", "1")) == Decimal("0")


def test_package_after_free_units_counts_started_packages():
    fields = {"price_per_unit": Decimal("5"), "package_size": Decimal("100"), "free_units": Decimal("100")}
    assert amount("package", "201", **fields) == Decimal("10")  # Lago: 101 billable units, 2 packages
    assert amount("package", "100", **fields) == Decimal("0")
    assert amount("package", "300", **fields) == Decimal("10")


def test_standard_prices_every_unit_and_a_negative_total_is_a_credit():
    fields = {"price_per_unit": Decimal("0.0125")}
    assert amount("standard", "3.5", **fields) == Decimal("0.04375")
    assert amount("standard", "-2", **fields) == Decimal("-0.025")
    assert amount("graduated", "-2", *LAGO_GRADUATED) == Decimal("0")


def test_a_percentage_adds_its_parts_exactly():
    charge = AggregateCharge(charge_model="percentage", rate=Decimal("1.2"), fixed_fee=Decimal("0.1"))
    fees = PercentFees(events=3, charged_micros=1_000_000_000, rate_part=12 * 10**14, fixed_part=3 * 10**13)
    priced = price(charge, [], Decimal("1000"), fees)
    assert priced.amount == Decimal("12.3")
    assert [p["amount"] for p in priced.breakdown] == ["12", "0.3"]


def test_an_aggregate_charge_is_validated_before_it_is_saved():
    plan = Plan.objects.create(code="V", name="V")
    with pytest.raises(ValidationError, match="price it in"):
        AggregateCharge(plan=plan, code="V1", name="V", aggregation="sum", field="duration", unit="mib").full_clean()
    with pytest.raises(ValidationError, match="percentage is of an amount"):
        AggregateCharge(plan=plan, code="V2", name="V", charge_model="percentage", rate=1).full_clean()
    with pytest.raises(IntegrityError, match="billing_aggregate_field_needed"), transaction.atomic():
        AggregateCharge.objects.create(plan=plan, code="V3", name="V", aggregation="sum", field="")
    AggregateCharge(plan=plan, code="V4", name="V", aggregation="sum", field="duration", unit="minute").full_clean()


# --- Through mediation and Main Billing ---------------------------------------------------------


@pytest.fixture
def saas(world, make_service):
    """Plan API (no rate card, no fee): API calls priced graduated (Lago's tiers), and a product
    "Payments" taking Lago's percentage of each transaction's amount: 1.2 % + 0.10 per transaction,
    the first 2 transactions without the fee and the first 100.00 without the rate, each fee
    within 0.20 to 5.00."""
    plan = Plan.objects.create(code="API", name="API plan")
    calls = AggregateCharge.objects.create(
        plan=plan, code="CALLS", name="API calls", charge_model="graduated", usage_type="api_call"
    )
    for start, unit_price, flat in LAGO_GRADUATED:
        AggregateTier.objects.create(
            charge=calls, from_quantity=Decimal(start), price_per_unit=Decimal(unit_price), flat_fee=Decimal(flat)
        )
    payments = Product.objects.create(code="PAY", name="Payments", kind="feature")
    AggregateCharge.objects.create(
        product=payments,
        code="TXN",
        name="Transactions",
        aggregation="sum",
        field="amount_micros",
        unit="money",
        usage_type="payment",
        charge_model="percentage",
        rate=Decimal("1.2"),
        fixed_fee=Decimal("0.10"),
        free_events=2,
        free_amount=Decimal("100"),
        minimum_per_event=Decimal("0.20"),
        maximum_per_event=Decimal("5"),
    )
    service = make_service(identifier="61400000077", plan=False)
    Subscription.objects.create(service=service, plan=plan, starts_on=dt.date(2025, 1, 1))
    Subscription.objects.create(service=service, product=payments, starts_on=dt.date(2025, 1, 1))
    SubscriptionPeriod.objects.create(service=service, start_date=OCT, end_date=dt.date(2026, 10, 31))
    return service


def calls_file(first: int, count: int, day: int, quantity: str = "") -> str:
    return HEADER + "".join(
        f"C{n},61400000077,2026-10-{day:02d}T{n % 24:02d}:00:00Z,,,{quantity},,api_call,\n"
        for n in range(first, first + count)
    )


# Transactions: amount -> (the part bearing the rate, fixed fee?, fee within the bounds)
PAYMENTS = [
    ("P1", "2026-10-03T09:00:00Z", "60"),  # free amount: 60 of 100; free event 1: fee 0, bears none
    ("P2", "2026-10-09T09:00:00Z", "50"),  # 10 beyond the free amount: 0.12, free event 2, raised to 0.20
    ("P3", "2026-10-15T09:00:00Z", "1000"),  # 12.00 + 0.10 = 12.10, capped at 5.00
    ("P4", "2026-10-20T09:00:00Z", "5"),  # 0.06 + 0.10 = 0.16, raised to 0.20
    ("P5", "2026-10-28T09:00:00Z", "20"),  # 0.24 + 0.10 = 0.34
]


def payments_file(rows) -> str:
    return HEADER + "".join(f"{rid},61400000077,{at},,,,,payment,{amount}\n" for rid, at, amount in rows)


def bill_october(service):
    run = invoicing.request_main_billing("test", OCT)
    invoicing.execute_main_billing(run.pk)
    return Invoice.objects.get(account=service.account, cycle_start=OCT)


def test_aggregate_charges_price_the_period_once_across_files(saas, mediate):
    # 250 API calls over the month in three files, and the transactions in two.
    for first, count, day in ((1, 90, 2), (91, 110, 14), (201, 50, 30)):
        assert mediate(calls_file(first, count, day), name=f"calls-{day}.csv").mediated == count
    assert mediate(payments_file(PAYMENTS[3:]), name="pay-2.csv").mediated == 2
    assert mediate(payments_file(PAYMENTS[:3]), name="pay-1.csv").mediated == 3
    records = FileRecord.objects.filter(service=saas)
    # Covered records are identified and bucketed but not priced by themselves.
    assert {(r.rate_id, r.charge_micros, r.tax_micros, r.status) for r in records} == {(None, 0, 0, "mediated")}
    assert {r.aggregate_charge.code for r in records} == {"CALLS", "TXN"}
    invoice = bill_october(saas)
    lines = {c.aggregate.code: c for c in invoice.charges.filter(kind=Charge.Kind.AGGREGATE)}
    calls, txn = lines["CALLS"], lines["TXN"]
    assert (calls.records, calls.quantity, calls.amount, calls.tax) == (
        250,
        Decimal(250),
        Decimal("155"),
        Decimal("15.5"),
    )
    assert [t["amount"] for t in calls.breakdown] == ["100", "50", "5"]
    assert calls.description == "API calls (graduated) 2026-10-01 to 2026-10-31"
    # Rate: 1.2 % of 1,035 (the amount beyond the free 100) = 12.42; fixed fees 3 x 0.10; within the
    # bounds per event: P1 0, P2 0.12 -> 0.20, P3 12.10 -> 5.00, P4 0.16 -> 0.20, P5 0.34: 5.74.
    assert (txn.records, txn.quantity, txn.amount) == (5, Decimal("1135"), Decimal("5.74"))
    assert [t["amount"] for t in txn.breakdown] == ["12.42", "0.3", "-6.98"]
    # Not priced twice: the usage lines of the covered records carry nothing.
    usage = invoice.charges.filter(kind=Charge.Kind.USAGE)
    assert sum(usage.values_list("amount_micros", flat=True)) == 0
    assert sum(usage.values_list("records", flat=True)) == 255
    assert invoice.subtotal == Decimal("160.74")
    assert invoice.tax == Decimal("16.07")  # 15.50 + 0.57 (0.574 half-up), each line rounded once


def test_an_aggregate_is_the_same_whatever_the_file_order_and_a_rerun_replaces_it(saas, mediate):
    mediate(payments_file(PAYMENTS[::-1]))
    mediate(calls_file(1, 120, 20))
    first = bill_october(saas)
    txn = first.charges.get(kind=Charge.Kind.AGGREGATE, aggregate__code="TXN")
    assert txn.amount == Decimal("5.74")  # the events are priced in time order, not file order
    # Late usage: more calls, then Main Billing again rebuilds the draft's line, never a second one.
    mediate(calls_file(121, 90, 25))
    again = bill_october(saas)
    calls = again.charges.filter(kind=Charge.Kind.AGGREGATE, aggregate__code="CALLS")
    assert [(c.quantity, c.amount) for c in calls] == [(Decimal(210), Decimal("151"))]


def test_an_unused_aggregate_charge_is_shown_as_nothing_owed(saas):
    period = SubscriptionPeriod.objects.get(service=saas)
    priced, stale = period_aggregates([period.pk])
    assert stale == 0
    assert {(a.charge.code, a.records, a.amount) for a in priced} == {("CALLS", 0, 0), ("TXN", 0, 0)}


def test_an_aggregate_sums_a_field_in_its_unit_and_filters_by_field(saas, mediate):
    minutes = AggregateCharge.objects.create(
        plan=Plan.objects.get(code="API"),
        code="CONF",
        name="Conference minutes",
        aggregation="sum",
        field="duration",
        unit="minute",
        usage_type="conference",
        filter_field="destination",
        filter_values="1800, 1900",
        charge_model="standard",
        price_per_unit=Decimal("0.03"),
    )
    rows = [("M1", 90, "1800"), ("M2", 45, "1900"), ("M3", 600, "1300")]
    mediate(HEADER + "".join(f"{r},61400000077,2026-10-05T10:00:00Z,{s},,,{d},conference,\n" for r, s, d in rows))
    covered = {r.record_id: r.aggregate_charge_id for r in FileRecord.objects.filter(usage_type="conference")}
    assert covered["M1"] == covered["M2"] == minutes.pk
    assert covered["M3"] is None  # not 1800 or 1900: rated per record (the card has no rate: NO_RATE)
    period = SubscriptionPeriod.objects.get(service=saas)
    (conf,) = [a for a in period_aggregates([period.pk])[0] if a.charge.code == "CONF"]
    assert (conf.records, conf.priced.quantity, conf.priced.amount) == (2, Decimal("2.25"), Decimal("0.0675"))
    assert conf.amount == Decimal("0.07")  # rounded once, half-up to cents


def test_current_usage_is_shown_under_the_service_and_over_the_api(saas, mediate, client, operator, api):
    from django.urls import reverse

    mediate(calls_file(1, 120, 6))
    mediate(payments_file(PAYMENTS[:3]))
    period = SubscriptionPeriod.objects.get(service=saas)
    reply = api.get(f"/api/v1/subscription-periods/{period.pk}/aggregate-usage/")
    assert reply.status_code == 200
    got = {row["charge"]: (row["records"], row["quantity"], row["amount"], row["currency"]) for row in reply.json()}
    # 120 calls: 100 x 1 + 20 x 0.50; transactions so far: P2 0.20 + P3 5.00.
    assert got == {"CALLS": (120, "120", "110.00", "AUD"), "TXN": (3, "1110", "5.20", "AUD")}
    calls = next(row for row in reply.json() if row["charge"] == "CALLS")
    assert [t["tier"] for t in calls["breakdown"]] == ["0 to 100", "100 to 200"]
    client.force_login(operator)
    page = client.get(reverse("console:service_equipment_usage", args=[saas.pk]), {"period": period.pk})
    html = page.content.decode()
    assert page.status_code == 200
    assert 'data-aggregate="CALLS"' in html and "AUD\u00a0110.00" in html and "120 items" in html
    assert "Tier 0 to 100: 100 units at 1 = AUD\u00a0100.00" in html
    assert 'title="Priced by the period\'s aggregate charge CALLS, not by itself">CALLS</span>' in html


def test_the_invoice_shows_each_aggregate_line_with_its_tiers(saas, mediate):
    from billing.documents import invoice_html

    mediate(calls_file(1, 250, 8))
    invoice = bill_october(saas)
    html = invoice_html(invoice)
    assert "API calls (graduated) 2026-10-01 to 2026-10-31" in html
    assert "Tier 200 and above: 50 units at 0.1 = AUD\u00a05.00" in html
    assert "250 items" in html


def test_an_invoiced_period_keeps_its_aggregate_line(saas, mediate):
    mediate(calls_file(1, 150, 8))
    invoice = invoicing.do_finalize_invoice("test", bill_october(saas))
    line = invoice.charges.get(kind=Charge.Kind.AGGREGATE, aggregate__code="CALLS")
    assert line.amount == Decimal("125")
    late = mediate(calls_file(151, 10, 9), name="late.csv")
    assert late.quarantined == 10  # LATE_CLOSED_PERIOD: the invoiced period takes no more usage
    bill_october(saas)
    assert Charge.objects.get(pk=line.pk).amount == Decimal("125")
