"""Rate: the price of the usage, and the record's one rounding point (docs/rating.md).

The rate is chosen per record among the cards that apply to its service at the usage date, in
precedence order: the service's own override rates, then bolt-on product cards (earliest expiry
first), then the plan's card, then the default card. On the first card with a match, the longest
destination prefix wins, then an exact usage type over a blank one, then a rate with a time band
over one without; a rate matches only within its effective dates and, if it has a time band, when
the band covers the usage start (local weekday or public holiday, and time of day).

Quantities are base units (seconds, bytes, items), exact to a thousandth. The rated quantity
applies the first increment and then the increment to the exact quantity; the exact charge is

    connect fee + rated quantity x price per unit / unit size, kept within [minimum, maximum],
    less the discount (percent of it, or an amount per rated unit, never below zero)

and is rounded once, to the card's decimals and mode, in integer micro-units. A pre-priced misc
record (the file carries an amount) is charged that amount.

Allowances (included value) are drawn before pricing, in passes: pass j takes, in every period of
the batch, the allowance ranked j-th there (lowest priority first, then bolt-on before plan,
earliest subscription end, then the allowance's id) and lets the records it covers draw from it
in time order, by a running sum over what earlier records still needed, after what the period had
already drawn (its counter).
Tiered rates price the quantity left to charge by its position: within the record, or after the
period's earlier tiered quantity of the same rate (again a running sum in time order).
"""

from dataclasses import dataclass

from billing.aggregates import covering
from billing.models import QUANTITY_PLACES, UNIT_BASE_SIZE, UNIT_MEASURE

from ..sql import (
    PRICE_PER_MICRO,
    THOUSANDTHS,
    TOTAL_TYPE,
    bigint,
    decimal_step,
    exact,
    micros,
    price_units,
    round_div,
    round_up_to,
    seconds_of_day,
    thousandths,
)
from .base import Gate

PRODUCES = (  # the record columns this gate sets
    "aggregate_charge_id",
    "rate_id",
    "rated_quantity",
    "included_quantity",
    "allowance_id",
    "discount_id",
    "charge_micros",
    "included_micros",
)

UNIT_BASE = " ".join(f"WHEN '{unit}' THEN {size}" for unit, size in UNIT_BASE_SIZE.items())
UNIT_MEASURE_OF = " ".join(f"WHEN '{unit}' THEN '{measure}'" for unit, measure in UNIT_MEASURE.items())
QUANTITY_OF_UNIT = (
    "CASE "
    + " ".join(
        f"WHEN r.unit = '{unit}' THEN s.{'duration' if measure == 'time' else 'volume'}"
        for unit, measure in UNIT_MEASURE.items()
        if measure != "items"
    )
    + " ELSE COALESCE(s.quantity, 1) END"
)


def rate_patterns() -> str:
    """Rates with a zone become one row per zone prefix, matched like a prefix of that length."""
    return (
        "(SELECT r.*, COALESCE(zp.prefix, r.destination_prefix) AS match_prefix FROM billing_rate r "
        "LEFT JOIN billing_zoneprefix zp ON zp.zone_id = r.zone_id WHERE r.zone_id IS NULL OR zp.id IS NOT NULL"
        ")"
    )


# The order records draw allowances and accumulate tiers: time order, then the record key.
RECORD_KEY_ORDER = "COALESCE(s.record_key, '')"
TIME_ORDER = f"s.usage_at, {RECORD_KEY_ORDER}, s._row"
# The same order over the allowance candidates, which carry the key as a plain column: every pass
# then orders by columns alone and reads the previous pass's order (an expression made each sort again).
DRAW_ORDER = "s.usage_at, s._draw_key, s._row"
NO_ID = "CAST(NULL AS BIGINT)"
RECORD = "k._row, k.category, k.usage_type, k.destination, k.usage_date, k.local_weekday, k.local_seconds"
# Cards by precedence: 0 = the service's overrides (matched as -service id), 1 = bolt-ons, 2 = plan, 3 = default.
CARDS_OF_RECORD = (
    f"SELECT {RECORD}, 0 AS prio, CAST(NULL AS DATE) AS expires, -k.service_id AS owner FROM {{prev}} k "
    "WHERE k.service_id IS NOT NULL "
    f"UNION ALL SELECT {RECORD}, CASE WHEN sub.plan_id IS NULL THEN 1 ELSE 2 END, "
    "CASE WHEN sub.plan_id IS NULL THEN sub.ends_on END, COALESCE(pr.rate_card_id, pl.rate_card_id) "
    "FROM {prev} k JOIN billing_subscription sub ON sub.service_id = k.service_id AND sub.starts_on <= k.usage_date "
    "AND (sub.ends_on IS NULL OR sub.ends_on >= k.usage_date) "
    "LEFT JOIN billing_product pr ON pr.id = sub.product_id LEFT JOIN billing_plan pl ON pl.id = sub.plan_id "
    "WHERE COALESCE(pr.rate_card_id, pl.rate_card_id) IS NOT NULL "
    f"UNION ALL SELECT {RECORD}, 3, CAST(NULL AS DATE), CAST($default_card AS BIGINT) FROM {{prev}} k "
    "WHERE k.service_id IS NOT NULL"
)


