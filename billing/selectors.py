"""Reads of the billing domain that several callers share."""

from .models import Service, ServiceIdentifier


def services_matching(term: str):
    """Services whose service ID, sub ID or any identifier (ever) equals `term`.

    Three indexed equality lookups instead of one OR across a join: the latter cannot use an
    index and scans every service.
    """
    term = term.strip()
    if not term:
        return Service.objects.none()
    ids = set(Service.objects.filter(service_id=term).values_list("pk", flat=True))
    ids |= set(Service.objects.filter(sub_id=term).values_list("pk", flat=True))
    ids |= set(ServiceIdentifier.objects.filter(value=term).values_list("service_id", flat=True))
    return Service.objects.filter(pk__in=ids)


def identifier_active_at(value: str, when):
    return (
        ServiceIdentifier.objects.select_related("service")
        .filter(value=value, active_from__lte=when)
        .exclude(active_to__lte=when)
        .first()
    )
