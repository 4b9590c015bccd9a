"""Dedup: a record key seen before, in this file or an earlier one of the collector, is a
DUPLICATE and is never billed. The database backs this with a partial unique index."""

from .base import Gate


def gate(collector) -> Gate:
    earlier = (
        "LEFT JOIN usage_usagerecord e ON e.collector_id = %(collector_id)s AND e.record_key = s.record_key "
        "AND e.is_duplicate = %(false)s"
    )
    return Gate(
        name="dedup",
        produces=("is_duplicate",),
        steps=(
            (
                "e.file_id AS _dup_file, e.line_no AS _dup_line, "
                "CASE WHEN s.record_key IS NULL THEN 1 "
                "ELSE ROW_NUMBER() OVER (PARTITION BY s.record_key ORDER BY s.line_no) END AS _key_rank, "
                "MIN(s.line_no) OVER (PARTITION BY s.record_key) AS _first_line",
                earlier,
            ),
            (
                "CASE WHEN s.record_key IS NOT NULL AND (s._dup_file IS NOT NULL OR s._key_rank > 1) "
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
