"""What an operator can do about a quarantined record: one suggested fix per reason, with links
to the form that makes it (pre-filled where the record tells what to fill in). Reads only."""

import calendar
import dataclasses
import datetime as dt
from urllib.parse import urlencode

from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from billing.models import RateCard, Subscription, SubscriptionPeriod

from .models import Reason


@dataclasses.dataclass
class Fix:
    title: str
    text: str
    links: list  # (label, url)
    reprocess: bool = True  # whether reprocessing can help once the cause is fixed


def _url(name: str, params: dict | None = None, args=None) -> str:
    url = reverse(name, args=args)
    return f"{url}?{urlencode(params)}" if params else url


def _local(when):
    return timezone.localtime(when) if when else None


def cards_for(record) -> list:
    """The cards that could price the record: its service's plan and product cards active on the
    usage day, then the default card — the order rating looks in."""
    cards = []
    if record.service_id and record.usage_date:
        active = (
            Subscription.objects.filter(service_id=record.service_id, starts_on__lte=record.usage_date)
            .filter(Q(ends_on__isnull=True) | Q(ends_on__gte=record.usage_date))
            .select_related("plan__rate_card", "product__rate_card")
        )
        for subscription in active:
            for owner in (subscription.plan, subscription.product):
                if owner is not None and owner.rate_card is not None and owner.rate_card not in cards:
                    cards.append(owner.rate_card)
    cards += [c for c in RateCard.objects.filter(is_default=True) if c not in cards]
    return cards


def suggested_fix(record) -> Fix:
    when = _local(record.usage_at)
    at = when.strftime("%Y-%m-%d %H:%M:%S") if when else "an unknown time"
    if record.reason == Reason.NO_SERVICE:
        return Fix(
            "Add the identifier to a service",
            f"No service had the identifier {record.identifier!r} at {at}. Add it to the service it belongs to, "
            "active from a time before this usage, then reprocess.",
            [
                (
                    "Add identifier (pre-filled)",
                    _url(
                        "admin:billing_serviceidentifier_add",
                        {"value": record.identifier, "active_from": when.strftime("%Y-%m-%d 00:00:00")}
                        if when
                        else {"value": record.identifier},
                    ),
                ),
                ("Find the service", _url("admin:billing_service_changelist")),
            ],
        )
    if record.reason == Reason.NO_PERIOD:
        day = record.usage_date or (when.date() if when else dt.date.today())
        start = day.replace(day=1)
        end = day.replace(day=calendar.monthrange(day.year, day.month)[1])
        links = []
        if record.service_id:
            links.append(
                (
                    f"Add the period {start.isoformat()} – {end.isoformat()} (pre-filled)",
                    _url(
                        "admin:billing_subscriptionperiod_add",
                        {"service": record.service_id, "start_date": start.isoformat(), "end_date": end.isoformat()},
                    ),
                )
            )
            links.append(
                ("Generate periods for the service", _url("admin:billing_service_change", args=[record.service_id]))
            )
        return Fix(
            "Generate the missing subscription period",
            f"The service has no subscription period containing {at}. Generate its periods (the service list's "
            "'Generate subscription periods' action does many at once), then reprocess.",
            links,
        )
    if record.reason == Reason.NO_RATE:
        cards = cards_for(record)
        names = ", ".join(f"{c.code} ({c.name})" for c in cards) or "none: there is no default rate card"
        keys = (
            f"category {record.category or '—'}, usage type {record.usage_type or '(any)'}, "
            f"destination {record.destination or '(none)'}, on {record.usage_date or at}"
        )
        links = [
            (
                f"Add a rate to {card.code} (pre-filled)",
                _url(
                    "admin:billing_rate_add",
                    {
                        "rate_card": card.pk,
                        "category": record.category,
                        "usage_type": record.usage_type,
                        "destination_prefix": record.destination,
                    },
                ),
            )
            for card in cards
        ]
        return Fix(
            "Add the missing rate",
            f"No rate matched {keys}. Cards looked in, in order: {names}. Add a rate for these keys (a shorter "
            "destination prefix covers more numbers), then reprocess.",
            links,
        )
    if record.reason == Reason.LATE_CLOSED_PERIOD:
        period = SubscriptionPeriod.objects.filter(pk=record.period_id).first() if record.period_id else None
        policy = record.collector.get_late_usage_policy_display() if record.collector_id else "unknown"
        state = f"{period.start_date} – {period.end_date} is {period.get_status_display().lower()}" if period else ""
        links = [
            ("Collector's late-usage policy", _url("admin:usage_usagecollector_change", args=[record.collector_id]))
        ]
        if period is not None and period.status == SubscriptionPeriod.Status.CLOSED:
            links.append(("Open the period", _url("admin:billing_subscriptionperiod_change", args=[period.pk])))
        return Fix(
            "Late usage for a closed period",
            f"The usage belongs to a period that no longer takes usage ({state}). The collector's policy is "
            f"'{policy}'. Reopen the period if it is closed but not invoiced, or set the collector to roll late "
            "usage into the next open period, then reprocess. An invoiced period never changes.",
            links,
        )
    if record.reason == Reason.DUPLICATE:
        return Fix(
            "Nothing to fix: a duplicate is never billed",
            record.message or "The same record was received before.",
            [],
            reprocess=False,
        )
    if record.reason == Reason.PARSE_ERROR:
        return Fix(
            "Send a corrected line",
            f"The line could not be read: {record.message}. Correct it at the source and send it in a new file; "
            "reprocessing the same text would fail again.",
            [("Upload a file", _url("admin:usage_mediationfile_upload"))],
            reprocess=False,
        )
    if record.reason == Reason.OUT_OF_RANGE:
        return Fix(
            "Check the collector's bounds",
            f"{record.message}. If the value is genuine, raise the bound on the collector, then reprocess.",
            [("Collector bounds", _url("admin:usage_usagecollector_change", args=[record.collector_id]))],
        )
    if record.reason == Reason.CORRECTION_REFUSED:
        return Fix(
            "A correction that could not be applied",
            f"{record.message}. The line is not billed while it waits. Once its cause is gone (the record it "
            "names has arrived, or a period was reopened), reprocess it: the correction is tried again.",
            [("Corrections", _url("admin:usage_correction_changelist", {"file": record.file_id}))],
        )
    if record.reason == Reason.NO_TAX:
        return Fix(
            "Add a tax rule",
            "No tax rule applies to this usage. Add a default rule or one for its category, then reprocess.",
            [("Add a tax rule", _url("admin:billing_taxrule_add"))],
        )
    return Fix("Reprocess", record.message or "Reprocess the record once its cause is fixed.", [])
