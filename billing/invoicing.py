"""Main Billing Processing: turns a cycle's mediated usage and subscriptions into draft invoices.

A cycle is every subscription period starting on one date (`cycle_start`): accounts billed on the
same day are billed together. The run's activities, each shown in the Process Console:

1. Reprocess — quarantined records of the cycle's time range go through the gates again.
2. Mapping — mediated records become usage charges per service, category and usage type, credits
   (negative charges) on a line of their own (one INSERT … SELECT … GROUP BY).
3. Subscription Generation — plan fees and recurring product prices, prorated by days.
4. Generation OTC — one-time products (activation, equipment) starting in the cycle, once ever.
5. Invoice preparation — each draft's totals from its charges.

Before each activity the run waits while any Reprocess run is running, whoever started it, or a
usage file received before it is still to be mediated. A draft keeps the usage it was built from
(`usage_fingerprint`) and is out of date, and cannot be finalized, once that changes. Every
activity first removes what an earlier run of the cycle wrote to the still-draft invoices, so a
re-run never doubles a charge; final invoices are never touched. The one rounding point of
recurring charges is `prorate` (half-up to cents); usage charges are summed exactly as rated.
"""

import datetime as dt
import logging
import time
from decimal import ROUND_HALF_UP, Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import Count, Max, Min, Q, Sum
from django.utils import timezone

from console import tracking
from console.models import ProcessKind, ProcessRun, RunStatus

from . import audit, selectors
from .models import Category, Charge, Invoice, Product, Subscription, SubscriptionPeriod, TaxRule, billing_day_start
from .services import do_set_period_status

log = logging.getLogger(__name__)

# A usage charge reads "Telephony: voice": the category's label, from Category (constant SQL, no input).
CATEGORY_LABEL_SQL = (
    "CASE u.category "
    + " ".join(f"WHEN '{value}' THEN '{label}'" for value, label in Category.choices)
    + " ELSE u.category END"
)
ACTIVITIES = ["Reprocess", "Mapping", "Subscription Generation", "Generation OTC", "Invoice preparation"]
CENT = Decimal("0.01")
MICROS = Decimal(1_000_000)


def subject_for(cycle_start: dt.date) -> str:
    return f"cycle:{cycle_start.isoformat()}"


def cycle_periods(cycle_start: dt.date):
    return SubscriptionPeriod.objects.filter(start_date=cycle_start)


def cycle_usage(cycle_start: dt.date):
    from usage.models import UsageRecord

    return UsageRecord.objects.filter(period__start_date=cycle_start)


def request_main_billing(
    actor, cycle_start: dt.date, *, run_at=None, retry_of=None, close_early_reason: str = ""
) -> ProcessRun:
    """Queue Main Billing for a cycle (or schedule it at `run_at`); the run already active for the
    cycle if there is one, so it never runs twice at once.

    A cycle that has not ended by the time the run would start is refused: usage still arriving
    would miss the invoice. An operator may close it early only by giving a reason, which is
    audited and kept on the run (a retry keeps it)."""
    cycle = selectors.cycle_starting(cycle_start)
    if cycle is None:
        raise ValidationError(f"No subscription period starts on {cycle_start}: there is no cycle to bill.")
    reason = (close_early_reason or "").strip()
    early = not cycle.has_ended(run_at)
    if early and not reason:
        raise ValidationError(
            f"The cycle {cycle} has not ended: it ends at the end of {cycle.end.isoformat()} "
            f"({timezone.get_default_timezone_name()}). Bill it then, or choose to close it early and give a reason."
        )
    params = {"cycle_start": cycle_start.isoformat()}
    if early:
        params["close_early_reason"] = reason
    run, created = tracking.queue_run(
        actor,
        ProcessKind.MAIN_BILLING,
        subject_for(cycle_start),
        f"Cycle starting {cycle.start.isoformat()}, ending {cycle.end.isoformat()}"
        + (" (closed early)" if early else ""),
        params=params,
        scheduled_for=run_at,
        retry_of=retry_of,
    )
    if created:
        tracking.plan_activities(run, ACTIVITIES)
        audit.record(actor, "billing.request", run, summary=f"Main Billing requested for the cycle {cycle}")
        if early:
            audit.record(
                actor,
                "billing.close_early",
                run,
                after={"close_early_reason": reason, "cycle_ends_at": cycle.ends_at.isoformat()},
                summary=f"The cycle {cycle} is billed before it ends ({cycle.ends_at.isoformat()}): {reason}",
            )
        transaction.on_commit(lambda: enqueue(run))
    return run


