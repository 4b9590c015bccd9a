"""Parse gate, set-based: the lines one DuckDB statement reads exactly are read by it.

`parse.Parser` is the contract: its rows and its per-line messages. This lane splits the file into
physical lines in C (bytes.splitlines, in blocks), and one statement per block (`read_select`)
turns every line it can read without doubt into the very row the Python parser would build. A line
it does not accept - not printable ASCII, quoted beyond a plain "value", a value in a form the
statement does not read, anything wrong, out of range or near a clock change - goes to the Python
parser, which gives its row or its exact error. So the lane never writes an error of its own.

Local times use a table of UTC offsets built from Python's zoneinfo (`zone_offsets`), not DuckDB's
time zones, so both lanes convert a time alike; a time without an offset in a zone with clock
changes is read here only more than a day away from a change.

What the lane does not take (the Python parser reads the whole file): JSON lines, CSV whose quoted
fields may span lines, encodings that are not ASCII-compatible, multi-character delimiters, and time
patterns other than iso, epoch and fixed digits (%Y %m %d %H %M %S).
"""

import codecs
import datetime as dt
import functools
import re

import pyarrow as pa
import pyarrow.compute as pc

from .. import staging
from ..engine.duck import quote, table_from_arrow
from ..sql import QUANTITY_TYPE
from .parse import DURATION_FACTOR, FIELDS, MAX_KEY, MAX_LENGTH, VOLUME_FACTOR, Parser

BLOCK_BYTES = 1 << 24  # bytes of the file split into lines at a time
SCAN_ROWS = 16_384  # lines per piece of a block handed to DuckDB
ASCII_COMPATIBLE = {"utf-8", "ascii", "iso8859-1", "iso8859-15", "cp1250", "cp1251", "cp1252", "cp1257"}  # codecs names
PATTERN_RANGES = {
    "Y": r"\d{4}",
    "m": r"0[1-9]|1[0-2]",
    "d": r"0[1-9]|[12]\d|3[01]",
    "H": r"[01]\d|2[0-3]",
    "M": r"[0-5]\d",
    "S": r"[0-5]\d",
}
ISO_TIME = r"\d{4}-\d{2}-\d{2}[T ]([01]\d|2[0-3]):[0-5]\d(:[0-5]\d(\.\d{1,6})?)?(Z|[+-](0\d|1[0-4]):[0-5]\d)?"
# Seconds between looks at a zone's offset: two changes closer than this that cancel out would be missed.
ZONE_STEP = 6 * 3600
MARGIN = dt.timedelta(days=1)  # a local time this close to a clock change is left to the Python parser
NUMBER_FIELDS = ("duration", "volume", "quantity")
MAX_OFFSET = 14 * 3600  # seconds; a written offset beyond it is the Python parser's error
UTC_NAMES = {"UTC", "Etc/UTC", "Etc/UCT", "UCT", "Etc/Universal", "Universal", "Etc/Zulu", "Zulu", "GMT", "Etc/GMT"}


def eligible(parser: Parser) -> bool:
    collector = parser.collector
    if collector.format not in ("csv_header", "csv_position", "fixed_width"):
        return False
    if collector.format != "fixed_width" and (
        getattr(collector, "multiline_fields", False) or len(parser.delimiter()) != 1
    ):
        return False
    try:
        encoding = codecs.lookup(collector.encoding or "utf-8").name
    except LookupError:
        return False
    return encoding in ASCII_COMPATIBLE and time_reader(parser.time_format) is not None