@dataclass(frozen=True)
class Drawing:
    """What allowances are drawn in: the rated quantity (base units) or, for money allowances, the
    rounded charge (micro-units). Both draw alike; `p` prefixes the side tables' and columns' names."""

    p: str
    money: bool

    @property
    def slots(self) -> str:
        return f"{self.p}allowance_slots"

    def col(self, name: str, j) -> str:
        return f"_{self.p}{name}{j}"


QUANTITY = Drawing("", money=False)
MONEY = Drawing("m", money=True)


# What the period drew of an allowance before this batch: looked up per slot by the counters' unique
# index (a join would read the whole counter table, which grows with every period, for every batch).
DRAWN_BEFORE = (
    "SELECT pc.total FROM usage_periodcounter pc WHERE pc.period_id = p.id AND pc.kind = 'A' "
    "AND pc.owner_id = sub.id AND pc.ref_id = iv.id"
)


def allowance_slots(kind: Drawing) -> str:
    """Every allowance of the batch's periods, ranked within its period in drawing order (`slot`),
    with what is left of it (`avail`: its quantity less the period's counter)."""
    size = "1000000" if kind.money else f"CASE iv.unit {UNIT_BASE} END"
    # Money in whole micro-units; a quantity to the thousandth of a base unit (10.0005 minutes is 600.03 s).
    total = (
        f"CAST(ROUND(iv.quantity * sub.quantity * {size}) AS BIGINT)"
        if kind.money
        else f"CAST(ROUND(iv.quantity * sub.quantity * {size}, {QUANTITY_PLACES}) AS {TOTAL_TYPE})"
    )
    # What is left; money stays whole micro-units (the counters hold both kinds as decimals).
    left = f"{total} - COALESCE(({DRAWN_BEFORE}), 0)"
    avail = f"CAST({left} AS BIGINT)" if kind.money else left
    measure = "'money'" if kind.money else f"CASE iv.unit {UNIT_MEASURE_OF} END"
    return (
        "SELECT p.id AS period_id, sub.id AS sub_id, iv.id AS iv_id, iv.category, iv.usage_type, iv.zone_id, "
        f"sub.starts_on, sub.ends_on, {measure} AS measure, "
        f"{avail} AS avail, "
        "ROW_NUMBER() OVER (PARTITION BY p.id ORDER BY iv.priority, CASE WHEN sub.plan_id IS NULL THEN 0 ELSE 1 END, "
        "CASE WHEN sub.ends_on IS NULL THEN 1 ELSE 0 END, sub.ends_on, iv.id, sub.id) AS slot "
        "FROM billing_subscriptionperiod p JOIN billing_subscription sub ON sub.service_id = p.service_id "
        "AND sub.starts_on <= p.end_date AND (sub.ends_on IS NULL OR sub.ends_on >= p.start_date) "
        "JOIN billing_includedvalue iv "
        "ON COALESCE(iv.plan_id, -iv.product_id) = COALESCE(sub.plan_id, -sub.product_id) "
        f"AND iv.unit {'=' if kind.money else '<>'} 'money' "
        "WHERE p.id IN (SELECT period_id FROM {prev})"
    )


# Only a record that can end mediated draws an allowance or counts toward a period's tiers: not a
# duplicate, and one the tax gate after this one will tax (else it would take allowance away from
# later records without the draw ever being counted).
WILL_BE_MEDIATED = (
    "s.is_duplicate = FALSE AND EXISTS (SELECT 1 FROM billing_taxrule t WHERE t.category = s.category OR t.is_default)"
)

# What the allowance passes read of a record: narrow rows, so that the passes sort and carry little.
DRAW_COLUMNS = ("_row", "period_id", "category", "usage_type", "destination", "usage_date", "usage_at", "record_key")


