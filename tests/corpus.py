"""A malformed-input corpus: over a thousand usage files as a hostile carrier would send them.

Each case is one file for one of five collectors (CSV with header, CSV by position with compact
times, fixed width with epoch times, JSON lines, latin-1 with semicolons), with good lines around
bad ones, and what must become of every physical line: a good line is mediated; a bad line is a
per-line error (PARSE_ERROR or OUT_OF_RANGE) whose message starts with its line number and names
its field; a file that cannot be read as a whole is rejected with a reason. Deterministic (seeded).

    python -m tests.corpus OUT_DIR    # writes the files and an index, to try them by hand
"""

import datetime as dt
import json
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

IDENT = "61400000002"  # the `world` fixture's service s2, priced by its default card
WHEN = dt.datetime(2026, 10, 5, 10, 0, tzinfo=dt.UTC)
EPOCH = int(WHEN.timestamp())
GOOD = ("good",)

COLLECTORS = {
    "CSV": {
        "format": "csv_header",
        "field_mapping": {
            "record_id": "record_id",
            "identifier": "identifier",
            "start_time": "start_time",
            "duration": "duration",
            "volume": "volume",
            "quantity": "quantity",
            "destination": "destination",
            "usage_type": "usage_type",
            "amount": "amount",
        },
    },
    "POS": {
        "format": "csv_position",
        "delimiter": "|",
        "time_format": "%Y%m%d%H%M%S",
        "duration_unit": "ms",
        "volume_unit": "kib",
        "field_mapping": {
            "record_id": 1,
            "identifier": 2,
            "start_time": 3,
            "duration": 4,
            "volume": 5,
            "destination": 6,
            "usage_type": 7,
        },
    },
    "FIX": {
        "format": "fixed_width",
        "time_format": "epoch",
        "field_mapping": {
            "record_id": [1, 12],
            "identifier": [13, 23],
            "start_time": [24, 35],
            "duration": [36, 45],
            "destination": [46, 55],
            "usage_type": [56, 60],
        },
    },
    "JSN": {
        "format": "json_lines",
        "field_mapping": {
            "record_id": "id",
            "identifier": "who",
            "start_time": "at",
            "duration": "dur",
            "volume": "vol",
            "quantity": "n",
            "destination": "dst",
            "usage_type": "type",
            "amount": "amt",
        },
    },
    "LAT": {
        "format": "csv_header",
        "encoding": "latin-1",
        "delimiter": ";",
        "field_mapping": {
            "record_id": "id",
            "identifier": "who",
            "start_time": "at",
            "duration": "dur",
            "destination": "dst",
            "usage_type": "type",
        },
    },
}
HEADERS = {
    "CSV": "record_id,identifier,start_time,duration,volume,quantity,destination,usage_type,amount",
    "LAT": "id;who;at;dur;dst;type;note",
}
CSV_ORDER = ("record_id", "identifier", "start_time", "duration", "volume", "quantity", "destination", "usage_type")
JSON_KEYS = {v: k for k, v in COLLECTORS["JSN"]["field_mapping"].items()}


@dataclass
class Case:
    name: str
    collector: str
    content: bytes
    expect: dict = field(default_factory=dict)  # line number -> GOOD or ("bad", word in the message)
    rejected: str | None = None  # a whole-file rejection: a word its reason must contain
    blank: int = 0


def good_values(rid: str) -> dict:
    return {
        "record_id": rid,
        "identifier": IDENT,
        "start_time": WHEN.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "duration": "60",
        "volume": "",
        "quantity": "",
        "destination": "4420000000",
        "usage_type": "voice",
        "amount": "",
    }