def stage(parser: Parser, binary, duck) -> int:
    """Parse the file into the engine's file table (`staging`); the number of rows. Sets the
    parser's line counts as `Parser.rows` does, and refuses a file as it does."""
    parser.physical_lines = parser.header_lines = parser.blank_lines = parser.continuation_lines = 0
    staging.begin(duck)
    layout = statement = None
    tabs = parser.collector.format != "fixed_width" and parser.delimiter() == "\t"
    for first, lines in physical_blocks(binary, parser):
        parser.physical_lines = first + len(lines) - 1
        slow = []
        if layout is None:  # the file's first line: a header, or a record for the Python parser
            layout, leftover = first_line(parser, lines[0])
            statement = read_select(parser, layout)
            load_zones(duck, parser)
            if leftover:
                slow.append((1, lines[0]))
            first, lines = 2, lines[1:]
        slow += read_block(duck, statement, first, lines, tabs)
        slow.sort(key=lambda item: item[0])
        rows = list(python_rows(parser, layout, slow))
        if rows:
            staging.insert(duck, staging.prepare(iter(rows), len(rows)))
    if layout is None and parser.collector.format != "fixed_width":
        parser.csv_layout(None)  # refuses the empty file
    parser.check_records()
    return staging.finish(duck)


def physical_blocks(binary, parser: Parser):
    """(first line number, [line bytes]) per block of the file, split as Python's universal newlines
    (LF, CRLF, CR). A line longer than any line within the limit could be is cut and the rest of it
    read past, block by block: never held whole."""
    cap = 4 * parser.limits["line_chars"] + 8  # the most bytes a line within the limit takes
    bom = codecs.BOM_UTF8 if codecs.lookup(parser.collector.encoding or "utf-8").name == "utf-8" else b""
    carry, line_no, skipping, start = b"", 0, False, True
    while data := binary.read(BLOCK_BYTES):
        if start and bom and data.startswith(bom):
            data = data[len(bom) :]
        start = False
        buf = carry + data
        if skipping:
            end = first_break(buf)
            if end is None:
                carry = buf[-1:] if buf.endswith(b"\r") else b""
                continue
            buf, skipping = buf[end:], False
        cut = max(buf.rfind(b"\n"), buf.rfind(b"\r", 0, len(buf) - 1))
        lines = buf[: cut + 1].splitlines() if cut >= 0 else []
        carry = buf[cut + 1 :]
        if len(carry) > max(cap, BLOCK_BYTES):
            # Held back, a CR at the end of the carry ends this line: skipping stops at it.
            lines.append(carry[:cap])
            carry, skipping = (b"\r" if carry.endswith(b"\r") else b""), True
        if lines:
            yield line_no + 1, lines
            line_no += len(lines)
    if carry and not skipping:
        yield line_no + 1, carry.splitlines()


def first_break(buf: bytes) -> int | None:
    """Where the line after the first line break of `buf` starts; None without one (or when the
    break is a CR at the very end, which a LF may yet follow)."""
    found = [i for i in (buf.find(b"\n"), buf.find(b"\r")) if i >= 0]
    if not found:
        return None
    i = min(found)
    if buf[i : i + 1] == b"\r":
        if i == len(buf) - 1:
            return None
        return i + 2 if buf[i + 1 : i + 2] == b"\n" else i + 1
    return i + 1


def decoded(parser: Parser, line_no: int, line: bytes):
    """A physical line as `Parser._physical_lines` gives it: text, cut at the limit if overlong."""
    text = line.decode(parser.collector.encoding or "utf-8", "surrogateescape")
    limit = parser.limits["line_chars"]
    return (line_no, text[:limit], True) if len(text) > limit else (line_no, text, False)


def first_line(parser: Parser, line: bytes):
    """The layout from the file's first line, and whether that line is a record left to the Python
    parser (any first line but a CSV header; a CSV by position's is checked for a wrong delimiter)."""
    if parser.collector.format == "fixed_width":
        return list(parser.mapping.items()), True
    entry = next(parser.csv_records(iter([decoded(parser, 1, line)]), multiline=False))
    return parser.csv_layout(entry), parser.collector.format == "csv_position"


