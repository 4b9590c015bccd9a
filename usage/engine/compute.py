"""Running gates in DuckDB: each gate one statement over the previous gate's table.

A gate's steps (`usage.gates.base.Gate`) become the CTEs of one `CREATE TABLE gate_<name> AS …`; a
step that reads the step before it twice (`{prev}` in its joins) or a side table (`@name`) makes
the steps so far a table first, so every statement can be run by hand in a DuckDB shell over the
tables it names. The outcome (the first gate a record fails, its reason and message) is one more
statement over the last gate's table.
"""

import re

from .timing import phase

PARAM = re.compile(r"\$([A-Za-z_]\w*)")


def execute(duck, sql: str, params: dict | None = None):
    """Run `sql` with the `$name` parameters it uses (DuckDB refuses unused ones)."""
    used = set(PARAM.findall(sql))
    return duck.execute(sql, {k: v for k, v in (params or {}).items() if k in used} or None)


def run_gates(duck, gates, source: str) -> str:
    """Run `gates` in order over DuckDB table `source`; the last gate's table."""
    table = source
    for gate in gates:
        table = run_gate(duck, gate, table)
    return table


def run_gate(duck, gate, source: str) -> str:
    ctes: list[tuple[str, str]] = []
    tip = source
    parts = 0

    def materialize():
        nonlocal tip, parts
        if ctes:
            parts += 1
            tip = _create(duck, f"gate_{gate.name}_{parts}", ctes, gate.params)
            ctes.clear()

    for select, joins in gate.steps:
        if select.startswith("@") or "{prev}" in joins:
            materialize()
        joins = joins.replace("{prev}", tip)
        if select.startswith("@"):
            with phase(f"gate {gate.name}: {select[1:]}"):
                execute(duck, f"CREATE OR REPLACE TABLE {select[1:]} AS {joins}", gate.params)
            continue
        previous = ctes[-1][0] if ctes else tip
        ctes.append((f"step{len(ctes) + 1}", f"SELECT s.*, {select} FROM {previous} s {joins}"))
    if not ctes:
        ctes.append(("step1", f"SELECT * FROM {tip}"))
    return _create(duck, f"gate_{gate.name}", ctes, gate.params)


def _create(duck, name: str, ctes, params) -> str:
    body = ",\n".join(f"{cte} AS ({query})" for cte, query in ctes)
    with phase(name):
        execute(duck, f"CREATE OR REPLACE TABLE {name} AS WITH {body}\nSELECT * FROM {ctes[-1][0]}", params)
    return name


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


def run_outcome(duck, gates, tip: str, columns, stages, name: str = "outcome") -> str:
    """Table `name`: `columns` of the last gate's table `tip`, the counter columns, and the outcome."""
    kept = sorted({"period_id", *(c for g in gates for counter in g.counters for c in counter[1:] if c != "0")})
    extra = [c for c in kept if c not in columns]
    first_failure = " ".join(f"WHEN NOT ({g.ok}) THEN '{g.name}'" for g in gates)
    execute(
        duck,
        f"CREATE OR REPLACE TABLE {name} AS SELECT {', '.join([*columns, *extra])}, {outcome_select(gates, stages)} "
        f"FROM (SELECT s.*, CASE {first_failure} END AS _failed FROM {tip} s) s",
        {k: v for g in gates for k, v in g.params.items()},
    )
    return name


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
            "(period_id BIGINT, kind VARCHAR, owner_id BIGINT, ref_id BIGINT, total BIGINT)"
        )
        return 0
    return duck.execute(  # a CREATE TABLE AS answers its row count
        f"CREATE OR REPLACE TABLE {name} AS SELECT period_id, kind, CAST(owner_id AS BIGINT) AS owner_id, "
        f"ref_id, CAST(SUM(total) AS BIGINT) AS total FROM ({' UNION ALL '.join(uses)}) used "
        "GROUP BY period_id, kind, owner_id, ref_id"
    ).fetchone()[0]
