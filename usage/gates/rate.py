"""Rate: the price of the usage, and the record's one rounding point.

The card is the one of the service's plan at the usage date, else the default card; on a card the
rate is the longest destination prefix, an exact usage type beating a blank one. A pre-priced misc
record (the file carries an amount) is charged that amount. Quantities are base units (seconds,
bytes, items), rounded up to the rate's increment; the charge is

    rated_quantity × price_per_unit / unit size

rounded once, to the card's decimals and mode, in integer micro-units (`usage.sql.Dialect.round_div`).
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


def gate(dialect, default_card_id, max_prefix: int) -> Gate:
    # Longest prefix, set-based: candidates are ranked once per distinct (plan card, category, usage type,
    # destination cut to the longest prefix length) - a few hundred keys, not one per record - and the
    # winner is hash-joined back. The ranking is card (plan before default), prefix length, exact type.
    best_rate = (
        "LEFT JOIN (SELECT card, category, usage_type, dest, rate_id FROM (SELECT k.card, k.category, k.usage_type, "
        "k.dest, r.id AS rate_id, ROW_NUMBER() OVER (PARTITION BY k.card, k.category, k.usage_type, k.dest ORDER BY "
        "CASE WHEN r.rate_card_id = k.card THEN 0 ELSE 1 END, length(r.destination_prefix) DESC, "
        "CASE WHEN r.usage_type = '' THEN 1 ELSE 0 END, r.id) AS rank "
        "FROM (SELECT DISTINCT COALESCE(_plan_card, 0) AS card, category, usage_type, _dest AS dest FROM {prev} "
        "WHERE service_id IS NOT NULL) k "
        "JOIN billing_rate r ON r.category = k.category AND (r.rate_card_id = k.card OR r.rate_card_id = "
        "%(default_card)s) AND (r.usage_type = k.usage_type OR r.usage_type = '') "
        "AND substr(k.dest, 1, length(r.destination_prefix)) = r.destination_prefix) ranked WHERE rank = 1) best "
        "ON best.card = COALESCE(s._plan_card, 0) AND best.category = s.category "
        "AND best.usage_type = s.usage_type AND best.dest = s._dest"
    )
    pre_priced = "(s.category = 'misc' AND s.amount_micros IS NOT NULL)"
    rated = "((s._qty + r.increment - 1) / r.increment) * r.increment"
    step = dialect.exact(decimal_step("c.rounding_decimals"))
    num = f"{dialect.exact(rated)} * {dialect.exact(dialect.micros('r.price_per_unit'))}"
    den = f"{dialect.exact(f'CASE r.unit {UNIT_BASE} END')} * {step}"
    charge = f"{dialect.round_div(num, den, 'c.rounding_mode')} * {step}"
    return Gate(
        name="rate",
        produces=("rate_id", "rated_quantity", "charge_micros"),
        steps=(
            (
                "pl.rate_card_id AS _plan_card, substr(s.destination, 1, %(max_prefix)s) AS _dest",
                "LEFT JOIN billing_subscription sub ON sub.service_id = s.service_id AND sub.plan_id IS NOT NULL "
                "AND sub.starts_on <= s.usage_date AND (sub.ends_on IS NULL OR sub.ends_on >= s.usage_date) "
                "LEFT JOIN billing_plan pl ON pl.id = sub.plan_id",
            ),
            (f"CASE WHEN {pre_priced} THEN NULL ELSE best.rate_id END AS rate_id", best_rate),
            (f"{QUANTITY_OF_UNIT} AS _qty", "LEFT JOIN billing_rate r ON r.id = s.rate_id"),
            (
                f"CASE WHEN {pre_priced} THEN s.quantity WHEN s._qty IS NOT NULL THEN {rated} END AS rated_quantity, "
                f"CASE WHEN {pre_priced} THEN s.amount_micros WHEN s._qty IS NOT NULL THEN {charge} END "
                "AS charge_micros",
                "LEFT JOIN billing_rate r ON r.id = s.rate_id LEFT JOIN billing_ratecard c ON c.id = r.rate_card_id",
            ),
        ),
        ok="charge_micros IS NOT NULL",
        reason="'NO_RATE'",
        message=(
            "CASE WHEN rate_id IS NULL THEN 'No rate for ' || category || ' ' || usage_type || "
            "(CASE WHEN destination <> '' THEN ' to ' || destination ELSE '' END) "
            "ELSE 'The rate needs a quantity the record does not have' END"
        ),
        params={"default_card": default_card_id, "max_prefix": max(max_prefix, 1)},
        materialize=True,
    )