def python_rows(parser: Parser, layout, slow):
    entries = (decoded(parser, line_no, line) for line_no, line in slow)
    if parser.collector.format == "fixed_width":
        yield from parser.line_body(entries)
    else:
        yield from parser.csv_body(parser.csv_records(entries, multiline=False), layout)


def read_block(duck, statement: str, first: int, lines: list[bytes], tabs: bool) -> list[tuple[int, bytes]]:
    """Read a block's lines with the statement into the file table; the lines it left, as
    (line number, bytes), for the Python parser."""
    if not lines:
        return []
    raw = pa.array(lines, pa.binary())
    numbers = pa.array(range(first, first + len(lines)), pa.int64())
    text = raw.view(pa.string())
    printable = pc.ascii_is_printable(pc.replace_substring(text, "\t", " ") if tabs else text)
    block = pa.table({"line_no": numbers, "line": text}).filter(printable)
    others = pa.table({"line_no": numbers, "line": raw}).filter(pc.invert(printable))
    others = list(zip(others.column("line_no").to_pylist(), others.column("line").to_pylist(), strict=True))
    if not block.num_rows:
        return others
    # In pieces, so that DuckDB copies them on all its threads.
    table_from_arrow(duck, "block_lines", pa.Table.from_batches(block.to_batches(max_chunksize=SCAN_ROWS)))
    duck.execute(f"CREATE OR REPLACE TABLE block_read AS {statement}")
    duck.execute(
        f"INSERT INTO {staging.LOADING_TABLE} SELECT * EXCLUDE (accepted, line) FROM block_read WHERE accepted"
    )
    left = duck.execute("SELECT line_no, line FROM block_read WHERE NOT accepted").fetchall()
    duck.execute("DROP TABLE block_read")
    duck.execute("DROP TABLE block_lines")
    return [(n, s.encode("ascii")) for n, s in left] + others


# -- time zones -----------------------------------------------------------------------------------
@functools.lru_cache(maxsize=64)
def zone_offsets(name: str, first_year: int, last_year: int) -> tuple[tuple[dt.datetime, int], ...]:
    """(UTC start, offset in seconds) of each stretch of one offset of zone `name`, covering the
    usage years: found by looking every few hours and bisecting a change to its second."""
    import zoneinfo

    if name in UTC_NAMES:
        return ((dt.datetime(1970, 1, 1), 0),)
    zone = zoneinfo.ZoneInfo(name)
    low = int(dt.datetime(max(first_year - 1, 1), 1, 1, tzinfo=dt.UTC).timestamp())
    high = int(dt.datetime(min(last_year + 2, 9999), 1, 1, tzinfo=dt.UTC).timestamp())

    def offset(t):
        return int(dt.datetime.fromtimestamp(t, zone).utcoffset().total_seconds())

    stretches = [(low, offset(low))]
    t = low
    while t < high:
        n = min(t + ZONE_STEP, high)
        if offset(n) == stretches[-1][1]:
            t = n
            continue
        a, b = t, n
        while b - a > 1:
            m = (a + b) // 2
            a, b = (m, b) if offset(m) == stretches[-1][1] else (a, m)
        stretches.append((b, offset(b)))
        t = b
    epoch = dt.datetime(1970, 1, 1)
    return tuple((epoch + dt.timedelta(seconds=s), o) for s, o in stretches)


def fixed_offset(stretches) -> int | None:
    return stretches[0][1] if len(stretches) == 1 else None


