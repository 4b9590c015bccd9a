"""Corrections: a line that names an earlier record of its collector by key replaces it
(`corrects` column) or cancels it (`cancels` column).

A correction is noted when its file is mediated (`note_file`) and goes through the gates like any
usage line. Once its record is mediated it is applied (`do_apply_corrections`), set-based over a
plan table, one named decision per statement: the earlier record becomes void (kept, never
billed, its message naming the line that replaced it); a cancelling line becomes void too; and the
cycles of both are re-rated in time order, as a rebalance, so allowances are drawn as if the
corrected usage had been the only one. A correction is refused, its record quarantined
CORRECTION_REFUSED with the reason, when the key is unknown, the record is already void, another
line corrects the same record in the same run, or the record's period is invoiced. Reprocessing a
refused record tries its correction again.
"""

from dataclasses import dataclass

from django.db import connection, transaction
from django.utils import timezone

from billing import audit
from billing.models import SubscriptionPeriod

from . import staging, store
from .engine.duck import store_rows
from .models import Correction, UsageRecord
from .rebalance import rerate_periods
from .services import refresh_file_counts

CORRECTIONS_LOCK = 73_010_003  # with the collector: one run applies a collector's corrections at a time
NOTED = "usage_correction_noted"
PLAN = "usage_correction_plan"
MAX_ROUNDS = 20  # a chain of corrections (each naming the one before) longer than this waits for the next run

PLAN_COLUMNS = (
    "correction_id BIGINT PRIMARY KEY, state VARCHAR(8), file_id BIGINT, line_no BIGINT, action VARCHAR(8), "
    "record_key VARCHAR(255), fix_id BIGINT, fix_status VARCHAR(12), fix_reason VARCHAR(24), "
    "fix_message VARCHAR(500), fix_key VARCHAR(255), fix_period BIGINT, orig_file BIGINT, orig_line BIGINT, "
    "orig_id BIGINT, orig_status VARCHAR(12), orig_message VARCHAR(500), orig_period BIGINT, "
    "orig_invoiced BOOLEAN, chained BOOLEAN, decision VARCHAR(8), message VARCHAR(500)"
)
# Each candidate's correcting record and the record its key names, with their periods' state.
PLAN_FILL = f"""
INSERT INTO {PLAN}
SELECT c.id, c.state, c.file_id, c.line_no, c.action, c.record_key,
       f.id, f.status, f.reason, f.message, f.record_key, f.period_id,
       k.file_id, k.line_no, o.id, o.status, o.message, o.period_id,
       CASE WHEN op.status = 'invoiced' THEN %(true)s ELSE %(false)s END, %(false)s, NULL, ''
FROM usage_correction c
JOIN usage_filerecord f ON f.file_id = c.file_id AND f.line_no = c.line_no
LEFT JOIN usage_recordkey k ON k.collector_id = c.collector_id AND k.record_key = c.record_key
LEFT JOIN usage_filerecord o ON o.file_id = k.file_id AND o.line_no = k.line_no
LEFT JOIN billing_subscriptionperiod op ON op.id = o.period_id
WHERE c.collector_id = %(collector)s AND c.state IN ('noted', 'refused')
  AND EXISTS (SELECT 1 FROM {NOTED}_files x WHERE x.file_id = c.file_id)
"""
# The decisions, in order; each names the candidates still undecided it settles.
FIRST_LINE = (
    f"SELECT 'file ' || q.file_id || ' line ' || q.line_no FROM {PLAN} q WHERE q.orig_file = {PLAN}.orig_file "
    f"AND q.orig_line = {PLAN}.orig_line AND q.decision IS NULL ORDER BY q.file_id, q.line_no LIMIT 1"
)
DECISIONS = (
    # A refused correction is tried again only once its record is reprocessed (and so mediated).
    ("skip", "state = 'refused' AND fix_status <> 'mediated'", "message"),
    (
        "refuse",
        "fix_reason = 'DUPLICATE'",
        "'The correcting line is a duplicate (' || fix_message || '): a correction is applied once'",
    ),
    ("wait", "fix_status <> 'mediated'", "'Waits for its own record, ' || fix_status || ' ' || fix_reason"),
    (
        "refuse",
        "orig_file IS NULL",
        "'Names record key ' || record_key || ', which this collector has not received: reprocess this record "
        "once it has'",
    ),
    (
        "refuse",
        "orig_status = 'void'",
        "'Record key ' || record_key || ' is already void (' || orig_message || '): a further correction names "
        "the key of the line that replaced it'",
    ),
    (
        "refuse",
        "orig_invoiced = %(true)s",
        "'Record key ' || record_key || ' (file ' || orig_file || ' line ' || orig_line || ') is on an invoiced "
        "period: correct it with an adjustment on the next cycle'",
    ),
    (
        "refuse",
        f"EXISTS (SELECT 1 FROM {PLAN} q WHERE q.orig_file = {PLAN}.orig_file AND q.orig_line = {PLAN}.orig_line "
        f"AND q.decision IS NULL AND (q.file_id < {PLAN}.file_id OR (q.file_id = {PLAN}.file_id "
        f"AND q.line_no < {PLAN}.line_no)))",
        f"'Record key ' || record_key || ' is corrected by ' || ({FIRST_LINE}) || ' in the same run: one "
        "correction per record at a time; a further correction names the key of the line that replaced it'",
    ),
    # A chain (this line corrects a line that is itself a correction not yet applied): the next round.
    ("later", "chained = %(true)s", "''"),
    ("apply", "1 = 1", "''"),
)
CHAINED = (
    f"UPDATE {PLAN} SET chained = %(true)s WHERE decision IS NULL AND EXISTS (SELECT 1 FROM {PLAN} q "
    f"WHERE q.file_id = {PLAN}.orig_file AND q.line_no = {PLAN}.orig_line AND q.decision IS NULL)"
)
LOOP_MESSAGE = (
    "'Names record key ' || record_key || ', a correction that itself waits on this line: corrections that "
    "name each other are not applied'"
)
VOID_MESSAGE = (
    "CASE WHEN p.action = 'cancel' THEN 'Cancelled' ELSE 'Replaced' END || ' by file ' || p.file_id || ' line ' "
    "|| p.line_no || ' (record key ' || p.fix_key || ')'"
)
CANCEL_MESSAGE = "'Cancels record key ' || p.record_key || ' (file ' || p.orig_file || ' line ' || p.orig_line || ')'"


