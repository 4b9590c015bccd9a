"""Composes the gates into one SQL statement over a batch of records.

New records: `WITH g0 AS (staging rows), g1 AS (gate step), … INSERT INTO usage_usagerecord SELECT …`.
Waiting or quarantined records: the same chain, starting at their gate, as `UPDATE … FROM`.
The first gate a record fails sets its stage, status QUARANTINED, reason and message; a record
passing every gate of a chain that ends before tax waits, PENDING, at the next gate.
"""

from django.db import connection

from billing.models import RateCard, TaxRule

from .gates import bucket, classify, dedup, identify, rate, tax
from .gates.base import Gate
from .sql import dialect_for

# Columns of usage_usagerecord that gates read or write (besides id, file, collector).
RECORD_COLUMNS = (
    "line_no",
    "record_key",
    "is_duplicate",
    "record_id",
    "identifier",
    "usage_at",
    "usage_date",
    "duration",
    "volume",
    "quantity",
    "destination",
    "usage_type",
    "amount_micros",
    "local_weekday",
    "local_seconds",
    "category",
    "service_id",
    "account_id",
    "period_id",
    "is_late",
    "rate_id",
    "rated_quantity",
    "discount_id",
    "charge_micros",
    "tax_micros",
    "raw",
)
STAGING_COLUMNS = (
    "line_no",
    "record_key",
    "record_id",
    "identifier",
    "usage_at",
    "usage_date",
    "duration",
    "volume",
    "quantity",
    "destination",
    "usage_type",
    "amount_micros",
    "local_weekday",
    "local_seconds",
    "parse_error",
    "raw",
)
# Values of gate-produced columns for a chain that stops before their gate (typed: an untyped NULL
# in a CTE is text on PostgreSQL).
DEFAULTS = {"is_duplicate": "FALSE", "is_late": "FALSE", "category": "''"}
NULL_BIGINT = "CAST(NULL AS BIGINT)"
TEXT_COLUMNS = ("record_id", "identifier", "destination", "usage_type", "raw")
# COPY's CSV format reads an empty field as NULL; text columns are never NULL in a record.
STAGING_SELECT = tuple(f"COALESCE({c}, '') AS {c}" if c in TEXT_COLUMNS else c for c in STAGING_COLUMNS)
PARSE = Gate(
    name="parse", produces=(), steps=(), ok="parse_error IS NULL", reason="'PARSE_ERROR'", message="parse_error"
)
STAGES = ("parse", "classify", "dedup", "identify", "bucket", "rate", "tax")
REPROCESSABLE = ("identify", "bucket", "rate", "tax")


def gates_for(collector, first: str = "parse", last: str = "tax") -> list[Gate]:
    dialect = dialect_for(connection)
    default_card = RateCard.objects.filter(is_default=True).values_list("pk", flat=True).first()
    default_tax = TaxRule.objects.filter(is_default=True).values_list("pk", flat=True).first()
    built = {
        "parse": PARSE,
        "classify": classify.gate(collector),
        "dedup": dedup.gate(collector),
        "identify": identify.GATE,
        "bucket": bucket.gate(collector),
        "rate": rate.gate(dialect, default_card),
        "tax": tax.gate(dialect, default_tax, default_card),
    }
    return [built[name] for name in STAGES[STAGES.index(first) : STAGES.index(last) + 1]]