def load_zones(duck, parser: Parser):
    """The billing zone's offsets by UTC time, and the source zone's by local time, each stretch
    shrunk by a day at both ends (a local time near a change may be ambiguous or skipped)."""
    years = parser.limits["first_year"], parser.limits["last_year"]
    billing = zone_offsets(parser.billing_tz.key, *years)
    source = zone_offsets(parser.source_tz.key, *years)
    ends = [start for start, _ in source[1:]] + [dt.datetime(min(years[1] + 2, 9999), 1, 1)]
    safe = [
        (start + dt.timedelta(seconds=off) + MARGIN, end + dt.timedelta(seconds=off) - MARGIN, off)
        for (start, off), end in zip(source, ends, strict=True)
    ]
    safe = [s for s in safe if s[0] < s[1]]
    stamp = pa.timestamp("us")
    billing_table = {"start_utc": pa.array([s for s, _ in billing], stamp), "off": [o for _, o in billing]}
    table_from_arrow(duck, "billing_offsets", pa.table(billing_table))
    source_table = {
        "local_from": pa.array([s[0] for s in safe], stamp),
        "local_to": pa.array([s[1] for s in safe], stamp),
        "off": [s[2] for s in safe],
    }
    table_from_arrow(duck, "source_offsets", pa.table(source_table))


# -- the statement ---------------------------------------------------------------------------------
def time_reader(time_format: str):
    """(regex, [(directive, group)]) for a pattern of fixed digits, 'iso' or 'epoch' as such; None
    for a pattern the statement does not read."""
    if time_format in ("iso", "epoch"):
        return time_format
    parts, groups, i = ["^"], [], 0
    while i < len(time_format):
        char = time_format[i]
        if char == "%":
            directive = time_format[i + 1 : i + 2]
            if directive not in PATTERN_RANGES or directive in groups:
                return None
            groups.append(directive)
            parts.append(f"({PATTERN_RANGES[directive]})")
            i += 2
        else:
            if char.isspace() or not char.isascii() or not char.isprintable():
                return None
            parts.append(re.escape(char))
            i += 1
    if not {"Y", "m", "d"} <= set(groups):
        return None
    return "".join(parts) + "$", groups


def time_columns(parser: Parser, st: str) -> str:
    """`naive` (the time as written, before any offset) and `off` (seconds east of UTC written with
    it, NULL when the source zone applies) for start time `st`."""
    reader = time_reader(parser.time_format)
    digits = parser.limits["number_chars"]
    if reader == "epoch":
        return (
            f"CASE WHEN regexp_full_match({st}, '[0-9]{{1,11}}(\\.[0-9]{{1,6}})?') AND length({st}) <= {digits} "
            f"THEN make_timestamp(CAST(CAST({st} AS DECIMAL(38, 6)) * 1000000 AS BIGINT)) END AS naive, 0 AS off"
        )
    if reader == "iso":
        # A time the pattern matches ends in Z, in ±hh:mm (its sixth character from the end is the
        # sign), or in the time itself.
        cut = f"CASE WHEN ends_with({st}, 'Z') THEN 1 WHEN {st}[-6] IN ('+', '-') THEN 6 ELSE 0 END"
        return (
            f"CASE WHEN regexp_full_match({st}, {quote(ISO_TIME)}) THEN TRY_CAST(replace(left({st}, length({st}) - "
            f"{cut}), 'T', ' ') AS TIMESTAMP) END AS naive, CASE WHEN ends_with({st}, 'Z') THEN 0 "
            f"WHEN {st}[-6] IN ('+', '-') THEN (CASE WHEN {st}[-6] = '-' THEN -1 ELSE 1 END) * "
            f"(CAST({st}[-5:-4] AS INTEGER) * 3600 + CAST({st}[-2:] AS INTEGER) * 60) END AS off"
        )
    pattern, groups = reader
    named = dict(zip(groups, (f"t.g{k}" for k in range(len(groups))), strict=True))

    def part(directive, default):
        return named.get(directive, f"'{default}'")

    text = " || ".join(
        [part("Y", ""), "'-'", part("m", ""), "'-'", part("d", ""), "' '"]
        + [part("H", "00"), "':'", part("M", "00"), "':'", part("S", "00")]
    )
    return f"TRY_CAST(CASE WHEN t.g0 <> '' THEN {text} END AS TIMESTAMP) AS naive, NULL::INTEGER AS off"


