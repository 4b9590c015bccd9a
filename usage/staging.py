"""Loading parsed rows into a per-batch staging table: COPY on PostgreSQL, executemany on SQLite."""

import csv
import datetime as dt
import hashlib
import io
from itertools import islice
from typing import NamedTuple

from .pipeline import STAGING_COLUMNS

STAGING_TABLE = "usage_staging"  # SQLite: a temp table. PostgreSQL: one unlogged table per collector.
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


class Prepared(NamedTuple):
    """A batch ready for `load`, and the file lines it holds (for an error that names them)."""

    count: int
    payload: object
    first_line: int | None
    last_line: int | None


def prepare(vendor: str, rows, size: int) -> Prepared:
    """Take up to `size` rows and turn them into what `load` sends: CSV bytes for COPY, or tuples
    for SQLite. Runs on the parse-ahead thread, so this work overlaps the database's; rows are
    written out in small chunks, so a batch is never held as Python objects."""
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


def load(connection, prepared: Prepared, collector_id: int) -> int:
    """Empty and fill the batch's staging table in the current transaction; return the row count.

    On PostgreSQL the table is UNLOGGED and belongs to the collector (whose lease serialises its
    use): temp tables live in small per-session buffers, which made the gates ten times slower.
    """
    count, payload = prepared.count, prepared.payload
    table = table_name(connection, collector_id)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"CREATE UNLOGGED TABLE IF NOT EXISTS {table} ({DDL.format(ts='TIMESTAMPTZ')})")
            cursor.execute(f"TRUNCATE {table}")
            cursor.cursor.copy_expert(
                f"COPY {table} ({', '.join(STAGING_COLUMNS)}) FROM STDIN WITH (FORMAT csv)",
                io.BytesIO(payload),
                size=1 << 20,
            )
            cursor.execute(f"ANALYZE {table}")
            return count
        cursor.execute(f"DROP TABLE IF EXISTS temp.{STAGING_TABLE}")
        cursor.execute(f"CREATE TEMP TABLE {STAGING_TABLE} ({DDL.format(ts='DATETIME')})")
        placeholders = ", ".join(["%s"] * len(STAGING_COLUMNS))
        cursor.executemany(f"INSERT INTO {STAGING_TABLE} VALUES ({placeholders})", payload)
        return count


def drop(connection, collector_id: int):
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"TRUNCATE {table_name(connection, collector_id)}")
        else:
            cursor.execute(f"DROP TABLE IF EXISTS temp.{STAGING_TABLE}")


def _sqlite_row(row):
    """Datetimes as Django stores them on SQLite: naive UTC text."""
    usage_at = row[4]
    if usage_at is not None:
        usage_at = usage_at.astimezone(dt.UTC).replace(tzinfo=None).isoformat(" ")
    usage_date = row[5].isoformat() if row[5] is not None else None
    return (*row[:4], usage_at, usage_date, *row[6:])