def enqueue(run: ProcessRun) -> None:
    from django_q.models import Schedule
    from django_q.tasks import async_task

    if run.status == RunStatus.SCHEDULED and run.scheduled_for:
        Schedule.objects.update_or_create(
            name=f"Main Billing run {run.pk}",
            defaults={
                "func": "billing.tasks.run_main_billing",
                "args": repr((run.pk,)),
                "schedule_type": Schedule.ONCE,
                "next_run": run.scheduled_for,
                "repeats": 1,
            },
        )
    else:
        async_task("billing.tasks.run_main_billing", run.pk, task_name=f"main-billing-{run.pk}", group="billing")


def retry_main_billing_run(actor, run: ProcessRun) -> ProcessRun:
    return request_main_billing(
        actor,
        dt.date.fromisoformat(run.params["cycle_start"]),
        retry_of=run,
        close_early_reason=run.params.get("close_early_reason", ""),
    )


def execute_main_billing(run_id: int) -> ProcessRun | None:
    """Work a queued Main Billing run; None when it is finished or another worker holds it."""
    run = tracking.start_run(run_id)
    if run is None:
        return None
    cycle_start = dt.date.fromisoformat(run.params["cycle_start"])
    try:
        # Progress is in usage records mapped, against the cycle's mediated records.
        tracking.progress(run, 0, cycle_usage(cycle_start).filter(status="mediated").count())
        steps = [reprocess, mapping, subscription_generation, generation_otc, prepare_invoices]
        for position, (name, step) in enumerate(zip(ACTIVITIES, steps, strict=True), start=1):
            wait_until_usage_is_settled(run)
            with tracking.activity(run, position, name) as activity:
                tracking.test_pause(f"billing:{name}")
                activity.records, activity.detail = step(cycle_start)
            if step is mapping:
                tracking.progress(run, activity.records, expected=max(activity.records, run.records_expected or 0))
    except tracking.RunCancelled:
        log.info("Main Billing run %s was cancelled while it waited", run.pk)
        return run
    except Exception as exc:
        log.exception("Main Billing run %s failed", run.pk)
        tracking.finish(run, RunStatus.FAILED, f"{type(exc).__name__}: {exc}")
        return run
    tracking.finish(run, RunStatus.COMPLETED)
    audit.record(f"main billing run {run.pk}", "billing.run", run, summary=f"Billed the cycle of {cycle_start}")
    return run


def wait_until_usage_is_settled(run: ProcessRun) -> None:
    """Hold the run, shown as waiting, while a Reprocess run is running (anyone's) or a usage file
    received before the run started is still to be mediated: either may add usage to the cycle,
    and a draft built before it would miss that usage."""
    poll = float(getattr(settings, "TOLLGATE_BILLING_WAIT_POLL", 1.0))
    while True:
        tracking.reap_lost_runs()
        reason = blocking_reason(run)
        if reason is None:
            if run.status != RunStatus.RUNNING:
                tracking.renew(run)
            return
        if run.status != RunStatus.WAITING or run.waiting_for != reason:
            log.info("Main Billing run %s waits for %s", run.pk, reason)
        tracking.renew(run, status=RunStatus.WAITING, waiting_for=reason)
        time.sleep(poll)


def blocking_reason(run: ProcessRun) -> str | None:
    """What Main Billing must wait for before its next activity, in words; None: nothing."""
    from usage.models import MediationFile

    blocking = (
        ProcessRun.objects.filter(kind=ProcessKind.REPROCESS, status=RunStatus.RUNNING).order_by("started_at").first()
    )
    if blocking is not None:
        return f"Reprocess run {blocking.pk} started by {blocking.requested_label or 'someone'}"
    files = MediationFile.objects.filter(
        status__in=[MediationFile.Status.QUEUED, MediationFile.Status.PROCESSING, MediationFile.Status.FAILED],
        uploaded_at__lte=run.started_at or run.created_at,
    ).select_related("collector")
    waiting = list(files.order_by("uploaded_at")[:3])
    if not waiting:
        return None
    count = files.count()
    names = ", ".join(
        f"{f}{' (failed: retry or skip it)' if f.status == MediationFile.Status.FAILED else ''}" for f in waiting
    )
    more = f" and {count - len(waiting)} more" if count > len(waiting) else ""
    return f"mediation of {count} file{'s' if count != 1 else ''} received before this run: {names}{more}"