def render(kind: str, values: dict) -> str:
    """One record line in the collector's format from Tollgate field values (strings)."""
    v = dict(values)
    sep = {"CSV": ",", "LAT": ";", "POS": "|"}.get(kind)
    if sep:
        v = {k: f'"{x}"' if sep in x and not x.startswith('"') else x for k, x in v.items()}
    if kind == "CSV":
        return ",".join(v.get(f, "") for f in (*CSV_ORDER, "amount"))
    if kind == "LAT":
        return ";".join([v["record_id"], v["identifier"], v["start_time"], v["duration"], v["destination"],
                         v["usage_type"], v.get("note", "café")])  # fmt: skip
    if kind == "POS":
        at = v["start_time"]
        if at == good_values("")["start_time"]:
            at = WHEN.strftime("%Y%m%d%H%M%S")
        duration = str(int(v["duration"]) * 1000) if _digits(v["duration"]) else v["duration"]
        return "|".join([v["record_id"], v["identifier"], at, duration, v["volume"], v["destination"], v["usage_type"]])
    if kind == "FIX":
        at = v["start_time"]
        if at == good_values("")["start_time"]:
            at = str(EPOCH)
        widths = (("record_id", 12), ("identifier", 11), ("start_time", 12), ("duration", 10), ("destination", 10))
        cells = {**v, "start_time": at}
        return "".join(cells[f][:w].ljust(w) for f, w in widths) + cells["usage_type"][:5].ljust(5)
    if kind == "JSN":
        obj = {}
        for name, value in v.items():
            if name in COLLECTORS["JSN"]["field_mapping"] and value != "":
                obj[COLLECTORS["JSN"]["field_mapping"][name]] = (
                    int(value) if name == "duration" and _digits(value) else value
                )
        return json.dumps(obj)
    raise ValueError(kind)


def _digits(value: str) -> bool:
    return value.isascii() and value.isdigit()


def encoding(kind: str) -> str:
    return COLLECTORS[kind].get("encoding", "utf-8")


class Builder:
    def __init__(self, seed: int = 15):
        self.random = random.Random(seed)
        self.cases: list[Case] = []

    def file(self, name, kind, bad_lines, *, ending="\n", bom=False, blank_every=0, good_after=True):
        """A file: header (if any), a good line, the bad lines (text or bytes, with the word their
        error must contain, or GOOD), a good line. Line numbers are physical lines."""
        n = len(self.cases)
        lines: list[tuple[bytes, tuple]] = []
        if kind in HEADERS:
            lines.append((HEADERS[kind].encode(encoding(kind)), None))
        rid = f"K{n}G"
        lines.append((render(kind, good_values(rid + "a")).encode(encoding(kind)), GOOD))
        for i, (line, word) in enumerate(bad_lines):
            errors = "surrogateescape" if encoding(kind) == "utf-8" else "replace"  # latin-1 has no U+200B: '?'
            raw = line if isinstance(line, bytes) else line.encode(encoding(kind), errors)
            lines.append((raw, GOOD if word is GOOD else ("bad", word)))
            if blank_every and i % blank_every == 0:
                lines.append((b"   " if i % 2 else b"", "blank"))
        if good_after:
            lines.append((render(kind, good_values(rid + "z")).encode(encoding(kind)), GOOD))
        sep = ending.encode()
        content = (b"\xef\xbb\xbf" if bom else b"") + sep.join(raw for raw, _ in lines) + sep
        expect = {no: what for no, (_, what) in enumerate(lines, start=1) if what not in (None, "blank")}
        blank = sum(1 for _, what in lines if what == "blank")
        self.cases.append(Case(f"{n:04d}-{name}", kind, content, expect, blank=blank))

    def rejected(self, name, kind, content: bytes, word: str):
        self.cases.append(Case(f"{len(self.cases):04d}-{name}", kind, content, rejected=word))

    def rid(self, tag):
        return f"K{len(self.cases)}{tag}"

    def line(self, kind, tag, **overrides):
        return render(kind, {**good_values(self.rid(tag)), **overrides})


NOT_NUMBERS = ["inf", "-inf", "+inf", "Infinity", "NaN", "nan", "sNaN", "-NaN", "0x10", "1,000", "1_000", "one",
               "1e", "--1", "+-1", "1.2.3", "٣", "１２", "1e+", ".", "e5", "12abc", "1 2", "+", "0b101"]  # fmt: skip
HUGE = ["1e10000000", "9" * 25, "18446744073709551617", "9223372036854775808", "9.2e18", "1e19", "1E400",
        "9007199254740993000", "123456789012345678901234567890", "5e20"]  # fmt: skip
