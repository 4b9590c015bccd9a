"""Staging a file for mediation, in the engine's DuckDB: every parsed row into the file table,
numbered in mediation order; then each batch into the table the gates read.

The file is staged whole before its first batch: batches then go through the gates in the order
records draw allowances and accumulate tiers, so a file's charges do not depend on the batch size.
Scratch: a resumed worker stages the file again, and the same rows get the same numbers, so the
file's `lines_done` (rows committed, in `seq` order) says where to go on.
"""

from itertools import islice
from typing import NamedTuple

import pyarrow as pa

from billing.models import QUANTITY

from .engine.duck import values
from .pipeline import STAGING_COLUMNS
from .sql import QUANTITY_TYPE

FILE_TABLE = "file_rows"  # the whole file's rows, in mediation order (`seq`)
BATCH_TABLE = "batch"
COLUMN_TYPES = {
    "line_no": "BIGINT",
    "record_key": "VARCHAR",
    "record_id": "VARCHAR",
    "identifier": "VARCHAR",
    "usage_at": "TIMESTAMP",
    "usage_date": "DATE",
    "duration": QUANTITY_TYPE,
    "volume": QUANTITY_TYPE,
    "quantity": QUANTITY_TYPE,
    "destination": "VARCHAR",
    "usage_type": "VARCHAR",
    "amount_micros": "BIGINT",
    "local_weekday": "INTEGER",
    "local_seconds": "INTEGER",
    "corrects": "VARCHAR",
    "cancels": "BOOLEAN",
    "parse_error": "VARCHAR",
    "parse_reason": "VARCHAR",
    "raw": "VARCHAR",
}
assert tuple(COLUMN_TYPES) == STAGING_COLUMNS


class Prepared(NamedTuple):
    """A chunk of parsed rows ready for `load_file`: an Arrow table, which DuckDB reads in place."""

    count: int
    payload: pa.Table


class Batch(NamedTuple):
    """A batch taken into the batch table: how many records, and the lowest and highest line."""

    count: int
    first_line: int | None
    last_line: int | None


ARROW_TYPES = {
    "BIGINT": pa.int64(),
    "INTEGER": pa.int32(),
    "VARCHAR": pa.string(),
    "BOOLEAN": pa.bool_(),
    "DATE": pa.date32(),
    "TIMESTAMP": pa.timestamp("us"),  # aware times become UTC
    QUANTITY_TYPE: pa.decimal128(QUANTITY["max_digits"], QUANTITY["decimal_places"]),
}
SCHEMA = pa.schema([(name, ARROW_TYPES[kind]) for name, kind in COLUMN_TYPES.items()])


def prepare(rows, size: int) -> Prepared:
    """Take up to `size` rows as an Arrow table (columns converted in C, not a Python loop per value).
    Runs on the parse-ahead thread, so this work overlaps the engine's."""
    chunk = list(islice(rows, size))
    if not chunk:
        return Prepared(0, SCHEMA.empty_table())
    columns = [
        pa.array(column, type=field.type) for column, field in zip(zip(*chunk, strict=True), SCHEMA, strict=True)
    ]
    return Prepared(len(chunk), pa.Table.from_arrays(columns, schema=SCHEMA))


# The order a file's records are mediated in, batch after batch: the order they draw allowances and
# accumulate tiers in (usage.gates.rate.TIME_ORDER). Rows without a time (parse errors) come last.
FILE_ORDER = "usage_at NULLS LAST, COALESCE(record_key, ''), line_no"


LOADING_TABLE = "file_loading"  # parsed rows as they come, before they are numbered


def load_file(duck, chunks) -> int:
    """Load every parsed row of a file (chunks of `prepare`) into the file table; the number of rows."""
    begin(duck)
    for chunk in chunks:
        insert(duck, chunk)
    return finish(duck)


def begin(duck):
    columns = ", ".join(f"{c} {t}" for c, t in COLUMN_TYPES.items())
    duck.execute(f"CREATE OR REPLACE TABLE {LOADING_TABLE} ({columns})")


def insert(duck, chunk: Prepared):
    if chunk.count:
        duck.register("parsed_chunk", chunk.payload)
        duck.execute(f"INSERT INTO {LOADING_TABLE} SELECT * FROM parsed_chunk")
        duck.unregister("parsed_chunk")


def finish(duck) -> int:
    """Number the loaded rows (`seq`) in mediation order into the file table, and note the keys the
    file repeats with their first line (`file_repeats`, for dedup across the whole file whatever
    the batch size); the number of rows."""
    # Numbered over the sort keys alone, then joined back: sorting the whole wide rows costs twice as much.
    duck.execute(
        f"CREATE OR REPLACE TABLE file_order AS SELECT line_no, ROW_NUMBER() OVER (ORDER BY {FILE_ORDER}) AS seq "
        f"FROM {LOADING_TABLE}"
    )
    (total,) = duck.execute(
        f"CREATE OR REPLACE TABLE {FILE_TABLE} AS SELECT l.*, o.seq FROM {LOADING_TABLE} l "
        "JOIN file_order o USING (line_no) ORDER BY o.seq"
    ).fetchone()
    duck.execute("DROP TABLE file_order")
    duck.execute(
        f"CREATE OR REPLACE TABLE file_repeats AS SELECT record_key, MIN(line_no) AS first_line FROM {LOADING_TABLE} "
        "WHERE record_key IS NOT NULL GROUP BY record_key HAVING COUNT(*) > 1"
    )
    duck.execute(f"DROP TABLE {LOADING_TABLE}")
    return total


def identifiers(duck) -> list[str]:
    return values(duck, f"SELECT DISTINCT identifier FROM {FILE_TABLE} WHERE identifier IS NOT NULL")


def take_batch(duck, done: int, size: int) -> Batch:
    """Fill the batch table with the file's rows `done` + 1 .. `done` + `size` in mediation order."""
    duck.execute(
        f"CREATE OR REPLACE TABLE {BATCH_TABLE} AS SELECT * FROM {FILE_TABLE} WHERE seq > $done AND seq <= $last",
        {"done": done, "last": done + size},
    )
    return Batch(*duck.execute(f"SELECT COUNT(*), MIN(line_no), MAX(line_no) FROM {BATCH_TABLE}").fetchone())


def batch_lines(duck, done: int, size: int) -> Batch:
    """What `take_batch` takes for these numbers (for an error message)."""
    return Batch(
        *duck.execute(
            f"SELECT COUNT(*), MIN(line_no), MAX(line_no) FROM {FILE_TABLE} WHERE seq > $done AND seq <= $last",
            {"done": done, "last": done + size},
        ).fetchone()
    )