def usage_fingerprints(cycle_start: dt.date, account_id: int | None = None) -> dict:
    """Account id → what its usage in the cycle is now, as text: records, mediated records, their
    charge and tax, and the highest record id. A draft keeps the one it was built from."""
    narrow = "AND s.account_id = %s" if account_id is not None else ""
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            SELECT s.account_id, COUNT(*), SUM(CASE WHEN u.status = 'mediated' THEN 1 ELSE 0 END),
                   SUM(CASE WHEN u.status = 'mediated' THEN u.charge_micros ELSE 0 END),
                   SUM(CASE WHEN u.status = 'mediated' THEN u.tax_micros ELSE 0 END), MAX(u.id)
            FROM usage_usagerecord u
            JOIN billing_subscriptionperiod p ON p.id = u.period_id
            JOIN billing_service s ON s.id = p.service_id
            WHERE p.start_date = %s {narrow}
            GROUP BY s.account_id
            """,
            [cycle_start, *([account_id] if account_id is not None else [])],
        )
        return {row[0]: ":".join(str(v or 0) for v in row[1:]) for row in cursor.fetchall()}


def out_of_date(invoice: Invoice) -> str | None:
    """Why a draft no longer matches its cycle's usage, or None when it does (finals never change)."""
    if invoice.status != Invoice.Status.DRAFT or invoice.prepared_at is None:
        return None
    now = usage_fingerprints(invoice.cycle_start, invoice.account_id).get(invoice.account_id, "")
    if now == invoice.usage_fingerprint:
        return None
    built = (invoice.usage_fingerprint or "0:0").split(":")
    current = (now or "0:0").split(":")
    return (
        f"the cycle's usage changed after the draft was built ({built[1]} mediated records then, {current[1]} now): "
        "run Main Billing for the cycle again"
    )


def draft_invoices(cycle_start: dt.date):
    return Invoice.objects.filter(cycle_start=cycle_start, status=Invoice.Status.DRAFT)


@transaction.atomic
def reprocess(cycle_start: dt.date) -> tuple[int, str]:
    from usage.models import QuarantinedRecord
    from usage.services import do_reprocess_records

    span = cycle_periods(cycle_start).aggregate(first=Min("starts_at"), last=Max("ends_at"))
    waiting = QuarantinedRecord.objects.filter(
        status=QuarantinedRecord.Status.QUARANTINED, usage_at__gte=span["first"], usage_at__lt=span["last"]
    )
    if not waiting.exists():
        return 0, "No quarantined records in the cycle."
    outcome = do_reprocess_records("main billing", waiting)
    return outcome["records"], f"{outcome['mediated']} mediated, {outcome['quarantined']} still quarantined"


