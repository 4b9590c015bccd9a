"""Composes the gates into one SQL statement over a batch of records.

New records: `WITH g0 AS (staging rows), g1 AS (gate step), … INSERT INTO usage_usagerecord SELECT …`.
Waiting or quarantined records: the same chain, starting at their gate, as `UPDATE … FROM`.
The first gate a record fails sets its stage, status QUARANTINED, reason and message; a record
passing every gate of a chain that ends before tax waits, PENDING, at the next gate.
"""

from typing import NamedTuple

from django.conf import settings
from django.db import connection

from billing.models import TierMode, TierScope

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
    "included_quantity",
    "included_micros",
    "allowance_id",
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
    "parse_reason",
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
    name="parse",
    produces=(),
    steps=(),
    ok="parse_error IS NULL",
    reason="COALESCE(parse_reason, 'PARSE_ERROR')",
    message="parse_error",
)
STAGES = ("parse", "classify", "dedup", "identify", "bucket", "rate", "tax")
REPROCESSABLE = ("identify", "bucket", "rate", "tax")


def repeats_table(vendor: str, collector_id: int) -> str:
    """The record keys repeated within the file being mediated, with their first line: written by
    `usage.staging.load_file`, read by the dedup gate."""
    return f"usage_filerepeats_{collector_id}" if vendor == "postgresql" else "usage_filerepeats"


def gates_for(collector, first: str = "parse", last: str = "tax", *, staged: str | None = None) -> list[Gate]:
    """The gates `first`..`last` as SQL; `staged`, a small batch's staging table, limits the
    allowance passes to what the batch's services need."""
    dialect = dialect_for(connection)
    default_card, default_tax, features = rating_features()
    built = {
        "parse": lambda: PARSE,
        "classify": lambda: classify.gate(collector),
        "dedup": lambda: dedup.gate(collector, dialect, repeats_table(connection.vendor, collector.pk)),
        "identify": lambda: identify.GATE,
        "bucket": lambda: bucket.gate(collector),
        "rate": lambda: rate.gate(dialect, default_card, **allowance_passes(staged), **features),
        "tax": lambda: tax.gate(dialect, default_tax, default_card),
    }
    return [built[name]() for name in STAGES[STAGES.index(first) : STAGES.index(last) + 1]]


def allowance_passes(staged: str | None = None) -> dict:
    """The most quantity and money allowances any service has across its subscriptions: one drawing
    pass each. With `staged`, only the services any staged identifier names (at any time): a small
    batch looks up its few services instead of reading every subscription."""
    batch_services = (
        "WHERE sub.service_id IN (SELECT i.service_id FROM billing_serviceidentifier i "
        f"WHERE i.value IN (SELECT identifier FROM {staged})) "
        if staged
        else ""
    )
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT MAX(q), MAX(m) FROM (SELECT sub.service_id, "
            "SUM(CASE WHEN iv.unit = 'money' THEN 0 ELSE 1 END) AS q, "
            "SUM(CASE WHEN iv.unit = 'money' THEN 1 ELSE 0 END) AS m FROM billing_subscription sub "
            "JOIN billing_includedvalue iv ON COALESCE(iv.plan_id, -iv.product_id) = "
            f"COALESCE(sub.plan_id, -sub.product_id) {batch_services}GROUP BY sub.service_id) per_service"
        )
        quantity, money = cursor.fetchone()
        return {"allowance_passes": quantity or 0, "money_passes": money or 0}


