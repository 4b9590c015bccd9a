"""Aggregate charges: a period's metric priced by a charge model, at Main Billing (docs/rating.md, section 8).

Which records an aggregate charge covers is one SQL statement (`covering`), read by the rate gate
(a covered record is not priced by itself) and by billing (which records make up the metric), both
in DuckDB. The metric of each period and charge, and the per-event fees of a percentage charge,
are computed in DuckDB over the period's covered records; the charge models then price each
period's total here, in Decimal, exactly. The line's one rounding point is `round_line`: half-up
to cents, once per invoice line.
"""

import datetime as dt
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal

from .models import (
    AGGREGATE_NUMBER_FIELDS,
    AGGREGATE_TEXT_FIELDS,
    UNIT_BASE_SIZE,
    AggregateCharge,
    AggregateTier,
    Aggregation,
    ChargeModel,
    Unit,
    plain,
)

CENT = Decimal("0.01")
MICROS = Decimal(1_000_000)
# A percentage charge's per-event fees are summed exactly in DuckDB in units of 10^-14 of the
# currency: micro-units (10^-6) times a rate in millionths of a per cent (10^-8).
FEE_SCALE = Decimal(10) ** 14

FILTER_VALUE = "CASE ac.filter_field " + " ".join(f"WHEN '{f}' THEN k.{f}" for f in AGGREGATE_TEXT_FIELDS) + " END"


def covering(records: str, key: str) -> str:
    """(record `key`, aggregate charge id) for each record of `records` and each aggregate charge
    covering it: brought by a plan or product the record's service subscribes to on the usage
    date, and matching the charge's category, usage type, zone and field filter. Reads
    billing_subscription, billing_aggregatecharge and billing_zoneprefix."""
    return (
        f"SELECT DISTINCT k.{key} AS _key, ac.id AS aggregate_id FROM {records} k "
        "JOIN billing_subscription sub ON sub.service_id = k.service_id AND sub.starts_on <= k.usage_date "
        "AND (sub.ends_on IS NULL OR sub.ends_on >= k.usage_date) "
        "JOIN billing_aggregatecharge ac "
        "ON COALESCE(ac.plan_id, -ac.product_id) = COALESCE(sub.plan_id, -sub.product_id) "
        "WHERE (ac.category = '' OR ac.category = k.category) "
        "AND (ac.usage_type = '' OR ac.usage_type = k.usage_type) "
        "AND (ac.zone_id IS NULL OR EXISTS (SELECT 1 FROM billing_zoneprefix zp WHERE zp.zone_id = ac.zone_id "
        "AND substr(k.destination, 1, length(zp.prefix)) = zp.prefix)) "
        f"AND (ac.filter_field = '' OR list_contains(string_split(ac.filter_values, ','), {FILTER_VALUE}))"
    )


# What a covered record contributes to its charge's metric: a number (sums, maxima) or a text (unique counts).
NUMBER_VALUE = (
    "CASE ac.field WHEN 'duration' THEN k.duration WHEN 'volume' THEN k.volume "
    "WHEN 'quantity' THEN COALESCE(k.quantity, 1) WHEN 'amount_micros' THEN k.amount_micros END"
)
TEXT_VALUE = (
    "CASE ac.field "
    + " ".join(f"WHEN '{f}' THEN k.{f}" for f in AGGREGATE_TEXT_FIELDS)
    + f" ELSE CAST({NUMBER_VALUE} AS VARCHAR) END"
)
EVENT_ORDER = "k.usage_at, COALESCE(k.record_key, ''), k.id"

# The metric of each period and charge: records, and the aggregation of their field (base units).
METRIC = (
    "SELECT k.period_id, c.aggregate_id, COUNT(*) AS records, CASE MIN(ac.aggregation) "
    f"WHEN 'count' THEN COUNT(*) WHEN 'sum' THEN SUM({NUMBER_VALUE}) WHEN 'max' THEN MAX({NUMBER_VALUE}) "
    f"WHEN 'unique' THEN COUNT(DISTINCT {TEXT_VALUE}) END AS metric "
    "FROM covered c JOIN records k ON k.id = c._key JOIN billing_aggregatecharge ac ON ac.id = c.aggregate_id "
    "GROUP BY k.period_id, c.aggregate_id"
)

