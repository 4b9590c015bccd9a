"""Operator pages beside the admin: the Process Console, Collector Activity History, response
files, and the service usage views."""

import datetime as dt
from decimal import Decimal

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth.decorators import permission_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db.models import Count, Q, Sum
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.views.decorators.http import require_POST

from billing import formatting
from billing.models import (
    UNIT_BASE_SIZE,
    AggregateCharge,
    Category,
    IncludedValue,
    Product,
    Service,
    Subscription,
    SubscriptionPeriod,
)
from usage import selectors
from usage.exports import streaming_csv
from usage.models import MICROS, MediationFile, UsageCollector

from . import selectors as console_selectors
from . import tracking
from .models import ProcessKind, ProcessRun, RunStatus


def page(request, template, context):
    """Console pages wear the admin's header, sidebar and titles."""
    return render(
        request,
        template,
        {**admin.site.each_context(request), "billing_tz": timezone.get_default_timezone_name(), **context},
    )


@staff_member_required
@permission_required("usage.view_mediationfile", raise_exception=True)
def collectors(request):
    rows = list(
        UsageCollector.objects.annotate(
            file_count=Count("files"),
            waiting=Count("files", filter=Q(files__status__in=["queued", "processing"])),
        ).order_by("code")
    )
    blocked = selectors.blocked_collectors()
    for row in rows:
        row.blocked_by = blocked.get(row.pk)
    return page(request, "console/collectors.html", {"collectors": rows, "title": "Collector Activity History"})


@staff_member_required
@permission_required("usage.view_mediationfile", raise_exception=True)
def collector_history(request, collector_id):
    collector = get_object_or_404(UsageCollector, pk=collector_id)
    files = list(collector.files.select_related("uploaded_by").order_by("-sequence")[:200])
    runs = ProcessRun.objects.filter(kind=ProcessKind.MEDIATION, subject__in=[f"file:{f.pk}" for f in files])
    latest = {run.subject: run for run in runs.order_by("pk")}
    for f in files:
        f.run = latest.get(f"file:{f.pk}")
    active = any(f.status in (MediationFile.Status.QUEUED, MediationFile.Status.PROCESSING) for f in files)
    context = {"files": files, "currency": default_currency(), "active": active, "now": timezone.now()}
    if _fragment(request):
        return render(request, "console/_collector_files.html", context)
    totals = collector.files.aggregate(
        lines=Sum("total_lines"), mediated=Sum("mediated"), quarantined=Sum("quarantined")
    )
    return page(
        request,
        "console/collector_history.html",
        {
            **context,
            "collector": collector,
            "totals": totals,
            "blocked_by": selectors.blocking_file(collector.pk),
            "title": f"Collector Activity History: {collector}",
        },
    )


@require_POST
@staff_member_required
@permission_required("usage.change_mediationfile", raise_exception=True)
def file_action(request, file_id, action):
    """Retry or skip the failed file that blocks its collector."""
    from usage import services

    mediation_file = get_object_or_404(MediationFile.objects.select_related("collector"), pk=file_id)
    try:
        if action == "skip":
            skipped = services.do_skip_file(request.user, mediation_file, request.POST.get("reason", "").strip()[:200])
            messages.warning(request, f"{skipped}: {skipped.error.splitlines()[0]}")
        else:
            services.do_retry_file(request.user, mediation_file)
            messages.success(request, f"{mediation_file} queued again; it resumes after its last committed batch.")
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    return redirect("console:collector_history", mediation_file.collector_id)


@staff_member_required
@permission_required("usage.view_mediationfile", raise_exception=True)
def response_file(request, file_id):
    mediation_file = get_object_or_404(MediationFile.objects.select_related("collector"), pk=file_id)
    name = mediation_file.name.rsplit(".", 1)[0]
    return streaming_csv(selectors.response_rows(mediation_file), f"{name}.response.csv")


