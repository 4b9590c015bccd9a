"""The DuckDB parse lane (usage/gates/parse_duck.py) against the Python parser, the contract:
the same rows, line counts and refusals for the malformed corpus, for generated lines around
every edge the lane's statement decides on, and across its block boundaries."""

import datetime as dt
from decimal import Decimal

import pytest
from django.test import override_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from usage.gates import parse_duck
from usage.gates.parse import CORRECTION_FIELDS, Parser
from usage.gates.parse import FIELDS as ALL_FIELDS
from usage.models import UsageCollector
from usage.pipeline import STAGING_COLUMNS

from .corpus import COLLECTORS, build
from .lanes import same_in_both_lanes as same

FIELDS = tuple(f for f in ALL_FIELDS if f not in CORRECTION_FIELDS)  # the files here carry no corrections
ERROR = STAGING_COLUMNS.index("parse_error")


def csv_collector(**fields):
    base = {
        "format": "csv_header",
        "field_mapping": {f: f for f in FIELDS},
        "time_format": "iso",
        "time_zone": "UTC",
        "dedup_fields": ["record_id"],
    }
    return UsageCollector(code="L", name="lanes", **{**base, **fields})


def test_the_malformed_corpus_reads_the_same_in_both_lanes():
    taken = 0
    for case in build():
        collector = UsageCollector(code="C", name="corpus", dedup_fields=["record_id"], **COLLECTORS[case.collector])
        if not parse_duck.eligible(Parser(collector, "UTC")):
            continue
        taken += 1
        same(collector, case.content, label=case.name)
    assert taken == 780  # CSV, by position, fixed width and latin-1 files: all but the JSON lines ones


def test_the_lane_reads_clean_lines_itself(monkeypatch):
    """A clean file goes through the statement: the Python parser sees no line of it."""
    handed = []
    original = parse_duck.python_rows
    monkeypatch.setattr(
        parse_duck, "python_rows", lambda p, layout, slow: handed.extend(slow) or original(p, layout, slow)
    )
    lines = [",".join(FIELDS)] + [
        f"R{n},614{n:08d},2026-10-{1 + n % 28:02d}T{n % 24:02d}:00:00Z,{n},,,61{n},voice,{n}.25" for n in range(2000)
    ]
    rows, counts = same(csv_collector(), ("\n".join(lines) + "\n").encode(), "Australia/Sydney")
    assert len(rows) == 2000 and counts["physical_lines"] == 2001
    assert handed == []
    assert rows[5][11] == 5_250_000  # 5.25 in micro-units


ZONES = ["UTC", "Europe/Berlin", "Australia/Lord_Howe", "America/St_Johns", "Asia/Kolkata"]


@st.composite
def iso_time(draw):
    when = draw(st.datetimes(min_value=dt.datetime(1969, 12, 30), max_value=dt.datetime(2200, 1, 2)))
    if draw(st.booleans()):  # near a clock change of the zones above
        when = draw(
            st.sampled_from(
                [
                    dt.datetime(2026, 3, 29, 2, 30),
                    dt.datetime(2026, 10, 25, 2, 30),
                    dt.datetime(2026, 4, 5, 1, 45),
                    dt.datetime(2026, 11, 1, 1, 30),
                    dt.datetime(2026, 3, 28, 2, 30),
                ]
            )
        ) + dt.timedelta(minutes=draw(st.integers(-1500, 1500)))
    text = when.strftime(draw(st.sampled_from(["%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M"])))
    if draw(st.booleans()) and ":" in text[14:]:
        text += "." + draw(st.text("0123456789", min_size=1, max_size=8))
    text += draw(st.sampled_from(["", "", "Z", "+05:30", "-03:30", "+14:00", "+14:30", "+05:60", "+0530", "-00:00"]))
    return draw(
        st.sampled_from([text, text, f" {text} ", text.replace("-", "/"), "2026-02-30T10:00:00", "2026-10-05T24:00"])
    )


