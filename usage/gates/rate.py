"""Rate: the price of the usage, and the record's one rounding point (docs/rating.md).

The rate is chosen per record among the cards that apply to its service at the usage date, in
precedence order: the service's own override rates, then bolt-on product cards (earliest expiry
first), then the plan's card, then the default card. On the first card with a match, the longest
destination prefix wins, then an exact usage type over a blank one, then a rate with a time band
over one without; a rate matches only within its effective dates and, if it has a time band, when
the band covers the usage start (local weekday or public holiday, and time of day).

Quantities are base units (seconds, bytes, items). The rated quantity applies the first increment
and then the increment; the exact charge is

    connect fee + rated quantity x price per unit / unit size, kept within [minimum, maximum],
    less the discount (percent of it, or an amount per rated unit, never below zero)

and is rounded once, to the card's decimals and mode, in integer micro-units. A pre-priced misc
record (the file carries an amount) is charged that amount.
"""

from billing.models import UNIT_BASE_SIZE

from ..sql import decimal_step
from .base import Gate

UNIT_BASE = " ".join(f"WHEN '{unit}' THEN {size}" for unit, size in UNIT_BASE_SIZE.items())
QUANTITY_OF_UNIT = (
    "CASE r.unit WHEN 'second' THEN s.duration WHEN 'minute' THEN s.duration WHEN 'hour' THEN s.duration "
    "WHEN 'kb' THEN s.volume WHEN 'mb' THEN s.volume WHEN 'gb' THEN s.volume "
    "ELSE COALESCE(s.quantity, 1) END"
)
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
    f"UNION ALL SELECT {RECORD}, 3, CAST(NULL AS DATE), CAST(%(default_card)s AS BIGINT) FROM {{prev}} k "
    "WHERE k.service_id IS NOT NULL"
)