@dataclass
class Applied:
    applied: int = 0
    cancellations: int = 0  # of the applied
    refused: int = 0
    waiting: int = 0
    rerated: int = 0


def note_file(engine_db, mediation_file) -> int:
    """Note the correction lines of a staged file that parsed (the engine's file table) as
    Correction rows; a line already noted (a resumed file) is not noted again. How many are new."""
    select = (
        "SELECT line_no, corrects AS record_key, CASE WHEN cancels THEN 'cancel' ELSE 'replace' END AS action "
        f"FROM {staging.FILE_TABLE} WHERE corrects IS NOT NULL AND parse_error IS NULL"
    )
    if not engine_db.execute(f"SELECT COUNT(*) FROM ({select})").fetchone()[0]:
        return 0
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {NOTED} (line_no BIGINT, record_key VARCHAR(255), action VARCHAR(8))"
        )
        cursor.execute(f"DELETE FROM {NOTED}")
        store_rows(engine_db, connection, select, NOTED, ["line_no", "record_key", "action"])
        cursor.execute(
            "INSERT INTO usage_correction (collector_id, file_id, line_no, record_key, action, state, message, "
            f"noted_at) SELECT %s, %s, n.line_no, n.record_key, n.action, 'noted', '', %s FROM {NOTED} n "
            "WHERE NOT EXISTS (SELECT 1 FROM usage_correction c WHERE c.file_id = %s AND c.line_no = n.line_no) "
            "ORDER BY n.line_no",
            [mediation_file.collector_id, mediation_file.pk, timezone.now(), mediation_file.pk],
        )
        return cursor.rowcount


