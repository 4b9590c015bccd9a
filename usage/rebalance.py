"""Rebalance (reset lines): re-rate every not-yet-invoiced record of an account's billing cycle in
time order, so that allowances and period tiers are drawn as if the usage had arrived in order.

The cycle is the subscription period of each of the account's services containing a date. Its
counters (allowances drawn, tier quantities) are reset and the records re-rated from the `rate` gate
in one statement, which draws in time order from zero. A dry run computes the same outcome and
reports old against new per record, then rolls back.
"""

import datetime as dt
from dataclasses import dataclass, field

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import Q

from billing import audit
from billing.models import Account, Category, IncludedValue, Rate, Service, SubscriptionPeriod
from console import tracking
from console.models import ProcessKind

from . import pipeline
from .engine import duck
from .models import PeriodCounter, micros_to_money
from .services import refresh_file_counts

CYCLE_TABLE = "usage_rebalance_periods"
DIFF_LINES = 1000


@dataclass
class RebalanceLine:
    id: int
    record_id: str
    service_id: int
    usage_at: dt.datetime
    category: str
    old_status: str
    new_status: str
    old_charge_micros: int | None
    new_charge_micros: int | None
    old_included: int | None
    new_included: int | None

    @property
    def old_charge(self):
        return micros_to_money(self.old_charge_micros)

    @property
    def new_charge(self):
        return micros_to_money(self.new_charge_micros)


@dataclass
class RebalanceResult:
    account: Account
    on_date: dt.date
    periods: list
    categories: list
    applied: bool
    records: int = 0
    changed: int = 0
    old_total_micros: int = 0
    new_total_micros: int = 0
    lines: list = field(default_factory=list)  # the changed records, in time order, at most DIFF_LINES
    file_ids: set = field(default_factory=set)  # files with a changed record: their totals are recounted
    run: object = None  # the process run, when applied as one

    @property
    def old_total(self):
        return micros_to_money(self.old_total_micros)

    @property
    def new_total(self):
        return micros_to_money(self.new_total_micros)


def cycle_periods(account: Account, on_date: dt.date, service: Service | None = None):
    periods = SubscriptionPeriod.objects.filter(
        service__account=account, start_date__lte=on_date, end_date__gte=on_date
    ).select_related("service")
    return periods.filter(service=service) if service is not None else periods


@transaction.atomic
def do_rebalance(
    actor,
    account: Account,
    on_date: dt.date,
    *,
    service: Service | None = None,
    category: str = "",
    dry_run: bool = False,
) -> RebalanceResult:
    if service is not None and service.account_id != account.pk:
        raise ValidationError(f"Service {service.service_id} does not belong to account {account.number}.")
    if category and category not in Category.values:
        raise ValidationError(f"Unknown category {category!r}: use one of {', '.join(Category.values)}.")
    periods = list(cycle_periods(account, on_date, service).select_for_update(of=("self",)).order_by("service_id"))
    if not periods:
        raise ValidationError(f"Account {account.number} has no subscription period containing {on_date}.")
    invoiced = [p for p in periods if p.status == SubscriptionPeriod.Status.INVOICED]
    if invoiced:
        names = ", ".join(f"{p.service.service_id} {p}" for p in invoiced)
        raise ValidationError(
            f"Invoiced periods cannot be rebalanced: {names}. Their records are on an invoice; "
            "correct them with an adjustment on the next cycle."
        )
    categories = [category] if category else list(Category.values)
    result = RebalanceResult(account, on_date, periods, categories, applied=not dry_run)
    rollback_to = transaction.savepoint() if dry_run else None
    result.records = rerate_periods(periods, categories, before_write=lambda c, table: _compare(c, table, result))
    if dry_run:
        transaction.savepoint_rollback(rollback_to)
        return result
    refresh_file_counts(result.file_ids)
    audit.record(
        actor,
        "usage.rebalance",
        account,
        summary=(
            f"Rebalanced {result.records} records of {account.number} for the cycle of {on_date}"
            f"{' (' + category + ')' if category else ''}: {result.changed} changed"
        ),
        before={"total": str(result.old_total)},
        after={"total": str(result.new_total)},
    )
    return result


