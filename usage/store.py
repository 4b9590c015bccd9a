"""The storage contract: what the engine's outcome becomes in the store, and the guarantees the
store keeps (docs/architecture.md).

- Records are written by COPY on PostgreSQL (executemany on SQLite) in the batch's transaction,
  together with the file's progress marker: a killed worker leaves a whole batch or none.
- Dedup is backed by the record-key table's primary key (collector, record key): the keys a batch
  keeps are COPYed with it, so two batches can never both keep a key.
- Period counters (allowance draws, period tiers) are read after taking the counter locks and
  added to before commit: two batches drawing from the same period take turns.
"""

from django.db import IntegrityError, transaction
from django.db import connection as default_connection

from .engine.duck import copy_csv, load_query, store_rows
from .engine.reference import any_of, list_param, listed
from .sql import TOTAL_TYPE

USAGE_WRITE_LOCK = 73_010_001
USAGE_COUNTERS_LOCK = 73_010_002  # with a bucket: pg_advisory_xact_lock(int, int)
OUTCOME_TABLE = "usage_gate_outcome"
# A record is kept in one of two tables, by its status (usage.models): the test each table's rows pass.
RECORDS = "usage_usagerecord"
WAITING = "usage_quarantinedrecord"
KEEPS = {RECORDS: "= 'mediated'", WAITING: "<> 'mediated'"}
DELTA_TABLE = "usage_counter_delta"
USED_TABLE = "usage_counter_used"  # the counters a batch computed with (overlapped batches)


def lock_for_insert(connection=default_connection) -> None:
    """Metering reads the highest record id under this lock (exclusive): see metering.services."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock_shared(%s)", [USAGE_WRITE_LOCK])


# Counters are locked by bucket: a record draws only allowances and tiers of its own category, so
# the counters a batch can touch are those of its (period, category) pairs. Buckets bound the number
# of locks a batch holds (PostgreSQL's lock table is small); the formula is the same on every worker.
COUNTER_BUCKETS = 1024
CATEGORY_CODES = {"telephony": 0, "data": 1, "misc": 2}


def counter_buckets(duck, tip: str) -> list[int]:
    """The counter lock buckets of the (period, category) pairs of DuckDB table `tip`."""
    codes = " ".join(f"WHEN '{name}' THEN {code}" for name, code in CATEGORY_CODES.items())
    return [
        row[0]
        for row in duck.execute(
            f"SELECT DISTINCT CAST((period_id * 3 + CASE category {codes} ELSE 0 END) % {COUNTER_BUCKETS} AS INTEGER) "
            f"AS bucket FROM {tip} WHERE period_id IS NOT NULL ORDER BY bucket"
        ).fetchall()
    ]


def lock_counters(connection, buckets: list[int]) -> None:
    """Take the counter locks of `buckets` until commit, in ascending order (no deadlock between
    batches). Batches that draw from the same periods and categories (any collector, reprocess,
    rebalance) take turns, so none draws from a total another has not yet added to; batches of other
    periods or categories run side by side. (SQLite has one writer.)"""
    if connection.vendor != "postgresql" or not buckets:
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT COUNT(pg_advisory_xact_lock(%s, b)) FROM "
            "(SELECT b FROM unnest(%s::integer[]) AS b ORDER BY b OFFSET 0) ordered",
            [USAGE_COUNTERS_LOCK, list_param(connection, buckets)],
        )


def earlier_keys(duck, connection, collector_id: int, file_id: int, keys: str) -> int:
    """DuckDB table `earlier_keys`: where each key of DuckDB query `keys` was first kept by the collector (file, line)
    in another file. The file's own repeats are the engine's (`file_repeats`): a record repeating a
    line of its file reads alike whether that line's batch is committed, in flight or the same."""
    return load_query(
        duck,
        connection,
        "earlier_keys",
        {"record_key": "VARCHAR", "file_id": "BIGINT", "line_no": "BIGINT"},
        "SELECT k.record_key, k.file_id, k.line_no FROM usage_recordkey k WHERE k.collector_id = %s "
        f"AND k.file_id <> %s AND {any_of(connection, 'k.record_key', 'text')}",
        [collector_id, file_id, listed(duck, connection, keys)],
    )


class KeyTaken(Exception):
    """A key of the batch was kept by another batch since it was looked up."""


KEY_COLUMNS = ["collector_id", "record_key", "file_id", "line_no"]
COUNTER_COLUMNS = ["period_id", "kind", "owner_id", "ref_id", "total"]


def insert_keys(duck, connection, select: str) -> int:
    """COPY the keys the batch keeps (rows of `select`: KEY_COLUMNS) into the record-key table, under a
    savepoint: a key already there raises KeyTaken and writes nothing."""
    return _keeping_keys(connection, lambda: store_rows(duck, connection, select, "usage_recordkey", KEY_COLUMNS))


def copy_keys(connection, path: str) -> int:
    """`insert_keys` from a CSV file exported by the engine (PostgreSQL)."""
    return _keeping_keys(connection, lambda: copy_csv(connection, path, "usage_recordkey", KEY_COLUMNS))


def _keeping_keys(connection, write) -> int:
    try:
        with transaction.atomic(using=connection.alias):
            return write()
    except IntegrityError as exc:
        raise KeyTaken(str(exc)) from exc


def insert_records(duck, connection, select: str, table: str, columns: list[str]) -> int:
    """COPY the rows of a DuckDB SELECT into a records table (mediated records or the quarantine)."""
    return store_rows(duck, connection, select, table, columns, timestamps=("usage_at",))