USAGE_VIEWS = {
    "usage": ("View Usage", [Category.TELEPHONY, Category.DATA]),
    "equipment": ("View Service & Equipment Usage", [Category.MISC]),
    "bolt_on": ("Bolt-on usage", list(Category.values)),
}


def _chosen_period(request, service):
    """The period asked for (None: all periods)."""
    periods = list(service.periods.order_by("-start_date")[:48])
    wanted = request.GET.get("period", "")
    if wanted == "all":
        return periods, None
    if wanted.isdigit():
        chosen = next((p for p in periods if p.pk == int(wanted)), None)
        if chosen is None:
            chosen = get_object_or_404(SubscriptionPeriod, pk=int(wanted), service=service)
        return periods, chosen
    # By default the latest period with usage (one probe of the (service, usage time) index), else
    # the one containing today, else the latest.
    latest = selectors.latest_usage_period_id(service)
    with_usage = next((p for p in periods if p.pk == latest), None) if latest else None
    today = timezone.localdate()
    current = next((p for p in periods if p.start_date <= today <= p.end_date), None)
    return periods, with_usage or current or (periods[0] if periods else None)


def _cursor(request, name):
    """(usage time, id) of a keyset cursor in the query string, or None if absent or impossible."""
    at, pk = request.GET.get(f"{name}_at"), request.GET.get(f"{name}_id", "")
    if not at or not pk.isdigit() or int(pk) >= 2**63:
        return None
    try:
        parsed = parse_datetime(at)
    except ValueError:
        return None  # a well-formed but impossible time: the first page
    return (parsed, int(pk)) if parsed is not None else None


@staff_member_required
@permission_required("usage.view_usagerecord", raise_exception=True)
def service_usage(request, service_id, kind="usage", subscription_id=None):
    """Cumulus-like usage under a service: a period at a time (totals, included against charged),
    filterable by category, newest first by keyset, CSV of the whole selection."""
    service = get_object_or_404(Service.objects.select_related("account"), pk=service_id)
    title, categories = USAGE_VIEWS[kind]
    bolt_on, allowance_ids = None, None
    if kind == "bolt_on":
        bolt_on = get_object_or_404(
            Subscription.objects.select_related("product"),
            pk=subscription_id,
            service=service,
            product__kind=Product.Kind.BOLT_ON,
        )
        allowance_ids = list(bolt_on.product.included_values.values_list("pk", flat=True))
        title = f"Bolt-on {bolt_on.product.name}: View Usage"
    periods, period = _chosen_period(request, service)
    category = request.GET.get("category", "")
    chosen_categories = [category] if category in categories else categories
    records = selectors.service_usage_records(
        service, categories=chosen_categories, period=period, allowance_ids=allowance_ids
    )
    if request.GET.get("format") == "csv":
        suffix = period.start_date.isoformat() if period else "all"
        return streaming_csv(selectors.usage_csv_rows(records), f"{service.service_id}-{kind}-{suffix}.csv")
    before, after = _cursor(request, "before"), _cursor(request, "after")
    rows = selectors.service_usage(
        service,
        categories=chosen_categories,
        period=period,
        allowance_ids=allowance_ids,
        before=before,
        after=None if before else after,
    )
    # Newest first. Paging older keeps a cursor on the last row, newer on the first.
    more = len(rows) > 50
    rows = rows[:50] if not after or before else rows[-50:] if more else rows
    older = more if not after or before else bool(rows)
    newer = bool(before) or (bool(after) and more)
    currency = service.account.currency
    for r in rows:  # one page of display figures; a record's charge at its rate card's decimals
        decimals = r.rate.charge_decimals if r.rate_id and r.rate else None
        r.unit = r.rate.unit if r.rate_id and r.rate else None
        r.charge_shown = formatting.micros(r.charge_micros, currency, decimals)
        r.tax_shown = formatting.micros(r.tax_micros, currency, decimals)
    filters = {"period": period.pk if period else "all", "category": category if category in categories else ""}
    next_params = prev_params = None
    if older and rows:
        last = rows[-1]
        next_params = {**filters, "before_at": last.usage_at.isoformat(), "before_id": last.pk}
    if newer and rows:
        first = rows[0]
        prev_params = {**filters, "after_at": first.usage_at.isoformat(), "after_id": first.pk}
    # Totals of one period: bounded by the period's records. Over all time they would scan everything.
    totals = selectors.service_usage_totals(records) if period is not None else None
    aggregates = _current_aggregates(period, categories, bolt_on, currency)
    codes = dict(AggregateCharge.objects.filter(pk__in={r.aggregate_charge_id for r in rows}).values_list("pk", "code"))
    for r in rows:
        r.aggregate_code = codes.get(r.aggregate_charge_id)
    return page(
        request,
        "console/service_usage.html",
        {
            "service": service,
            "rows": rows,
            "next_params": next_params,
            "prev_params": prev_params,
            "filters": filters,
            "periods": periods,
            "period": period,
            "categories": [(c, Category(c).label) for c in categories],
            "category": filters["category"],
            "totals": totals,
            "aggregates": aggregates,
            "bolt_on": bolt_on,
            "currency": currency,
            "title": f"{title}: {service}",
            "heading": title,
            "kind": kind,
        },
    )


