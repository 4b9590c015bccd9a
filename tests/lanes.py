"""Both parse lanes over the same bytes: the Python parser (the contract) and the DuckDB lane,
which must give the very same rows, line counts and refusals wherever it takes a file."""

import datetime as dt
import io

from usage import staging
from usage.engine import duck
from usage.gates import parse_duck
from usage.gates.parse import FileRejected, Parser

COUNTS = ("physical_lines", "header_lines", "blank_lines", "continuation_lines")


def python_lane(collector, data: bytes, billing_tz: str = "UTC"):
    """(rows, line counts) or (FileRejected message, None)."""
    parser = Parser(collector, billing_tz)
    try:
        rows = list(parser.rows(io.BytesIO(data)))
    except FileRejected as exc:
        return str(exc), None
    return rows, {name: getattr(parser, name) for name in COUNTS}


def duck_lane(collector, data: bytes, billing_tz: str = "UTC"):
    """As `python_lane`, through `parse_duck.stage`: rows in line order, times aware (UTC)."""
    parser = Parser(collector, billing_tz)
    with duck.session() as db:
        try:
            parse_duck.stage(parser, io.BytesIO(data), db)
        except FileRejected as exc:
            return str(exc), None
        rows = db.execute(f"SELECT * EXCLUDE (seq) FROM {staging.FILE_TABLE} ORDER BY line_no").fetchall()
    aware = [row[:4] + (None if row[4] is None else row[4].replace(tzinfo=dt.UTC),) + row[5:] for row in rows]
    return aware, {name: getattr(parser, name) for name in COUNTS}


def same_in_both_lanes(collector, data: bytes, billing_tz: str = "UTC", label: str = ""):
    """The Python lane's (rows, counts), after checking the DuckDB lane gives the same."""
    expected = python_lane(collector, data, billing_tz)
    got = duck_lane(collector, data, billing_tz)
    assert got[1] == expected[1], label
    assert got[0] == expected[0], label
    return expected


def parse_both(collector, data: bytes, billing_tz: str = "UTC"):
    """The Python lane's rows, checked against the DuckDB lane where it takes the file; a refusal
    (the same in both) is raised."""
    if parse_duck.eligible(Parser(collector, billing_tz)):
        rows, counts = same_in_both_lanes(collector, data, billing_tz)
    else:
        rows, counts = python_lane(collector, data, billing_tz)
    if counts is None:
        raise FileRejected(rows)
    return rows