# A percentage charge's events, in time order: each positive amount's part beyond the period's free
# amount bears the rate, each positive event after the free events the fixed fee, and an event
# bearing either is held within the minimum and maximum per event. A negative amount (a refund)
# is the negation of its rate part, and spends neither free events nor free amount.
PERCENT_EVENTS = (
    "SELECT e.*, CASE WHEN e.a > 0 AND e.cum > e.free THEN e.cum - CASE WHEN e.cum - e.a > e.free THEN e.cum - e.a "
    "ELSE e.free END WHEN e.a > 0 THEN 0 END AS charged "
    "FROM (SELECT k.period_id, c.aggregate_id, CAST(k.amount_micros AS HUGEINT) AS a, "
    "CAST(ROUND(ac.free_amount * 1000000) AS HUGEINT) AS free, ac.free_events, "
    "CAST(ROUND(COALESCE(ac.rate, 0) * 1000000) AS HUGEINT) AS rate_e6, "
    "CAST(ROUND(ac.fixed_fee * 1000000) AS HUGEINT) * 100000000 AS fixed, "
    "CAST(ROUND(ac.minimum_per_event * 1000000) AS HUGEINT) * 100000000 AS low, "
    "CAST(ROUND(ac.maximum_per_event * 1000000) AS HUGEINT) * 100000000 AS high, "
    "SUM(CASE WHEN k.amount_micros > 0 THEN k.amount_micros ELSE 0 END) OVER (PARTITION BY k.period_id, c.aggregate_id "
    f"ORDER BY {EVENT_ORDER} ROWS UNBOUNDED PRECEDING) AS cum, "
    "SUM(CASE WHEN k.amount_micros > 0 THEN 1 ELSE 0 END) OVER (PARTITION BY k.period_id, c.aggregate_id "
    f"ORDER BY {EVENT_ORDER} ROWS UNBOUNDED PRECEDING) AS n "
    "FROM covered c JOIN records k ON k.id = c._key JOIN billing_aggregatecharge ac ON ac.id = c.aggregate_id "
    "WHERE ac.charge_model = 'percentage' AND k.amount_micros IS NOT NULL AND k.amount_micros <> 0) e"
)
PERCENT_FEES = (
    "SELECT period_id, aggregate_id, SUM(CASE WHEN a > 0 THEN 1 ELSE 0 END) AS events, "
    "SUM(CASE WHEN a > 0 THEN charged ELSE a END) AS charged_micros, SUM(CASE WHEN a > 0 THEN charged ELSE a END "
    "* rate_e6) AS rate_part, SUM(fixed_part) AS fixed_part, SUM(CASE WHEN fixed_part > 0 THEN 1 ELSE 0 END) AS "
    "fixed_events, SUM(bounded - unbounded) AS bound_part FROM (SELECT f.*, CASE WHEN f.bears AND f.low IS NOT NULL "
    "AND f.unbounded < f.low THEN f.low WHEN f.bears AND f.high IS NOT NULL AND f.unbounded > f.high THEN f.high "
    "ELSE f.unbounded END AS bounded FROM (SELECT e.*, CASE WHEN e.a > 0 AND e.n > e.free_events THEN e.fixed "
    "ELSE 0 END AS fixed_part, CASE WHEN e.a > 0 THEN e.charged ELSE e.a END * e.rate_e6 + CASE WHEN e.a > 0 AND "
    "e.n > e.free_events THEN e.fixed ELSE 0 END AS unbounded, e.a > 0 AND (e.charged > 0 OR (e.n > e.free_events "
    f"AND e.fixed > 0)) AS bears FROM ({PERCENT_EVENTS}) e) f) b GROUP BY period_id, aggregate_id"
)


@dataclass
class Priced:
    """A period's aggregate priced: the exact amount and, tier by tier, how it was reached."""

    quantity: Decimal
    amount: Decimal
    breakdown: list[dict] = field(default_factory=list)


@dataclass
class PercentFees:
    """What a period's events of a percentage charge came to (exact, from `PERCENT_FEES`)."""

    events: int = 0
    charged_micros: int = 0
    rate_part: int = 0
    fixed_part: int = 0
    fixed_events: int = 0
    bound_part: int = 0


def round_line(amount: Decimal) -> Decimal:
    """The one rounding point of an aggregate line: half-up to cents."""
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


def _blocks(units: Decimal, block: Decimal | None) -> Decimal:
    return units if not block else (units / block).to_integral_value(rounding=ROUND_CEILING)


def _bands(tiers: list[AggregateTier]):
    ordered = sorted(tiers, key=lambda t: t.from_quantity)
    for i, tier in enumerate(ordered):
        yield tier.from_quantity, (ordered[i + 1].from_quantity if i + 1 < len(ordered) else None), tier


