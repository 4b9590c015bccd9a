"""The gates over a batch: new records from a staged file (`intake`), or records already stored,
from the gate they wait at (`advance`: reprocess, rebalance, a standalone stage).

The gates run in DuckDB (usage/engine) over the catalogue the batch can reach; the store gets the
outcome (usage/store). The first gate a record fails sets its stage, status QUARANTINED, reason and
message; a record passing every gate of a chain that ends before tax waits, PENDING, at the next gate.
"""

import os
from dataclasses import dataclass

from billing.models import TierMode, TierScope

from . import store
from .engine import compute, duck, reference
from .engine.timing import phase
from .gates import bucket, classify, dedup, identify, rate, tax
from .gates.base import Gate

# Columns of a record that gates read or write (besides id, file, collector).
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
    "aggregate_charge_id",
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
    "corrects",
    "cancels",
    "parse_error",
    "parse_reason",
    "raw",
)
# Values of gate-produced columns for a chain that stops before their gate.
DEFAULTS = {"is_duplicate": "FALSE", "is_late": "FALSE", "category": "''"}
NULL_BIGINT = "CAST(NULL AS BIGINT)"
TEXT_COLUMNS = ("record_id", "identifier", "destination", "usage_type", "raw")
# A CSV reader reads an empty field as NULL; text columns are never NULL in a record. The raw line
# stays out of the gates (none reads it) and joins the outcome by line when records are written.
# A correction's columns stay out of the gates too: usage.corrections reads them from the file table.
STAGING_SELECT = tuple(
    f"COALESCE({c}, '') AS {c}" if c in TEXT_COLUMNS else c
    for c in STAGING_COLUMNS
    if c not in ("raw", "corrects", "cancels")
)
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


def gates_for(collector, duck_db, first: str = "parse", last: str = "tax") -> list[Gate]:
    """The gates `first`..`last`, shaped by the catalogue loaded in `duck_db` (which optional rate
    steps any price needs, how many allowance passes any service needs)."""
    default_card, default_tax, features = rating_features(duck_db)
    built = {
        "parse": lambda: PARSE,
        "classify": lambda: classify.gate(collector),
        "dedup": lambda: dedup.GATE,
        "identify": lambda: identify.GATE,
        "bucket": lambda: bucket.gate(collector),
        "rate": lambda: rate.gate(default_card, **allowance_passes(duck_db), **features),
        "tax": lambda: tax.gate(default_tax, default_card),
    }
    return [built[name]() for name in STAGES[STAGES.index(first) : STAGES.index(last) + 1]]


def allowance_passes(duck_db) -> dict:
    """The most quantity and money allowances any reachable service has across its subscriptions:
    one drawing pass each."""
    quantity, money = duck_db.execute(
        "SELECT MAX(q), MAX(m) FROM (SELECT sub.service_id, "
        "SUM(CASE WHEN iv.unit = 'money' THEN 0 ELSE 1 END) AS q, "
        "SUM(CASE WHEN iv.unit = 'money' THEN 1 ELSE 0 END) AS m FROM billing_subscription sub "
        "JOIN billing_includedvalue iv ON COALESCE(iv.plan_id, -iv.product_id) = "
        "COALESCE(sub.plan_id, -sub.product_id) GROUP BY sub.service_id) per_service"
    ).fetchone()
    return {"allowance_passes": int(quantity or 0), "money_passes": int(money or 0)}


def rating_features(duck_db) -> tuple[int | None, int | None, dict]:
    """The default rate card and tax rule, and which optional steps of the rate gate any price
    needs (the others are left out)."""
    default_card, default_tax, tiers, period_tiers, split_bands, tier_increments, aggregates = duck_db.execute(
        "SELECT (SELECT id FROM billing_ratecard WHERE is_default ORDER BY id LIMIT 1), "
        "(SELECT id FROM billing_taxrule WHERE is_default ORDER BY id LIMIT 1), "
        "EXISTS (SELECT 1 FROM billing_rate WHERE tier_mode <> $none), "
        "EXISTS (SELECT 1 FROM billing_rate WHERE tier_mode <> $none AND tier_scope = $period), "
        "EXISTS (SELECT 1 FROM billing_ratecard WHERE split_time_bands), "
        "EXISTS (SELECT 1 FROM billing_ratetier WHERE increment IS NOT NULL), "
        "EXISTS (SELECT 1 FROM billing_aggregatecharge)",
        {"none": TierMode.NONE.value, "period": TierScope.PERIOD.value},
    ).fetchone()
    features = {
        "tiers": bool(tiers),
        "period_tiers": bool(period_tiers),
        "split_bands": bool(split_bands),
        "tier_increments": bool(tier_increments),
        "aggregates": bool(aggregates),
    }
    return default_card, default_tax, features