def _current_aggregates(period, categories, bolt_on, currency) -> list:
    """The period's aggregate charges so far, as the view shows them: those of the view's categories
    (or of any), or of the bolt-on; each with its quantity and what it would be charged now."""
    from billing.aggregates import period_aggregates

    if period is None:
        return []
    shown = []
    for line in period_aggregates([period.pk])[0]:
        charge = line.charge
        if bolt_on is not None and charge.product_id != bolt_on.product_id:
            continue
        if bolt_on is None and charge.category and charge.category not in categories:
            continue
        line.quantity_shown = formatting.aggregate_quantity(line.priced.quantity, charge.unit, currency)
        line.amount_shown = formatting.money(line.amount, currency)
        line.steps = [formatting.breakdown_line(p, currency) for p in line.priced.breakdown]
        shown.append(line)
    return shown


@staff_member_required
@permission_required("usage.view_usagerecord", raise_exception=True)
def service_bolt_ons(request, service_id):
    """Manage Bolt-Ons: the service's bolt-ons, what each includes and how much of it the period
    has drawn, with View Usage per bolt-on."""
    from usage.models import PeriodCounter

    service = get_object_or_404(Service.objects.select_related("account"), pk=service_id)
    periods, period = _chosen_period(request, service)
    subscriptions = (
        service.subscriptions.filter(product__kind=Product.Kind.BOLT_ON)
        .select_related("product")
        .prefetch_related("product__included_values")
        .order_by("-starts_on")
    )
    drawn = {}
    if period is not None:
        drawn = {
            (owner, ref): total
            for owner, ref, total in PeriodCounter.objects.filter(
                period=period, kind=PeriodCounter.Kind.ALLOWANCE, owner_id__in=[s.pk for s in subscriptions]
            ).values_list("owner_id", "ref_id", "total")
        }
    bolt_ons = []
    for subscription in subscriptions:
        allowances = []
        for value in subscription.product.included_values.all():
            used = drawn.get((subscription.pk, value.pk), 0)
            size = MICROS if value.unit == IncludedValue.MONEY else UNIT_BASE_SIZE[value.unit]
            currency = service.account.currency
            allowances.append(
                {
                    "value": value,
                    "size": formatting.allowance(value.quantity * subscription.quantity, value.unit, currency),
                    "drawn": formatting.allowance(Decimal(used) / Decimal(size), value.unit, currency),
                }
            )
        bolt_ons.append({"subscription": subscription, "allowances": allowances})
    return page(
        request,
        "console/service_bolt_ons.html",
        {
            "service": service,
            "bolt_ons": bolt_ons,
            "periods": periods,
            "period": period,
            "title": f"Bolt-ons: {service}",
        },
    )


