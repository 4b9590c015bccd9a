"""Reads of mediation results shared by pages, commands and (later) the API."""

from .models import MediationFile, UsageRecord

RESPONSE_HEADER = ["line", "record_id", "status", "reason", "message"]
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value) -> str:
    """A cell a spreadsheet will not run as a formula."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_START) else text


def response_rows(mediation_file: MediationFile):
    """The response file: a row per input line that was not mediated, then the summary."""
    yield RESPONSE_HEADER
    not_mediated = (
        UsageRecord.objects.filter(file=mediation_file)
        .exclude(status=UsageRecord.Status.MEDIATED)
        .order_by("line_no")
        .values_list("line_no", "record_id", "status", "reason", "message")
    )
    for line_no, record_id, status, reason, message in not_mediated.iterator(chunk_size=5000):
        yield [line_no, csv_safe(record_id), status, reason, csv_safe(message)]
    f = mediation_file
    summary = [
        ("file", f.name),
        ("collector", f.collector.code),
        ("status", f.status),
        ("error", f.error),
        ("total_lines", f.total_lines),
        ("mediated", f.mediated),
        ("quarantined", f.quarantined),
        ("duplicates", f.duplicates),
        ("rejected_lines", f.rejected_lines),
        ("pending", f.pending),
        ("blank_lines", f.blank_lines),
        ("charge", f.charge),
        ("tax", f.tax),
    ]
    for key, value in summary:
        yield ["", "", "summary", key, csv_safe(value)]


def service_usage(service, *, categories=None, period=None, before=None, limit=50):
    """Mediated records of a service, newest first, a page at a time by keyset (no COUNT)."""
    qs = UsageRecord.objects.filter(service=service, status=UsageRecord.Status.MEDIATED).select_related("period")
    if categories:
        qs = qs.filter(category__in=categories)
    if period is not None:  # by time, so the (service, usage_at) index serves it
        qs = qs.filter(usage_at__gte=period.starts_at, usage_at__lt=period.ends_at, period=period)
    if before is not None:
        usage_at, record_id = before
        qs = qs.filter(usage_at__lt=usage_at) | qs.filter(usage_at=usage_at, id__lt=record_id)
    return list(qs.order_by("-usage_at", "-id")[: limit + 1])