def split_at_rate(gates) -> tuple[list, list]:
    """The gates before rate (they need no counters) and from rate on."""
    names = [g.name for g in gates]
    split = names.index("rate") if "rate" in names else len(gates)
    return gates[:split], gates[split:]


def drawing_outcome(duck_db, connection, gates, drawing, tip: str, columns) -> str:
    """The outcome table of `gates` over DuckDB table `tip`, running the gates from rate on
    (`drawing`) after taking the counter locks of its periods and reading their counters (in the
    caller's transaction, held to commit)."""
    if drawing:
        with phase("counters lock and read"):
            store.lock_counters(connection, store.counter_buckets(duck_db, tip))
            reference.load_counters(duck_db, connection, batch_periods(duck_db, tip))
    with phase("gates rate, tax and outcome"):
        return compute.run_outcome(duck_db, gates, tip, columns, STAGES, run=drawing)


def batch_periods(duck_db, tip: str) -> list[int]:
    """The periods the records of DuckDB table `tip` fell in: whose counters they read."""
    return duck.values(duck_db, f"SELECT DISTINCT period_id FROM {tip} WHERE period_id IS NOT NULL")


BATCH_KEYS = "SELECT DISTINCT record_key FROM batch WHERE record_key IS NOT NULL"


def _intake_gates(engine_db, collector, last: str):
    """The gates of an intake, its source table `gate_source` over the batch, the record columns the
    outcome keeps, and the query of the batch's distinct keys."""
    gates = gates_for(collector, engine_db, "parse", last)
    produced = {c for g in gates for c in g.produces}
    later = [c for c in RECORD_COLUMNS if c not in STAGING_COLUMNS and c not in produced]
    defaults = [f"{DEFAULTS.get(c, NULL_BIGINT)} AS {c}" for c in later]
    engine_db.execute(
        f"CREATE OR REPLACE TABLE gate_source AS SELECT line_no AS _row, {', '.join([*STAGING_SELECT, *defaults])} "
        "FROM batch"
    )
    stored = [c for c in RECORD_COLUMNS if c not in ("charge_micros", "tax_micros", "raw")]
    return gates, stored, BATCH_KEYS


def _kept_keys(collector, file_id: int, tip: str) -> str:
    return (
        f"SELECT {int(collector.pk)} AS collector_id, record_key, {int(file_id)} AS file_id, line_no "
        f"FROM {tip} WHERE record_key IS NOT NULL AND NOT is_duplicate ORDER BY record_key"
    )


def _records(collector, file_id: int, stored, outcome: str) -> tuple[dict[str, str], list[str]]:
    """The SELECTs of the batch's records as the store gets them, one per table they go to (the
    mediated ones to the records table, the others to the quarantine), in line order (record ids
    follow the file's lines), and their columns."""
    columns = ["file_id", "collector_id", *stored, *OUTCOME_COLUMNS, "raw"]
    select = (
        f"SELECT {int(file_id)} AS file_id, {int(collector.pk)} AS collector_id, "
        f"{', '.join(f'o.{c}' for c in [*stored, *OUTCOME_COLUMNS])}, COALESCE(b.raw, '') AS raw "
        f"FROM {outcome} o JOIN batch b ON b.line_no = o._row"
    )
    return {table: f"{select} WHERE o.status {keeps} ORDER BY o._row" for table, keeps in store.KEEPS.items()}, columns


def intake(connection, engine_db, collector, file_id: int, last: str = "tax") -> int:
    """Mediate the staged batch (DuckDB table `batch`, see usage.staging) of one file into usage
    records, in the caller's transaction; the number written.

    The batch's kept keys are written right after the gates before rate, before the counter locks:
    batches of other collectors drawing from the same periods then wait only for the rate gate and
    the records' write."""
    store.lock_for_insert(connection)
    gates, stored, keys = _intake_gates(engine_db, collector, last)
    before, drawing = split_at_rate(gates)
    for attempt in range(1, KEY_ATTEMPTS + 1):
        with phase("dedup lookup"):
            store.earlier_keys(engine_db, connection, collector.pk, file_id, keys)
        with phase("gates before rate"):
            tip = compute.run_gates(engine_db, before, "gate_source")
        try:
            with phase("write keys"):
                store.insert_keys(engine_db, connection, _kept_keys(collector, file_id, tip))
            break
        except store.KeyTaken:
            if attempt == KEY_ATTEMPTS:
                raise  # the batch fails; the next try of the file looks the keys up again
    outcome = drawing_outcome(engine_db, connection, gates, drawing, tip, ["_row", *stored])
    selects, columns = _records(collector, file_id, stored, outcome)
    with phase("write records"):
        count = sum(store.insert_records(engine_db, connection, s, t, columns) for t, s in selects.items())
    with phase("write counters"):
        compute.counter_deltas(engine_db, gates, outcome)
        store.add_counters(engine_db, connection)
    return count


