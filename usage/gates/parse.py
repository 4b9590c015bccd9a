"""Parse gate: turns a collector's file into typed record rows, streaming.

A problem with the file as a whole (empty, header only, a mapped column missing, the wrong
delimiter) rejects it before anything is written. A problem with one line becomes that line's
PARSE_ERROR, naming the line, the field and the reason; the rest of the file goes on.
"""

import copy
import csv
import datetime as dt
import hashlib
import io
import json
import zoneinfo
from decimal import Decimal, InvalidOperation

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
)
REQUIRED = ("identifier", "start_time")
MAX_LENGTH = {"record_id": 128, "identifier": 128, "destination": 64, "usage_type": 32}
MAX_FIELD_CHARS = 10_000  # any longer field is absurd for usage
DURATION_FACTOR = {"second": 1, "minute": 60}
VOLUME_FACTOR = {"byte": 1, "kb": 1024, "mb": 1024**2}
MAX_KEY = 255
UTC = dt.UTC

csv.field_size_limit(MAX_FIELD_CHARS)


def api_view(collector):
    """The collector as records sent to the API arrive: JSON lines keyed by Tollgate's own field
    names, ISO times (UTC unless they carry an offset), seconds and bytes. Classification, keys and
    the late-usage policy stay the collector's."""
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
    pass


# A parsed row is a plain tuple in staging column order (usage.pipeline.STAGING_COLUMNS):
# (line_no, record_key, record_id, identifier, usage_at, usage_date, duration, volume, quantity,
#  destination, usage_type, amount_micros, local_weekday, local_seconds, parse_error, raw).