def allowance_candidates(kind: Drawing, passes: int) -> str:
    """Side table draws0: the records that may draw, each with the allowance of every slot of its
    period that covers it (category, usage type, zone, the subscription active on the usage date):
    one join of the records with their periods' slots, turned into a column per slot."""
    wanted = "s._priced" if kind.money else "s._rated"
    # A quantity allowance is drawn only by records priced in a unit of its measure (docs/rating.md).
    credit = "" if kind.money else "AND s._sign = 1 "  # a credit draws no allowance
    measure, rate = (
        ("'money'", "")
        if kind.money
        else (f"CASE r.unit {UNIT_MEASURE_OF} END", "JOIN billing_rate r ON r.id = s.rate_id ")
    )
    candidates = (
        f"SELECT {', '.join(f's.{c}' for c in DRAW_COLUMNS)}, {measure} AS measure, {wanted} AS {kind.col('left', 0)}, "
        f"{RECORD_KEY_ORDER} AS _draw_key FROM {{prev}} s {rate}WHERE {wanted} > 0 {credit}"
        f"AND s.period_id IN (SELECT period_id FROM {kind.slots}) AND {WILL_BE_MEDIATED}"
    )
    covers = (
        f"SELECT k._row, a.slot, a.iv_id, a.sub_id, a.avail FROM candidates k JOIN {kind.slots} a "
        f"ON a.period_id = k.period_id AND a.slot <= {passes} AND a.category = k.category AND a.measure = k.measure "
        "AND (a.usage_type = '' OR a.usage_type = k.usage_type) AND a.starts_on <= k.usage_date "
        "AND (a.ends_on IS NULL OR a.ends_on >= k.usage_date) "
        "AND (a.zone_id IS NULL OR EXISTS (SELECT 1 FROM billing_zoneprefix zp WHERE zp.zone_id = a.zone_id "
        "AND substr(k.destination, 1, length(zp.prefix)) = zp.prefix))"
    )
    # A period's slot is one allowance: at most one cover per record and slot.
    per_slot = ", ".join(
        f"MAX(CASE WHEN slot = {j} THEN {column} END) AS {kind.col(name, j)}"
        for j in range(1, passes + 1)
        for column, name in (("iv_id", "iv"), ("sub_id", "sub"), ("avail", "avail"))
    )
    return (
        f"WITH candidates AS ({candidates}), covers AS ({covers}) "
        f"SELECT c.*, {', '.join(f'a.{kind.col(n, j)}' for j in range(1, passes + 1) for n in ('iv', 'sub', 'avail'))} "
        f"FROM candidates c LEFT JOIN (SELECT _row, {per_slot} FROM covers GROUP BY _row) a ON a._row = c._row"
    )


def allowance_draws(kind: Drawing, j: int) -> tuple[str, str]:
    """Side table draws<j>: pass j. The records covered by their period's j-th allowance draw what
    is left of it in time order: a running sum of what earlier records still wanted, after what the
    period had already drawn. Within a period slot j is one allowance. A pass holds only the records
    slot j covers (`_row`, what each drew, what is then left of it): most services have one or two
    allowances, so the later passes are small. What a record still wants is what the last pass
    that covered it left (`still_wanted`)."""
    left, inc, before, avail = (kind.col(c, j) for c in ("left", "inc", "before", "avail"))
    running = (
        f"SUM(s._wanted) OVER (PARTITION BY s.period_id "
        f"ORDER BY {DRAW_ORDER} ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)"
    )
    room = f"(s.{avail} - COALESCE(s.{before}, 0))"
    drawn = f"CASE WHEN {room} <= 0 THEN 0 WHEN {room} < s._wanted THEN {room} ELSE s._wanted END"
    covered = (
        f"SELECT s.*, {still_wanted(kind, j - 1)} AS _wanted FROM {kind.p}draws0 s {pass_joins(kind, j - 1)} "
        f"WHERE s.{kind.col('iv', j)} IS NOT NULL"
    )
    return (
        f"@{kind.p}draws{j}",
        f"SELECT _row, {inc}, _wanted - {inc} AS {left} FROM (SELECT s._row, s._wanted, {drawn} AS {inc} FROM ("
        f"SELECT s.*, {running} AS {before} FROM ({covered}) s) s) s",
    )


def pass_joins(kind: Drawing, passes: int, alias: str = "s") -> str:
    """Joins of passes 1..`passes` (`d<j>`) to draws0 rows `alias`."""
    return " ".join(f"LEFT JOIN {kind.p}draws{j} d{j} ON d{j}._row = {alias}._row" for j in range(passes, 0, -1))


def still_wanted(kind: Drawing, passes: int, alias: str = "s") -> str:
    """What a draws0 row `alias` still wants after passes 1..`passes`: what the last pass covering it left."""
    lefts = [f"d{j}.{kind.col('left', j)}" for j in range(passes, 0, -1)]
    first = f"{alias}.{kind.col('left', 0)}"
    return f"COALESCE({', '.join([*lefts, first])})" if lefts else first


