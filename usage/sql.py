"""The few places PostgreSQL and SQLite SQL differ, so that each gate is written once.

Money is integer micro-units. PostgreSQL computes the intermediate products in NUMERIC (exact,
no overflow) and divides with div(); SQLite's integers are 64-bit and `/` on integers truncates.
Both truncate toward zero, which `round_div` turns into the card's rounding mode.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Dialect:
    vendor: str

    @property
    def pg(self) -> bool:
        return self.vendor == "postgresql"

    @property
    def fence(self) -> str:
        """Appended to a SELECT, keeps the planner from inlining it into the query that reads it, so
        that its expressions are evaluated once per row and not again at every reference above."""
        return " OFFSET 0" if self.pg else " LIMIT -1 OFFSET 0"

    def exact(self, expr: str) -> str:
        return f"CAST({expr} AS NUMERIC)" if self.pg else f"({expr})"

    def idiv(self, num: str, den: str) -> str:
        return f"div({num}, {den})" if self.pg else f"(({num}) / ({den}))"

    def is_distinct(self, a: str, b: str) -> str:
        """a differs from b, NULL counting as a value."""
        return f"{a} IS DISTINCT FROM {b}" if self.pg else f"{a} IS NOT {b}"

    def bigint(self, expr: str) -> str:
        return f"CAST({expr} AS BIGINT)" if self.pg else f"CAST({expr} AS INTEGER)"

    def micros(self, decimal_column: str) -> str:
        """A DECIMAL column (up to 6 places) as exact integer micro-units."""
        return self.bigint(f"ROUND({decimal_column} * 1000000)")

    def contains(self, haystack: str, needle: str) -> str:
        return f"strpos({haystack}, {needle}) > 0" if self.pg else f"instr({haystack}, {needle}) > 0"

    def seconds_of_day(self, time_column: str) -> str:
        """A TIME column as seconds since midnight (SQLite stores it as 'HH:MM:SS[.ffffff]' text)."""
        if self.pg:
            return f"CAST(EXTRACT(EPOCH FROM {time_column}) AS INTEGER)"
        return (
            f"(CAST(substr({time_column}, 1, 2) AS INTEGER) * 3600 + CAST(substr({time_column}, 4, 2) AS INTEGER) * 60 "
            f"+ CAST(substr({time_column}, 7, 2) AS INTEGER))"
        )

    def add_days(self, date: str, days: str) -> str:
        """A DATE plus a whole number of days (SQLite stores dates as 'YYYY-MM-DD' text)."""
        return f"({date} + {days})" if self.pg else f"date({date}, '+' || ({days}) || ' days')"

    def round_div(self, num: str, den: str, mode: str) -> str:
        """num / den rounded to an integer by `mode` (an SQL expression: 'half_up', 'up', 'down'),
        away from zero for 'up' and half-way cases; num may be negative, den is positive.
        Callers build num and den from `exact()` factors so no product overflows on PostgreSQL."""
        n, d = f"({num})", f"({den})"
        mag = f"ABS({n})"
        half_up = self.idiv(f"{mag} + {self.idiv(d, '2')}", d)
        up = self.idiv(f"{mag} + {d} - 1", d)
        down = self.idiv(mag, d)
        magnitude = f"(CASE {mode} WHEN 'up' THEN {up} WHEN 'down' THEN {down} ELSE {half_up} END)"
        return self.bigint(f"CASE WHEN {n} < 0 THEN -{magnitude} ELSE {magnitude} END")


def decimal_step(decimals: str) -> str:
    """Micro-units in one unit of the last kept decimal: a card rounding to 4 decimals counts in 100s."""
    return (
        f"CASE {decimals} WHEN 0 THEN 1000000 WHEN 1 THEN 100000 WHEN 2 THEN 10000 WHEN 3 THEN 1000 "
        "WHEN 4 THEN 100 WHEN 5 THEN 10 ELSE 1 END"
    )


def dialect_for(connection) -> Dialect:
    return Dialect(connection.vendor)