NEGATIVE = ["-0.5", "-1", "-1e3", "-0.000001", "-60", "-9223372036854775809", "-1e10000000"]
BAD_ISO = ["2026-13-45T25:61:00Z", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00",
           "2026-10-05T10:00:00+05:60", "2026-10-05T10:00:00+24:00", "2026-10-05T10:00:00-15:00",
           "2026-10-05T10:00:00+99:99", "yesterday", "1900-01-01T00:00:00Z", "2300-01-01T00:00:00Z",
           "2026-02-30T00:00:00Z", "2026-10-05T10:00:00+14:01", "0000-01-01T00:00:00Z", "2026-10-05T24:00:01Z",
           "2026-10-05T10:00:00ZZ", "\u200b2026-10-05T10:00:00Z", "2026-10-05T10:00:00 UTC"]  # fmt: skip
BAD_COMPACT = ["2026111025000", "202611102500000", "20261310100000", "2026100510000a", "2026-10-05 10:00",
               "99999999999999", "00000101000000", "20261005256000", "1", "2026100510000"]  # fmt: skip
BAD_EPOCH = ["-1", "nan", "1e10", "99999999999", "abc", "1.5.5", "-99999999999", "1e10000000", "inf", "-0.5"]


def build(seed: int = 15) -> list[Case]:
    b = Builder(seed)
    r = b.random
    numeric = {"CSV": ("duration", "volume", "quantity"), "JSN": ("duration", "volume", "quantity"),
               "POS": ("duration", "volume"), "LAT": ("duration",), "FIX": ("duration",)}  # fmt: skip
    # Numbers that are not numbers, absurd numbers and negative numbers, in every numeric field.
    for kind, fields in numeric.items():
        for name in fields:
            for value in NOT_NUMBERS:
                if kind == "LAT" and not value.isascii():
                    continue
                b.file(f"nan-{kind}-{name}", kind, [(b.line(kind, "b", **{name: value}), name)])
            for value in HUGE:
                if kind == "FIX" and len(value) > 10:
                    continue
                b.file(f"huge-{kind}-{name}", kind, [(b.line(kind, "b", **{name: value}), name)])
            for value in NEGATIVE:
                if kind == "FIX" and len(value) > 10:
                    continue
                b.file(f"negative-{kind}-{name}", kind, [(b.line(kind, "b", **{name: value}), name)])
            b.file(f"long-number-{kind}-{name}", kind, [(b.line(kind, "b", **{name: "1" * 50}), name)])
    # Pre-priced amounts.
    for kind in ("CSV", "JSN"):
        for value in ["1e999999", "-1e999999", "1e-999999", "1e-9999999", "0.1234567", "inf", "NaN", "sNaN",
                      "1000000.000001", "-2000000", "1" * 41, "12,50", "$5"]:  # fmt: skip
            b.file(f"amount-{kind}", kind, [(b.line(kind, "b", amount=value), "amount")])
    # Times.
    for kind in ("CSV", "JSN", "LAT"):
        for value in BAD_ISO:
            b.file(f"time-{kind}", kind, [(b.line(kind, "b", start_time=value), "start_time")])
    for value in BAD_COMPACT:
        b.file("time-POS", "POS", [(b.line("POS", "b", start_time=value), "start_time")])
    for value in BAD_EPOCH:
        b.file("time-FIX", "FIX", [(b.line("FIX", "b", start_time=value.ljust(12)[:12]), "start_time")])
    # Required and over-long text fields, empty keys.
    for kind in ("CSV", "JSN", "LAT", "POS"):
        b.file(f"empty-identifier-{kind}", kind, [(b.line(kind, "b", identifier=""), "identifier")])
        b.file(f"empty-time-{kind}", kind, [(b.line(kind, "b", start_time=""), "start_time")])
        b.file(f"empty-key-{kind}", kind, [(b.line(kind, "b", record_id=""), "record_id")])
        for size in (129, 200, 5000):
            b.file(f"long-identifier-{kind}", kind, [(b.line(kind, "b", identifier="6" * size), "identifier")])
        b.file(f"long-destination-{kind}", kind, [(b.line(kind, "b", destination="4" * 65), "destination")])
        b.file(f"long-usage-type-{kind}", kind, [(b.line(kind, "b", usage_type="v" * 33), "usage_type")])
    # NUL bytes and undecodable bytes anywhere in a line.
    for kind in COLLECTORS:
        for _ in range(12):
            text = b.line(kind, "b")
            at = r.randrange(1, len(text))
            b.file(f"nul-{kind}", kind, [(text[:at] + "\x00" + text[at:], "NUL")])
        if kind != "LAT":
            for _ in range(6):
                raw = b.line(kind, "b").encode()
                at = r.randrange(1, len(raw))
                word = "Line" if kind == "JSN" else "not valid utf-8"  # outside a string it is bad JSON first
                b.file(f"bad-bytes-{kind}", kind, [(raw[:at] + b"\xff\xfe" + raw[at:], word)])
    # Lines and fields past the length limit (one of them 20 MB), and a header past it.
    for kind in COLLECTORS:
        for size in (10_001, 60_000):
            b.file(f"overlong-{kind}", kind, [(b.line(kind, "b") + "x" * size, "longer than")])
    b.file("overlong-20MB", "CSV", [(b.line("CSV", "b", destination="4" * 20_000_000), "longer than")])
    b.rejected("overlong-header", "CSV", (HEADERS["CSV"] + ",x" * 6000 + "\n" + b.line("CSV", "a") + "\n").encode(),
               "longer than")  # fmt: skip
    # Quotes: an unbalanced quote costs its own line only.
    for kind in ("CSV", "LAT", "POS"):
        sep = {"CSV": ",", "LAT": ";", "POS": "|"}[kind]
        for _ in range(10):
            parts = b.line(kind, "q").split(sep)
            at = r.randrange(len(parts))
            parts[at] = '"' + parts[at]
            b.file(f"open-quote-{kind}", kind, [(sep.join(parts), "quoted field"), (b.line(kind, "after"), GOOD)])
        b.file(f"quoted-ok-{kind}", kind, [(sep.join(f'"{p}"' for p in b.line(kind, "qq").split(sep)), GOOD)])
    # Missing and extra columns, wrong delimiter on one line.
    for kind in ("CSV", "LAT", "POS"):
        sep = {"CSV": ",", "LAT": ";", "POS": "|"}[kind]
        for keep in (1, 2, 3):
            b.file(
                f"missing-columns-{kind}", kind, [(sep.join(b.line(kind, "m").split(sep)[:keep]), "the mapping needs")]
            )
        other = "," if sep != "," else ";"
        b.file(f"wrong-delimiter-line-{kind}", kind, [(b.line(kind, "w").replace(sep, other), "the mapping needs")])
        b.file(f"extra-columns-{kind}", kind, [(b.line(kind, "x") + sep + "extra" + sep + "more", GOOD)])
    # Fixed width short lines.
    for cut in (5, 20, 40, 55, 59):
        b.file("short-FIX", "FIX", [(b.line("FIX", "s")[:cut], "needs")])
    # JSON: wrong types, NaN literals, deep nesting, huge numbers, not objects, broken JSON.
    wrong = {"who": [{"a": 1}, [1, 2], True, False], "dur": ["abc", True, [60], {"s": 60}], "at": [123, True, []]}
    for key, values in wrong.items():
        for value in values:
            obj = json.loads(b.line("JSN", "t"))
            obj[key] = value
            b.file("json-type", "JSN", [(json.dumps(obj), JSON_KEYS[key])])
    for literal in ("NaN", "Infinity", "-Infinity"):
        b.file("json-constant", "JSN", [(b.line("JSN", "c")[:-1] + f', "dur": {literal}}}', literal)])
    for digits in (41, 4301, 5001, 100_000 // 11):
        b.file("json-digits", "JSN", [(b.line("JSN", "d")[:-1] + f', "dur": {"9" * digits}}}', "duration")])
    for depth in (17, 100, 1000, 4900):
        b.file("json-depth", "JSN", [('{"id": "deep", "x": ' + "[" * depth + "]" * depth + "}", "nested")])
    for text in ('["not", "an", "object"]', '"just a string"', "42", "null", '{"id": "J2", "who": ', "{,}", "}{"):
        b.file("json-broken", "JSN", [(text, "JSON")])
    # Formula cells are data: mediated, and the response file does not let them run.
    for kind in ("CSV", "LAT", "JSN"):
        for formula in ("=HYPERLINK(1)", "+SUM(A1)", "@cmd", "-2+3"):
            b.file(f"formula-{kind}", kind, [(b.line(kind, "f", record_id=formula + b.rid("f")), GOOD)])
    # Line endings, byte-order marks, blank lines, other encodings.
    for kind in COLLECTORS:
        for ending in ("\r\n", "\r"):
            lines = [(b.line(kind, "e"), GOOD), (b.line(kind, "e2", duration="-5"), "duration")]
            b.file(f"endings-{kind}", kind, lines, ending=ending)
        if encoding(kind) == "utf-8":
            b.file(f"bom-{kind}", kind, [(b.line(kind, "bom"), GOOD)], bom=True)
        b.file(f"blank-lines-{kind}", kind, [(b.line(kind, f"bl{i}"), GOOD) for i in range(4)], blank_every=1)
    b.file("latin-1-text", "LAT", [(b.line("LAT", "l", note="Zürich façade"), GOOD)])
    b.file(
        "latin-1-in-utf-8", "CSV", [(b.line("CSV", "l", destination="44").encode() + "é".encode("latin-1"), "utf-8")]
    )
    # Random junk lines: whatever they are, each is one line's error.
    alphabet = "abcXYZ019,;|\"'{}[]:-+.eE \t\\/=@#"
    for kind in COLLECTORS:
        for _ in range(10):
            junk = "".join(r.choice(alphabet) for _ in range(r.randrange(1, 70)))
            if not junk.strip():
                junk = "x" + junk
            b.file(f"junk-{kind}", kind, [(junk, "Line")])
    # Mixed files: good and bad lines of every kind above in random order, several per file.
    for n in range(240):
        kind = r.choice(sorted(COLLECTORS))
        lines = []
        for i in range(r.randrange(2, 7)):
            tag = f"x{i}"
            choice = r.randrange(6)
            if choice == 0:
                lines.append((b.line(kind, tag), GOOD))
            elif choice == 1 and kind != "FIX":
                lines.append((b.line(kind, tag, duration=r.choice(HUGE)), "duration"))
            elif choice == 2:
                value = r.choice([v for v in NEGATIVE if len(v) <= 10])
                lines.append((b.line(kind, tag, duration=value), "duration"))
            elif choice == 3 and kind in ("CSV", "JSN", "LAT"):
                lines.append((b.line(kind, tag, start_time=r.choice(BAD_ISO[:10])), "start_time"))
            elif choice == 4:
                text = b.line(kind, tag)
                lines.append((text + "y" * 10_001, "longer than"))
            else:
                lines.append((b.line(kind, tag, identifier=""), "identifier"))
        b.file(f"mixed-{n}-{kind}", kind, lines, ending=r.choice(["\n", "\r\n"]))
    # Whole files that cannot be read: rejected with a reason, nothing written.
    for kind in COLLECTORS:
        b.rejected(f"empty-{kind}", kind, b"", "empty")
        b.rejected(f"blank-only-{kind}", kind, b"\n\n  \n", "no")
    for kind in HEADERS:
        b.rejected(f"header-only-{kind}", kind, (HEADERS[kind] + "\n").encode(), "no records")
        if encoding(kind) == "utf-8":
            b.rejected(
                f"header-only-bom-{kind}", kind, b"\xef\xbb\xbf" + (HEADERS[kind] + "\r\n").encode(), "no records"
            )
    b.rejected("wrong-delimiter", "CSV", (HEADERS["CSV"].replace(",", ";") + "\n").encode(), "semicolon")
    b.rejected("wrong-header", "CSV", b"a,b,c\n1,2,3\n", "header has no column")
    return b.cases


def main(out: str) -> None:
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    index = []
    for case in build():
        path = folder / f"{case.name}.{case.collector.lower()}"
        path.write_bytes(case.content)
        index.append({"file": path.name, "collector": case.collector, "rejected": case.rejected,
                      "lines": {str(k): list(v) for k, v in case.expect.items()}})  # fmt: skip
    (folder / "index.json").write_text(json.dumps(index, indent=1))
    print(f"{len(index)} files in {folder}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "malformed-corpus")
