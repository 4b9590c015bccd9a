"""Staging a file for mediation: every parsed row into a file table (COPY on PostgreSQL,
executemany on SQLite), numbered in mediation order; then each batch into the staging table the
gates read."""

import csv
import datetime as dt
import hashlib
import io
from itertools import islice
from typing import NamedTuple

from .pipeline import STAGING_COLUMNS, repeats_table

STAGING_TABLE = "usage_staging"  # SQLite: a temp table. PostgreSQL: one unlogged table per collector.
FILE_TABLE = "usage_filestage"  # the whole file's rows, in mediation order
DDL = (
    "line_no BIGINT, record_key VARCHAR(255), record_id VARCHAR(128), identifier VARCHAR(128), "
    "usage_at {ts}, usage_date DATE, duration BIGINT, volume BIGINT, quantity BIGINT, destination VARCHAR(64), "
    "usage_type VARCHAR(32), amount_micros BIGINT, local_weekday SMALLINT, local_seconds INTEGER, "
    "parse_error VARCHAR(500), parse_reason VARCHAR(24), raw TEXT"
)


# The PostgreSQL tables outlive a deploy: their name carries the column list, so a new one is made when it changes.
SHAPE = hashlib.sha1(DDL.encode()).hexdigest()[:8]


def table_name(connection, collector_id: int) -> str:
    return f"{STAGING_TABLE}_{SHAPE}_{collector_id}" if connection.vendor == "postgresql" else STAGING_TABLE


def file_table_name(connection, collector_id: int) -> str:
    return f"{FILE_TABLE}_{SHAPE}_{collector_id}" if connection.vendor == "postgresql" else FILE_TABLE


class Prepared(NamedTuple):
    """A chunk of parsed rows ready for `load_file`."""

    count: int
    payload: object
    first_line: int | None
    last_line: int | None


class Batch(NamedTuple):
    """A batch taken into the staging table: how many records, and the lowest and highest line."""

    count: int
    first_line: int | None
    last_line: int | None


def prepare(vendor: str, rows, size: int) -> Prepared:
    """Take up to `size` rows and turn them into what `load_file` sends: CSV bytes for COPY, or
    tuples for SQLite. Runs on the parse-ahead thread, so this work overlaps the database's; rows
    are written out in small chunks, so a chunk is never held as Python objects."""
    if vendor == "postgresql":
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        count = 0
        first = last = None
        while count < size:
            chunk = list(islice(rows, min(5000, size - count)))
            if not chunk:
                break
            first = chunk[0][0] if first is None else first
            last = chunk[-1][0]
            writer.writerows(chunk)
            count += len(chunk)
        payload = text.getvalue().encode("utf-8", "surrogateescape")
        text.close()
        return Prepared(count, payload, first, last)
    batch = [_sqlite_row(r) for r in islice(rows, size)]
    return Prepared(len(batch), batch, batch[0][0] if batch else None, batch[-1][0] if batch else None)


# The order a file's records are mediated in, batch after batch: the order they draw allowances and
# accumulate tiers in (usage.gates.rate.TIME_ORDER), so that a file's charges do not depend on the
# batch size. Rows without a time (parse errors) come last on both databases.
FILE_ORDER = "CASE WHEN usage_at IS NULL THEN 1 ELSE 0 END, usage_at, COALESCE(record_key, ''), line_no"


