"""Parse gate: turns a collector's file into typed record rows, streaming.

A problem with the file as a whole (empty, header only, a mapped column missing, the wrong
delimiter) rejects it before anything is written. A problem with one line becomes that line's
PARSE_ERROR, naming the line, the field and the reason; a value that parses but is beyond the
collector's plausibility bounds becomes OUT_OF_RANGE. The rest of the file goes on.

Every physical line is accounted for: it is the header, blank, a record (or a record's error),
or, where the collector lets quoted fields span lines, a continuation of the record before it.
What one line may cost is bounded: its length, a number's length and exponent, JSON nesting.
"""

import copy
import csv
import datetime as dt
import hashlib
import io
import itertools
import json
import re
import zoneinfo
from decimal import ROUND_HALF_UP, ROUND_UP, Decimal, localcontext

from django.conf import settings

from billing.formatting import plural
from billing.models import THOUSANDTH  # the finest fraction a record keeps

FIELDS = (
    "record_id",
    "identifier",
    "start_time",
    "duration",
    "volume",
    "quantity",
    "destination",
    "usage_type",
    "amount",
    "corrects",
    "cancels",
)
CORRECTION_FIELDS = ("corrects", "cancels")  # the key of an earlier record this line replaces, or cancels
REQUIRED = ("identifier", "start_time")
MAX_LENGTH = {
    "record_id": 128,
    "identifier": 128,
    "destination": 64,
    "usage_type": 32,
    "corrects": 255,
    "cancels": 255,
}
DURATION_FACTOR = {"second": 1, "minute": 60}
DURATION_SCALE = {"second": Decimal(1), "ms": Decimal("0.001"), "minute": Decimal(60)}
BASE_UNIT = {"duration": "seconds", "volume": "bytes", "quantity": "units"}
ONE_BASE_UNIT = {"duration": "second", "volume": "byte", "quantity": "unit"}
EXACT_DIGITS = 60  # enough for any number _decimal accepts times any unit, without rounding
VOLUME_FACTOR = {"byte": 1, "kb": 1000, "mb": 1000**2, "kib": 1024, "mib": 1024**2}
MAX_KEY = 255
UTC = dt.UTC
EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)
# A plain decimal number: no inf, NaN, hex or thousands separators.
NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
# The UTC offset at the end of an ISO time, checked by hand: Python accepts minutes of 60 and more.
ISO_OFFSET = re.compile(r"[T ].*?([+-])(\d{2}):?(\d{2})(?::?(\d{2}(?:\.\d+)?))?$")
MAX_OFFSET = dt.timedelta(hours=14)
# strptime directives of a fixed number of digits: a compact pattern must use the whole field.
FIXED_DIRECTIVES = {"Y": 4, "m": 2, "d": 2, "H": 2, "M": 2, "S": 2, "y": 2, "j": 3}
REASON_PARSE = None  # a row's parse_reason: NULL is PARSE_ERROR
REASON_RANGE = "OUT_OF_RANGE"


def limits() -> dict:
    """What one line may cost, from settings (documented there)."""
    return {
        "line_chars": int(getattr(settings, "TOLLGATE_MAX_LINE_CHARS", 10_000)),
        "number_chars": int(getattr(settings, "TOLLGATE_MAX_NUMBER_CHARS", 40)),
        "json_depth": int(getattr(settings, "TOLLGATE_MAX_JSON_DEPTH", 16)),
        "record_lines": int(getattr(settings, "TOLLGATE_MAX_RECORD_LINES", 50)),
        "first_year": int(getattr(settings, "TOLLGATE_FIRST_USAGE_YEAR", 1970)),
        "last_year": int(getattr(settings, "TOLLGATE_LAST_USAGE_YEAR", 2199)),
    }