def open_count(file_ids) -> int:
    """How many corrections of these files are noted or refused (to be applied, or tried again)."""
    return Correction.objects.filter(file_id__in=file_ids, state__in=["noted", "refused"]).count()


@transaction.atomic
def do_apply_corrections(actor, collector_id: int, file_ids) -> Applied:
    """Apply the noted (and, once reprocessed, the refused) corrections of a collector's files; see
    the module's docstring."""
    result = Applied()
    file_ids = sorted({int(f) for f in file_ids})
    if not file_ids or not open_count(file_ids):
        return result
    params = {"true": True, "false": False, "collector": int(collector_id), "now": timezone.now()}
    periods, files = set(), set(file_ids)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [CORRECTIONS_LOCK, int(collector_id)])
        cursor.execute(f"CREATE TEMP TABLE IF NOT EXISTS {NOTED}_files (file_id BIGINT PRIMARY KEY)")
        cursor.execute(f"DELETE FROM {NOTED}_files")
        cursor.executemany(f"INSERT INTO {NOTED}_files (file_id) VALUES (%s)", [(f,) for f in file_ids])
        for _ in range(MAX_ROUNDS):
            applied = _round(cursor, params, result, periods, files)
            if not applied:
                break
        cursor.execute(f"DROP TABLE {NOTED}_files")
    if periods:
        locked = list(
            SubscriptionPeriod.objects.filter(pk__in=sorted(periods)).exclude(status="invoiced").select_for_update()
        )
        result.rerated = rerate_periods(locked)
    refresh_file_counts(files)
    if result.applied or result.refused:
        audit.record(
            actor,
            "usage.corrections",
            object_type="usage.correction",
            summary=(
                f"Applied {result.applied} corrections of collector {collector_id} (files "
                f"{', '.join(map(str, file_ids))}), refused {result.refused}; {result.rerated} records re-rated"
            ),
            after={"applied": result.applied, "refused": result.refused, "waiting": result.waiting},
        )
    return result