@transaction.atomic
def mapping(cycle_start: dt.date) -> tuple[int, str]:
    """Draft invoices for every account with a period in the cycle; usage charges from the
    mediated records, per service period, category and usage type, in one statement."""
    accounts = (
        cycle_periods(cycle_start)
        .values("service__account_id", "service__account__currency")
        .annotate(cycle_end=Max("end_date"))
    )
    existing = set(Invoice.objects.filter(cycle_start=cycle_start).values_list("account_id", flat=True))
    Invoice.objects.bulk_create(
        [
            Invoice(
                account_id=row["service__account_id"],
                cycle_start=cycle_start,
                cycle_end=row["cycle_end"],
                currency=row["service__account__currency"],
            )
            for row in accounts
            if row["service__account_id"] not in existing
        ]
    )
    Charge.objects.filter(
        invoice__in=draft_invoices(cycle_start), kind__in=[Charge.Kind.USAGE, Charge.Kind.AGGREGATE]
    ).delete()
    # Taken before the charges: usage that commits in between makes the draft out of date, never silently missed.
    fingerprints = usage_fingerprints(cycle_start)
    drafts = list(draft_invoices(cycle_start))
    for invoice in drafts:
        invoice.usage_fingerprint = fingerprints.get(invoice.account_id, "")
    Invoice.objects.bulk_update(drafts, ["usage_fingerprint"], batch_size=2000)
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO billing_charge (invoice_id, kind, service_id, period_id, category, usage_type, is_credit,
                                        description, records, rated_quantity, included_quantity, amount_micros,
                                        tax_micros, breakdown)
            SELECT i.id, 'usage', p.service_id, p.id, u.category, u.usage_type, u.charge_micros < 0,
                   {CATEGORY_LABEL_SQL} || CASE WHEN u.usage_type <> '' THEN ': ' || u.usage_type ELSE '' END
                   || CASE WHEN u.charge_micros < 0 THEN ' (credits)' ELSE '' END,
                   COUNT(*), SUM(u.rated_quantity), SUM(COALESCE(u.included_quantity, 0)),
                   SUM(u.charge_micros), SUM(u.tax_micros), '[]'
            FROM usage_usagerecord u
            JOIN billing_subscriptionperiod p ON p.id = u.period_id
            JOIN billing_service s ON s.id = p.service_id
            JOIN billing_invoice i ON i.account_id = s.account_id AND i.cycle_start = p.start_date
            WHERE p.start_date = %s AND i.status = 'draft' AND u.status = 'mediated'
            GROUP BY i.id, p.service_id, p.id, u.category, u.usage_type, u.charge_micros < 0
            """,
            [cycle_start],
        )
    lines, stale = aggregate_charges(cycle_start)
    mapped = Charge.objects.filter(invoice__in=draft_invoices(cycle_start), kind=Charge.Kind.USAGE).aggregate(
        records=Sum("records"), charges=Count("id")
    )
    detail = f"{mapped['charges']} usage charges"
    if lines:
        detail += f", {lines} aggregate charges"
    if stale:
        detail += (
            f"; {stale} records were rated as covered by an aggregate charge that no longer covers them "
            "(a subscription changed since): rebalance the cycle, then run Main Billing again"
        )
    return mapped["records"] or 0, detail


def aggregate_charges(cycle_start: dt.date) -> tuple[int, int]:
    """The aggregate charge lines of the cycle's drafts: each period's metric priced by its charge
    model (billing.aggregates), rounded once per line, taxed by the rule of the charge's category
    (else the default); and how many covered records no charge covers now."""
    from .aggregates import describe, period_aggregates, round_line

    drafts = draft_invoices(cycle_start)
    invoice_of = dict(drafts.values_list("account_id", "id"))
    periods = {
        p.pk: p for p in cycle_periods(cycle_start).filter(service__account_id__in=invoice_of).select_related("service")
    }
    priced, stale = period_aggregates(sorted(periods))
    if not priced:
        return 0, stale
    rules = {rule.category: rule for rule in TaxRule.objects.all()}
    default_rule = next((r for r in rules.values() if r.is_default), None)
    bringing = {}
    for sub in Subscription.objects.filter(service_id__in={p.service_id for p in periods.values()}).order_by(
        "starts_on", "pk"
    ):
        bringing.setdefault((sub.service_id, sub.plan_id, sub.product_id), []).append(sub)
    charges = []
    for line in priced:
        period, charge = periods[line.period_id], line.charge
        rule = rules.get(charge.category) or default_rule
        if rule is None:
            raise ValidationError(f"No tax rule for {charge.category or 'all'} usage and no default tax rule.")
        subscription = next(
            s
            for s in bringing[(period.service_id, charge.plan_id, charge.product_id)]
            if s.starts_on <= period.end_date and (s.ends_on is None or s.ends_on >= period.start_date)
        )
        amount = round_line(line.priced.amount)
        charges.append(
            Charge(
                invoice_id=invoice_of[period.service.account_id],
                kind=Charge.Kind.AGGREGATE,
                service_id=period.service_id,
                period=period,
                subscription=subscription,
                aggregate=charge,
                category=charge.category,
                usage_type=charge.usage_type,
                description=describe(charge, period.start_date, period.end_date)[:300],
                records=line.records,
                quantity=line.priced.quantity,
                breakdown=line.priced.breakdown,
                amount_micros=_to_micros(amount),
                tax_micros=_to_micros(tax_on(amount, rule)),
            )
        )
    Charge.objects.bulk_create(charges, batch_size=2000)
    return len(charges), stale


def prorate(price: Decimal, days: int, period_days: int) -> Decimal:
    """The rounding point of recurring charges: price × days / days of the period, half-up to cents."""
    if days >= period_days:
        return price
    return (price * days / period_days).quantize(CENT, rounding=ROUND_HALF_UP)


def tax_on(amount: Decimal, rule: TaxRule) -> Decimal:
    return (amount * rule.percent / 100).quantize(CENT, rounding=ROUND_HALF_UP)


def charges_tax_rule() -> TaxRule:
    """Recurring and one-time charges are taxed by the misc category's rule, else the default."""
    rule = TaxRule.objects.filter(category="misc").first() or TaxRule.objects.filter(is_default=True).first()
    if rule is None:
        raise ValidationError("No tax rule for service and equipment charges and no default tax rule.")
    return rule


