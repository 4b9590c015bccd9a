"""Tax: the rule for the record's category, else the default rule. Tax is computed from the rounded
charge and rounded half-up to the same decimals; the final charge is charge + tax."""

from ..sql import bigint, decimal_step, exact, round_div
from .base import Gate

PRODUCES = ("tax_micros",)  # the record columns this gate sets


def gate(default_tax_id, default_card_id) -> Gate:
    percent_millis = bigint("ROUND(COALESCE(tc.percent, td.percent) * 1000)")
    step = exact(decimal_step("COALESCE(tr.rounding_decimals, rc.rounding_decimals, dc.rounding_decimals, 6)"))
    tax = round_div(f"{exact('s.charge_micros')} * {exact('s._tax_millis')}", "100000 * s._tax_step", "'half_up'")
    return Gate(
        name="tax",
        produces=PRODUCES,
        steps=(
            (
                f"{percent_millis} AS _tax_millis, {step} AS _tax_step",
                "LEFT JOIN billing_taxrule tc ON tc.category = s.category "
                "LEFT JOIN billing_taxrule td ON td.id = $default_tax "
                "LEFT JOIN billing_rate tr ON tr.id = s.rate_id "
                "LEFT JOIN billing_ratecard rc ON rc.id = tr.rate_card_id "
                "LEFT JOIN billing_ratecard dc ON dc.id = $default_card",
            ),
            (f"CASE WHEN s._tax_millis IS NOT NULL THEN {bigint(f'{tax} * s._tax_step')} END AS tax_micros", ""),
        ),
        ok="tax_micros IS NOT NULL",
        reason="'NO_TAX'",
        message="'No tax rule for ' || category || ' and no default tax rule'",
        params={"default_tax": default_tax_id, "default_card": default_card_id},
    )