def compose(gates: list[Gate], source_select: str) -> tuple[str, str, dict, str]:
    """(`WITH g0 AS (source), g1 …`, the outcome SELECT list, params, the last CTE's name).

    A gate marked `materialize` is computed once: inlined, its expressions (the exact charge
    arithmetic) would be evaluated again at every later reference. The first gate a record fails is
    worked out as `_failed` over the last (materialized) gate's result.
    """
    params = {"true": True, "false": False}
    ctes = [f"g0 AS ({source_select})"]
    n = 0
    for gate in gates:
        params.update(gate.params)
        for select, joins in gate.steps:
            n += 1
            if "{prev}" in joins:
                joins = joins.replace("{prev}", f"g{n - 1}")
                ctes[-1] = ctes[-1].replace(" AS (", " AS MATERIALIZED (", 1)  # read twice: compute once
            ctes.append(f"g{n} AS (SELECT s.*, {select} FROM g{n - 1} s {joins})")
        if gate.materialize and " AS MATERIALIZED (" not in ctes[-1]:
            ctes[-1] = ctes[-1].replace(" AS (", " AS MATERIALIZED (", 1)
    first_failure = " ".join(f"WHEN NOT ({g.ok}) THEN '{g.name}'" for g in gates)
    n += 1
    ctes.append(f"g{n} AS (SELECT s.*, CASE {first_failure} END AS _failed FROM g{n - 1} s)")
    following = STAGES[STAGES.index(gates[-1].name) + 1] if gates[-1].name != "tax" else "done"
    reason = " ".join(f"WHEN '{g.name}' THEN {g.reason}" for g in gates)
    message = " ".join(f"WHEN '{g.name}' THEN {g.message}" for g in gates)
    passed = "mediated" if following == "done" else "pending"
    outcome = (
        f"COALESCE(_failed, '{following}') AS stage, "
        f"CASE WHEN _failed IS NULL THEN '{passed}' ELSE 'quarantined' END AS status, "
        f"COALESCE(CASE _failed {reason} END, '') AS reason, "
        f"SUBSTR(COALESCE(CASE _failed {message} END, ''), 1, 500) AS message, "
        "CASE WHEN _failed IS NULL THEN charge_micros END AS charge_micros, "
        "CASE WHEN _failed IS NULL THEN tax_micros END AS tax_micros"
    )
    return "WITH " + ",\n".join(ctes), outcome, params, f"g{n}"


def tune_session(connection) -> None:
    """Per-transaction planner settings for gate statements on PostgreSQL: their cost estimates
    trigger JIT compilation, which costs more than the statement; and a batch is joined best by
    hashing (a nested loop into the GiST identifier index cost 46 µs a record)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL jit = off")
            cursor.execute("SET LOCAL work_mem = '256MB'")
            cursor.execute("SET LOCAL enable_nestloop = off")


def intake_sql(collector, file_id: int, staging_table: str, last: str = "tax") -> tuple[str, dict]:
    """Mediate a batch of staged rows of one file into usage records, in one statement."""
    gates = gates_for(collector, "parse", last)
    produced = {c for g in gates for c in g.produces}
    later = [c for c in RECORD_COLUMNS if c not in STAGING_COLUMNS and c not in produced]
    defaults = [f"{DEFAULTS.get(c, NULL_BIGINT)} AS {c}" for c in later]
    source = f"SELECT line_no AS _row, {', '.join([*STAGING_SELECT, *defaults])} FROM {staging_table}"
    with_clause, outcome, params, final = compose(gates, source)
    stored = [c for c in RECORD_COLUMNS if c not in ("charge_micros", "tax_micros")]
    params.update({"file_id": file_id, "collector_id": collector.pk})
    sql = (
        f"{with_clause}\nINSERT INTO usage_usagerecord (file_id, collector_id, {', '.join(stored)}, "
        f"stage, status, reason, message, charge_micros, tax_micros)\n"
        f"SELECT %(file_id)s, %(collector_id)s, {', '.join(stored)}, {outcome} FROM {final}"
    )
    return sql, params


def advance_sql(collector, first: str, last: str, where: str) -> tuple[str, dict]:
    """Run gates `first`..`last` again over existing records chosen by `where` (on alias u)."""
    gates = gates_for(collector, first, last)
    produced = {c for g in gates for c in g.produces}
    base = [c for c in RECORD_COLUMNS if c not in produced]
    source = (
        f"SELECT u.id, u.id AS _row, NULL AS parse_error, {', '.join('u.' + c for c in base)} FROM usage_usagerecord u "
        f"WHERE u.collector_id = %(collector_id)s AND ({where})"
    )
    with_clause, outcome, params, final = compose(gates, source)
    params["collector_id"] = collector.pk
    assigned = sorted(produced - {"charge_micros", "tax_micros"})
    sets = ", ".join(
        [f"{c} = r.{c}" for c in assigned]
        + [f"{c} = r.{c}" for c in ("stage", "status", "reason", "message", "charge_micros", "tax_micros")]
    )
    cols = ", ".join(["id", *assigned])
    sql = (
        f"{with_clause}, r AS (SELECT {cols}, {outcome} FROM {final})\n"
        f"UPDATE usage_usagerecord SET {sets} FROM r WHERE usage_usagerecord.id = r.id"
    )
    return sql, params