class Parser:
    def __init__(self, collector, billing_tz: str):
        self.collector = collector
        self.mapping = {k: v for k, v in (collector.field_mapping or {}).items() if v not in (None, "")}
        unknown = set(self.mapping) - set(FIELDS)
        if unknown:
            raise FileRejected(f"The collector maps unknown field(s): {', '.join(sorted(unknown))}.")
        missing = [f for f in REQUIRED if f not in self.mapping]
        if missing:
            raise FileRejected(f"The collector's mapping has no source for: {', '.join(missing)}.")
        self.key_fields = collector.key_fields()
        self.source_tz = zoneinfo.ZoneInfo(collector.time_zone or "UTC")
        self.billing_tz = zoneinfo.ZoneInfo(billing_tz)
        self.billing_is_utc = billing_tz == "UTC"
        self.time_format = collector.time_format or "iso"
        self.duration_unit = collector.duration_unit
        self.volume_factor = VOLUME_FACTOR[collector.volume_unit]

    # -- reading -------------------------------------------------------------------------------
    def rows(self, binary, skip: int = 0):
        """Yield a row tuple per data record after the first `skip` records; blank lines are counted
        in `self.blank_lines` and yield nothing."""
        encoding = self.collector.encoding or "utf-8"
        if encoding.replace("-", "").lower() == "utf8":
            encoding = "utf-8-sig"  # drops a byte-order mark
        text = io.TextIOWrapper(binary, encoding=encoding, errors="surrogateescape", newline="")
        self.blank_lines = 0
        fmt = self.collector.format
        if fmt in ("csv_header", "csv_position"):
            yield from self._csv_rows(text, skip, header=fmt == "csv_header")
        elif fmt == "fixed_width":
            yield from self._line_rows(text, skip, self._fixed_width_values)
        elif fmt == "json_lines":
            yield from self._line_rows(text, skip, self._json_values)
        else:
            raise FileRejected(f"Unknown file format {fmt!r}.")

    def _csv_rows(self, text, skip, header):
        delimiter = self.collector.delimiter or ","
        if delimiter == "\\t":
            delimiter = "\t"
        reader = csv.reader(text, delimiter=delimiter, strict=False)
        first = self._next_csv(reader)
        if first is None:
            raise FileRejected("The file is empty.")
        if header:
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
                    f"Line 1: the header has no column {', '.join(absent)}; it has {len(names)} column(s): "
                    f"{', '.join(repr(n) for n in names[:12])}.{hint}"
                )
            pending = None
        else:
            try:
                positions = {field: int(col) - 1 for field, col in self.mapping.items()}
            except (TypeError, ValueError) as exc:
                raise FileRejected("CSV by position needs column numbers in the field mapping.") from exc
            needed = max(positions.values()) + 1
            if len(first[1]) < needed and len(first[1]) == 1:
                raise FileRejected(
                    f"Line 1 has 1 field but the mapping reads field {needed}.{_delimiter_hint(first[1], delimiter)}"
                )
            pending = first
        width = max(positions.values()) + 1
        items = sorted(positions.items(), key=lambda kv: kv[1])
        seen = 0
        while True:
            if pending is not None:
                entry, pending = pending, None
            else:
                entry = self._next_csv(reader)
                if entry is None:
                    break
            line_no, values, error = entry
            if values == [] and error is None:
                self.blank_lines += 1
                continue
            seen += 1
            if seen <= skip:
                continue
            raw = delimiter.join(values) if values else ""
            if error is None and len(values) < width:
                error = f"Line {line_no}: has {len(values)} field(s), the mapping needs {width}."
            if error is not None:
                yield self._error_row(line_no, error, raw)
                continue
            yield self._build(line_no, {field: values[pos] for field, pos in items}, raw)
        if seen == 0 and skip == 0:
            raise FileRejected("The file has a header but no records." if header else "The file has no records.")

    def _next_csv(self, reader):
        """(line_no of the record's first line, values, error) or None at the end."""
        start = reader.line_num + 1
        try:
            values = next(reader)
        except StopIteration:
            return None
        except csv.Error as exc:
            message = str(exc)
            if "field larger than field limit" in message:
                message = f"a field is longer than {MAX_FIELD_CHARS} characters"
            return start, None, f"Line {start}: {message}."
        return start, values, None

    def _line_rows(self, text, skip, values_of):
        seen = 0
        line_no = 0
        for line in text:
            line_no += 1
            stripped = line.rstrip("\r\n")
            if not stripped.strip():
                self.blank_lines += 1
                continue
            seen += 1
            if seen <= skip:
                continue
            if len(stripped) > MAX_FIELD_CHARS:
                yield self._error_row(
                    line_no, f"Line {line_no}: longer than {MAX_FIELD_CHARS} characters.", stripped[:1000]
                )
                continue
            try:
                values = values_of(stripped, line_no)
            except LineError as exc:
                yield self._error_row(line_no, str(exc), stripped)
                continue
            yield self._build(line_no, values, stripped)
        if seen == 0 and skip == 0:
            raise FileRejected("The file is empty." if line_no == 0 else "The file has no records.")

    def _fixed_width_values(self, line, line_no):
        values = {}
        for field, (start, end) in self.mapping.items():
            if len(line) < end:
                raise LineError(f"Line {line_no}: {len(line)} characters, field {field} needs {end}.")
            values[field] = line[start - 1 : end].strip()
        return values

    def _json_values(self, line, line_no):
        try:
            obj = json.loads(line)
        except ValueError as exc:
            raise LineError(f"Line {line_no}: not valid JSON ({exc.msg} at column {exc.colno}).") from exc
        if not isinstance(obj, dict):
            raise LineError(f"Line {line_no}: a JSON object was expected.")
        values = {}
        for field, key in self.mapping.items():
            value = obj.get(key)
            values[field] = "" if value is None else str(value)
        return values

    # -- converting ----------------------------------------------------------------------------
    def _error_row(self, line_no, message, raw):
        # Undecodable bytes are kept visible as U+FFFD in the stored line.
        raw = raw[:4000].encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        return (line_no, None, "", "", None, None, None, None, None, "", "", None, None, None, message[:500], raw)

    def _build(self, line_no, values, raw):
        try:
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
            duration = self._integer(values, "duration")
            if duration is not None and self.duration_unit != "second":
                duration = -(-duration // 1000) if self.duration_unit == "ms" else duration * 60
            volume = self._integer(values, "volume")
            if volume is not None:
                volume *= self.volume_factor
            quantity = self._integer(values, "quantity")
            amount = self._amount(values.get("amount", "").strip())
            key = self._key(values)
        except LineError as exc:
            return self._error_row(line_no, f"Line {line_no}: {exc}.", raw)
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
            None,
            "",
        )

    def _time(self, value):
        try:
            if self.time_format == "iso":
                parsed = dt.datetime.fromisoformat(value)
            elif self.time_format == "epoch":
                return dt.datetime.fromtimestamp(float(value), UTC)
            else:
                parsed = dt.datetime.strptime(value, self.time_format)
        except (ValueError, OverflowError, OSError) as exc:
            expected = {"iso": "an ISO 8601 date and time", "epoch": "seconds since 1970"}.get(
                self.time_format, self.time_format
            )
            raise LineError(f"start_time {value!r} is not a valid date and time ({exc}; expected {expected})") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=self.source_tz)
        return parsed.astimezone(UTC)

    @staticmethod
    def _integer(values, field):
        value = values.get(field, "").strip()
        if not value:
            return None
        try:
            number = int(value)
        except ValueError:
            try:
                number = Decimal(value)
            except InvalidOperation:
                raise LineError(f"{field} {value!r} is not a number") from None
            if number != number.to_integral_value():
                number = int(number.to_integral_value(rounding="ROUND_CEILING"))
            else:
                number = int(number)
        if number < 0:
            raise LineError(f"{field} {value!r} must not be negative")
        return number

    @staticmethod
    def _amount(value):
        if not value:
            return None
        try:
            amount = Decimal(value)
        except InvalidOperation:
            raise LineError(f"amount {value!r} is not a number") from None
        if not amount.is_finite():
            raise LineError(f"amount {value!r} is not a number")
        micros = amount * 1_000_000
        if micros != micros.to_integral_value():
            raise LineError(f"amount {value!r} has more than 6 decimals")
        if abs(micros) >= 10**15:
            raise LineError(f"amount {value!r} is too large")
        return int(micros)

    def _key(self, values):
        parts = [values.get(f, "").strip() for f in self.key_fields]
        if not all(parts):
            empty = [f for f, p in zip(self.key_fields, parts, strict=True) if not p]
            raise LineError(f"{', '.join(empty)} is empty but forms the record key")
        key = parts[0] if len(parts) == 1 else "\x1f".join(parts)
        if len(key) > MAX_KEY:
            key = "sha1:" + hashlib.sha1(key.encode("utf-8", "surrogateescape")).hexdigest()
        return key


def _delimiter_hint(names, delimiter):
    joined = delimiter.join(names)
    for candidate, label in ((";", "semicolon"), ("\t", "tab"), ("|", "pipe"), (",", "comma")):
        if candidate != delimiter and candidate in joined:
            return f" Is the delimiter a {label} rather than {delimiter!r}?"
    return ""