class Stale(Exception):
    """A prepared batch's counters or keys changed in the store before it could be written: it is
    computed again under its locks."""


@dataclass
class PreparedBatch:
    """A batch computed outside any transaction, as the files its write COPYs (PostgreSQL), and what
    its write checks: the counter lock buckets and the counters it computed with."""

    directory: str
    count: int
    buckets: list[int]
    periods: list[int]
    record_columns: list[str]

    def path(self, name: str) -> str:
        return os.path.join(self.directory, f"{name}.csv")


def prepare_intake(connection, engine_db, collector, file_id: int, last: str, read_counters, directory: str):
    """Compute the staged batch as `intake` does, but outside a transaction: `read_counters(periods)`
    fills the engine's counter table (without locks), and the outcome is exported to `directory`
    for `write_prepared`. The batch's counter deltas stay in engine table `counter_delta`."""
    gates, stored, keys = _intake_gates(engine_db, collector, last)
    before, drawing = split_at_rate(gates)
    with phase("dedup lookup"):
        store.earlier_keys(engine_db, connection, collector.pk, file_id, keys)
    with phase("gates before rate"):
        tip = compute.run_gates(engine_db, before, "gate_source")
    buckets, periods = [], []
    if drawing:
        buckets, periods = store.counter_buckets(engine_db, tip), batch_periods(engine_db, tip)
        with phase("counters read"):
            read_counters(periods)
    with phase("gates rate, tax and outcome"):
        outcome = compute.run_outcome(engine_db, gates, tip, ["_row", *stored], STAGES, run=drawing)
    with phase("counter deltas"):
        compute.counter_deltas(engine_db, gates, outcome)
    selects, columns = _records(collector, file_id, stored, outcome)
    count = engine_db.execute(f"SELECT COUNT(*) FROM {outcome}").fetchone()[0]
    prepared = PreparedBatch(directory, count, buckets, periods, columns)
    counters = ", ".join(store.COUNTER_COLUMNS)
    with phase("export"):
        duck.export_csv(engine_db, _kept_keys(collector, file_id, outcome), store.KEY_COLUMNS, prepared.path("keys"))
        for table, select in selects.items():
            duck.export_csv(engine_db, select, columns, prepared.path(table), timestamps=("usage_at",))
        for name, table in (("deltas", "counter_delta"), ("used", "usage_periodcounter")):
            duck.export_csv(engine_db, f"SELECT {counters} FROM {table}", store.COUNTER_COLUMNS, prepared.path(name))
    return prepared


def write_prepared(connection, prepared: PreparedBatch) -> int:
    """Write a prepared batch in the caller's transaction, after its counter locks; Stale when a
    counter it read or a key it keeps changed in the store since it was computed."""
    store.lock_for_insert(connection)
    with phase("counters lock and check"):
        store.lock_counters(connection, prepared.buckets)
        if prepared.periods and not store.counters_unchanged(connection, prepared.periods, prepared.path("used")):
            raise Stale("the counters of the batch's periods changed while it was computed")
    with phase("write keys"):
        try:
            store.copy_keys(connection, prepared.path("keys"))
        except store.KeyTaken as exc:
            raise Stale(str(exc)) from exc
    with phase("write records"):
        count = sum(
            duck.copy_csv(connection, prepared.path(table), table, prepared.record_columns) for table in store.KEEPS
        )
    with phase("write counters"):
        store.copy_counters(connection, prepared.path("deltas"))
    return count


@dataclass
class Advanced:
    """What `advance` ran: records by the status they ended with."""

    statuses: dict[str, int]

    @property
    def records(self) -> int:
        return sum(self.statuses.values())


def advance(
    cursor, collector, first: str, last: str, where: str, params=None, before_write=None, *, tables=tuple(store.KEEPS)
) -> Advanced:
    """Run gates `first`..`last` again over existing records chosen by `where` (store SQL on alias u)
    in `tables`, of one collector, or of any collector when `collector` is None (possible from `rate`
    on: the later gates do not depend on the collector's settings).

    The engine's outcome table keeps each record's previous values as `_old_<column>`:
    `before_write(engine_db, outcome_table)` may compare them before the records change, and only
    the records whose outcome differs are written (a rebalance mostly confirms what is there, and
    rewriting a row costs a new row version and an entry in every index). A record that ends
    mediated is kept in the records table, any other in the quarantine: one that changes sides
    moves, in the caller's transaction."""
    connection = cursor.db
    with duck.session() as engine_db:
        return _advance(cursor, connection, engine_db, collector, first, last, where, params, before_write, tables)