def _span(lo: Decimal, hi: Decimal | None) -> str:
    return f"{plain(lo)} and above" if hi is None else f"{plain(lo)} to {plain(hi)}"


def price(charge: AggregateCharge, tiers: list[AggregateTier], quantity: Decimal, fees: PercentFees | None = None):
    """Price a period's `quantity` (in the charge's unit) by the charge's model, exactly. A total at
    or below zero (refunds beyond usage) is charged nothing by tiered and package models; the
    standard model prices it (a credit), as the percentage model prices refunds."""
    model = charge.charge_model
    lines: list[dict] = []
    if model == ChargeModel.STANDARD:
        amount = quantity * charge.price_per_unit
        lines.append({"units": plain(quantity), "price": plain(charge.price_per_unit), "amount": plain(amount)})
        return Priced(quantity, amount, lines)
    if model == ChargeModel.PACKAGE:
        billable = max(quantity - charge.free_units, Decimal(0))
        packages = _blocks(billable, charge.package_size)
        amount = packages * charge.price_per_unit
        lines.append(
            {
                "free": plain(min(quantity, charge.free_units)) if quantity > 0 else "0",
                "packages": plain(packages),
                "package_size": plain(charge.package_size),
                "price": plain(charge.price_per_unit),
                "amount": plain(amount),
            }
        )
        return Priced(quantity, amount, lines)
    if model == ChargeModel.PERCENTAGE:
        return _percentage(charge, quantity, fees or PercentFees())
    if quantity <= 0:
        return Priced(quantity, Decimal(0), [])
    amount = Decimal(0)
    if model == ChargeModel.VOLUME:
        for lo, hi, tier in _bands(tiers):
            if lo < quantity and (hi is None or quantity <= hi):
                units = _blocks(quantity, tier.block_size)
                part = units * tier.price_per_unit + tier.flat_fee
                lines.append(_tier_line(lo, hi, tier, quantity, units, part))
                amount = part
        return Priced(quantity, amount, lines)
    for lo, hi, tier in _bands(tiers):  # graduated and graduated percentage: each tier's share
        if quantity <= lo:
            break
        inside = (quantity if hi is None or quantity < hi else hi) - lo
        if model == ChargeModel.GRADUATED_PERCENTAGE:
            units = inside
            part = inside * (tier.rate or 0) / 100 + tier.flat_fee
        else:
            units = _blocks(inside, tier.block_size)
            part = units * tier.price_per_unit + tier.flat_fee
        lines.append(_tier_line(lo, hi, tier, inside, units, part))
        amount += part
    return Priced(quantity, amount, lines)


def _tier_line(lo, hi, tier: AggregateTier, inside: Decimal, units: Decimal, amount: Decimal) -> dict:
    line = {"tier": _span(lo, hi), "units": plain(inside)}
    if tier.block_size:
        line["blocks"] = plain(units)
    if tier.rate is not None:
        line["rate"] = f"{plain(tier.rate)} %"
    else:
        line["price"] = plain(tier.price_per_unit)
    if tier.flat_fee:
        line["flat_fee"] = plain(tier.flat_fee)
    line["amount"] = plain(amount)
    return line


def _percentage(charge: AggregateCharge, quantity: Decimal, fees: PercentFees) -> Priced:
    rate_part = Decimal(fees.rate_part) / FEE_SCALE
    fixed_part = Decimal(fees.fixed_part) / FEE_SCALE
    bound_part = Decimal(fees.bound_part) / FEE_SCALE
    lines = [
        {
            "amount_charged": plain(Decimal(fees.charged_micros) / MICROS),
            "rate": f"{plain(charge.rate)} %",
            "free_amount": plain(charge.free_amount),
            "amount": plain(rate_part),
        }
    ]
    if charge.fixed_fee:
        lines.append(
            {
                "events": fees.events,
                "free_events": charge.free_events,
                "fixed_fee": plain(charge.fixed_fee),
                "amount": plain(fixed_part),
            }
        )
    if bound_part:
        lines.append({"per_event_bounds": "minimum and maximum per event", "amount": plain(bound_part)})
    return Priced(quantity, rate_part + fixed_part + bound_part, lines)


def in_unit(charge: AggregateCharge, metric: Decimal | int | None) -> Decimal:
    """The metric (base units: seconds, bytes, items, micro-units of money) in the charge's unit,
    without the trailing zeros of the records' thousandths (120.000 s is 120 s)."""
    value = Decimal(plain(Decimal(metric or 0)))
    if charge.unit == "money":
        return value / MICROS
    if charge.aggregation in (Aggregation.COUNT, Aggregation.UNIQUE):
        return value
    return value / UNIT_BASE_SIZE[Unit(charge.unit)]