NUMBER = st.one_of(
    st.just(""),
    st.integers(0, 10**6).map(str),
    st.sampled_from(["-5", "1.5", "1e3", "9" * 18, "9" * 19, " 42 ", "0", "007", "+3", "1,000", "٣"]),
)
AMOUNT = st.one_of(
    st.just(""),
    st.decimals(min_value=-(10**7), max_value=10**7, places=2, allow_nan=False).map(str),
    st.sampled_from(["0.1234567", "-0.00", "+3", ".5", "5.", "1e2", "999999999999999.5", "12.500000", "1000000"]),
)
TEXT = st.one_of(
    st.sampled_from(["", " ", "R1", " R2 ", '"R3"', '"R,4"', 'R"5', "é", "x" * 130, '""', "a\tb"]),
    st.text("abcR0123456789-_ ", min_size=1, max_size=12),
)


@st.composite
def usage_file(draw):
    delimiter = draw(st.sampled_from([",", ";", "\t", "|"]))
    lines = [delimiter.join(FIELDS)]
    for _ in range(draw(st.integers(1, 12))):
        values = [
            draw(TEXT),
            draw(st.sampled_from(["614000001", " 614000002", "", "x" * 129])),
            draw(iso_time()),
            draw(NUMBER),
            draw(NUMBER),
            draw(NUMBER),
            draw(TEXT),
            draw(st.sampled_from(["voice", "data", "sms", ""])),
            draw(AMOUNT),
        ]
        line = delimiter.join(values[: draw(st.sampled_from([9, 9, 9, 8, 3]))])
        lines.append(draw(st.sampled_from([line, line, line, "", "   ", line + delimiter + "extra"])))
    ending = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    return delimiter, ending.join(lines) + draw(st.sampled_from([ending, ""]))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    usage_file(),
    st.sampled_from(ZONES),
    st.sampled_from(ZONES),
    st.sampled_from(["second", "ms", "minute"]),
    st.sampled_from(["byte", "kb", "mb", "kib", "mib"]),
    st.sampled_from([["record_id"], ["identifier", "start_time"], ["destination"]]),
)
def test_generated_lines_read_the_same_in_both_lanes(file, source_zone, billing_zone, duration_unit, volume_unit, key):
    delimiter, text = file
    collector = csv_collector(
        delimiter=delimiter,
        time_zone=source_zone,
        duration_unit=duration_unit,
        volume_unit=volume_unit,
        dedup_fields=key,
        max_duration_seconds=10**6,
        max_amount="1000000",
    )
    same(collector, text.encode(), billing_zone)


@settings(max_examples=80, deadline=None)
@given(
    st.sampled_from(["epoch", "%Y%m%d%H%M%S", "%d.%m.%Y-%H%M", "%Y%m%d"]),
    st.lists(
        st.one_of(
            st.integers(-(10**6), 10**12).map(str),
            st.sampled_from(["1790000000.5", "1790000000.1234567", "99999999999", "1e9", ""]),
            st.datetimes(min_value=dt.datetime(1969, 1, 1), max_value=dt.datetime(2201, 1, 1)).map(
                lambda d: d.strftime("%Y%m%d%H%M%S")
            ),
            st.sampled_from(
                ["20261305100000", "20260230100000", "20261005240000", "05.10.2026-1000", "32.01.2026-1000"]
            ),
        ),
        min_size=1,
        max_size=8,
    ),
)
def test_other_time_formats_read_the_same_in_both_lanes(time_format, times):
    collector = csv_collector(
        format="csv_position",
        delimiter="|",
        time_format=time_format,
        time_zone="Europe/Berlin",
        field_mapping={"record_id": 1, "identifier": 2, "start_time": 3},
    )
    text = "".join(f"R{n}|614|{t}\n" for n, t in enumerate(times))
    same(collector, text.encode(), "Australia/Sydney")


def test_fixed_width_reads_the_same_in_both_lanes():
    collector = csv_collector(
        format="fixed_width",
        time_format="epoch",
        field_mapping={"record_id": [1, 4], "identifier": [5, 15], "start_time": [16, 25], "duration": [26, 30]},
    )
    text = (
        "R001614000000011790000000   60\n"
        "R002614000000021790000060\n"  # short: the Python parser says which field
        "R003 6140000003179000012000120\n"
        "    614000000417900001800  10\n"  # no record id
        "R005614000000517900002400 -10\n"
        "\n"
        "R006614000000617900003000   7 trailing\n"
    )
    rows, counts = same(collector, text.encode())
    assert counts["blank_lines"] == 1 and len(rows) == 6


