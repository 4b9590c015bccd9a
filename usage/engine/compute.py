"""Running gates in DuckDB: gates as named CTEs of as few statements as their steps allow.

A gate's steps (`usage.gates.base.Gate`) become CTEs, and gates that follow each other one
`CREATE TABLE gate_<last> AS …` (each gate's last CTE named `gate_<name>`); a step that reads the
step before it twice (`{prev}` in its joins) or a side table (`@name`) makes the steps so far a table
first, so every statement can be run by hand in a DuckDB shell over the tables it names. The
outcome (the first gate a record fails, its reason and message) is the last CTE of the last
statement (`run_outcome`).
"""

import re

from ..sql import TOTAL_TYPE
from .timing import phase

PARAM = re.compile(r"\$([A-Za-z_]\w*)")


def execute(duck, sql: str, params: dict | None = None):
    """Run `sql` with the `$name` parameters it uses (DuckDB refuses unused ones)."""
    used = set(PARAM.findall(sql))
    return duck.execute(sql, {k: v for k, v in (params or {}).items() if k in used} or None)


def run_gates(duck, gates, source: str) -> str:
    """Run `gates` in order over DuckDB table `source`; the last gate's table.

    Gates follow each other in one statement, each gate's steps CTEs and its last one named
    `gate_<name>`: a table per gate would write every record's columns once more for each gate
    (on 200k records, creating a gate's table cost more than its joins). A step that reads the table
    it extends (`{prev}`) or a side table (`@name`) makes what came before it a table first."""
    chain = _Chain(duck, source)
    for gate in gates:
        chain.add(gate)
    return chain.create(f"gate_{gates[-1].name}") if gates else source


class _Chain:
    """The CTEs of gates run so far, over the table `tip`."""

    def __init__(self, duck, tip: str):
        self.duck, self.tip = duck, tip
        self.ctes: list[tuple[str, str]] = []
        self.params: dict = {}
        self.parts = 0

    def add(self, gate):
        for key, value in gate.params.items():
            assert self.params.get(key, value) == value, f"gates disagree on ${key}"
        self.params.update(gate.params)
        for number, (select, joins) in enumerate(gate.steps, start=1):
            if select.startswith("@") or "{prev}" in joins:
                self.parts += 1
                self.create(f"gate_{gate.name}_{self.parts}")
            joins = joins.replace("{prev}", self.tip)
            if select.startswith("@"):
                with phase(f"gate {gate.name}: {select[1:]}"):
                    execute(self.duck, f"CREATE OR REPLACE TABLE {select[1:]} AS {joins}", self.params)
                continue
            last = number == len(gate.steps)
            name = f"gate_{gate.name}" if last else f"{gate.name}_step{number}"
            self.ctes.append((name, f"SELECT s.*, {select} FROM {self.previous()} s {joins}"))
        if not self.ctes or self.ctes[-1][0] != f"gate_{gate.name}":
            self.ctes.append((f"gate_{gate.name}", f"SELECT * FROM {self.previous()}"))

    def previous(self) -> str:
        return self.ctes[-1][0] if self.ctes else self.tip

    def create(self, name: str) -> str:
        """Make the CTEs so far table `name`, the new tip."""
        if self.ctes:
            body = ",\n".join(f"{cte} AS ({query})" for cte, query in self.ctes)
            with phase(name):
                execute(
                    self.duck,
                    f"CREATE OR REPLACE TABLE {name} AS WITH {body}\nSELECT * FROM {self.ctes[-1][0]}",
                    self.params,
                )
            self.ctes.clear()
            self.tip = name
        return self.tip


def outcome_select(gates, stages: tuple[str, ...]) -> str:
    """The outcome of a record over the last gate's table `s` with `_failed` (the first gate it
    failed): stage, status, reason, message, and its charge and tax only if it passed."""
    last = gates[-1].name
    following = stages[stages.index(last) + 1] if last != stages[-1] else "done"
    reason = " ".join(f"WHEN '{g.name}' THEN {g.reason}" for g in gates)
    message = " ".join(f"WHEN '{g.name}' THEN {g.message}" for g in gates)
    passed = "mediated" if following == "done" else "pending"
    return (
        f"COALESCE(_failed, '{following}') AS stage, "
        f"CASE WHEN _failed IS NULL THEN '{passed}' ELSE 'quarantined' END AS status, "
        f"COALESCE(CASE _failed {reason} END, '') AS reason, "
        f"SUBSTR(COALESCE(CASE _failed {message} END, ''), 1, 500) AS message, "
        "CASE WHEN _failed IS NULL THEN charge_micros END AS charge_micros, "
        "CASE WHEN _failed IS NULL THEN tax_micros END AS tax_micros"
    )


def run_outcome(duck, gates, tip: str, columns, stages, name: str = "outcome", run=()) -> str:
    """Table `name`: `columns` of the last gate's table, the counter columns, and the outcome. The
    gates `run` (the last of `gates`) are run over `tip` first, in the same statement where their
    steps allow: the outcome then does not write the last gate's wide table once more."""
    kept = sorted({"period_id", *(c for g in gates for counter in g.counters for c in counter[1:] if c != "0")})
    extra = [c for c in kept if c not in columns]
    first_failure = " ".join(f"WHEN NOT ({g.ok}) THEN '{g.name}'" for g in gates)
    chain = _Chain(duck, tip)
    for gate in run:
        chain.add(gate)
    for gate in gates:
        chain.params.update(gate.params)  # the messages of earlier gates may use theirs
    chain.ctes.append(("failed", f"SELECT s.*, CASE {first_failure} END AS _failed FROM {chain.previous()} s"))
    chain.ctes.append((name, f"SELECT {', '.join([*columns, *extra])}, {outcome_select(gates, stages)} FROM failed s"))
    return chain.create(name)


def counter_deltas(duck, gates, outcome: str, name: str = "counter_delta") -> int:
    """Table `name`: what the outcome's records that were not quarantined add to their period's
    counters (allowance draws, period tier quantities); its row count."""
    uses = [
        f"SELECT period_id, '{kind}' AS kind, {owner} AS owner_id, {ref} AS ref_id, {quantity} AS total "
        f"FROM {outcome} WHERE status <> 'quarantined' AND {ref} IS NOT NULL AND {quantity} > 0"
        for g in gates
        for kind, owner, ref, quantity in g.counters
    ]
    if not uses:
        duck.execute(
            f"CREATE OR REPLACE TABLE {name} "
            f"(period_id BIGINT, kind VARCHAR, owner_id BIGINT, ref_id BIGINT, total {TOTAL_TYPE})"
        )
        return 0
    return duck.execute(  # a CREATE TABLE AS answers its row count
        f"CREATE OR REPLACE TABLE {name} AS SELECT period_id, kind, CAST(owner_id AS BIGINT) AS owner_id, "
        f"ref_id, CAST(SUM(total) AS {TOTAL_TYPE}) AS total FROM ({' UNION ALL '.join(uses)}) used "
        "GROUP BY period_id, kind, owner_id, ref_id"
    ).fetchone()[0]