def time_match(parser: Parser, st: str) -> str:
    """The regexp_extract struct `t` the time columns read."""
    reader = time_reader(parser.time_format)
    if reader in ("epoch", "iso"):
        return "NULL AS t"
    pattern, groups = reader
    names = ", ".join(f"'g{k}'" for k in range(len(groups)))
    return f"regexp_extract({st}, {quote(pattern)}, [{names}]) AS t"


def read_select(parser: Parser, layout) -> str:
    """One SELECT over `block_lines` (line_no, line): every staging column, `accepted` (the row is
    exactly the Python parser's) and the line (for those not accepted)."""
    collector = parser.collector
    fields = dict(layout)
    csv = collector.format != "fixed_width"
    delimiter = parser.delimiter()
    if csv:
        width = max(fields.values()) + 1
        shape = (
            f"len(v) >= {width} AND CASE WHEN NOT contains(line, '\"') THEN true "
            'ELSE list_bool_and(list_transform(v, lambda x: regexp_full_match(x, \'[^"]*|"[^"]*"\'))) END'
        )

        def source(field):
            x = f"v[{fields[field] + 1}]"
            return f"CASE WHEN starts_with({x}, '\"') THEN substr({x}, 2, length({x}) - 2) ELSE {x} END"

        split = f"string_split(line, {quote(delimiter)}) AS v"
    else:
        shape = f"length(line) >= {max(end for _, end in fields.values())}"

        def source(field):
            start, end = fields[field]
            return f"trim(substr(line, {start}, {end - start + 1}))"

        split = "NULL AS v"
    raw = {f: f"r_{f}" if f in fields else "''" for f in FIELDS}
    t = {f: f"trim({r})" if csv and r != "''" else r for f, r in raw.items()}
    bounds = parser.bounds
    checks = [
        f"length(line) <= {parser.limits['line_chars']}",
        "trim(line) <> ''",
        shape,
        f"{t['identifier']} <> ''",
        f"{t['start_time']} <> ''",
    ]
    checks += [f"length({raw[f]}) <= {limit}" for f, limit in MAX_LENGTH.items()]
    numbers = []
    factor = {
        "duration": DURATION_FACTOR.get(collector.duration_unit, 1),  # ms: rounded up below
        "volume": VOLUME_FACTOR[collector.volume_unit],
        "quantity": 1,
    }
    for field in NUMBER_FIELDS:
        v = t[field]
        whole = f"CASE WHEN regexp_full_match({v}, '[0-9]{{1,18}}') THEN CAST({v} AS HUGEINT) END"
        if field == "duration" and collector.duration_unit == "ms":
            value = {
                "up": f"({whole} + 999) // 1000",
                "nearest": f"({whole} + 500) // 1000",
                "refuse": f"CASE WHEN {whole} % 1000 = 0 THEN {whole} // 1000 END",  # else the Python parser's error
                "exact": f"{whole} * 0.001",
            }[collector.fraction_rounding]
        else:
            value = f"{whole} * {factor[field]}"
        numbers.append(f"CASE WHEN {v} = '' THEN NULL ELSE {value} END AS n_{field}")
        checks.append(f"({v} = '' OR n_{field} <= {bounds[field]})")
    amount_limit = int(bounds["amount"] * 1_000_000)
    a = t["amount"]
    numbers.append(
        f"CASE WHEN regexp_full_match({a}, '[+-]?[0-9]{{1,15}}(\\.[0-9]{{1,6}})?') AND length({a}) <= "
        f"{parser.limits['number_chars']} THEN CAST(CAST({a} AS DECIMAL(38, 6)) * 1000000 AS HUGEINT) END AS n_amount"
    )
    checks.append(f"({a} = '' OR abs(n_amount) <= {amount_limit})")
    parts = [t.get(f, "''") for f in parser.key_fields]
    checks += [f"{p} <> ''" for p in parts]
    joined = parts[0] if len(parts) == 1 else " || chr(31) || ".join(parts)
    # A correction names one earlier key, not its own (the Python parser says why otherwise).
    checks += [f"({t['corrects']} = '' OR {t['cancels']} = '')", f"{t['corrects']} || {t['cancels']} <> {joined}"]
    first_time = parser.first_time.replace(tzinfo=None)
    end_time = parser.end_time.replace(tzinfo=None)
    checks += [
        f"(off IS NULL OR abs(off) <= {MAX_OFFSET})",
        "utc IS NOT NULL",
        f"utc >= TIMESTAMP '{first_time}'",
        f"utc < TIMESTAMP '{end_time}'",
    ]
    columns = ", ".join(f"{source(f)} AS r_{f}" for f in fields)
    placed, local = zone_steps(parser)
    return f"""
WITH split AS (
    SELECT line_no, line, {split} FROM block_lines
), sourced AS (
    SELECT line_no, line, v, {columns} FROM split
), typed AS (
    SELECT *, {", ".join(numbers)} FROM (SELECT *, {time_match(parser, t["start_time"])} FROM sourced)
), timed AS (
    SELECT *, {time_columns(parser, t["start_time"])} FROM typed
), placed AS (
    {placed}
), local AS (
    {local}
)
SELECT
    line_no,
    CASE WHEN length({joined}) > {MAX_KEY} THEN 'sha1:' || sha1({joined}) ELSE {joined} END AS record_key,
    {t["record_id"]} AS record_id,
    {t["identifier"]} AS identifier,
    utc AS usage_at,
    CAST(local_time AS DATE) AS usage_date,
    TRY_CAST(n_duration AS {QUANTITY_TYPE}) AS duration,
    TRY_CAST(n_volume AS {QUANTITY_TYPE}) AS volume,
    TRY_CAST(n_quantity AS {QUANTITY_TYPE}) AS quantity,
    {t["destination"]} AS destination,
    {t["usage_type"]} AS usage_type,
    TRY_CAST(n_amount AS BIGINT) AS amount_micros,
    CAST(isodow(local_time) AS INTEGER) AS local_weekday,
    CAST(hour(local_time) * 3600 + minute(local_time) * 60 + second(local_time) AS INTEGER) AS local_seconds,
    NULLIF({t["corrects"]} || {t["cancels"]}, '') AS corrects,
    {t["cancels"]} <> '' AS cancels,
    NULL::VARCHAR AS parse_error,
    NULL::VARCHAR AS parse_reason,
    '' AS raw,
    COALESCE({" AND ".join(f"({c})" for c in checks)}, false) AS accepted,
    line
FROM local
"""