def gate(dialect, default_card_id) -> Gate:
    band_start = dialect.seconds_of_day("b.starts")
    band_end = dialect.seconds_of_day("b.ends")
    day = "CASE WHEN h.id IS NULL THEN CAST(c.local_weekday AS CHAR(1)) ELSE 'H' END"
    at = "c.local_seconds"
    in_band = (
        f"({dialect.contains('b.days', day)} AND CASE "
        f"WHEN {band_start} < {band_end} THEN {at} >= {band_start} AND {at} < {band_end} "
        f"WHEN {band_start} > {band_end} THEN {at} >= {band_start} OR {at} < {band_end} ELSE 1 = 1 END)"
    )
    best_rate = (
        "LEFT JOIN (SELECT _row, rate_id FROM (SELECT c._row, r.id AS rate_id, ROW_NUMBER() OVER (PARTITION BY c._row "
        "ORDER BY c.prio, CASE WHEN c.expires IS NULL THEN 1 ELSE 0 END, c.expires, length(r.destination_prefix) DESC, "
        "CASE WHEN r.usage_type = '' THEN 1 ELSE 0 END, CASE WHEN r.time_band_id IS NULL THEN 1 ELSE 0 END, r.id) "
        "AS rank "
        f"FROM ({CARDS_OF_RECORD}) c "
        "JOIN billing_rate r ON COALESCE(r.rate_card_id, -r.service_id) = c.owner AND r.category = c.category "
        "AND (r.usage_type = c.usage_type OR r.usage_type = '') "
        "AND substr(c.destination, 1, length(r.destination_prefix)) = r.destination_prefix "
        "AND (r.effective_from IS NULL OR r.effective_from <= c.usage_date) "
        "AND (r.effective_to IS NULL OR r.effective_to >= c.usage_date) "
        "LEFT JOIN billing_timeband b ON b.id = r.time_band_id LEFT JOIN billing_holiday h ON h.date = c.usage_date "
        f"WHERE b.id IS NULL OR {in_band}) ranked WHERE rank = 1) best ON best._row = s._row"
    )
    best_discount = (
        "LEFT JOIN (SELECT _row, discount_id FROM (SELECT k._row, d.id AS discount_id, ROW_NUMBER() OVER ("
        "PARTITION BY k._row ORDER BY CASE WHEN d.service_id IS NULL THEN 1 ELSE 0 END, "
        "CASE WHEN d.category = '' THEN 1 ELSE 0 END, d.effective_from DESC, d.id) AS rank "
        "FROM {prev} k JOIN billing_discount d ON (d.service_id = k.service_id OR d.account_id = k.account_id) "
        "AND (d.category = '' OR d.category = k.category) AND d.effective_from <= k.usage_date "
        "AND (d.effective_to IS NULL OR d.effective_to >= k.usage_date) WHERE k.rate_id IS NOT NULL) ranked "
        "WHERE rank = 1) disc ON disc._row = s._row"
    )
    pre_priced = "(s.category = 'misc' AND s.amount_micros IS NOT NULL)"
    first = "COALESCE(r.first_increment, r.increment)"
    rated = (
        f"CASE WHEN s._qty <= 0 THEN 0 WHEN s._qty <= {first} THEN {first} "
        f"ELSE {first} + ((s._qty - {first} + r.increment - 1) / r.increment) * r.increment END"
    )
    x = dialect.exact
    unit = x(f"CASE r.unit {UNIT_BASE} END")
    price = x(dialect.micros("r.price_per_unit"))
    base = f"({x(dialect.micros('r.connect_fee'))} * {unit} + {x('s.rated_quantity')} * {price})"
    low = f"{x(dialect.micros('r.minimum_charge'))} * {unit}"
    high = f"{x(dialect.micros('r.maximum_charge'))} * {unit}"
    bounded = (
        f"(CASE WHEN r.minimum_charge IS NOT NULL AND {base} < {low} THEN {low} "
        f"WHEN r.maximum_charge IS NOT NULL AND {base} > {high} THEN {high} ELSE {base} END)"
    )
    # Numerator over `unit` (x 10000 for a percentage, whose hundredths of a per cent are exact).
    less_unit_discount = f"{bounded} - {x('s.rated_quantity')} * {x(dialect.micros('d.amount_per_unit'))}"
    percent_hundredths = x(dialect.bigint("ROUND(d.percent * 100)"))
    step = x(decimal_step("COALESCE(c.rounding_decimals, dc.rounding_decimals, 4)"))
    mode = "COALESCE(c.rounding_mode, dc.rounding_mode, 'half_up')"

    def rounded(num, den):
        return f"{dialect.round_div(num, f'{den} * {step}', mode)} * {step}"

    by_percent = rounded(f"{bounded} * (10000 - {percent_hundredths})", f"{unit} * 10000")
    by_unit = f"CASE WHEN {less_unit_discount} <= 0 THEN 0 ELSE {rounded(less_unit_discount, unit)} END"
    charge = (
        f"CASE WHEN d.kind = 'percent' THEN {by_percent} WHEN d.kind = 'per_unit' THEN {by_unit} "
        f"ELSE {rounded(bounded, unit)} END"
    )
    return Gate(
        name="rate",
        produces=("rate_id", "rated_quantity", "discount_id", "charge_micros"),
        steps=(
            (f"CASE WHEN {pre_priced} THEN NULL ELSE best.rate_id END AS rate_id", best_rate),
            (f"{QUANTITY_OF_UNIT} AS _qty", "LEFT JOIN billing_rate r ON r.id = s.rate_id"),
            (
                f"CASE WHEN {pre_priced} THEN s.quantity WHEN s._qty IS NOT NULL THEN {rated} END AS rated_quantity, "
                "disc.discount_id AS discount_id",
                f"LEFT JOIN billing_rate r ON r.id = s.rate_id {best_discount}",
            ),
            (
                f"CASE WHEN {pre_priced} THEN s.amount_micros WHEN s.rated_quantity IS NOT NULL THEN {charge} END "
                "AS charge_micros",
                "LEFT JOIN billing_rate r ON r.id = s.rate_id LEFT JOIN billing_ratecard c ON c.id = r.rate_card_id "
                "LEFT JOIN billing_ratecard dc ON dc.id = %(default_card)s "
                "LEFT JOIN billing_discount d ON d.id = s.discount_id",
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
        materialize=True,
    )
