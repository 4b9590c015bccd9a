"""DuckDB inside the worker: an in-memory database per unit of work (kept by the thread), and the moves of rows
between it and the store.

Store → DuckDB: PostgreSQL COPYs a query out as CSV (empty strings quoted, NULLs bare); SQLite rows
go as JSON lines (null and "" stay apart). DuckDB → store: PostgreSQL COPYs DuckDB's CSV in; SQLite
gets the rows by executemany. Times are UTC without zone inside DuckDB (TIMESTAMP).
"""

import datetime as dt
import decimal
import json
import os
import tempfile
import threading
import uuid
from contextlib import contextmanager

import duckdb
from django.conf import settings
from django.db import models


def _config() -> dict:
    return {
        "memory_limit": str(getattr(settings, "TOLLGATE_DUCKDB_MEMORY_LIMIT", "192MB")),
        "threads": int(getattr(settings, "TOLLGATE_DUCKDB_THREADS", 2)),
        "temp_root": str(getattr(settings, "TOLLGATE_DUCKDB_TEMP_DIR", "") or tempfile.gettempdir()),
    }


def connect() -> duckdb.DuckDBPyConnection:
    """A new DuckDB, bounded by `TOLLGATE_DUCKDB_MEMORY_LIMIT` and `TOLLGATE_DUCKDB_THREADS`; what
    does not fit spills to `TOLLGATE_DUCKDB_TEMP_DIR`."""
    config = _config()
    return duckdb.connect(
        ":memory:",
        config={
            "memory_limit": config["memory_limit"],
            "threads": config["threads"],
            # A directory of its own (DuckDB makes it when it first spills, and removes it on close),
            # so workers sharing a temp directory never share a spill file.
            "temp_directory": os.path.join(config["temp_root"], f"tollgate-duckdb-{uuid.uuid4().hex}"),
            "autoinstall_known_extensions": False,  # no extension is needed, nor fetched
            "autoload_known_extensions": False,
        },
    )


_kept = threading.local()


@contextmanager
def session():
    """The DuckDB for one unit of work (a file, an API request, a reprocess, a rebalance).

    Opening a DuckDB costs about as much as a small file's gates (15 ms or so), so each thread keeps
    its database and gives each unit an in-memory database of its own, attached for the unit and
    detached after it (which frees its tables at once; dropping them one by one costs more than a
    new connection). A unit that fails closes the whole database: the next one starts afresh."""
    config = _config()
    kept = getattr(_kept, "db", None)
    _kept.db = None  # in use: a unit inside this one opens its own
    if kept is not None and kept[0] != config:
        kept[1].close()
        kept = None
    db = kept[1] if kept is not None else connect()
    try:
        db.execute("ATTACH ':memory:' AS unit (TYPE duckdb)")
        db.execute("USE unit")
        yield db
    except BaseException:
        db.close()
        raise
    try:
        for (name,) in db.execute("SELECT view_name FROM duckdb_views() WHERE temporary AND NOT internal").fetchall():
            db.unregister(name)  # Arrow tables registered by the unit
        db.execute("USE memory")
        db.execute("DETACH unit")
    except duckdb.Error:  # a database the unit left unusable
        db.close()
        return
    if getattr(_kept, "db", None) is not None:  # kept by a unit inside this one
        _kept.db[1].close()
    _kept.db = (config, db)


def duck_type(field) -> str:
    """The DuckDB type of a model field's column (foreign keys as their id)."""
    if field.is_relation:
        return "BIGINT"
    kind = field.get_internal_type()
    if kind == "DecimalField":
        return f"DECIMAL({min(field.max_digits, 38)},{field.decimal_places})"
    return {
        "BooleanField": "BOOLEAN",
        "DateField": "DATE",
        "DateTimeField": "TIMESTAMP",
        "TimeField": "TIME",
        "FloatField": "DOUBLE",
    }.get(kind, "BIGINT" if "Integer" in kind or "AutoField" in kind else "VARCHAR")


def model_columns(model: type[models.Model]) -> dict[str, str]:
    return {f.column: duck_type(f) for f in model._meta.concrete_fields}


@contextmanager
def scratch_file(suffix: str):
    handle, path = tempfile.mkstemp(prefix="tollgate-", suffix=suffix, dir=settings.TOLLGATE_DUCKDB_TEMP_DIR or None)
    os.close(handle)
    try:
        yield path
    finally:
        os.unlink(path)


def quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def load_query(duck, connection, name: str, columns: dict[str, str], query: str, params=()) -> int:
    """Create DuckDB table `name` (`columns`: name → DuckDB type, in the query's order) from a store
    query, and return its row count. TIMESTAMP columns must come out of the query in UTC (use
    `utc()` around them)."""
    spec = "{" + ", ".join(f"{quote(c)}: {quote(t)}" for c, t in columns.items()) + "}"
    with scratch_file(".data") as path:
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                sql = cursor.mogrify(query, params).decode()
                with open(path, "wb") as out:
                    cursor.cursor.copy_expert(f"COPY ({sql}) TO STDOUT WITH (FORMAT csv)", out, size=1 << 20)
                reader = (
                    f"read_csv({quote(path)}, header=false, columns={spec}, allow_quoted_nulls=false, "
                    "auto_detect=false)"
                )
            else:
                cursor.execute(query, params)
                names = list(columns)
                with open(path, "w", encoding="utf-8") as out:
                    while rows := cursor.fetchmany(10_000):
                        out.writelines(
                            json.dumps(dict(zip(names, row, strict=True)), default=_json) + "\n" for row in rows
                        )
                reader = f"read_json({quote(path)}, format='newline_delimited', columns={spec})"
        # A CREATE TABLE AS answers its row count.
        return duck.execute(f"CREATE OR REPLACE TABLE {name} AS SELECT * FROM {reader}").fetchone()[0]


def _json(value):
    if isinstance(value, decimal.Decimal | dt.date | dt.time | dt.datetime):
        return str(value)
    raise TypeError(type(value).__name__)


def utc(connection, column: str) -> str:
    """A timestamp column as UTC without zone, as DuckDB reads it."""
    return f"({column} AT TIME ZONE 'UTC')" if connection.vendor == "postgresql" else column


def values(duck, query: str, params=None) -> list:
    """The first column of a DuckDB query's rows."""
    return [row[0] for row in duck.execute(query, params).fetchall()]


def table_from_arrow(duck, name: str, data) -> None:
    """DuckDB table `name` holding Arrow table `data` (registered only while it is copied)."""
    view = f"{name}_arrow"
    duck.register(view, data)
    try:
        duck.execute(f"CREATE OR REPLACE TABLE {name} AS SELECT * FROM {view}")
    finally:
        duck.unregister(view)


def empty_table(duck, name: str, columns: dict[str, str]) -> None:
    duck.execute(f"CREATE OR REPLACE TABLE {name} ({', '.join(f'{c} {t}' for c, t in columns.items())})")


def store_rows(duck, connection, select: str, table: str, columns: list[str], *, timestamps=()) -> int:
    """Write the rows of a DuckDB SELECT (columns in `columns` order) into store table `table`; how
    many. `timestamps`: the TIMESTAMP columns (UTC), written with their zone or as Django's SQLite text."""
    if connection.vendor == "postgresql":
        with scratch_file(".csv") as path:
            export_csv(duck, select, columns, path, timestamps=timestamps)
            return copy_csv(connection, path, table, columns)
    query = _out_query(select, columns, timestamps, connection.vendor)
    placeholders = ", ".join(["%s"] * len(columns))
    result = duck.execute(query)
    count = 0
    with connection.cursor() as cursor:
        while rows := result.fetchmany(20_000):
            cursor.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders})", rows)
            count += len(rows)
    return count


def export_csv(duck, select: str, columns: list[str], path: str, *, timestamps=()) -> None:
    """The rows of a DuckDB SELECT as a CSV file PostgreSQL's COPY reads (see `copy_csv`)."""
    duck.execute(
        f"COPY ({_out_query(select, columns, timestamps, 'postgresql')}) TO {quote(path)} (FORMAT csv, HEADER false)"
    )


def copy_csv(connection, path: str, table: str, columns: list[str]) -> int:
    """COPY a CSV file made by `export_csv` into PostgreSQL table `table`; how many rows."""
    with connection.cursor() as cursor, open(path, "rb") as data:
        cursor.cursor.copy_expert(
            f"COPY {table} ({', '.join(columns)}) FROM STDIN WITH (FORMAT csv)", data, size=1 << 20
        )
        return cursor.cursor.rowcount


def _out_query(select: str, columns: list[str], timestamps, vendor: str) -> str:
    exprs = [_out_timestamp(c, vendor) if c in timestamps else c for c in columns]
    return f"SELECT {', '.join(exprs)} FROM ({select}) AS out_rows"


def _out_timestamp(column: str, vendor: str) -> str:
    if vendor == "postgresql":
        return f"strftime({column}, '%Y-%m-%d %H:%M:%S.%f') || '+00' AS {column}"
    # Django's SQLite text: microseconds only when there are some.
    return (
        f"CASE WHEN epoch_us({column}) % 1000000 = 0 THEN strftime({column}, '%Y-%m-%d %H:%M:%S') "
        f"ELSE strftime({column}, '%Y-%m-%d %H:%M:%S.%f') END AS {column}"
    )