def _advance(cursor, connection, engine_db, collector, first, last, where, params, before_write, tables) -> Advanced:
    from .models import UsageRecord

    chosen = STAGES[STAGES.index(first) : STAGES.index(last) + 1]
    produced = {c for g in chosen for c in GATE_PRODUCES.get(g, ())}
    base = [c for c in RECORD_COLUMNS if c not in produced and c != "raw"]
    assigned = sorted(produced - {"charge_micros", "tax_micros"})
    written = [*assigned, *OUTCOME_COLUMNS]
    types = duck.model_columns(UsageRecord)
    mine = "u.collector_id = %(collector_id)s AND " if collector is not None else ""
    source_columns = {"_home": "VARCHAR", "id": "BIGINT", "file_id": "BIGINT", **{c: types[c] for c in base}}
    source_columns.update({f"_old_{c}": types[c] for c in written})
    select = ", ".join(
        [
            "u.id",
            "u.file_id",
            *(duck.utc(connection, f"u.{c}") if types[c] == "TIMESTAMP" else f"u.{c}" for c in base),
            *(f"u.{c}" for c in written),
        ]
    )
    query_params = {"true": True, "false": False, **(params or {}), "collector_id": getattr(collector, "pk", None)}
    count = duck.load_query(
        engine_db,
        connection,
        "advance_source",
        source_columns,
        " UNION ALL ".join(
            f"SELECT '{table}' AS _home, {select} FROM {table} u WHERE {mine}({where})" for table in tables
        ),
        query_params,
    )
    if not count:
        return Advanced({})
    identifiers = duck.values(engine_db, "SELECT DISTINCT identifier FROM advance_source")
    service = "service_id" if "service_id" in source_columns else "_old_service_id"
    services = duck.values(engine_db, f"SELECT DISTINCT {service} FROM advance_source WHERE {service} IS NOT NULL")
    reference.load(engine_db, connection, identifiers, services)
    gates = gates_for(collector, engine_db, first, last)
    # Ids are per table: the engine numbers the records in file and line order (a record is one
    # line of its file), which is also the order a file's lines were first rated in.
    engine_db.execute(
        "CREATE OR REPLACE TABLE gate_source AS SELECT *, "
        "ROW_NUMBER() OVER (ORDER BY file_id, line_no, _home) AS _row, "
        "CAST(NULL AS VARCHAR) AS parse_error, CAST(NULL AS VARCHAR) AS parse_reason FROM advance_source"
    )
    before, drawing = split_at_rate(gates)
    tip = compute.run_gates(engine_db, before, "gate_source")
    shown = [c for c in ("file_id", "record_id", "service_id", "usage_at", "category") if c not in assigned]
    columns = ["_home", "id", *assigned, *shown, *(f"_old_{c}" for c in written)]
    outcome = drawing_outcome(engine_db, connection, gates, drawing, tip, columns)
    if before_write is not None:
        before_write(engine_db, outcome)
    # Only the records whose outcome differs go back to the store.
    changed = " OR ".join(f"_old_{c} IS DISTINCT FROM {c}" for c in written)
    engine_db.execute(
        f"CREATE OR REPLACE TABLE changed AS SELECT _home, id, {', '.join(written)} FROM {outcome} WHERE {changed}"
    )
    out_types = dict(engine_db.execute("SELECT column_name, column_type FROM (DESCRIBE changed)").fetchall())
    store.outcome_to_store(engine_db, connection, "changed", list(out_types), out_types)
    kept = [c for c in types if c != "id"]
    store.write_back(cursor, written, kept)
    compute.counter_deltas(engine_db, gates, outcome)
    store.add_counters(engine_db, connection)
    cursor.execute(f"DROP TABLE {store.OUTCOME_TABLE}")
    statuses = engine_db.execute(f"SELECT status, COUNT(*) FROM {outcome} GROUP BY status").fetchall()
    return Advanced({status: int(n) for status, n in statuses})


# What each gate sets (a chain that starts at a gate recomputes these).
GATE_PRODUCES = {
    gate.__name__.rsplit(".", 1)[1]: gate.PRODUCES for gate in (classify, dedup, identify, bucket, rate, tax)
}
OUTCOME_COLUMNS = ("stage", "status", "reason", "message", "charge_micros", "tax_micros")
# A key kept by another batch between lookup and write (the collector's lease makes this rare): the
# batch's dedup is computed again with the new keys, its records then DUPLICATEs pointing at them.
KEY_ATTEMPTS = 3