def _round(cursor, params, result: Applied, periods: set, files: set) -> int:
    """One round of decisions and their writes; how many corrections it applied (a chain's next
    link waits for the next round)."""
    cursor.execute(f"DROP TABLE IF EXISTS {PLAN}")
    cursor.execute(f"CREATE TEMP TABLE {PLAN} ({PLAN_COLUMNS})")
    cursor.execute(PLAN_FILL, params)
    for decision, condition, message in DECISIONS:
        if decision == "later":  # marked first: the test reads the decisions this statement would change
            cursor.execute(CHAINED, params)
        cursor.execute(
            f"UPDATE {PLAN} SET decision = '{decision}', message = {message} WHERE decision IS NULL AND ({condition})",
            params,
        )
    cursor.execute(f"SELECT decision, COUNT(*) FROM {PLAN} GROUP BY decision")
    counts = dict(cursor.fetchall())
    if counts.get("later") and not counts.get("apply"):  # nothing left to wait for: the lines name each other
        cursor.execute(f"UPDATE {PLAN} SET decision = 'refuse', message = {LOOP_MESSAGE} WHERE decision = 'later'")
        counts["refuse"] = counts.get("refuse", 0) + counts.pop("later")
    if not counts.get("apply") and not counts.get("refuse") and not counts.get("wait"):
        cursor.execute(f"DROP TABLE {PLAN}")
        return 0
    moves = (
        # The record a correction names becomes void, wherever it is.
        ("orig", "p.decision = 'apply'", "'void'", "'done'", "'SUPERSEDED'", VOID_MESSAGE),
        # A cancelling line is no usage of its own.
        (
            "fix",
            "p.decision = 'apply' AND p.action = 'cancel'",
            "'void'",
            "'done'",
            "'CANCELLATION'",
            CANCEL_MESSAGE,
        ),
        # A refused correction is not billed: it waits, quarantined, to be reprocessed once its cause is fixed.
        (
            "fix",
            "p.decision = 'refuse' AND p.fix_status = 'mediated'",
            "'quarantined'",
            "'rate'",
            "'CORRECTION_REFUSED'",
            "p.message",
        ),
    )
    # Each move names its record by the plan's `orig_` or `fix_` columns: its id and its status (a
    # mediated record is in the records table, any other in the quarantine).
    for side, condition, status, stage, reason, message in moves:
        _void_or_quarantine(
            cursor, f"{side}_id", f"{condition} AND p.{side}_status = 'mediated'", status, stage, reason, message
        )
        sets = f"status = {status}, stage = {stage}, reason = {reason}, message = substr({message}, 1, 500)"
        cursor.execute(
            f"UPDATE {store.WAITING} SET {sets} FROM {PLAN} p WHERE {store.WAITING}.id = p.{side}_id "
            f"AND {condition} AND p.{side}_status <> 'mediated'"
        )
    cursor.execute(
        "UPDATE usage_correction SET state = CASE p.decision WHEN 'apply' THEN 'applied' "
        "WHEN 'refuse' THEN 'refused' ELSE usage_correction.state END, message = substr(p.message, 1, 500), "
        "original_file_id = CASE WHEN p.decision = 'apply' THEN p.orig_file "
        "ELSE usage_correction.original_file_id END, "
        "original_line = CASE WHEN p.decision = 'apply' THEN p.orig_line ELSE usage_correction.original_line END, "
        "applied_at = CASE WHEN p.decision = 'apply' THEN %(now)s ELSE usage_correction.applied_at END "
        f"FROM {PLAN} p WHERE usage_correction.id = p.correction_id AND p.decision IN ('apply', 'refuse', 'wait')",
        params,
    )
    # Re-rated: the cycles of applied corrections, and of refused ones (what they drew is given back).
    cursor.execute(
        f"SELECT orig_period FROM {PLAN} WHERE decision = 'apply' AND orig_period IS NOT NULL "
        f"UNION SELECT fix_period FROM {PLAN} WHERE fix_period IS NOT NULL AND (decision = 'apply' "
        "OR (decision = 'refuse' AND fix_status = 'mediated'))"
    )
    periods.update(row[0] for row in cursor.fetchall())
    cursor.execute(f"SELECT DISTINCT orig_file FROM {PLAN} WHERE decision = 'apply'")
    files.update(row[0] for row in cursor.fetchall())
    cursor.execute(f"SELECT COUNT(*) FROM {PLAN} WHERE decision = 'apply' AND action = 'cancel'")
    result.cancellations += cursor.fetchone()[0]
    result.applied += counts.get("apply", 0)
    result.refused += counts.get("refuse", 0)
    result.waiting = counts.get("wait", 0)
    cursor.execute(f"DROP TABLE {PLAN}")
    return counts.get("apply", 0)


def _void_or_quarantine(cursor, id_column, condition, status, stage, reason, message):
    """Move the mediated records the plan's `id_column` names (where `condition`) out of the
    records table, with their new status, stage, reason and message, in line order."""
    columns = [f.column for f in UsageRecord._meta.concrete_fields if f.column != "id"]
    changed = {"status": status, "stage": stage, "reason": reason, "message": f"substr({message}, 1, 500)"}
    select = ", ".join(changed.get(c, f"u.{c}") for c in columns)
    chosen = f"SELECT p.{id_column} FROM {PLAN} p WHERE {condition}"
    cursor.execute(
        f"INSERT INTO {store.WAITING} ({', '.join(columns)}) SELECT {select} FROM {store.RECORDS} u "
        f"JOIN {PLAN} p ON p.{id_column} = u.id WHERE {condition} ORDER BY u.file_id, u.line_no"
    )
    cursor.execute(f"DELETE FROM {store.RECORDS} WHERE id IN ({chosen})")


def apply_for_file(mediation_file, actor="mediation worker") -> Applied:
    """After a file is mediated: apply its corrections (if it has any)."""
    return do_apply_corrections(actor, mediation_file.collector_id, [mediation_file.pk])