@pytest.mark.parametrize("block", [7, 16, 61, 4096])
@pytest.mark.parametrize("ending", ["\n", "\r\n", "\r"])
def test_block_boundaries_and_overlong_lines(monkeypatch, block, ending):
    """Lines split across blocks, a CR and its LF in different blocks, and lines longer than the
    limit (some longer than a block) are counted and read as the Python parser does."""
    monkeypatch.setattr(parse_duck, "BLOCK_BYTES", block)
    lines = [",".join(FIELDS)]
    for n in range(30):
        lines.append(f"R{n},6140{n},2026-10-05T10:{n:02d}:00Z,{n},,,,voice,")
        if n % 7 == 3:
            lines.append("X" * (40 + 37 * n))  # beyond the limit of 100, and beyond small blocks
        if n == 4:
            lines += ["Y" * 101, "Y" * 102]  # a CRLF the Python parser's bounded read cuts between CR and LF
        if n % 5 == 0:
            lines.append("")
    data = ("\ufeff" + ending.join(lines) + ending).encode()
    with override_settings(TOLLGATE_MAX_LINE_CHARS=100):
        rows, counts = same(csv_collector(), data)
    assert counts["physical_lines"] == len(lines)
    assert sum(1 for r in rows if r[ERROR] and "longer than 100 characters" in r[ERROR]) == 6


def test_refusals_are_the_same_in_both_lanes():
    for text in ["", "\n\n", "record_id,identifier\n", ",".join(FIELDS) + "\n", "a;b;c\nR1;614;2026\n"]:
        assert same(csv_collector(), text.encode())[1] is None
    assert (
        same(csv_collector(format="fixed_width", field_mapping={"identifier": [1, 3], "start_time": [4, 6]}), b"")[1]
        is None
    )


def test_correction_columns_are_read_alike_in_both_lanes():
    """A replacement, a cancellation, and the two lines a correction may not be (both set, its own key)."""
    header = ",".join([*FIELDS, *CORRECTION_FIELDS])
    lines = [
        header,
        "R1,614,2026-10-05T10:00:00Z,60,,,612,voice,,,",
        "R2,614,2026-10-05T10:00:00Z,30,,,612,voice,,R1,",
        "R3,614,2026-10-05T10:00:00Z,30,,,612,voice,,,R1",
        "R4,614,2026-10-05T10:00:00Z,30,,,612,voice,,R1,R2",
        "R5,614,2026-10-05T10:00:00Z,30,,,612,voice,,R5,",
        'R6,614,2026-10-05T10:00:00Z,30,,,612,voice,,"R 1",',
    ]
    mapping = {f: f for f in ALL_FIELDS}
    rows, _ = same(csv_collector(field_mapping=mapping), ("\n".join(lines) + "\n").encode())
    corrects, cancels = STAGING_COLUMNS.index("corrects"), STAGING_COLUMNS.index("cancels")
    got = [(r[corrects], r[cancels], r[ERROR]) for r in rows]
    assert got == [
        (None, False, None),
        ("R1", False, None),
        ("R1", True, None),
        (None, False, "Line 5: corrects and cancels are both set: a line either replaces a record or cancels it."),
        (None, False, "Line 6: corrects 'R5' is this line's own record key: a correction needs a key of its own."),
        ("R 1", False, None),
    ]


@pytest.mark.parametrize("rounding", ["exact", "up", "nearest", "refuse"])
def test_milliseconds_round_alike_in_both_lanes(rounding):
    lines = [",".join(FIELDS)] + [
        f"R{n},614,2026-10-05T10:00:00Z,{ms},,,612,voice,"
        for n, ms in enumerate([0, 1, 499, 500, 999, 1000, 1500, 2001])
    ]
    collector = csv_collector(duration_unit="ms", fraction_rounding=rounding)
    rows, _ = same(collector, ("\n".join(lines) + "\n").encode())
    duration = STAGING_COLUMNS.index("duration")
    got = [r[duration] for r in rows]
    assert (
        got
        == {
            "exact": [Decimal(ms) / 1000 for ms in (0, 1, 499, 500, 999, 1000, 1500, 2001)],
            "up": [0, 1, 1, 1, 1, 1, 2, 3],
            "nearest": [0, 0, 0, 1, 1, 1, 2, 2],
            "refuse": [0, None, None, None, None, 1, None, None],
        }[rounding]
    )