def rating_features() -> tuple[int | None, int | None, dict]:
    """The default rate card and tax rule, and which optional steps of the rate gate any price
    needs (the others are left out of the SQL): one query, as every small batch asks."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT (SELECT id FROM billing_ratecard WHERE is_default ORDER BY id LIMIT 1), "
            "(SELECT id FROM billing_taxrule WHERE is_default ORDER BY id LIMIT 1), "
            "EXISTS (SELECT 1 FROM billing_rate WHERE tier_mode <> %s), "
            "EXISTS (SELECT 1 FROM billing_rate WHERE tier_mode <> %s AND tier_scope = %s), "
            "EXISTS (SELECT 1 FROM billing_ratecard WHERE split_time_bands)",
            [TierMode.NONE, TierMode.NONE, TierScope.PERIOD],
        )
        default_card, default_tax, tiers, period_tiers, split_bands = cursor.fetchone()
    features = {"tiers": bool(tiers), "period_tiers": bool(period_tiers), "split_bands": bool(split_bands)}
    return default_card, default_tax, features


class Composed(NamedTuple):
    head: str | None  # a small batch's steps before the first that reads counters, as a SELECT
    with_clause: str  # `WITH g0 AS (source), g1 …` (from the head's table, when there is a head)
    outcome: str  # the outcome SELECT list
    params: dict
    final: str  # the last CTE's name


HEAD_TABLE = "usage_gate_head"
COUNTERS_TABLE = "usage_periodcounter"


def compose(gates: list[Gate], source_select: str, *, small: bool = False) -> Composed:
    """The gate chain as SQL over `source_select`.

    Steps are inlined, but for the ones a gate fences (`Gate`), computed once per record and streamed,
    and a step read twice (by a join over `{prev}` or a side table), materialized. The first gate a
    record fails is worked out as `_failed` over the last gate's result.

    A `small` batch (an API request's) materializes every step that joins: PostgreSQL then plans
    each on its own instead of the inlined steps as one join problem, which took longer to plan
    (60 ms) than a batch of 1,000 records takes to run; a large batch's steps stay inlined, as
    copying every step's rows would cost more than planning.

    A small batch's steps before the first that reads the period counters form a `head`, run as
    its own statement before the counters are locked (`_outcome`): batches of several collectors
    then take turns only for the steps that draw.
    """
    params = {"true": True, "false": False}
    chain = [source_select]  # g0, g1, …
    materialized: set[int] = set()
    side_tables: list[tuple[int, str, str]] = []  # (defined after g<n>, name, query)
    for gate in gates:
        params.update(gate.params)
        for select, joins in gate.steps:
            n = len(chain) - 1
            if "{prev}" in joins:
                joins = joins.replace("{prev}", f"g{n}")
                materialized.add(n)
            if select.startswith("@"):
                side_tables.append((n, select[1:], joins))
                continue
            chain.append(f"SELECT s.*, {select} FROM g{n} s {joins}")
            if joins.strip() and small:
                materialized.add(n + 1)
    head_end = _head_end(chain, side_tables) if small else None
    side = "MATERIALIZED " if small else ""
    ctes, head_ctes = [], []
    for i, body in enumerate(chain):
        if head_end is not None and i <= head_end:
            head_ctes.append(f"g{i} AS {'MATERIALIZED ' if i in materialized else ''}({body})")
            if i < head_end:
                continue
            ctes.append(f"g{i} AS (SELECT * FROM {HEAD_TABLE})")
        else:
            ctes.append(f"g{i} AS {'MATERIALIZED ' if i in materialized else ''}({body})")
        ctes.extend(f"{name} AS {side}({query})" for after, name, query in side_tables if after == i)
    head = f"WITH {', '.join(head_ctes)} SELECT * FROM g{head_end}" if head_end is not None else None
    n = len(chain) - 1
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
    return Composed(head, "WITH " + ",\n".join(ctes), outcome, params, f"g{n}")


def _head_end(chain: list[str], side_tables) -> int | None:
    """The last step before the first that reads the counters, or None: no step reads them, or a
    side table hangs off a step before it (the head carries only that step's rows)."""
    reads = [i for i, body in enumerate(chain) if COUNTERS_TABLE in body]
    reads += [after + 1 for after, _, query in side_tables if COUNTERS_TABLE in query]
    if not reads or min(reads) < 2:
        return None  # nothing reads counters, or the head would be the staged rows alone
    end = min(reads) - 1
    if any(after < end for after, _, _ in side_tables):
        return None
    return end


def tune_session(connection) -> None:
    """Per-transaction planner settings for gate statements on PostgreSQL: their cost estimates
    trigger JIT compilation, which costs more than the statement."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL jit = off")
            cursor.execute("SET LOCAL work_mem = '256MB'")


def _gate_statement(cursor, sql: str, params: dict) -> None:
    """Run the gate chain: on PostgreSQL joined by hashing (a nested loop into the GiST identifier
    index cost 46 µs a record), while the statements after it, which join the outcome to records
    by primary key, keep nested loops (hashing them read the whole record table)."""
    if cursor.db.vendor != "postgresql":
        cursor.execute(sql, params)
        return
    cursor.execute("SET LOCAL enable_nestloop = off")
    try:
        cursor.execute(sql, params)
    finally:
        cursor.execute("SET LOCAL enable_nestloop = on")


OUTCOME_TABLE = "usage_gate_outcome"
USAGE_WRITE_LOCK = 73_010_001
USAGE_COUNTERS_LOCK = 73_010_002


def small_batch() -> int:
    """Batches up to this many records are planned step by step (see `compose`)."""
    return int(getattr(settings, "TOLLGATE_SMALL_BATCH", 20_000))


def intake(cursor, collector, file_id: int, staging_table: str, last: str = "tax", *, rows: int | None = None) -> int:
    """Mediate a batch of `rows` staged rows of one file into usage records; the number written."""
    if cursor.db.vendor == "postgresql":
        # Metering reads the highest record id under this lock (exclusive): see metering.services.
        cursor.execute("SELECT pg_advisory_xact_lock_shared(%s)", [USAGE_WRITE_LOCK])
    small = rows is not None and rows <= small_batch()
    gates, stored = gate_outcome(cursor, collector, file_id, staging_table, last, small=small)
    cursor.execute(
        f"INSERT INTO usage_usagerecord (file_id, collector_id, {', '.join(stored)}, {', '.join(OUTCOME_COLUMNS)}) "
        f"SELECT %s, %s, {', '.join(stored)}, {', '.join(OUTCOME_COLUMNS)} FROM {OUTCOME_TABLE}",
        [file_id, collector.pk],
    )
    return _finish(cursor, gates)


def gate_outcome(cursor, collector, file_id: int, staging_table: str, last: str = "tax", *, small: bool = False):
    """Run the gates parse..`last` over a staged batch into the outcome table: (the gates, the record
    columns to store). `bench/gate_steps.py` times this statement alone."""
    gates = gates_for(collector, "parse", last, staged=staging_table if small else None)
    produced = {c for g in gates for c in g.produces}
    later = [c for c in RECORD_COLUMNS if c not in STAGING_COLUMNS and c not in produced]
    defaults = [f"{DEFAULTS.get(c, NULL_BIGINT)} AS {c}" for c in later]
    source = f"SELECT line_no AS _row, {', '.join([*STAGING_SELECT, *defaults])} FROM {staging_table}"
    stored = [c for c in RECORD_COLUMNS if c not in ("charge_micros", "tax_micros")]
    _outcome(cursor, gates, source, stored, {"file_id": file_id, "collector_id": collector.pk}, small=small)
    return gates, stored


def advance(cursor, collector, first: str, last: str, where: str, params: dict | None = None, before_write=None) -> int:
    """Run gates `first`..`last` again over existing records chosen by `where` (on alias u), of one
    collector, or of any collector when `collector` is None (possible from `rate` on: the later
    gates do not depend on the collector's settings). Returns how many records were run.

    The outcome table keeps each record's previous values as `_old_<column>`: `before_write(cursor,
    outcome_table)` may compare them before the records change, and only the records whose outcome
    differs are written (a rebalance mostly confirms what is there, and rewriting a row costs a new
    row version and an entry in every index)."""
    gates = gates_for(collector, first, last)
    produced = {c for g in gates for c in g.produces}
    base = [c for c in RECORD_COLUMNS if c not in produced]
    assigned = sorted(produced - {"charge_micros", "tax_micros"})
    written = [*assigned, *OUTCOME_COLUMNS]
    mine = "u.collector_id = %(collector_id)s AND " if collector is not None else ""
    source = (
        "SELECT u.id, u.id AS _row, u.file_id, NULL AS parse_error, NULL AS parse_reason, "
        f"{', '.join('u.' + c for c in base)}, "
        f"{', '.join(f'u.{c} AS _old_{c}' for c in written)} FROM usage_usagerecord u WHERE {mine}({where})"
    )
    params = {**(params or {}), "collector_id": getattr(collector, "pk", None)}
    shown = [c for c in ("file_id", "record_id", "service_id", "usage_at", "category") if c not in assigned]
    _outcome(cursor, gates, source, ["id", *assigned, *shown, *(f"_old_{c}" for c in written)], params)
    if before_write is not None:
        before_write(cursor, OUTCOME_TABLE)
    dialect = dialect_for(connection)
    changed = " OR ".join(dialect.is_distinct(f"_old_{c}", c) for c in written)
    sets = ", ".join(f"{c} = r.{c}" for c in written)
    cursor.execute(
        f"UPDATE usage_usagerecord SET {sets} FROM (SELECT * FROM {OUTCOME_TABLE} WHERE {changed}) r "
        "WHERE usage_usagerecord.id = r.id"
    )
    return _finish(cursor, gates)


OUTCOME_COLUMNS = ("stage", "status", "reason", "message", "charge_micros", "tax_micros")


def _outcome(cursor, gates, source: str, columns, params: dict, *, small: bool = False) -> None:
    """The chain's result, with the columns `columns`, the outcome and what counters need, as a
    temporary table: records and counters are then written from it by plain statements. A `small`
    batch is planned step by step (`compose`)."""
    head, with_clause, outcome, gate_params, final = compose(gates, source, small=small)
    kept = sorted({"period_id", *(c for g in gates for counter in g.counters for c in counter[1:] if c != "0")})
    extra = [c for c in kept if c not in columns]
    cursor.execute(f"DROP TABLE IF EXISTS {OUTCOME_TABLE}")
    if head is not None:
        cursor.execute(f"DROP TABLE IF EXISTS {HEAD_TABLE}")
        _gate_statement(cursor, f"CREATE TEMP TABLE {HEAD_TABLE} AS {head}", {**gate_params, **params})
    if cursor.db.vendor == "postgresql" and any(g.counters for g in gates):
        # Allowances and period tiers are drawn from counters this statement reads and the batch
        # then adds to: batches that draw (any collector, reprocess, rebalance) take turns until
        # commit, so none draws from a total another has not yet added to. (SQLite has one writer.)
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [USAGE_COUNTERS_LOCK])
    _gate_statement(
        cursor,
        f"CREATE TEMP TABLE {OUTCOME_TABLE} AS {with_clause}\n"
        f"SELECT {', '.join([*columns, *extra])}, {outcome} FROM {final}",
        {**gate_params, **params},
    )
    if head is not None:
        cursor.execute(f"DROP TABLE {HEAD_TABLE}")


def _finish(cursor, gates) -> int:
    """Add the batch's allowance draws and tier quantities to the period counters, and clean up."""
    cursor.execute(f"SELECT COUNT(*) FROM {OUTCOME_TABLE}")
    count = cursor.fetchone()[0]
    uses = [
        f"SELECT period_id, '{kind}' AS kind, {owner} AS owner_id, {ref} AS ref_id, {quantity} AS total "
        f"FROM {OUTCOME_TABLE} WHERE status <> 'quarantined' AND {ref} IS NOT NULL AND {quantity} > 0"
        for g in gates
        for kind, owner, ref, quantity in g.counters
    ]
    if uses:
        # `WHERE 1 = 1`: SQLite needs a WHERE before an upsert's ON CONFLICT after INSERT … SELECT.
        cursor.execute(
            "INSERT INTO usage_periodcounter (period_id, kind, owner_id, ref_id, total) "
            f"SELECT period_id, kind, owner_id, ref_id, SUM(total) FROM ({' UNION ALL '.join(uses)}) used "
            "WHERE 1 = 1 GROUP BY period_id, kind, owner_id, ref_id "
            "ON CONFLICT (period_id, kind, owner_id, ref_id) DO UPDATE SET total = usage_periodcounter.total + "
            "excluded.total"
        )
    cursor.execute(f"DROP TABLE {OUTCOME_TABLE}")
    return count
