"""SQL helpers for the gates, which run in DuckDB (usage/engine), whatever the store.

Money is integer micro-units. Quantities are DECIMAL base units with three places, counted as
integer thousandths wherever they are divided or priced. Intermediate products are HUGEINT (128-bit:
exact, no overflow) and divided with `//`, which truncates toward zero; `round_div` turns that into
the card's rounding mode. (`/` on integers or decimals gives a DOUBLE in DuckDB: the gates never use it.)
"""

from billing.models import QUANTITY, QUANTITY_PLACES, THOUSANDTH, TOTAL

THOUSANDTHS = 10**QUANTITY_PLACES  # a base unit's thousandths: the finest quantity a record keeps
QUANTITY_TYPE = f"DECIMAL({QUANTITY['max_digits']},{QUANTITY_PLACES})"
# A total of quantities (a period counter, an allowance, a tier start): base units to the thousandth,
# or a money allowance's micro-units (usage.models.PeriodCounter).
TOTAL_TYPE = f"DECIMAL({TOTAL['max_digits']},{QUANTITY_PLACES})"


def exact(expr: str) -> str:
    return f"CAST({expr} AS HUGEINT)"


def idiv(num: str, den: str) -> str:
    return f"(({num}) // ({den}))"


def bigint(expr: str) -> str:
    return f"CAST({expr} AS BIGINT)"


def micros(decimal_column: str) -> str:
    """A DECIMAL column (up to 6 places) as exact integer micro-units."""
    return bigint(f"ROUND({decimal_column} * 1000000)")


# Prices per unit carry 10 decimals: they are counted in units of 10^-10, PRICE_PER_MICRO per micro-unit.
PRICE_PER_MICRO = 10_000


def price_units(decimal_column: str) -> str:
    """A price column (up to 10 places) as exact integer 10^-10 units."""
    return f"CAST(ROUND({decimal_column} * 10000000000) AS HUGEINT)"


def seconds_of_day(time_column: str) -> str:
    """A TIME column as seconds since midnight."""
    return f"(hour({time_column}) * 3600 + minute({time_column}) * 60 + second({time_column}))"


def round_div(num: str, den: str, mode: str) -> str:
    """num / den rounded to an integer by `mode` (an SQL expression: 'half_up', 'up', 'down'),
    away from zero for 'up' and half-way cases; num may be negative, den is positive."""
    n, d = f"({num})", f"({den})"
    mag = f"ABS({n})"
    half_up = idiv(f"{mag} + {idiv(d, '2')}", d)
    up = idiv(f"{mag} + {d} - 1", d)
    down = idiv(mag, d)
    magnitude = f"(CASE {mode} WHEN 'up' THEN {up} WHEN 'down' THEN {down} ELSE {half_up} END)"
    return bigint(f"CASE WHEN {n} < 0 THEN -{magnitude} ELSE {magnitude} END")


def decimal_step(decimals: str) -> str:
    """Micro-units in one unit of the last kept decimal: a card rounding to 4 decimals counts in 100s."""
    return (
        f"CASE {decimals} WHEN 0 THEN 1000000 WHEN 1 THEN 100000 WHEN 2 THEN 10000 WHEN 3 THEN 1000 "
        "WHEN 4 THEN 100 WHEN 5 THEN 10 ELSE 1 END"
    )


def thousandths(quantity: str) -> str:
    """A quantity (base units, three places) as an exact integer count of thousandths."""
    return f"CAST(({quantity}) * {THOUSANDTHS} AS HUGEINT)"


def from_thousandths(count: str) -> str:
    """An integer count of thousandths as a quantity in base units (DECIMAL, three places)."""
    return f"(CAST({count} AS DECIMAL(38,0)) * {THOUSANDTH})"


def round_up_to(quantity: str, step: str) -> str:
    """A non-negative `quantity` rounded up to a whole number of `step`s (both base units)."""
    q, n = thousandths(quantity), thousandths(step)
    return from_thousandths(f"((({q}) + ({n}) - 1) // ({n})) * ({n})")