def api_view(collector):
    """The collector as records sent to the API arrive: JSON lines keyed by Tollgate's own field
    names, ISO times (UTC unless they carry an offset), seconds and bytes. Classification, keys,
    plausibility bounds and the late-usage policy stay the collector's."""
    view = copy.copy(collector)
    view.format = "json_lines"
    view.field_mapping = {field: field for field in FIELDS}
    view.time_format = "iso"
    view.time_zone = "UTC"
    view.duration_unit = "second"
    view.volume_unit = "byte"
    view.encoding = "utf-8"
    return view


class FileRejected(Exception):
    """The file as a whole cannot be mediated; nothing of it is written."""


class LineError(Exception):
    reason = REASON_PARSE


class OutOfRange(LineError):
    """The value parses but no real record has it: quarantined, never rated."""

    reason = REASON_RANGE


# A parsed row is a plain tuple in staging column order (usage.pipeline.STAGING_COLUMNS):
# (line_no, record_key, record_id, identifier, usage_at, usage_date, duration, volume, quantity,
#  destination, usage_type, amount_micros, local_weekday, local_seconds, corrects, cancels, parse_error,
#  parse_reason, raw).


class _LineFeed:
    """Hands the csv reader one physical line at a time. When the reader asks for more (a quote
    left open), it gets the following lines only if the collector allows multi-line fields, up
    to a bound; otherwise it is told the input ended, and `cut` says so."""

    def __init__(self, more=None, max_lines: int = 1, max_chars: int = 0):
        self.more = more
        self.max_lines = max_lines
        self.max_chars = max_chars
        self.start(None)

    def start(self, line):
        self.line, self.cut, self.overlong, self.extra = line, False, False, 0
        self.chars = len(line) if line else 0

    def __iter__(self):
        return self

    def __next__(self):
        if self.line is not None:
            line, self.line = self.line, None
            return line
        nxt = None
        if self.more is not None and self.extra + 1 < self.max_lines:
            nxt = next(self.more, None)
        if nxt is None:
            self.cut = True
            raise StopIteration
        self.extra += 1
        _, line, overlong = nxt
        self.chars += len(line)
        if overlong or self.chars > self.max_chars:
            self.cut = self.overlong = True
            raise StopIteration
        return line