@dataclass
class PeriodAggregate:
    """One aggregate charge of one period: its records, metric and price now."""

    period_id: int
    charge: AggregateCharge
    records: int
    priced: Priced

    @property
    def amount(self) -> Decimal:
        return round_line(self.priced.amount)


def period_aggregates(period_ids: list[int]) -> tuple[list[PeriodAggregate], int]:
    """Every aggregate charge of the periods `period_ids` (brought by a subscription overlapping the
    period), with the period's covered records, metric and price now (no usage: nothing owed); and
    how many records rated as covered no charge covers now (a subscription changed since: a
    rebalance re-rates them)."""
    from django.db import connection

    from usage.engine import duck
    from usage.engine.reference import any_of, list_param, load_model
    from usage.models import UsageRecord as records_model

    from .models import Subscription, SubscriptionPeriod, ZonePrefix

    if not period_ids:
        return [], 0
    charges = {c.pk: c for c in AggregateCharge.objects.all()}
    if not charges:
        return [], 0
    tiers: dict[int, list] = {}
    for tier in AggregateTier.objects.all():
        tiers.setdefault(tier.charge_id, []).append(tier)
    ids = [list_param(connection, period_ids)]
    with duck.session() as db:
        load_model(db, connection, SubscriptionPeriod, any_of(connection, "t.id"), ids)
        of_periods = f"SELECT p.service_id FROM billing_subscriptionperiod p WHERE {any_of(connection, 'p.id')}"
        load_model(db, connection, Subscription, f"t.service_id IN ({of_periods})", ids)
        for model in (AggregateCharge, ZonePrefix):
            load_model(db, connection, model)
        columns = {
            "id": "BIGINT",
            "period_id": "BIGINT",
            "service_id": "BIGINT",
            "usage_at": "TIMESTAMP",
            "usage_date": "DATE",
            "record_key": "VARCHAR",
            **{c: "VARCHAR" for c in ("category", *AGGREGATE_TEXT_FIELDS)},
            **{c: duck.duck_type(records_model._meta.get_field(c)) for c in AGGREGATE_NUMBER_FIELDS},
        }
        select = ", ".join(duck.utc(connection, "u.usage_at") if c == "usage_at" else f"u.{c}" for c in columns)
        duck.load_query(
            db,
            connection,
            "records",
            columns,
            f"SELECT {select} FROM usage_usagerecord u WHERE u.aggregate_charge_id IS NOT NULL "
            f"AND {any_of(connection, 'u.period_id')}",
            ids,
        )
        db.execute(f"CREATE TABLE covered AS {covering('records', 'id')}")
        stale = db.execute("SELECT COUNT(*) FROM records WHERE id NOT IN (SELECT _key FROM covered)").fetchone()[0]
        metrics = {(p, a): (n, m) for p, a, n, m in db.execute(METRIC).fetchall()}
        fees = {(r[0], r[1]): PercentFees(*(int(v or 0) for v in r[2:])) for r in db.execute(PERCENT_FEES).fetchall()}
        # Every period and charge a subscription brings, used or not: an unused charge shows as nothing owed.
        brought = db.execute(
            "SELECT DISTINCT p.id, ac.id FROM billing_subscriptionperiod p JOIN billing_subscription sub "
            "ON sub.service_id = p.service_id AND sub.starts_on <= p.end_date "
            "AND (sub.ends_on IS NULL OR sub.ends_on >= p.start_date) JOIN billing_aggregatecharge ac "
            "ON COALESCE(ac.plan_id, -ac.product_id) = COALESCE(sub.plan_id, -sub.product_id) ORDER BY 1, 2"
        ).fetchall()
    result = []
    for period_id, charge_id in sorted(set(brought) | set(metrics)):
        charge = charges[charge_id]
        records, metric = metrics.get((period_id, charge_id), (0, 0))
        quantity = in_unit(charge, metric)
        priced = price(charge, tiers.get(charge_id, []), quantity, fees.get((period_id, charge_id)))
        result.append(PeriodAggregate(period_id, charge, int(records), priced))
    return result, int(stale)


def describe(charge: AggregateCharge, period_start: dt.date, period_end: dt.date) -> str:
    return f"{charge.name} ({charge.get_charge_model_display().split(' (')[0].lower()}) {period_start} to {period_end}"