def drawing_steps(kind: Drawing, passes: int, wanted: str) -> tuple:
    """The steps that draw `passes` allowances of a kind: side tables, then one join adding, per pass,
    the allowance, its subscription and what was drawn (0 for a record that may draw but slot j does
    not cover), and `_<p>left`, what is left to charge."""
    left = f"_{kind.p}left"
    if not passes:
        return ((f"{wanted} AS {left}", ""),)
    drew = []
    for j in range(1, passes + 1):
        drew += [f"d0.{kind.col('iv', j)} AS {kind.col('iv', j)}", f"d0.{kind.col('sub', j)} AS {kind.col('sub', j)}"]
        drew.append(
            f"CASE WHEN d0._row IS NOT NULL THEN COALESCE(d{j}.{kind.col('inc', j)}, 0) END AS {kind.col('inc', j)}"
        )
    return (
        (f"@{kind.slots}", allowance_slots(kind)),
        (f"@{kind.p}draws0", allowance_candidates(kind, passes)),
        *(allowance_draws(kind, j) for j in range(1, passes + 1)),
        (
            ", ".join(drew) + f", COALESCE({still_wanted(kind, passes, 'd0')}, {wanted}) AS {left}",
            f"LEFT JOIN {kind.p}draws0 d0 ON d0._row = s._row {pass_joins(kind, passes, 'd0')}",
        ),
    )


def first_drawn(kind: Drawing, passes: int) -> str:
    return " ".join(f"WHEN s.{kind.col('inc', j)} > 0 THEN s.{kind.col('iv', j)}" for j in range(1, passes + 1))


def best_rates(candidates: str, key: tuple[str, ...], same_unit: bool = False) -> str:
    """The best rate (`rate_id`) per `key` among `candidates`: rows of a record (or part of one) with
    the card that may price it (owner, in precedence order prio then expires), its category, usage
    type, destination, date, local weekday and seconds. Within the first card with a match: longest
    prefix, exact usage type, banded over unbanded, lowest id. `same_unit`: only rates quoted in the
    candidate's `unit` (parts of a split call)."""
    band_start = seconds_of_day("b.starts")
    band_end = seconds_of_day("b.ends")
    day = "CASE WHEN h.id IS NULL THEN CAST(c.local_weekday AS CHAR(1)) ELSE 'H' END"
    at = "c.local_seconds"
    in_band = (
        f"(strpos(b.days, {day}) > 0 AND CASE "
        f"WHEN {band_start} < {band_end} THEN {at} >= {band_start} AND {at} < {band_end} "
        f"WHEN {band_start} > {band_end} THEN {at} >= {band_start} OR {at} < {band_end} ELSE 1 = 1 END)"
    )
    keys = ", ".join(f"c.{k}" for k in key)
    return (
        f"SELECT {', '.join(key)}, rate_id FROM (SELECT {keys}, r.id AS rate_id, "
        f"ROW_NUMBER() OVER (PARTITION BY {keys} "
        "ORDER BY c.prio, CASE WHEN c.expires IS NULL THEN 1 ELSE 0 END, c.expires, length(r.match_prefix) DESC, "
        "CASE WHEN r.usage_type = '' THEN 1 ELSE 0 END, CASE WHEN r.time_band_id IS NULL THEN 1 ELSE 0 END, r.id) "
        "AS rank "
        f"FROM ({candidates}) c "
        f"JOIN {rate_patterns()} r "
        "ON COALESCE(r.rate_card_id, -r.service_id) = c.owner AND r.category = c.category "
        "AND (r.usage_type = c.usage_type OR r.usage_type = '') "
        "AND substr(c.destination, 1, length(r.match_prefix)) = r.match_prefix "
        "AND (r.effective_from IS NULL OR r.effective_from <= c.usage_date) "
        f"AND (r.effective_to IS NULL OR r.effective_to >= c.usage_date) {'AND r.unit = c.unit ' if same_unit else ''}"
        "LEFT JOIN billing_timeband b ON b.id = r.time_band_id LEFT JOIN billing_holiday h ON h.date = c.usage_date "
        f"WHERE b.id IS NULL OR {in_band}) ranked WHERE rank = 1"
    )


TIME_UNITS = "('second', 'minute', 'hour')"