def _to_micros(amount: Decimal) -> int:
    return int(amount * MICROS)


def subscription_charge(kind, invoice_id, period, subscription, description, amount: Decimal, rule) -> Charge:
    """A recurring or one-time charge of a subscription, taxed as service and equipment."""
    return Charge(
        invoice_id=invoice_id,
        kind=kind,
        service_id=period.service_id,
        period=period,
        subscription=subscription,
        category="misc",
        description=description[:300],
        amount_micros=_to_micros(amount),
        tax_micros=_to_micros(tax_on(amount, rule)),
    )


def _cycle_subscriptions(cycle_start: dt.date, drafts):
    """(period, invoice id, subscription) for subscriptions overlapping a period of a draft."""
    invoice_of = dict(drafts.values_list("account_id", "id"))
    periods = cycle_periods(cycle_start).filter(service__account_id__in=invoice_of).select_related("service")
    by_service = {p.service_id: p for p in periods}
    subscriptions = (
        Subscription.objects.filter(service_id__in=by_service)
        .filter(Q(ends_on__isnull=True) | Q(ends_on__gte=cycle_start))
        .select_related("plan", "product", "service")
        .order_by("service_id", "starts_on", "pk")
    )
    for subscription in subscriptions.iterator(chunk_size=2000):
        period = by_service[subscription.service_id]
        if subscription.starts_on > period.end_date or (
            subscription.ends_on is not None and subscription.ends_on < period.start_date
        ):
            continue
        yield period, invoice_of[subscription.service.account_id], subscription


@transaction.atomic
def subscription_generation(cycle_start: dt.date) -> tuple[int, str]:
    drafts = draft_invoices(cycle_start)
    Charge.objects.filter(invoice__in=drafts, kind=Charge.Kind.RECURRING).delete()
    rule = charges_tax_rule()
    charges = []
    prorated = 0
    for period, invoice_id, subscription in _cycle_subscriptions(cycle_start, drafts):
        if subscription.plan_id:
            what, price = subscription.plan, subscription.plan.monthly_fee
        elif subscription.product.charge_type == Product.ChargeType.RECURRING:
            what, price = subscription.product, subscription.product.price
        else:
            continue
        first = max(subscription.starts_on, period.start_date)
        last = min(subscription.ends_on or period.end_date, period.end_date)
        days = (last - first).days + 1
        period_days = (period.end_date - period.start_date).days + 1
        amount = prorate(price * subscription.quantity, days, period_days)
        prorated += days < period_days
        note = f" ({days}/{period_days} days)" if days < period_days else ""
        note = f" × {subscription.quantity}{note}" if subscription.quantity != 1 else note
        charge = subscription_charge(
            Charge.Kind.RECURRING,
            invoice_id,
            period,
            subscription,
            f"{what.name} {first} to {last}{note}",
            amount,
            rule,
        )
        charge.days = days
        charges.append(charge)
    Charge.objects.bulk_create(charges, batch_size=2000)
    return len(charges), f"{len(charges)} recurring charges, {prorated} prorated"


@transaction.atomic
def generation_otc(cycle_start: dt.date) -> tuple[int, str]:
    drafts = draft_invoices(cycle_start)
    Charge.objects.filter(invoice__in=drafts, kind=Charge.Kind.ONE_TIME).delete()
    rule = charges_tax_rule()
    already = set(Charge.objects.filter(kind=Charge.Kind.ONE_TIME).values_list("subscription_id", flat=True))
    charges = []
    for period, invoice_id, subscription in _cycle_subscriptions(cycle_start, drafts):
        product = subscription.product
        if product is None or product.charge_type != Product.ChargeType.ONE_TIME or subscription.pk in already:
            continue
        if not period.start_date <= subscription.starts_on <= period.end_date:
            continue  # charged in the cycle it starts in
        description = f"{product.name} ({product.get_kind_display()}) {subscription.starts_on}"
        if subscription.quantity != 1:
            description += f" × {subscription.quantity}"
        amount = product.price * subscription.quantity
        charges.append(
            subscription_charge(Charge.Kind.ONE_TIME, invoice_id, period, subscription, description, amount, rule)
        )
    Charge.objects.bulk_create(charges, batch_size=2000)
    return len(charges), f"{len(charges)} one-time charges"


