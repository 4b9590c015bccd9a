"""Dedup: a record key seen before, in this file or an earlier one of the collector, is a
DUPLICATE and is never billed. The database backs this with a partial unique index."""

from ..sql import Dialect
from .base import Gate


def gate(collector, dialect: Dialect, repeats: str) -> Gate:
    # One probe of the unique index per staged record: the cost does not grow with the table. The
    # step is fenced: inlined, the probe ran again at each of the three later references to it.
    # Written `NOT e.is_duplicate`, the index's own predicate: SQLite uses a partial index only then.
    earlier = (
        "(SELECT e.{col} FROM usage_usagerecord e WHERE e.collector_id = %(collector_id)s "
        "AND e.record_key = s.record_key AND NOT e.is_duplicate)"
    )
    return Gate(
        name="dedup",
        produces=("is_duplicate",),
        steps=(
            (
                f"CASE WHEN s.record_key IS NOT NULL THEN {earlier.format(col='file_id')} END AS _dup_file, "
                "rk.first_line AS _first_line",
                # Keys repeated within the whole file, with their first line (usage.staging.load_file):
                # a repeated key keeps its first line whatever batch either line is in.
                f"LEFT JOIN {repeats} rk ON rk.record_key = s.record_key" + dialect.fence,
            ),
            (
                f"CASE WHEN s._dup_file IS NOT NULL THEN {earlier.format(col='line_no')} END AS _dup_line, "
                "CASE WHEN s.record_key IS NOT NULL AND (s._dup_file IS NOT NULL OR s.line_no > s._first_line) "
                "THEN %(true)s ELSE %(false)s END AS is_duplicate",
                "",
            ),
        ),
        ok="is_duplicate = %(false)s",
        reason="'DUPLICATE'",
        message=(
            "CASE WHEN _dup_file IS NOT NULL THEN 'Record key ' || record_key || ' was already received in file ' "
            "|| _dup_file || ' line ' || _dup_line "
            "ELSE 'Record key ' || record_key || ' repeats line ' || _first_line || ' of this file' END"
        ),
        params={"collector_id": collector.pk},
    )
