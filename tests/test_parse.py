"""The parse gate alone: formats, units, times and the exact per-line messages."""

import datetime as dt
import io
import re
from decimal import Decimal

import pytest

from usage.gates.parse import FileRejected, Parser
from usage.models import UsageCollector
from usage.pipeline import STAGING_COLUMNS

from .lanes import parse_both

ERROR = STAGING_COLUMNS.index("parse_error")

UTC = dt.UTC


def collector(**fields):
    base = {
        "format": "csv_header",
        "field_mapping": {"record_id": "id", "identifier": "who", "start_time": "at"},
        "time_format": "iso",
        "time_zone": "UTC",
        "dedup_fields": ["record_id"],
    }
    return UsageCollector(**{**base, **fields})


def parse(col, text, billing_tz="UTC"):
    """The rows of `text`, the same through both parse lanes (tests/lanes.py)."""
    data = text.encode() if isinstance(text, str) else text
    return parse_both(col, data, billing_tz)


def test_csv_by_position_with_units_and_local_times():
    col = collector(
        format="csv_position",
        delimiter="|",
        time_format="%Y%m%d%H%M%S",
        time_zone="Australia/Sydney",
        duration_unit="ms",
        volume_unit="kib",
        field_mapping={"record_id": 1, "identifier": 2, "start_time": 3, "duration": 4, "volume": 5},
    )
    rows = parse(col, "R1|614|20261005100000|1001|3\n", billing_tz="Australia/Sydney")
    line, key, record_id, ident, usage_at, usage_date, duration, volume = rows[0][:8]
    assert (line, key, record_id, ident) == (1, "R1", "R1", "614")
    assert usage_at == dt.datetime(2026, 10, 4, 23, 0, tzinfo=UTC)  # 10:00 in Sydney (+11:00) is 23:00 UTC
    assert usage_date == dt.date(2026, 10, 5)  # the billing day in Sydney
    assert (duration, volume) == (Decimal("1.001"), 3072)  # 1001 ms is 1.001 s, kept exactly; 3 KiB is 3072 bytes


def test_fixed_width_and_its_short_lines():
    col = collector(
        format="fixed_width",
        field_mapping={"record_id": [1, 4], "identifier": [5, 15], "start_time": [16, 25]},
        time_format="epoch",
    )
    rows = parse(col, "R001614000000011790000000\nR002614\n")
    assert rows[0][4] == dt.datetime.fromtimestamp(1790000000, UTC)
    assert rows[1][ERROR] == "Line 2: 7 characters, field identifier needs 15."


def test_json_lines_with_bad_json_and_pre_priced_amounts():
    col = collector(
        format="json_lines",
        field_mapping={"record_id": "id", "identifier": "who", "start_time": "at", "amount": "price", "quantity": "n"},
    )
    rows = parse(
        col,
        '{"id": "J1", "who": "614", "at": "2026-10-05T10:00:00+02:00", "price": "12.50", "n": 2}\n'
        '{"id": "J2", "who": \n'
        '["not", "an", "object"]\n'
        '{"id": "J4", "who": "614", "at": "2026-10-05T10:00:00Z", "price": "0.1234567"}\n',
    )
    assert rows[0][4] == dt.datetime(2026, 10, 5, 8, 0, tzinfo=UTC)
    assert (rows[0][8], rows[0][11]) == (2, 12_500_000)
    assert rows[1][ERROR].startswith("Line 2: not valid JSON (Expecting value at column")
    assert rows[2][ERROR] == "Line 3: a JSON object was expected."
    assert rows[3][ERROR] == "Line 4: amount '0.1234567' has more than 6 decimals."


def test_composite_record_keys_and_required_fields():
    col = collector(dedup_fields=["identifier", "start_time"])
    rows = parse(col, "id,who,at\nX,614,2026-10-05T10:00:00Z\n,615,\n")
    assert rows[0][1] == "614\x1f2026-10-05T10:00:00Z"
    assert rows[1][ERROR] == "Line 3: start_time is empty."


@pytest.mark.parametrize(
    "mapping,message",
    [
        ({"identifier": "who", "start_time": "at", "colour": "c"}, "maps 1 unknown field: colour"),
        ({"identifier": "who"}, "has no source for: start_time"),
    ],
)
def test_a_broken_mapping_rejects_the_file(mapping, message):
    with pytest.raises(FileRejected, match=re.escape(message)):
        Parser(collector(field_mapping=mapping), "UTC")


def test_blank_lines_are_counted_not_records():
    col = collector()
    parser = Parser(col, "UTC")
    rows = list(parser.rows(io.BytesIO(b"id,who,at\n\nX,614,2026-10-05T10:00:00Z\n\n")))
    assert [r[0] for r in rows] == [3] and parser.blank_lines == 2