def band_split_steps() -> tuple:
    """A call on a card that splits at time bands is cut at the card's band edges (and midnight)
    within the day it starts and the next; each part is priced at the rate its start matches, in the
    unit of the call's own rate. The rated quantity's rounding (increments) falls in the last part,
    and allowances cover the call from its start, so the charged quantity is the tail of the call.
    Adds `_split`: the sum of charged part quantity x part price (micro-units over the unit)."""
    edges = " UNION ".join(
        f"SELECT r.rate_card_id AS card_id, {seconds_of_day(f'b.{end}')} AS edge FROM billing_rate r "
        "JOIN billing_timeband b ON b.id = r.time_band_id JOIN billing_ratecard c ON c.id = r.rate_card_id "
        "WHERE c.split_time_bands = TRUE"
        for end in ("starts", "ends")
    )
    edge = "(e.edge + d.day * 86400)"
    parts_in_order = "PARTITION BY c._row ORDER BY c._part"
    part_rates = best_rates(
        "SELECT p._row, p._part, p.category, p.usage_type, p.destination, p.unit, "
        "(p.usage_date + p._day) AS usage_date, "
        "((p.local_weekday + p._day - 1) % 7) + 1 AS local_weekday, p._part - p._day * 86400 AS local_seconds, "
        "0 AS prio, CAST(NULL AS DATE) AS expires, p.card_id AS owner FROM band_parts p",
        ("_row", "_part"),
        same_unit=True,
    )
    price = price_units("r.price_per_unit")
    return (
        ("@band_edges", f"{edges} UNION SELECT c.id, 0 FROM billing_ratecard c WHERE c.split_time_bands = TRUE"),
        (
            "@split_calls",
            "SELECT k._row, r.id AS start_rate, r.rate_card_id AS card_id, r.unit, k.category, k.usage_type, "
            "k.destination, k.usage_date, k.local_weekday, k.local_seconds, k.duration, k._rated AS rated_quantity, "
            "k._chargeable FROM {prev} k JOIN billing_rate r ON r.id = k.rate_id "
            "JOIN billing_ratecard c ON c.id = r.rate_card_id AND c.split_time_bands = TRUE "
            f"WHERE r.unit IN {TIME_UNITS} AND r.tier_mode = 'none' AND k._chargeable > 0 AND k.duration > 0",
        ),
        (
            "@band_cuts",
            "SELECT k._row, k.local_seconds AS _part FROM split_calls k "
            f"UNION SELECT k._row, {edge} FROM split_calls k JOIN band_edges e ON e.card_id = k.card_id "
            "CROSS JOIN (SELECT 0 AS day UNION ALL SELECT 1 AS day) d "
            f"WHERE {edge} > k.local_seconds AND {edge} < k.local_seconds + k.duration",
        ),
        (
            "@band_parts",
            "SELECT p.*, CASE WHEN p._part >= 86400 THEN 1 ELSE 0 END AS _day FROM (SELECT k.*, c._part, "
            f"COALESCE(LEAD(c._part) OVER ({parts_in_order}), k.local_seconds + k.duration) - c._part "
            f"+ CASE WHEN LEAD(c._part) OVER ({parts_in_order}) IS NULL THEN k.rated_quantity - k.duration ELSE 0 END "
            "AS _qty FROM band_cuts c JOIN split_calls k ON k._row = c._row) p",
        ),
        ("@part_rates", part_rates),
        (
            "@part_charges",
            # Covered from the start: a part is charged for what of it lies after the covered quantity.
            "SELECT p._row, p._part, p.start_rate, CASE WHEN p._after < p._qty THEN p._after ELSE p._qty END "
            "AS _charged FROM (SELECT p.*, p._before + p._qty - (p.rated_quantity - p._chargeable) AS _after FROM ("
            "SELECT p.*, COALESCE(SUM(p._qty) OVER (PARTITION BY p._row ORDER BY p._part "
            "ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS _before FROM band_parts p) p) p "
            "WHERE p._after > 0",
        ),
        (
            "sp._split AS _split",
            f"LEFT JOIN (SELECT pc._row, SUM({thousandths('pc._charged')} * {price}) AS _split "
            "FROM part_charges pc LEFT JOIN part_rates pr ON pr._row = pc._row AND pr._part = pc._part "
            "JOIN billing_rate r ON r.id = COALESCE(pr.rate_id, pc.start_rate) GROUP BY pc._row) sp "
            "ON sp._row = s._row",
        ),
    )


def increments(quantity: str) -> str:
    """`quantity` rounded up by the rate's (`r`) first increment, then its increment (exactly, in thousandths)."""
    first = "COALESCE(r.first_increment, r.increment)"
    return (
        f"CASE WHEN {quantity} <= 0 THEN 0 WHEN {quantity} <= {first} THEN {first} "
        f"ELSE {first} + {round_up_to(f'{quantity} - {first}', 'r.increment')} END"
    )


def tier_start(rate: str = "r", tier: str = "t") -> str:
    """Where a tier starts (its `from_quantity`, in the rate's unit) in base units, to the thousandth."""
    return f"CAST(ROUND({tier}.from_quantity * CASE {rate}.unit {UNIT_BASE} END, {QUANTITY_PLACES}) AS {TOTAL_TYPE})"


# The bands of rates with a tier of its own increment: [lo, hi) in base units, with the increment.
STEP_BANDS = (
    "(SELECT rate_id, lo, LEAD(lo) OVER (PARTITION BY rate_id ORDER BY lo) AS hi, inc FROM ("
    "SELECT r.id AS rate_id, 0 AS lo, r.increment AS inc FROM billing_rate r "
    "WHERE EXISTS (SELECT 1 FROM billing_ratetier t WHERE t.rate_id = r.id AND t.increment IS NOT NULL) "
    f"UNION ALL SELECT t.rate_id, {tier_start()}, "
    "COALESCE(t.increment, r.increment) FROM billing_ratetier t JOIN billing_rate r ON r.id = t.rate_id "
    "WHERE EXISTS (SELECT 1 FROM billing_ratetier t2 WHERE t2.rate_id = r.id AND t2.increment IS NOT NULL)"
    ") bands)"
)


