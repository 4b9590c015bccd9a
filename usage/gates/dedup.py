"""Dedup: a record key seen before, in this file or an earlier one of the collector, is a
DUPLICATE and is never billed.

Reads two engine tables: `earlier_keys` (the store's first occurrence of each of the batch's keys,
looked up per batch) and `file_repeats` (the keys this file repeats, with their first line, made
when the file is staged: a repeated key keeps its first line whatever batch either line is in).
The store backs this with a unique index on (collector, record key) over records that are not
duplicates."""

from .base import Gate

PRODUCES = ("is_duplicate",)  # the record columns this gate sets

GATE = Gate(
    name="dedup",
    produces=PRODUCES,
    steps=(
        (
            "ek.file_id AS _dup_file, ek.line_no AS _dup_line, rk.first_line AS _first_line",
            "LEFT JOIN earlier_keys ek ON ek.record_key = s.record_key "
            "LEFT JOIN file_repeats rk ON rk.record_key = s.record_key",
        ),
        (
            "CASE WHEN s.record_key IS NOT NULL AND (s._dup_file IS NOT NULL OR s.line_no > s._first_line) "
            "THEN TRUE ELSE FALSE END AS is_duplicate",
            "",
        ),
    ),
    ok="NOT is_duplicate",
    reason="'DUPLICATE'",
    message=(
        "CASE WHEN _dup_file IS NOT NULL THEN 'Record key ' || record_key || ' was already received in file ' "
        "|| _dup_file || ' line ' || _dup_line "
        "ELSE 'Record key ' || record_key || ' repeats line ' || _first_line || ' of this file' END"
    ),
)