def rerate_periods(periods, categories=tuple(Category.values), before_write=None) -> int:
    """Reset the counters of `periods` (SubscriptionPeriods, locked by the caller) for `categories`
    and re-rate their records from the rate gate in time order, in the caller's transaction; how
    many records were re-rated. What a rebalance and an applied correction do."""
    if not periods:
        return 0
    period_ids = [p.pk for p in periods]
    allowances = IncludedValue.objects.filter(category__in=categories).values("pk")
    tiered_rates = Rate.objects.filter(category__in=categories).values("pk")
    PeriodCounter.objects.filter(period_id__in=period_ids).filter(
        Q(kind=PeriodCounter.Kind.ALLOWANCE, ref_id__in=allowances)
        | Q(kind=PeriodCounter.Kind.TIER, ref_id__in=tiered_rates)
    ).delete()
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {CYCLE_TABLE}")
        cursor.execute(f"CREATE TEMP TABLE {CYCLE_TABLE} (id BIGINT PRIMARY KEY)")
        cursor.executemany(f"INSERT INTO {CYCLE_TABLE} (id) VALUES (%s)", [(pk,) for pk in period_ids])
        services = ", ".join(sorted({str(int(p.service_id)) for p in periods}))
        quoted = ", ".join(f"'{c}'" for c in categories if c in Category.values)
        where = (
            f"u.service_id IN ({services}) AND EXISTS (SELECT 1 FROM {CYCLE_TABLE} x WHERE x.id = u.period_id) "
            f"AND u.category IN ({quoted}) AND u.stage IN ('rate', 'tax', 'done') AND u.is_duplicate = %(false)s "
            # Void records are never billed; a refused correction waits for reprocess, which applies it again.
            "AND u.status IN ('mediated', 'pending', 'quarantined') AND u.reason <> 'CORRECTION_REFUSED'"
        )
        records = pipeline.advance(cursor, None, "rate", "tax", where, before_write=before_write).records
        cursor.execute(f"DROP TABLE {CYCLE_TABLE}")
    return records


def do_run_rebalance(
    actor, account: Account, on_date: dt.date, *, service: Service | None = None, category: str = "", retry_of=None
) -> RebalanceResult:
    """Apply a rebalance as a process run: seen in the Process Console, one at a time per account."""
    params = {
        "account": account.pk,
        "on_date": on_date.isoformat(),
        "service": service.pk if service else None,
        "category": category,
    }
    label = f"{account.number}, cycle of {on_date}" + (f" ({category})" if category else "")
    with tracking.tracked(
        actor, ProcessKind.REBALANCE, f"account:{account.pk}", label, params=params, retry_of=retry_of
    ) as run:
        with tracking.activity(run, 1, "Rebalance") as step:
            result = do_rebalance(actor, account, on_date, service=service, category=category)
            step.records = result.records
            step.detail = f"{result.changed} changed, total {result.old_total:f} -> {result.new_total:f}"
        tracking.progress(run, result.records, expected=result.records)
    result.run = run
    return result


def retry_rebalance_run(actor, run):
    params = run.params
    account = Account.objects.get(pk=params["account"])
    service = Service.objects.filter(pk=params.get("service")).first() if params.get("service") else None
    result = do_run_rebalance(
        actor,
        account,
        dt.date.fromisoformat(params["on_date"]),
        service=service,
        category=params.get("category", ""),
        retry_of=run,
    )
    return result.run


def _compare(engine_db, table: str, result: RebalanceResult) -> None:
    """Old against new, from the engine's outcome table (which keeps each record's old values),
    before the records are written."""
    old = "CASE WHEN _old_status = 'mediated' THEN _old_charge_micros ELSE 0 END"
    new = "CASE WHEN status = 'mediated' THEN charge_micros ELSE 0 END"
    differs = " OR ".join(f"_old_{c} IS DISTINCT FROM {c}" for c in ("status", "charge_micros", "included_quantity"))
    totals = engine_db.execute(
        f"SELECT COALESCE(SUM({old}), 0), COALESCE(SUM({new}), 0), "
        f"COALESCE(SUM(CASE WHEN {differs} THEN 1 ELSE 0 END), 0) FROM {table}"
    ).fetchone()
    result.old_total_micros, result.new_total_micros, result.changed = (int(v) for v in totals)
    rows = engine_db.execute(
        "SELECT id, record_id, service_id, usage_at, category, _old_status, status, _old_charge_micros, "
        f"charge_micros, _old_included_quantity, included_quantity FROM {table} WHERE {differs} "
        f"ORDER BY usage_at, id LIMIT {DIFF_LINES}"
    ).fetchall()
    result.lines = [RebalanceLine(*row[:3], row[3].replace(tzinfo=dt.UTC), *row[4:]) for row in rows]
    result.file_ids = set(duck.values(engine_db, f"SELECT DISTINCT file_id FROM {table} WHERE {differs}"))
