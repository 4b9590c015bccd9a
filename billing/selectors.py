"""Reads of the billing domain that several callers share."""

import datetime as dt
from dataclasses import dataclass

from django.db.models import Count, Max, Q
from django.utils import timezone

from .models import Service, ServiceIdentifier, SubscriptionPeriod


@dataclass(frozen=True)
class Cycle:
    """A billing cycle: every period starting on `start`. It ends when its longest period does."""

    start: dt.date
    end: dt.date  # the last day, inclusive
    ends_at: dt.datetime  # the instant it ends, in the billing time zone
    periods: int
    invoiced: int

    def has_ended(self, when=None) -> bool:
        return (when or timezone.now()) >= self.ends_at

    def __str__(self):
        return f"{self.start.isoformat()} – {self.end.isoformat()}"


def _cycles(periods):
    rows = (
        periods.values("start_date")
        .annotate(
            end=Max("end_date"),
            ends_at=Max("ends_at"),
            periods=Count("pk"),
            invoiced=Count("pk", filter=Q(status=SubscriptionPeriod.Status.INVOICED)),
        )
        .order_by("-start_date")
    )
    return [Cycle(r["start_date"], r["end"], r["ends_at"], r["periods"], r["invoiced"]) for r in rows]


def cycle_starting(start: dt.date) -> Cycle | None:
    found = _cycles(SubscriptionPeriod.objects.filter(start_date=start))
    return found[0] if found else None


def cycles_around(today: dt.date, before: int = 3, after: int = 1) -> list[Cycle]:
    """The cycles an operator is likely to bill: the last `before` that started by today, and the
    next `after`; newest first."""
    started = SubscriptionPeriod.objects.filter(start_date__lte=today)
    starts = list(started.values_list("start_date", flat=True).distinct().order_by("-start_date")[:before]) + list(
        SubscriptionPeriod.objects.filter(start_date__gt=today)
        .values_list("start_date", flat=True)
        .distinct()
        .order_by("start_date")[:after]
    )
    return _cycles(SubscriptionPeriod.objects.filter(start_date__in=starts)) if starts else []


def services_matching(term: str):
    """Services found the way an operator types: a case-insensitive prefix of the service ID, the
    sub ID, any identifier (ever; an MSISDN prefix), the account number or the customer's name.

    Each branch is a prefix range over its own index (on PostgreSQL `UPPER(column) text_pattern_ops`,
    migration billing 0012), and the branches are one UNION of service ids: an OR across the joins
    could use no index and would read every service.
    """
    term = term.strip()
    if not term:
        return Service.objects.none()
    branches = [
        Service.objects.filter(service_id__istartswith=term).order_by().values("pk"),
        Service.objects.filter(sub_id__istartswith=term).order_by().values("pk"),
        ServiceIdentifier.objects.filter(value__istartswith=term).order_by().values("service_id"),
        Service.objects.filter(account__number__istartswith=term).order_by().values("pk"),
        Service.objects.filter(account__name__istartswith=term).order_by().values("pk"),
    ]
    return Service.objects.filter(pk__in=branches[0].union(*branches[1:]))


def service_has_history(service) -> bool:
    """Usage was mediated for it or it was charged: its rows are part of a bill's story."""
    from usage.models import UsageRecord

    return service.charges.exists() or UsageRecord.objects.filter(service_id=service.pk).exists()


def identifier_active_at(value: str, when):
    return (
        ServiceIdentifier.objects.select_related("service")
        .filter(value=value, active_from__lte=when)
        .exclude(active_to__lte=when)
        .first()
    )