def load_file(connection, chunks, collector_id: int) -> int:
    """Load every parsed row of a file into the collector's file table, numbered (`seq`) in
    mediation order, and the keys the file repeats with their first line (`pipeline.repeats_table`,
    for dedup across the whole file whatever the batch size); the number of rows.

    Scratch, outside any batch transaction: a resumed worker loads the file again, and the same
    rows get the same numbers, so `lines_done` (rows committed, in `seq` order) says where to go on.
    On PostgreSQL the tables are UNLOGGED and belong to the collector (whose lease serialises their
    use): temp tables live in small per-session buffers, which made the gates ten times slower."""
    loading, table = file_table_name(connection, collector_id) + "_in", file_table_name(connection, collector_id)
    repeats = repeats_table(connection.vendor, collector_id)
    postgres = connection.vendor == "postgresql"
    columns = ", ".join(STAGING_COLUMNS)
    with connection.cursor() as cursor:
        if postgres:
            # Kept per collector and emptied, not made anew for every file: no catalog churn, and no
            # lock per file piling up in a transaction that receives many files.
            ddl = DDL.format(ts="TIMESTAMPTZ")
            cursor.execute(f"CREATE UNLOGGED TABLE IF NOT EXISTS {loading} ({ddl})")
            cursor.execute(f"CREATE UNLOGGED TABLE IF NOT EXISTS {table} ({ddl}, seq BIGINT)")
            cursor.execute(f"CREATE INDEX IF NOT EXISTS {table}_seq ON {table} (seq)")
            cursor.execute(
                f"CREATE UNLOGGED TABLE IF NOT EXISTS {repeats} (record_key VARCHAR(255), first_line BIGINT)"
            )
            cursor.execute(f"TRUNCATE {loading}, {table}, {repeats}")
        else:
            for name in (loading, table, repeats):
                cursor.execute(f"DROP TABLE IF EXISTS {name}")
            cursor.execute(f"CREATE TEMP TABLE {loading} ({DDL.format(ts='DATETIME')})")
            cursor.execute(f"CREATE TEMP TABLE {table} ({DDL.format(ts='DATETIME')}, seq BIGINT)")
            cursor.execute(f"CREATE TEMP TABLE {repeats} (record_key VARCHAR(255), first_line BIGINT)")
        total = 0
        for chunk in chunks:
            if postgres:
                cursor.cursor.copy_expert(
                    f"COPY {loading} ({columns}) FROM STDIN WITH (FORMAT csv)", io.BytesIO(chunk.payload), size=1 << 20
                )
            else:
                placeholders = ", ".join(["%s"] * len(STAGING_COLUMNS))
                cursor.executemany(f"INSERT INTO {loading} VALUES ({placeholders})", chunk.payload)
            total += chunk.count
        if postgres:  # a sort of the whole file: in memory, and not worth compiling
            cursor.execute("SET work_mem = '256MB'")
            cursor.execute("SET jit = off")
        cursor.execute(
            f"INSERT INTO {table} ({columns}, seq) SELECT {columns}, "
            f"ROW_NUMBER() OVER (ORDER BY {FILE_ORDER}) FROM {loading}"
        )
        cursor.execute(
            f"INSERT INTO {repeats} (record_key, first_line) SELECT record_key, MIN(line_no) FROM {loading} "
            "WHERE record_key IS NOT NULL GROUP BY record_key HAVING COUNT(*) > 1"
        )
        if postgres:
            cursor.execute("RESET work_mem")
            cursor.execute("RESET jit")
            cursor.execute(f"TRUNCATE {loading}")
            cursor.execute(f"ANALYZE {repeats}")
        else:
            cursor.execute(f"CREATE INDEX {table}_seq ON {table} (seq)")
            cursor.execute(f"DROP TABLE {loading}")
    return total


def take_batch(connection, collector_id: int, done: int, size: int) -> Batch:
    """Fill the batch staging table, in the current transaction, with the file's rows `done` + 1 ..
    `done` + `size` in mediation order."""
    table, source = table_name(connection, collector_id), file_table_name(connection, collector_id)
    columns = ", ".join(STAGING_COLUMNS)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"CREATE UNLOGGED TABLE IF NOT EXISTS {table} ({DDL.format(ts='TIMESTAMPTZ')})")
            cursor.execute(f"TRUNCATE {table}")
        else:
            cursor.execute(f"DROP TABLE IF EXISTS temp.{STAGING_TABLE}")
            cursor.execute(f"CREATE TEMP TABLE {STAGING_TABLE} ({DDL.format(ts='DATETIME')})")
        cursor.execute(
            f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {source} WHERE seq > %s AND seq <= %s",
            [done, done + size],
        )
        if connection.vendor == "postgresql":
            cursor.execute(f"ANALYZE {table}")
        cursor.execute(f"SELECT COUNT(*), MIN(line_no), MAX(line_no) FROM {table}")
        return Batch(*cursor.fetchone())


def batch_lines(connection, collector_id: int, done: int, size: int) -> Batch:
    """What `take_batch` takes for these numbers, read from the file table (for an error message)."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT COUNT(*), MIN(line_no), MAX(line_no) FROM {file_table_name(connection, collector_id)} "
            "WHERE seq > %s AND seq <= %s",
            [done, done + size],
        )
        return Batch(*cursor.fetchone())


def drop(connection, collector_id: int):
    """Empty the batch staging table (at the end of each batch's transaction)."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"TRUNCATE {table_name(connection, collector_id)}")
        else:
            cursor.execute(f"DROP TABLE IF EXISTS temp.{STAGING_TABLE}")


def drop_file(connection, collector_id: int):
    tables = (file_table_name(connection, collector_id), repeats_table(connection.vendor, collector_id))
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"TRUNCATE {', '.join(tables)}")
        else:
            for name in tables:
                cursor.execute(f"DROP TABLE IF EXISTS {name}")


def _sqlite_row(row):
    """Datetimes as Django stores them on SQLite: naive UTC text."""
    usage_at = row[4]
    if usage_at is not None:
        usage_at = usage_at.astimezone(dt.UTC).replace(tzinfo=None).isoformat(" ")
    usage_date = row[5].isoformat() if row[5] is not None else None
    return (*row[:4], usage_at, usage_date, *row[6:])