@transaction.atomic
def prepare_invoices(cycle_start: dt.date) -> tuple[int, str]:
    """Each draft's totals are the sums of its charges: they reconcile to the rated records."""
    drafts = draft_invoices(cycle_start)
    totals = {
        row["invoice_id"]: row
        for row in Charge.objects.filter(invoice__in=drafts)
        .values("invoice_id")
        .annotate(
            amount=Sum("amount_micros"),
            tax=Sum("tax_micros"),
            records=Sum("records", filter=Q(kind=Charge.Kind.USAGE)),
        )
    }
    now = timezone.now()
    invoices = list(drafts)
    for invoice in invoices:
        row = totals.get(invoice.pk, {})
        invoice.subtotal_micros = row.get("amount") or 0
        invoice.tax_micros = row.get("tax") or 0
        invoice.total_micros = invoice.subtotal_micros + invoice.tax_micros
        invoice.usage_records = row.get("records") or 0
        invoice.prepared_at = now
    Invoice.objects.bulk_update(
        invoices, ["subtotal_micros", "tax_micros", "total_micros", "usage_records", "prepared_at"], batch_size=2000
    )
    total = sum(i.total_micros for i in invoices)
    return len(invoices), f"{len(invoices)} draft invoices, total {Decimal(total) / MICROS:f}"


@transaction.atomic
def do_finalize_invoice(actor, invoice: Invoice) -> Invoice:
    """Give a prepared draft its number and mark its periods invoiced: later usage for them follows
    the collector's late-usage policy, and a rebalance leaves them alone."""
    invoice = Invoice.objects.select_for_update().get(pk=invoice.pk)
    if invoice.status != Invoice.Status.DRAFT:
        raise ValidationError(f"Invoice {invoice.number} is already final.")
    if invoice.prepared_at is None:
        raise ValidationError("The draft has not been prepared yet: run Main Billing for its cycle first.")
    active = tracking.active_run(ProcessKind.MAIN_BILLING, subject_for(invoice.cycle_start))
    if active is not None:
        raise ValidationError(f"Main Billing is {active.status} for this cycle (run {active.pk}); finalize after it.")
    stale = out_of_date(invoice)
    if stale:
        raise ValidationError(f"The draft for {invoice.account} is out of date: {stale}.")
    invoice.status = Invoice.Status.FINAL
    invoice.number = next_invoice_number()
    invoice.finalized_at = timezone.now()
    invoice.save(update_fields=["status", "number", "finalized_at"])
    periods = SubscriptionPeriod.objects.filter(service__account=invoice.account_id, start_date=invoice.cycle_start)
    do_set_period_status(actor, periods, SubscriptionPeriod.Status.INVOICED)
    audit.record(actor, "invoice.finalize", invoice, after={"number": invoice.number, "total": str(invoice.total)})
    return invoice


def next_invoice_number() -> str:
    """The series' next number, gapless: the counter row stays locked until the finalizing
    transaction ends, and a transaction that rolls back gives its number back."""
    from sequences import get_next_value

    series = getattr(settings, "TOLLGATE_INVOICE_SERIES", "INV")
    return f"{series}-{get_next_value(f'invoice:{series}'):08d}"


def ended_cycles(today: dt.date, days_back: int = 7):
    """(cycle start, last period end) of cycles whose periods ended in the last `days_back` days
    and are not yet invoiced."""
    return list(
        SubscriptionPeriod.objects.filter(end_date__lt=today, end_date__gte=today - dt.timedelta(days=days_back))
        .exclude(status=SubscriptionPeriod.Status.INVOICED)
        .values_list("start_date")
        .annotate(last_end=Max("end_date"))
        .order_by("start_date")
    )


def bill_ended_cycles(actor, today: dt.date | None = None) -> list[ProcessRun]:
    """The daily schedule: Main Billing for each cycle that ended, unless it was billed since."""
    today = today or timezone.localdate()
    runs = []
    for cycle_start, last_end in ended_cycles(today):
        billed_since = ProcessRun.objects.filter(
            kind=ProcessKind.MAIN_BILLING,
            subject=subject_for(cycle_start),
            status=RunStatus.COMPLETED,
            created_at__gte=billing_day_start(last_end + dt.timedelta(days=1)),
        )
        if not billed_since.exists():
            runs.append(request_main_billing(actor, cycle_start))
    return runs