def add_counters(duck, connection, delta: str = "counter_delta") -> None:
    """Add DuckDB table `delta` (period, kind, owner, ref, total) to the store's period counters."""
    if duck.execute(f"SELECT COUNT(*) FROM {delta}").fetchone()[0]:
        _add_deltas(
            connection, lambda: store_rows(duck, connection, f"SELECT * FROM {delta}", DELTA_TABLE, COUNTER_COLUMNS)
        )


def copy_counters(connection, path: str) -> None:
    """`add_counters` from a CSV file exported by the engine (PostgreSQL)."""
    _add_deltas(connection, lambda: copy_csv(connection, path, DELTA_TABLE, COUNTER_COLUMNS))


def _scratch_counters(cursor, table: str) -> None:
    """An empty temporary table of COUNTER_COLUMNS (of the session: TRUNCATE is instant on PostgreSQL,
    where a DELETE of a batch's rows is not)."""
    cursor.execute(
        f"CREATE TEMP TABLE IF NOT EXISTS {table} "
        f"(period_id BIGINT, kind VARCHAR(1), owner_id BIGINT, ref_id BIGINT, total {TOTAL_TYPE})"
    )
    cursor.execute(f"TRUNCATE {table}" if cursor.db.vendor == "postgresql" else f"DELETE FROM {table}")


def _add_deltas(connection, fill) -> None:
    with connection.cursor() as cursor:
        _scratch_counters(cursor, DELTA_TABLE)
        fill()
        # `WHERE 1 = 1`: SQLite needs a WHERE before an upsert's ON CONFLICT after INSERT … SELECT.
        cursor.execute(
            "INSERT INTO usage_periodcounter (period_id, kind, owner_id, ref_id, total) "
            f"SELECT period_id, kind, owner_id, ref_id, total FROM {DELTA_TABLE} WHERE 1 = 1 "
            "ON CONFLICT (period_id, kind, owner_id, ref_id) DO UPDATE SET total = usage_periodcounter.total + "
            "excluded.total"
        )


def counters_unchanged(connection, periods: list[int], path: str) -> bool:
    """Whether the store's counters of `periods` are still those a batch computed with (a CSV file
    of COUNTER_COLUMNS exported by the engine): read after the batch's counter locks (PostgreSQL)."""
    with connection.cursor() as cursor:
        _scratch_counters(cursor, USED_TABLE)
        copy_csv(connection, path, USED_TABLE, COUNTER_COLUMNS)
        # One hash join: a counter added, removed or moved since the batch read them.
        cursor.execute(
            f"SELECT EXISTS (SELECT 1 FROM {USED_TABLE} u FULL JOIN (SELECT {', '.join(COUNTER_COLUMNS)} "
            "FROM usage_periodcounter WHERE period_id = ANY(%s::bigint[])) n "
            "ON n.period_id = u.period_id AND n.kind = u.kind AND n.owner_id = u.owner_id AND n.ref_id = u.ref_id "
            "WHERE u.total IS DISTINCT FROM n.total)",
            [list_param(connection, periods)],
        )
        changed = cursor.fetchone()[0]
    return not changed


def write_back(cursor, written: list[str], columns: list[str]) -> None:
    """Write OUTCOME_TABLE (`_home`: the table a record is in, its `id` there, and the `written`
    columns) back: a record that stays on its side of mediated is updated in place; one that changes
    side moves to the other table (a new id there), in line order."""
    sets = ", ".join(f"{c} = r.{c}" for c in written)
    moved = ", ".join(f"r.{c}" if c in written else f"u.{c}" for c in columns)
    for home, other in ((RECORDS, WAITING), (WAITING, RECORDS)):
        cursor.execute(
            f"UPDATE {home} SET {sets} FROM {OUTCOME_TABLE} r "
            f"WHERE {home}.id = r.id AND r._home = '{home}' AND r.status {KEEPS[home]}"
        )
        leaving = f"SELECT id FROM {OUTCOME_TABLE} WHERE _home = '{home}' AND status {KEEPS[other]}"
        if other == RECORDS:
            lock_for_insert(cursor.db)
        cursor.execute(
            f"INSERT INTO {other} ({', '.join(columns)}) SELECT {moved} FROM {home} u "
            f"JOIN {OUTCOME_TABLE} r ON r.id = u.id AND r._home = '{home}' WHERE u.id IN ({leaving}) "
            "ORDER BY u.file_id, u.line_no"
        )
        cursor.execute(f"DELETE FROM {home} WHERE id IN ({leaving})")


def outcome_to_store(duck, connection, outcome: str, columns: list[str], types: dict[str, str]) -> None:
    """The outcome of re-run records as the store's temporary table OUTCOME_TABLE (for comparison
    before the records are written: see `usage.rebalance`)."""
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {OUTCOME_TABLE}")
        ddl = ", ".join(f"{c} {_store_type(types[c], connection.vendor)}" for c in columns)
        cursor.execute(f"CREATE TEMP TABLE {OUTCOME_TABLE} ({ddl})")
    timestamps = tuple(c for c in columns if types[c] == "TIMESTAMP")
    store_rows(
        duck, connection, f"SELECT {', '.join(columns)} FROM {outcome}", OUTCOME_TABLE, columns, timestamps=timestamps
    )


def _store_type(duck_type: str, vendor: str) -> str:
    if duck_type == "TIMESTAMP":
        return "TIMESTAMPTZ" if vendor == "postgresql" else "DATETIME"
    if duck_type in ("HUGEINT", "INTEGER", "SMALLINT"):
        return "BIGINT"
    if duck_type.startswith("DECIMAL"):
        return "NUMERIC"
    return duck_type