def zone_steps(parser: Parser) -> tuple[str, str]:
    """The SELECTs that place a time in UTC (`utc`) and in the billing zone (`local_time`): by a
    constant where a zone has one offset over the usage years, else by the offset tables."""
    years = parser.limits["first_year"], parser.limits["last_year"]
    source = fixed_offset(zone_offsets(parser.source_tz.key, *years))
    billing = fixed_offset(zone_offsets(parser.billing_tz.key, *years))
    if source is not None:
        placed = f"SELECT *, naive - to_seconds(COALESCE(off, {source})) AS utc FROM timed"
    else:
        placed = (
            "SELECT timed.*, CASE WHEN timed.off IS NOT NULL THEN naive - to_seconds(timed.off) "
            "WHEN naive < z.local_to THEN naive - to_seconds(z.off) END AS utc "
            "FROM timed ASOF LEFT JOIN source_offsets z ON timed.naive >= z.local_from"
        )
    if billing is not None:
        local = f"SELECT *, utc + to_seconds({billing}) AS local_time FROM placed"
    else:
        local = (
            "SELECT placed.*, utc + to_seconds(b.off) AS local_time "
            "FROM placed ASOF LEFT JOIN billing_offsets b ON placed.utc >= b.start_utc"
        )
    return placed, local