@staff_member_required
@permission_required("metering.view_meter", raise_exception=True)
def stream_meters(request, stream_id):
    """Inspect: the meters of a stream's processor with key, period, value, last update and flush,
    filterable by meter type and key, newest update first, a page at a time."""
    from django.core.paginator import Paginator

    from metering.models import MeterType, Stream
    from metering.selectors import key_filter, label_keys
    from metering.services import schedule_warnings

    stream = get_object_or_404(Stream, pk=stream_id)
    meters = stream.meters.select_related("meter_type").order_by("meter_type__code", "key")
    meter_type = request.GET.get("type", "")
    if meter_type:
        meters = meters.filter(meter_type__code=meter_type)
    key = request.GET.get("key", "").strip()
    if key:
        meters = meters.filter(key_filter(key))
    page_obj = Paginator(meters, 100).get_page(request.GET.get("page"))
    page_obj.object_list = label_keys(page_obj.object_list)
    return page(
        request,
        "console/stream_meters.html",
        {
            "stream": stream,
            "page_obj": page_obj,
            "meter_types": MeterType.objects.filter(rules__stream=stream).distinct(),
            "selected_type": meter_type,
            "key": key,
            "executions": stream.executions.all()[:10],
            "warnings": schedule_warnings(stream),
            "title": f"Inspect meters: {stream}",
        },
    )


class MainBillingForm(forms.Form):
    cycle_start = forms.DateField(
        label="Cycle starting", widget=forms.DateInput(attrs={"type": "date"}), help_text="The periods' first day."
    )
    run_at = forms.DateTimeField(
        label="Run at",
        required=False,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
        help_text="Empty: now.",
    )
    close_early = forms.BooleanField(
        label="Close early",
        required=False,
        help_text="Bill a cycle before it ends. Usage arriving later misses its invoice.",
    )
    close_early_reason = forms.CharField(
        label="Reason", required=False, max_length=300, help_text="Required to close early; kept in the audit log."
    )

    def clean(self):
        data = super().clean()
        if data.get("close_early") and not (data.get("close_early_reason") or "").strip():
            self.add_error("close_early_reason", "Give the reason for closing the cycle early.")
        if not data.get("close_early"):
            data["close_early_reason"] = ""
        return data


def _billing_context(request) -> dict:
    from billing.selectors import cycles_around

    return {
        "billing_form": MainBillingForm(),
        "cycles": cycles_around(timezone.localdate()),
        "now": timezone.now(),
    }


def default_currency() -> str:
    """A file's charge sums records of many accounts: it is shown in the default card's currency."""
    from billing.models import RateCard

    card = RateCard.objects.filter(is_default=True).only("currency").first()
    return card.currency if card else "AUD"


def _fragment(request) -> bool:
    return request.GET.get("fragment") == "1"


@staff_member_required
@permission_required("console.view_processrun", raise_exception=True)
def overview(request):
    """The real-time view of every asynchronous process: status, queue rows, scheduled start, ETA."""
    tracking.reap_lost_runs()
    context = {
        "summaries": console_selectors.process_overview(),
        "title": "Process Console",
        "now": timezone.now(),
        "can_operate": request.user.has_perm("console.change_processrun"),
    }
    if _fragment(request):
        return render(request, "console/_processes.html", context)
    return page(request, "console/overview.html", {**context, **_billing_context(request)})


