"""Loading parsed rows into a per-batch temporary staging table: COPY on PostgreSQL (the client
parses while the server ingests), executemany on SQLite."""

import csv
import datetime as dt
import io
from itertools import islice

from .pipeline import STAGING_COLUMNS

STAGING_TABLE = "usage_staging"  # SQLite: a temp table. PostgreSQL: one unlogged table per collector.
DDL = (
    "line_no BIGINT, record_key VARCHAR(255), record_id VARCHAR(128), identifier VARCHAR(128), "
    "usage_at {ts}, usage_date DATE, duration BIGINT, volume BIGINT, quantity BIGINT, destination VARCHAR(64), "
    "usage_type VARCHAR(32), amount_micros BIGINT, parse_error VARCHAR(500), raw TEXT"
)


class CsvRowStream(io.RawIOBase):
    """A readable byte stream of CSV lines, produced from rows as COPY asks for data."""

    def __init__(self, rows):
        self.rows = iter(rows)
        self.buffer = bytearray()
        self.count = 0
        self.error = None  # raised by the rows; COPY would hide it behind its own error

    def readable(self):
        return True

    def readinto(self, target):
        while len(self.buffer) < len(target) and self.error is None:
            try:
                chunk = list(islice(self.rows, 2000))
            except Exception as exc:  # noqa: BLE001 - re-raised by load() once COPY has ended
                self.error = exc
                break
            if not chunk:
                break
            self.count += len(chunk)
            text = io.StringIO()
            csv.writer(text, lineterminator="\n").writerows(chunk)
            self.buffer += text.getvalue().encode("utf-8", "surrogateescape")
        n = min(len(target), len(self.buffer))
        target[:n] = self.buffer[:n]
        del self.buffer[:n]
        return n


def table_name(connection, collector_id: int) -> str:
    return f"{STAGING_TABLE}_{collector_id}" if connection.vendor == "postgresql" else STAGING_TABLE


def load(connection, rows, collector_id: int) -> int:
    """Empty and fill the batch's staging table in the current transaction; return the row count.

    On PostgreSQL the table is UNLOGGED and belongs to the collector (whose lease serialises its
    use): temp tables live in small per-session buffers, which made the gates ten times slower.
    """
    table = table_name(connection, collector_id)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"CREATE UNLOGGED TABLE IF NOT EXISTS {table} ({DDL.format(ts='TIMESTAMPTZ')})")
            cursor.execute(f"TRUNCATE {table}")
            stream = CsvRowStream(rows)
            cursor.cursor.copy_expert(
                f"COPY {table} ({', '.join(STAGING_COLUMNS)}) FROM STDIN WITH (FORMAT csv)", stream, size=1 << 20
            )
            if stream.error is not None:
                raise stream.error
            cursor.execute(f"ANALYZE {table}")
            return stream.count
        cursor.execute(f"DROP TABLE IF EXISTS temp.{STAGING_TABLE}")
        cursor.execute(f"CREATE TEMP TABLE {STAGING_TABLE} ({DDL.format(ts='DATETIME')})")
        placeholders = ", ".join(["%s"] * len(STAGING_COLUMNS))
        converted = [_sqlite_row(r) for r in rows]
        cursor.executemany(f"INSERT INTO {STAGING_TABLE} VALUES ({placeholders})", converted)
        return len(converted)


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
