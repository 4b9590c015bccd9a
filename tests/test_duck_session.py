"""The thread's kept DuckDB: each unit of work starts empty, whatever the unit before it left."""

import duckdb
import pyarrow as pa
import pytest

from usage.engine import duck


def test_a_unit_never_sees_the_tables_of_the_unit_before():
    with duck.session() as db:
        db.execute("CREATE TABLE batch AS SELECT 1 AS x")
        db.register("parsed_chunk", pa.table({"x": [1]}))
        first = db
    with duck.session() as db:
        assert db is first  # the connection is kept
        assert db.execute("SELECT COUNT(*) FROM duckdb_tables()").fetchone()[0] == 0
        assert db.execute("SELECT COUNT(*) FROM duckdb_views() WHERE NOT internal").fetchone()[0] == 0
        db.execute("CREATE TABLE batch AS SELECT 2 AS x")  # the same name again
        assert db.execute("SELECT x FROM batch").fetchall() == [(2,)]


def test_a_failed_unit_closes_its_database_and_the_next_starts_afresh():
    with pytest.raises(duckdb.Error), duck.session() as db:
        db.execute("CREATE TABLE batch AS SELECT 1 AS x")
        failed = db
        db.execute("SELECT no_such_column FROM batch")
    with pytest.raises(duckdb.ConnectionException):
        failed.execute("SELECT 1")
    with duck.session() as db:
        assert db is not failed
        assert db.execute("SELECT COUNT(*) FROM duckdb_tables()").fetchone()[0] == 0


def test_a_unit_inside_a_unit_has_its_own_database():
    with duck.session() as outer:
        outer.execute("CREATE TABLE batch AS SELECT 1 AS x")
        with duck.session() as inner:
            assert inner is not outer
            assert inner.execute("SELECT COUNT(*) FROM duckdb_tables()").fetchone()[0] == 0
        assert outer.execute("SELECT x FROM batch").fetchall() == [(1,)]


def test_changed_settings_give_a_new_database(settings):
    settings.TOLLGATE_DUCKDB_THREADS = 1
    with duck.session() as db:
        first = db
        assert db.execute("SELECT current_setting('threads')").fetchone()[0] == 1
    settings.TOLLGATE_DUCKDB_THREADS = 2
    with duck.session() as db:
        assert db is not first
        assert db.execute("SELECT current_setting('threads')").fetchone()[0] == 2