class Parser:
    def __init__(self, collector, billing_tz: str):
        self.collector = collector
        self.mapping = {k: v for k, v in (collector.field_mapping or {}).items() if v not in (None, "")}
        unknown = set(self.mapping) - set(FIELDS)
        if unknown:
            raise FileRejected(
                f"The collector maps {plural(len(unknown), 'unknown field')}: {', '.join(sorted(unknown))}."
            )
        missing = [f for f in REQUIRED if f not in self.mapping]
        if missing:
            raise FileRejected(f"The collector's mapping has no source for: {', '.join(missing)}.")
        self.limits = limits()
        csv.field_size_limit(max(self.limits["line_chars"] * self.limits["record_lines"], 1024))
        self.key_fields = collector.key_fields()
        corrections = [f for f in CORRECTION_FIELDS if f in self.mapping]
        if corrections and len(self.key_fields) != 1:
            raise FileRejected(
                f"The collector maps {' and '.join(corrections)}, which name an earlier record by its key: the "
                f"record key must then be one field, not {' + '.join(self.key_fields)}."
            )
        self.source_tz = zoneinfo.ZoneInfo(collector.time_zone or "UTC")
        self.billing_tz = zoneinfo.ZoneInfo(billing_tz)
        self.billing_is_utc = billing_tz == "UTC"
        self.time_format = collector.time_format or "iso"
        self.time_width = _fixed_width_of(self.time_format)
        self.duration_unit = collector.duration_unit
        self.volume_factor = VOLUME_FACTOR[collector.volume_unit]
        self.accept_negative = collector.accept_negative
        self.fraction_rounding = getattr(collector, "fraction_rounding", "exact")
        self.bounds = collector.plausibility_bounds()
        self.first_time = dt.datetime(self.limits["first_year"], 1, 1, tzinfo=UTC)
        self.end_time = dt.datetime(self.limits["last_year"] + 1, 1, 1, tzinfo=UTC)
        self.physical_lines = self.header_lines = self.blank_lines = self.continuation_lines = 0

    # -- reading -------------------------------------------------------------------------------
    def rows(self, binary):
        """Yield a row tuple per data record. Every physical line is counted: `physical_lines` =
        `header_lines` + `blank_lines` + records + `continuation_lines`."""
        text = io.TextIOWrapper(binary, encoding=self.text_encoding(), errors="surrogateescape", newline="")
        self.physical_lines = self.header_lines = self.blank_lines = self.continuation_lines = 0
        fmt = self.collector.format
        lines = self._physical_lines(text)
        if fmt in ("csv_header", "csv_position"):
            entries = self.csv_records(lines, multiline=getattr(self.collector, "multiline_fields", False))
            first = next(entries, None)
            layout = self.csv_layout(first)
            if fmt == "csv_position":
                entries = itertools.chain([first], entries)
            yield from self.csv_body(entries, layout)
        elif fmt in ("fixed_width", "json_lines"):
            yield from self.line_body(lines)
        else:
            raise FileRejected(f"Unknown file format {fmt!r}.")
        self.check_records()

    def text_encoding(self) -> str:
        encoding = self.collector.encoding or "utf-8"
        if encoding.replace("-", "").lower() == "utf8":
            return "utf-8-sig"  # drops a byte-order mark
        return encoding

    def records_seen(self) -> int:
        return self.physical_lines - self.header_lines - self.blank_lines - self.continuation_lines

    def check_records(self):
        """A file with no record at all is refused whole."""
        if self.records_seen():
            return
        if self.collector.format == "csv_header":
            raise FileRejected("The file has a header but no records.")
        if self.collector.format == "csv_position":
            raise FileRejected("The file has no records.")
        raise FileRejected("The file is empty." if self.physical_lines == 0 else "The file has no records.")

    def _physical_lines(self, text):
        """(line number, line, overlong) per physical line (ended by LF, CRLF or CR). A line over
        the limit is cut there and the rest of it read past in pieces: never held whole."""
        limit = self.limits["line_chars"]
        line_no = 0
        cut_at_cr = False  # an overlong line's read stopped at a CR: a LF right after it ends the same line
        while True:
            line = text.readline(limit + 2)
            if not line:
                return
            if cut_at_cr and line == "\n":
                cut_at_cr = False
                continue
            line_no += 1
            self.physical_lines = line_no
            content = line.rstrip("\r\n")
            overlong = len(content) > limit
            cut_at_cr = overlong and line.endswith("\r")
            if overlong and not line.endswith(("\n", "\r")):
                while (rest := text.readline(1 << 16)) and not rest.endswith(("\n", "\r")):
                    pass
                cut_at_cr = rest.endswith("\r")
            yield line_no, (content[:limit] if overlong else line), overlong

    def _too_long(self, line_no):
        return f"Line {line_no}: longer than {self.limits['line_chars']:,} characters (TOLLGATE_MAX_LINE_CHARS)."

    def delimiter(self) -> str:
        delimiter = self.collector.delimiter or ","
        return "\t" if delimiter == "\\t" else delimiter

    def csv_records(self, lines, multiline: bool):
        """(line number, values or None, error or None) per CSV record of `lines`; a blank line has
        no values ([])."""
        delimiter = self.delimiter()
        feed = _LineFeed(
            lines if multiline else None,
            max_lines=self.limits["record_lines"],
            max_chars=self.limits["line_chars"] * self.limits["record_lines"],
        )
        reader = csv.reader(feed, delimiter=delimiter, strict=False)
        for line_no, line, overlong in lines:
            if overlong:
                yield line_no, None, self._too_long(line_no)
                continue
            if not line.strip():
                yield line_no, [], None  # blank, or white space only
                continue
            if '"' not in line:  # no quoting: the csv reader would split at the delimiter, only slower
                yield line_no, line.rstrip("\r\n").split(delimiter), None
                continue
            feed.start(line)
            try:
                values = next(reader)
            except csv.Error as exc:
                yield line_no, None, f"Line {line_no}: {exc}."
                continue
            except StopIteration:
                values = []
            self.continuation_lines += feed.extra
            if not feed.cut:
                yield line_no, values, None
            elif feed.overlong or feed.extra + 1 >= feed.max_lines and multiline:
                limit = f"{feed.max_lines} lines or {feed.max_chars:,} characters"
                yield line_no, None, f"Line {line_no}: a quoted field runs past {limit}."
            elif multiline:
                yield line_no, None, f"Line {line_no}: a quoted field is not closed before the end of the file."
            else:
                yield line_no, None, f"Line {line_no}: a quoted field is not closed on this line."

    def csv_layout(self, first) -> list[tuple[str, int]]:
        """(field, 0-based column) in column order, from the header (CSV with header) or the mapping
        (by position); `first` is the file's first record entry. A header that does not fit the
        mapping, or a first line that looks split by another delimiter, refuses the file."""
        delimiter = self.delimiter()
        if first is None:
            raise FileRejected("The file is empty.")
        if self.collector.format == "csv_header":
            self.header_lines = 1
            if first[1] is None:
                raise FileRejected(f"The header cannot be read: {first[2]}")
            names = [h.strip() for h in first[1]]
            positions = {}
            absent = []
            for field, column in self.mapping.items():
                if column in names:
                    positions[field] = names.index(column)
                else:
                    absent.append(f"{column!r} (for {field})")
            if absent:
                hint = _delimiter_hint(names, delimiter)
                raise FileRejected(
                    f"Line 1: the header has no column {', '.join(absent)}; it has {plural(len(names), 'column')}: "
                    f"{', '.join(repr(n[:40]) for n in names[:12])}.{hint}"
                )
        else:
            try:
                positions = {field: int(col) - 1 for field, col in self.mapping.items()}
            except (TypeError, ValueError) as exc:
                raise FileRejected("CSV by position needs column numbers in the field mapping.") from exc
            needed = max(positions.values()) + 1
            if first[1] is not None and len(first[1]) < needed and len(first[1]) == 1:
                raise FileRejected(
                    f"Line 1 has 1 field but the mapping reads field {needed}.{_delimiter_hint(first[1], delimiter)}"
                )
        return sorted(positions.items(), key=lambda kv: kv[1])

    def csv_body(self, entries, layout):
        """A row per CSV record entry; blank lines are counted."""
        delimiter = self.delimiter()
        width = layout[-1][1] + 1
        for line_no, values, error in entries:
            if values == [] and error is None:
                self.blank_lines += 1
                continue
            raw = delimiter.join(values) if values else ""
            if error is None and len(values) < width:
                error = f"Line {line_no}: has {plural(len(values), 'field')}, the mapping needs {width}."
            if error is not None:
                yield self._error_row(line_no, error, raw)
                continue
            yield self._build(line_no, {field: values[pos] for field, pos in layout}, raw)

    def line_body(self, lines):
        """A row per record of a line format (fixed width, JSON lines); blank lines are counted."""
        values_of = self._fixed_width_values if self.collector.format == "fixed_width" else self._json_values
        for line_no, line, overlong in lines:
            stripped = line.rstrip("\r\n")
            if not overlong and not stripped.strip():
                self.blank_lines += 1
                continue
            if overlong:
                yield self._error_row(line_no, self._too_long(line_no), stripped[:1000])
                continue
            try:
                if "\x00" in stripped:
                    raise LineError(f"Line {line_no}: contains a NUL byte at character {stripped.index(chr(0)) + 1}.")
                values = values_of(stripped, line_no)
            except LineError as exc:
                yield self._error_row(line_no, str(exc), stripped)
                continue
            yield self._build(line_no, values, stripped)

    def _fixed_width_values(self, line, line_no):
        values = {}
        for field, (start, end) in self.mapping.items():
            if len(line) < end:
                raise LineError(f"Line {line_no}: {len(line)} characters, field {field} needs {end}.")
            values[field] = line[start - 1 : end].strip()
        return values

    def _json_values(self, line, line_no):
        depth = self.limits["json_depth"]
        if line.count("{") + line.count("[") > depth and _json_depth(line) > depth:
            raise LineError(f"Line {line_no}: JSON nested deeper than {depth} levels (TOLLGATE_MAX_JSON_DEPTH).")
        try:
            # Numbers stay text: no float rounding, no 4,300-digit int limit; NaN and Infinity are refused.
            obj = json.loads(line, parse_int=str, parse_float=str, parse_constant=_json_constant)
        except LineError as exc:
            raise LineError(f"Line {line_no}: {exc}.") from None
        except json.JSONDecodeError as exc:
            raise LineError(f"Line {line_no}: not valid JSON ({exc.msg} at column {exc.colno}).") from exc
        except (ValueError, RecursionError) as exc:
            raise LineError(f"Line {line_no}: not valid JSON ({exc}).") from None
        if not isinstance(obj, dict):
            raise LineError(f"Line {line_no}: a JSON object was expected.")
        values = {}
        for field, key in self.mapping.items():
            value = obj.get(key)
            if isinstance(value, dict | list | bool):
                kind = {dict: "an object", list: "an array", bool: "true/false"}[type(value)]
                raise LineError(f"Line {line_no}: {field} ({key!r}) is {kind}, a string or number was expected.")
            values[field] = "" if value is None else value
        return values

    # -- converting ----------------------------------------------------------------------------
    def _error_row(self, line_no, message, raw, reason=REASON_PARSE):
        # Undecodable bytes are kept visible as U+FFFD in the stored line; NUL cannot be stored.
        raw = raw[:4000].encode("utf-8", "surrogateescape").decode("utf-8", "replace").replace("\x00", "\ufffd")
        message = message[:500].replace("\x00", "\ufffd")
        empty = (None, "", "", None, None, None, None, None, "", "", None, None, None, None, False)
        return (line_no, *empty, message, reason, raw)

    def _build(self, line_no, values, raw):
        try:
            if "\x00" in raw:
                raise LineError(f"contains a NUL byte at character {raw.index(chr(0)) + 1}")
            if not raw.isascii():
                try:
                    raw.encode("utf-8")
                except UnicodeEncodeError as exc:
                    raise LineError(
                        f"bytes that are not valid {self.collector.encoding} at character {exc.start + 1}"
                    ) from None
            for field in REQUIRED:
                if not values.get(field, "").strip():
                    raise LineError(f"{field} is empty")
            for field, limit in MAX_LENGTH.items():
                value = values.get(field)
                if value and len(value) > limit:
                    raise LineError(f"{field} is {len(value)} characters long, at most {limit} allowed")
            usage_at = self._time(values["start_time"].strip())
            bounds = self.bounds
            duration = self._base_units(values, "duration", DURATION_SCALE[self.duration_unit])
            if duration is not None and abs(duration) > bounds["duration"]:
                self._beyond("duration", duration, values)
            volume = self._base_units(values, "volume", Decimal(self.volume_factor))
            if volume is not None and abs(volume) > bounds["volume"]:
                self._beyond("volume", volume, values)
            quantity = self._base_units(values, "quantity", Decimal(1))
            if quantity is not None and abs(quantity) > bounds["quantity"]:
                self._beyond("quantity", quantity, values)
            amount = self._amount(values.get("amount", "").strip())
            key = self._key(values)
            corrects, cancels = self._correction(values, key)
        except LineError as exc:
            return self._error_row(line_no, f"Line {line_no}: {exc}.", raw, exc.reason)
        local = usage_at if self.billing_is_utc else usage_at.astimezone(self.billing_tz)
        return (
            line_no,
            key,
            values.get("record_id", "").strip(),
            values["identifier"].strip(),
            usage_at,
            local.date(),
            duration,
            volume,
            quantity,
            values.get("destination", "").strip(),
            values.get("usage_type", "").strip(),
            amount,
            local.isoweekday(),
            local.hour * 3600 + local.minute * 60 + local.second,
            corrects,
            cancels,
            None,
            None,
            "",
        )

    def _time(self, value):
        try:
            if self.time_format == "iso":
                parsed = dt.datetime.fromisoformat(value)
                if parsed.tzinfo is not None and parsed.utcoffset():
                    _check_offset(value)
            elif self.time_format == "epoch":
                seconds = self._decimal("start_time", value)
                if not (-(10**11) < seconds < 10**11):
                    raise OutOfRange(f"start_time {value!r} is outside {self._years()}")
                micros = int((seconds * 1_000_000).to_integral_value())
                return self._in_range(value, EPOCH + dt.timedelta(microseconds=micros))
            else:
                if self.time_width is not None and len(value) != self.time_width:
                    raise ValueError(f"{len(value)} characters, the pattern takes {self.time_width}")
                parsed = dt.datetime.strptime(value, self.time_format)
        except LineError:
            raise
        except (ValueError, OverflowError, OSError) as exc:
            expected = {"iso": "an ISO 8601 date and time", "epoch": "seconds since 1970"}.get(
                self.time_format, self.time_format
            )
            raise LineError(f"start_time {value!r} is not a valid date and time ({exc}; expected {expected})") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=self.source_tz)
        try:
            moment = parsed.astimezone(UTC)
        except (OverflowError, ValueError):
            raise OutOfRange(f"start_time {value!r} is outside {self._years()}") from None
        if self.first_time <= moment < self.end_time:
            return moment
        return self._in_range(value, moment)

    def _in_range(self, value, moment):
        if not (self.first_time <= moment < self.end_time):
            raise OutOfRange(f"start_time {value!r} is outside {self._years()}")
        return moment

    def _years(self):
        return f"the years {self.limits['first_year']}–{self.limits['last_year']} (TOLLGATE_*_USAGE_YEAR)"

    def _decimal(self, field, value) -> Decimal:
        """A plain decimal number, at most TOLLGATE_MAX_NUMBER_CHARS long: no inf, NaN or sNaN."""
        if len(value) > self.limits["number_chars"]:
            raise LineError(
                f"{field} is {len(value):,} characters long, at most {self.limits['number_chars']} for a number"
            )
        if NUMBER.fullmatch(value) is None:
            raise LineError(f"{field} {value!r} is not a number")
        number = Decimal(value)
        if not number:
            return Decimal(0)
        if number.adjusted() > 18:
            raise OutOfRange(f"{field} {value!r} is beyond the collector's maximum")
        if number.adjusted() < -18:
            raise LineError(f"{field} {value!r} has more decimals than any unit needs")
        return number

    def _base_units(self, values, field, scale: Decimal):
        """The field's value in base units (seconds, bytes, units): the value as written times the
        collector's unit (`scale`), exact, then read as the collector says (`fraction_rounding`):
        kept exactly to the thousandth, rounded up in size or to the nearest whole base unit, or a
        fraction refused. Compared with the bound before anything is built from it, so `1e10000000`
        costs nothing."""
        value = values.get(field, "").strip()
        if not value:
            return None
        if value.isdigit() and value.isascii() and len(value) <= 18 and scale == 1:
            return int(value)  # the usual case, without the general parse below
        try:
            number = self._decimal(field, value)
        except OutOfRange:
            if not value.startswith("-") or self.accept_negative:
                raise
            number = Decimal(-1)
        if number < 0 and not self.accept_negative:
            raise LineError(f"{field} {value!r} must not be negative (the collector does not accept credits)")
        with localcontext(prec=EXACT_DIGITS):
            exact = number * scale
            if self.fraction_rounding == "exact":
                kept = exact.quantize(THOUSANDTH)
                if kept != exact:
                    raise LineError(
                        f"{field} {value!r} is {exact.normalize():f} {BASE_UNIT[field]}, finer than the thousandth "
                        f"of a {ONE_BASE_UNIT[field]} the collector keeps exactly (its fraction rounding setting)"
                    )
                return kept
            rounding = ROUND_HALF_UP if self.fraction_rounding == "nearest" else ROUND_UP
            whole = exact.to_integral_value(rounding=rounding)
        if whole != exact and self.fraction_rounding == "refuse":
            unit = BASE_UNIT[field]
            raise LineError(
                f"{field} {value!r} is {exact.normalize():f} {unit}, not a whole number of {unit}: the collector "
                "refuses fractions (its fraction rounding setting)"
            )
        return int(whole)  # a credit's size rounds like usage: ROUND_UP and ROUND_HALF_UP go away from zero

    def _beyond(self, field, number, values):
        unit = {"duration": " s", "volume": " bytes"}.get(field, "")
        raise OutOfRange(
            f"{field} {str(values.get(field, '')).strip()!r} is {Decimal(number).normalize():,f}{unit}, beyond the "
            f"collector's maximum of {self.bounds[field]:,}{unit} per record"
        )

    def _amount(self, value):
        if not value:
            return None
        amount = self._decimal("amount", value)
        limit = self.bounds["amount"]
        if abs(amount) > limit:
            raise OutOfRange(f"amount {value!r} is beyond the collector's maximum of {limit:,} per record")
        micros = amount * 1_000_000
        if micros != micros.to_integral_value():
            raise LineError(f"amount {value!r} has more than 6 decimals")
        return int(micros)

    def _correction(self, values, key):
        """The key this line corrects (None for usage) and whether it cancels that record."""
        corrects, cancels = (str(values.get(f, "")).strip() for f in CORRECTION_FIELDS)
        if corrects and cancels:
            raise LineError("corrects and cancels are both set: a line either replaces a record or cancels it")
        named = corrects or cancels
        if named and named == key:
            field = "corrects" if corrects else "cancels"
            raise LineError(f"{field} {named!r} is this line's own record key: a correction needs a key of its own")
        return (named or None), bool(cancels)

    def _key(self, values):
        parts = [str(values.get(f, "")).strip() for f in self.key_fields]
        if not all(parts):
            empty = [f for f, p in zip(self.key_fields, parts, strict=True) if not p]
            raise LineError(f"{', '.join(empty)} is empty but forms the record key")
        key = parts[0] if len(parts) == 1 else "\x1f".join(parts)
        if len(key) > MAX_KEY:
            key = "sha1:" + hashlib.sha1(key.encode("utf-8", "surrogateescape")).hexdigest()
        return key