def gate(
    default_card_id,
    *,
    allowance_passes: int = 0,
    money_passes: int = 0,
    tiers: bool = False,
    period_tiers: bool = False,
    split_bands: bool = False,
    tier_increments: bool = False,
    aggregates: bool = False,
) -> Gate:
    """`allowance_passes`, `money_passes`: the most quantity and money allowances a service can have
    (one drawing pass each); `split_bands`: whether a card splits calls at time bands; `tiers`, `period_tiers`:
    whether any rate has tiers, and counts them over the period (else those steps are left out);
    `aggregates`: whether any plan or product has an aggregate charge."""
    best_rate = f"LEFT JOIN ({best_rates(CARDS_OF_RECORD, ('_row',))}) best ON best._row = s._row"
    # A discount is of one service or of one account (a check constraint): two equality joins, which
    # hash, instead of one join on `service OR account`, which compares every record with every discount.
    discounts_of_records = " UNION ALL ".join(
        "SELECT k._row, d.id, d.service_id, d.category, d.effective_from FROM {prev} k "
        f"JOIN billing_discount d ON d.{owner} = k.{owner} "
        "AND (d.category = '' OR d.category = k.category) AND d.effective_from <= k.usage_date "
        "AND (d.effective_to IS NULL OR d.effective_to >= k.usage_date) WHERE k.rate_id IS NOT NULL"
        for owner in ("service_id", "account_id")
    )
    best_discount = (
        "LEFT JOIN (SELECT _row, discount_id FROM (SELECT d._row, d.id AS discount_id, ROW_NUMBER() OVER ("
        "PARTITION BY d._row ORDER BY CASE WHEN d.service_id IS NULL THEN 1 ELSE 0 END, "
        "CASE WHEN d.category = '' THEN 1 ELSE 0 END, d.effective_from DESC, d.id) AS rank "
        f"FROM ({discounts_of_records}) d) ranked WHERE rank = 1) disc ON disc._row = s._row"
    )
    pre_priced = "(s.category = 'misc' AND s.amount_micros IS NOT NULL)"
    rated = increments("s._qty")
    # Per-tier increments: the usage in each tier [lo, hi) rounded up to that tier's increment; below
    # the first tier the rate's own first increment and increment apply (BillRun's step intervals).
    stepped = (
        f"LEFT JOIN (SELECT b._row, SUM(CASE WHEN b.lo = 0 THEN {increments('b._part')} "
        f"ELSE {round_up_to('b._part', 'b.inc')} END) AS _stepped FROM (SELECT k._row, k.rate_id, b.lo, "
        "b.inc, CASE WHEN b.hi IS NOT NULL AND b.hi < k._qty THEN b.hi ELSE k._qty END - b.lo AS _part "
        f"FROM {{prev}} k JOIN {STEP_BANDS} b ON b.rate_id = k.rate_id AND b.lo < k._qty) b "
        "JOIN billing_rate r ON r.id = b.rate_id GROUP BY b._row) st ON st._row = s._row"
    )
    x = exact
    # Quantities are priced in thousandths of a base unit: a rate's unit holds size x 1000 of them.
    unit = f"{x(f'CASE r.unit {UNIT_BASE} END')} * {THOUSANDTHS}"

    def fee(column):  # money (6 decimals) at the prices' scale (10 decimals)
        return f"{x(micros(column))} * {PRICE_PER_MICRO}"

    price = price_units("r.price_per_unit")
    charged = "s._chargeable"
    q = thousandths

    # Tiers: the chargeable quantity occupies positions [s._tier_at, s._tier_at + chargeable) of the
    # rate's tier bands [lo, hi) (base units, the rate's own price below its first tier).
    tier_bands = (
        "(SELECT rate_id, lo, LEAD(lo) OVER (PARTITION BY rate_id ORDER BY lo) AS hi, price FROM ("
        f"SELECT r.id AS rate_id, 0 AS lo, {price_units('r.price_per_unit')} AS price FROM billing_rate r "
        "WHERE r.tier_mode <> 'none' UNION ALL "
        f"SELECT t.rate_id, {tier_start()}, "
        f"{price_units('t.price_per_unit')} FROM billing_ratetier t JOIN billing_rate r ON r.id = t.rate_id "
        "WHERE r.tier_mode <> 'none') bands)"
    )
    start, end = "k._tier_at", "(k._tier_at + k._chargeable)"
    overlap = (
        f"(CASE WHEN tb.hi IS NOT NULL AND tb.hi < {end} THEN tb.hi ELSE {end} END - "
        f"CASE WHEN tb.lo > {start} THEN tb.lo ELSE {start} END)"
    )
    # Volume: every unit at the price of the tier the quantity's end falls in, (lo, hi].
    tier_amount = (
        "CASE WHEN r.tier_mode = 'volume' THEN CASE WHEN k._chargeable > 0 AND tb.lo < "
        f"{end} AND (tb.hi IS NULL OR {end} <= tb.hi) THEN {q('k._chargeable')} * {x('tb.price')} "
        f"ELSE 0 END WHEN {overlap} > 0 THEN {q(overlap)} * {x('tb.price')} ELSE 0 END"
    )
    tiered = (
        f"LEFT JOIN (SELECT k._row, SUM({tier_amount}) AS _tiered FROM {{prev}} k "
        "JOIN billing_rate r ON r.id = k.rate_id AND r.tier_mode <> 'none' "
        f"JOIN {tier_bands} tb ON tb.rate_id = k.rate_id GROUP BY k._row) tt ON tt._row = s._row"
    )
    # A feature no rate uses leaves its steps and columns out (smaller statements plan faster).
    priced_by = ["WHEN s._tiered IS NOT NULL THEN s._tiered"] if tiers else []
    priced_by += ["WHEN s._split IS NOT NULL THEN s._split"] if split_bands else []
    amount = f"CASE {' '.join(priced_by)} ELSE {q(charged)} * {price} END" if priced_by else f"{q(charged)} * {price}"
    # Priced in two steps. The first looks up the rate, card and discount and computes the amount before
    # bounds, the bounds and the rounding inputs; the second bounds, discounts and rounds.
    pricing_inputs = (
        f"({fee('r.connect_fee')} * {unit} + {amount}) AS _base, "
        f"CASE WHEN r.minimum_charge IS NOT NULL THEN {fee('r.minimum_charge')} * {unit} END AS _low, "
        f"CASE WHEN r.maximum_charge IS NOT NULL THEN {fee('r.maximum_charge')} * {unit} END AS _high, "
        f"{unit} * {PRICE_PER_MICRO} AS _unit, "
        f"{x(decimal_step('COALESCE(r.rounding_decimals, c.rounding_decimals, dc.rounding_decimals, 4)'))} AS _step, "
        "COALESCE(NULLIF(r.rounding_mode, ''), c.rounding_mode, dc.rounding_mode, 'half_up') AS _mode, "
        "d.kind AS _discount_kind, "
        f"{fee('d.amount_per_unit')} AS _discount_per_unit, "
        f"{x(bigint('ROUND(d.percent * 100)'))} AS _discount_hundredths"
    )
    # The charge is rounded once: `_num` / `_den` by the card's mode, in steps of `_step`. The bound,
    # the discount and the division are columns of their own, so each expression stays small.
    bounded = (
        "CASE WHEN s._low IS NOT NULL AND s._base < s._low THEN s._low "
        "WHEN s._high IS NOT NULL AND s._base > s._high THEN s._high ELSE s._base END AS _bounded"
    )
    # A percentage is counted in hundredths of a per cent (exact): numerator and denominator x 10000.
    numerator = (
        "CASE s._discount_kind WHEN 'percent' THEN s._bounded * (10000 - s._discount_hundredths) "
        f"WHEN 'per_unit' THEN s._bounded - {q(charged)} * s._discount_per_unit ELSE s._bounded END AS _num, "
        "s._unit * s._step * CASE WHEN s._discount_kind = 'percent' THEN 10000 ELSE 1 END AS _den"
    )
    charge = (
        f"CASE WHEN s.included_quantity > 0 AND {charged} = 0 THEN 0 "
        "WHEN s._discount_kind = 'per_unit' AND s._num <= 0 THEN 0 "
        f"ELSE {round_div('s._num', 's._den', 's._mode')} * s._step END"
    )

    if period_tiers:
        # A credit neither counts toward the period's tiers nor is priced at their position: its units
        # are priced from the first tier, as a record of its size alone.
        tier_key = (
            f"CASE WHEN r.tier_scope = 'period' AND r.tier_mode <> 'none' AND s._sign = 1 AND {WILL_BE_MEDIATED} "
            "THEN r.id END"
        )
        tier_at = (
            "CASE WHEN s._tier_key IS NULL THEN 0 ELSE COALESCE((SELECT pt.total FROM usage_periodcounter pt "
            "WHERE pt.period_id = s.period_id AND pt.kind = 'T' AND pt.owner_id = 0 AND pt.ref_id = s._tier_key), 0) "
            "+ COALESCE(SUM(s._chargeable) OVER ("
            f"PARTITION BY s.period_id, s._tier_key ORDER BY {TIME_ORDER} "
            "ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) END"
        )
        tier_steps = (
            (f"{tier_key} AS _tier_key", "LEFT JOIN billing_rate r ON r.id = s.rate_id"),
            (f"{tier_at} AS _tier_at", ""),
        )
        counters = (("T", "0", "_tier_key", "_chargeable"),)
    else:
        tier_steps = (("0 AS _tier_at", ""),) if tiers else ()
        counters = ()
    counters += tuple(
        ("A", kind.col("sub", j), kind.col("iv", j), kind.col("inc", j))
        for kind, passes in ((QUANTITY, allowance_passes), (MONEY, money_passes))
        for j in range(1, passes + 1)
    )
    # A record an aggregate charge covers is priced by the period's aggregate at Main Billing, not
    # here: no rate, no allowance, charge 0; its rated quantity is what it adds to the metric.
    covered = "s.aggregate_charge_id IS NOT NULL"
    if aggregates:
        coverage = (
            "agg.aggregate_id AS aggregate_charge_id",
            f"LEFT JOIN (SELECT _key, MIN(aggregate_id) AS aggregate_id FROM ({covering('{prev}', '_row')}) c "
            "GROUP BY _key) agg ON agg._key = s._row",
        )
        covered_rated = (
            f"WHEN {covered} THEN CASE ac.field WHEN 'duration' THEN s.duration WHEN 'volume' THEN s.volume "
            "ELSE COALESCE(s.quantity, 1) END "
        )
        covered_join = "LEFT JOIN billing_aggregatecharge ac ON ac.id = s.aggregate_charge_id"
        covered_charge = f"WHEN {covered} THEN 0 "
    else:
        coverage = (f"{NO_ID} AS aggregate_charge_id", "")
        covered_join = covered_rated = covered_charge = ""
    return Gate(
        name="rate",
        produces=PRODUCES,
        steps=(
            coverage,
            (
                f"CASE WHEN {pre_priced}{f' OR {covered}' if aggregates else ''} THEN NULL ELSE best.rate_id END "
                "AS rate_id",
                best_rate,
            ),
            # A credit (negative usage) is priced by its size, as the same usage would be, then negated.
            (
                f"ABS({QUANTITY_OF_UNIT}) AS _qty, CASE WHEN {QUANTITY_OF_UNIT} < 0 THEN -1 ELSE 1 END AS _sign",
                "LEFT JOIN billing_rate r ON r.id = s.rate_id",
            ),
            (
                f"CASE {'WHEN st._stepped IS NOT NULL THEN st._stepped ' if tier_increments else ''}"
                f"WHEN s.rate_id IS NOT NULL AND s._qty IS NOT NULL THEN {rated} END AS _rated, "
                "disc.discount_id AS discount_id",
                f"LEFT JOIN billing_rate r ON r.id = s.rate_id {best_discount} {stepped if tier_increments else ''}",
            ),
            # Covered and pre-priced records show what they were given, exactly: a metric's part, the items.
            (
                f"CASE {covered_rated}WHEN {pre_priced} THEN s.quantity ELSE s._sign * s._rated END AS rated_quantity, "
                "CASE WHEN s.rate_id IS NOT NULL THEN COALESCE(s._rated, 0) ELSE 0 END AS _left0",
                covered_join,
            ),
            *drawing_steps(QUANTITY, allowance_passes, "s._left0"),
            (
                "CASE WHEN s.rate_id IS NOT NULL AND s._rated IS NOT NULL THEN s._rated - s._left "
                "END AS included_quantity, "
                f"{f'CASE {first_drawn(QUANTITY, allowance_passes)} END' if allowance_passes else NO_ID} "
                "AS _qallowance, "
                "s._left AS _chargeable",
                "",
            ),
            *tier_steps,
            *(band_split_steps() if split_bands else ()),
            *((("tt._tiered AS _tiered", tiered),) if tiers else ()),
            (
                pricing_inputs,
                "LEFT JOIN billing_rate r ON r.id = s.rate_id LEFT JOIN billing_ratecard c ON c.id = r.rate_card_id "
                "LEFT JOIN billing_ratecard dc ON dc.id = $default_card "
                "LEFT JOIN billing_discount d ON d.id = s.discount_id",
            ),
            (bounded, ""),
            (numerator, ""),
            (
                f"CASE {covered_charge}WHEN {pre_priced} THEN s.amount_micros "
                f"WHEN s._rated IS NOT NULL THEN s._sign * ({charge}) END "
                "AS _priced",
                "",
            ),
            *drawing_steps(MONEY, money_passes, "s._priced"),
            (
                "s._priced - s._mleft AS included_micros, s._mleft AS charge_micros, "
                f"CASE WHEN s._qallowance IS NOT NULL THEN s._qallowance {first_drawn(MONEY, money_passes)} END "
                "AS allowance_id",
                "",
            ),
        ),
        ok="charge_micros IS NOT NULL",
        reason="'NO_RATE'",
        message=(
            "CASE WHEN rate_id IS NULL THEN 'No rate for ' || category || ' ' || usage_type || "
            "(CASE WHEN destination <> '' THEN ' to ' || destination ELSE '' END) || ' on ' || usage_date "
            "ELSE 'The rate needs a quantity the record does not have' END"
        ),
        params={"default_card": default_card_id},
        counters=counters,
    )