@staff_member_required
@permission_required("console.view_processrun", raise_exception=True)
def process_history(request, kind):
    """A process's runs, newest first, with records/second, totals and a throughput chart."""
    if kind not in ProcessKind.values:
        raise Http404("No such process.")
    runs = ProcessRun.objects.filter(kind=kind).select_related("requested_by")
    status = request.GET.get("status", "")
    if status in RunStatus.values:
        runs = runs.filter(status=status)
    page_obj = Paginator(runs, 50).get_page(request.GET.get("page"))
    rows = console_selectors.with_estimates(page_obj.object_list)
    finished = ProcessRun.objects.filter(kind=kind, finished_at__isnull=False).order_by("-finished_at")[:60]
    totals = ProcessRun.objects.filter(kind=kind, status=RunStatus.COMPLETED).aggregate(
        runs=Count("id"), records=Sum("records_done")
    )
    return page(
        request,
        "console/process_history.html",
        {
            "kind": kind,
            "kind_label": ProcessKind(kind).label,
            "page_obj": page_obj,
            "rows": rows,
            "chart": console_selectors.throughput_chart(list(finished)),
            "totals": totals,
            "pace": console_selectors.recent_pace(kind),
            "statuses": RunStatus.choices,
            "selected_status": status,
            "title": f"Process Console: {ProcessKind(kind).label}",
            **(_billing_context(request) if kind == ProcessKind.MAIN_BILLING else {"billing_form": None}),
            "can_operate": request.user.has_perm("console.change_processrun"),
        },
    )


@staff_member_required
@permission_required("console.view_processrun", raise_exception=True)
def run_detail(request, run_id):
    """One run: status, progress, ETA, its activities, its error; retry or cancel."""
    tracking.reap_lost_runs()
    run = get_object_or_404(ProcessRun.objects.select_related("requested_by", "retry_of"), pk=run_id)
    console_selectors.with_estimates([run])
    context = {
        "run": run,
        "activities": run.activities.all(),
        "retries": run.retries.all(),
        "can_operate": request.user.has_perm("console.change_processrun"),
        "title": str(run),
        "invoices": _run_invoices(run),
    }
    if _fragment(request):
        return render(request, "console/_run.html", context)
    return page(request, "console/run_detail.html", context)


def _run_invoices(run):
    if run.kind != ProcessKind.MAIN_BILLING or run.status != RunStatus.COMPLETED:
        return []
    from billing.models import Invoice

    cycle = dt.date.fromisoformat(run.params["cycle_start"])
    return Invoice.objects.filter(cycle_start=cycle).select_related("account").order_by("account__number")[:200]


@require_POST
@staff_member_required
@permission_required("console.change_processrun", raise_exception=True)
def run_retry(request, run_id):
    run = get_object_or_404(ProcessRun, pk=run_id)
    try:
        new_run = tracking.retry_run(request.user, run)
    except (ValidationError, tracking.RunBusy) as exc:
        messages.error(request, " ".join(getattr(exc, "messages", [str(exc)])))
        return redirect("console:run", run.pk)
    messages.success(request, f"Retried as run {new_run.pk}.")
    return redirect("console:run", new_run.pk)


@require_POST
@staff_member_required
@permission_required("console.change_processrun", raise_exception=True)
def run_cancel(request, run_id):
    run = get_object_or_404(ProcessRun, pk=run_id)
    try:
        tracking.cancel_run(request.user, run)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, f"Run {run.pk} cancelled.")
    return redirect("console:run", run.pk)


@require_POST
@staff_member_required
@permission_required("console.change_processrun", raise_exception=True)
def start_main_billing(request):
    from billing.invoicing import request_main_billing

    form = MainBillingForm(request.POST)
    if not form.is_valid():
        for field, errors in form.errors.items():
            messages.error(
                request, f"{form.fields[field].label if field in form.fields else field}: {' '.join(errors)}"
            )
        return redirect("console:process", ProcessKind.MAIN_BILLING)
    try:
        run = request_main_billing(
            request.user,
            form.cleaned_data["cycle_start"],
            run_at=form.cleaned_data["run_at"],
            close_early_reason=form.cleaned_data["close_early_reason"],
        )
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return redirect("console:process", ProcessKind.MAIN_BILLING)
    messages.success(request, f"Main Billing for the {run.label[0].lower()}{run.label[1:]}: run {run.pk}.")
    return redirect("console:run", run.pk)