def _check_offset(value):
    match = ISO_OFFSET.search(value)
    if match is None:
        return
    sign, hours, minutes, _ = match.groups()
    if int(minutes) >= 60 or dt.timedelta(hours=int(hours), minutes=int(minutes)) > MAX_OFFSET:
        raise ValueError(f"UTC offset {sign}{hours}:{minutes} is not a valid offset (from -14:00 to +14:00)")


def _fixed_width_of(pattern: str) -> int | None:
    """The length of a time written in `pattern` if every directive has a fixed number of digits
    (e.g. %Y%m%d%H%M%S: 14), else None."""
    width, i = 0, 0
    while i < len(pattern):
        if pattern[i] == "%":
            directive = pattern[i + 1 : i + 2]
            if directive == "%":
                width += 1
            elif directive in FIXED_DIRECTIVES:
                width += FIXED_DIRECTIVES[directive]
            else:
                return None
            i += 2
        else:
            width += 1
            i += 1
    return width


def _json_constant(name):
    raise LineError(f"{name} is not a number")


def _json_depth(line: str) -> int:
    """The deepest nesting of objects and arrays, outside strings (only run when brackets abound)."""
    depth = deepest = 0
    in_string = escaped = False
    for char in line:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "{[":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "}]":
            depth -= 1
    return deepest


def _delimiter_hint(names, delimiter):
    joined = delimiter.join(names)
    for candidate, label in ((";", "semicolon"), ("\t", "tab"), ("|", "pipe"), (",", "comma")):
        if candidate != delimiter and candidate in joined:
            return f" Is the delimiter a {label} rather than {delimiter!r}?"
    return ""
