"""Writes to the billing domain. Every write is a `do_*` function: atomic, given the acting user
(or a string naming the command or task), and leaving an audit row."""

import datetime as dt
from contextlib import contextmanager

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from . import audit
from .models import Service, ServiceIdentifier, SubscriptionPeriod
from .overlaps import message_for_integrity_error

BULK_BATCH = 5000


@contextmanager
def refused_as_validation_error():
    """Turn a database refusal by one of our rules into the rule's clear message."""
    try:
        yield
    except IntegrityError as exc:
        message = message_for_integrity_error(exc)
        if message is None:
            raise
        raise ValidationError(message) from exc


@transaction.atomic
def do_add_service_identifier(actor, service: Service, *, value: str, active_from, active_to=None, kind="msisdn"):
    identifier = ServiceIdentifier(
        service=service, kind=kind, value=value, active_from=active_from, active_to=active_to
    )
    identifier.full_clean()
    with refused_as_validation_error(), transaction.atomic():
        identifier.save()
    audit.record(actor, "identifier.add", identifier, after=audit.snapshot(identifier))
    return identifier


@transaction.atomic
def do_end_service_identifier(actor, identifier: ServiceIdentifier, *, active_to):
    before = audit.snapshot(identifier)
    identifier.active_to = active_to
    identifier.full_clean()
    with refused_as_validation_error(), transaction.atomic():
        identifier.save(update_fields=["active_to"])
    audit.record(actor, "identifier.end", identifier, before=before, after=audit.snapshot(identifier))
    return identifier


def cycle_start(day: dt.date, bill_day: int) -> dt.date:
    """The first day of the billing cycle (starting on `bill_day`) that contains `day`."""
    if day.day >= bill_day:
        return day.replace(day=bill_day)
    first = day.replace(day=1) - dt.timedelta(days=1)
    return first.replace(day=bill_day)


def next_cycle_start(start: dt.date, bill_day: int) -> dt.date:
    following_month = (start.replace(day=1) + dt.timedelta(days=32)).replace(day=1)
    return following_month.replace(day=bill_day)


def cycles_between(first: dt.date, last: dt.date, bill_day: int):
    """(start, end) of every cycle intersecting [first, last], end dates inclusive."""
    start = cycle_start(first, bill_day)
    while start <= last:
        following = next_cycle_start(start, bill_day)
        yield start, following - dt.timedelta(days=1)
        start = following


@transaction.atomic
def do_generate_subscription_periods(actor, *, start: dt.date, end: dt.date, services=None) -> int:
    """Create the open billing-cycle periods covering [start, end] for each service.

    Cycles follow the account's bill day. A cycle that any existing period of the service
    overlaps is left alone, so the command is idempotent and respects hand-made periods.
    Cancelled services get no new periods.
    """
    if end < start:
        raise ValidationError("The end date must not be before the start date.")
    if services is None:
        services = Service.objects.all()
    services = services.exclude(status=Service.Status.CANCELLED)
    created = 0
    service_rows = services.order_by("pk").values_list("pk", "account__bill_day")
    for chunk in _chunks(service_rows.iterator(chunk_size=BULK_BATCH), BULK_BATCH):
        ids = [pk for pk, _ in chunk]
        existing: dict[int, list[tuple[dt.date, dt.date]]] = {}
        # Cycles start at most one month before `start`, so older periods cannot overlap.
        for sid, s, e in SubscriptionPeriod.objects.filter(
            service_id__in=ids, end_date__gte=start - dt.timedelta(days=31), start_date__lte=end
        ).values_list("service_id", "start_date", "end_date"):
            existing.setdefault(sid, []).append((s, e))
        new = []
        for sid, bill_day in chunk:
            taken = existing.get(sid, [])
            for s, e in cycles_between(start, end, bill_day):
                if any(ts <= e and s <= te for ts, te in taken):
                    continue
                period = SubscriptionPeriod(service_id=sid, start_date=s, end_date=e)
                period.set_instants()
                new.append(period)
        with refused_as_validation_error():
            SubscriptionPeriod.objects.bulk_create(new, batch_size=BULK_BATCH)
        created += len(new)
    audit.record(
        actor,
        "periods.generate",
        object_type="billing.subscriptionperiod",
        summary=f"Generated {created} periods for {start} to {end}",
        after={"start": str(start), "end": str(end), "created": created},
    )
    return created


@transaction.atomic
def do_set_period_status(actor, periods, status: str) -> int:
    if status not in SubscriptionPeriod.Status.values:
        raise ValidationError(f"Unknown period status {status!r}.")
    ids = list(periods.values_list("pk", flat=True))
    invoiced = SubscriptionPeriod.objects.filter(pk__in=ids, status=SubscriptionPeriod.Status.INVOICED)
    if status != SubscriptionPeriod.Status.INVOICED and invoiced.exists():
        raise ValidationError("Invoiced periods cannot be reopened or closed again.")
    changed = SubscriptionPeriod.objects.filter(pk__in=ids).exclude(status=status).update(status=status)
    audit.record(
        actor,
        f"periods.{status}",
        object_type="billing.subscriptionperiod",
        summary=f"Set {changed} periods to {status}",
        after={"status": status, "periods": ids[:1000]},
    )
    return changed


def _chunks(iterable, size):
    chunk = []
    for item in iterable:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
