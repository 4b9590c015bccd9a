"""Reads of mediation results shared by pages, commands and (later) the API."""

from decimal import Decimal

from django.db.models import Count, Max, Q, Sum

from billing.models import plain

from .models import MediationFile, QuarantinedRecord, UsageRecord, micros_to_money

RESPONSE_HEADER = ["line", "record_id", "status", "reason", "message"]
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value) -> str:
    """A cell a spreadsheet will not run as a formula."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_START) else text


UNFINISHED = (MediationFile.Status.QUEUED, MediationFile.Status.PROCESSING, MediationFile.Status.FAILED)


def queue_head(collector_id: int):
    """The collector's earliest file not yet finished (queued, processing or failed)."""
    return MediationFile.objects.filter(collector_id=collector_id, status__in=UNFINISHED).order_by("sequence").first()


def blocking_file(collector_id: int):
    """The failed file holding the collector's later files back, if any: upload order is strict,
    so nothing after it is mediated until it is retried successfully or skipped."""
    head = queue_head(collector_id)
    return head if head is not None and head.status == MediationFile.Status.FAILED else None


def blocked_collectors() -> dict:
    """Collector id → the failed file blocking it, for every blocked collector."""
    blocked = {}
    for collector_id in MediationFile.objects.filter(status=MediationFile.Status.FAILED).values_list(
        "collector_id", flat=True
    ):
        if collector_id not in blocked and (head := blocking_file(collector_id)) is not None:
            blocked[collector_id] = head
    return blocked


def accounting(f: MediationFile) -> str:
    """Where every physical line of a file went, as one sentence of the response file."""
    if f.status != MediationFile.Status.COMPLETED:
        return (
            f"{f.get_status_display()}: {f.lines_done:,} records committed = {f.mediated:,} mediated + "
            f"{f.quarantined:,} quarantined + {f.duplicates:,} duplicates + {f.rejected_lines:,} rejected + "
            f"{f.pending:,} pending{_void(f)}; the file's other records were not mediated"
        )
    return (
        f"{f.physical_lines:,} physical lines = {f.header_lines:,} header + {f.blank_lines:,} blank + "
        f"{f.continuation_lines:,} continuation + {f.mediated:,} mediated + {f.quarantined:,} quarantined + "
        f"{f.duplicates:,} duplicates + {f.rejected_lines:,} rejected + {f.pending:,} pending{_void(f)}"
    )


def _void(f: MediationFile) -> str:
    """The void records (corrected since), named only where a file has some."""
    return f" + {f.void:,} void (corrected)" if f.void else ""


def response_rows(mediation_file: MediationFile):
    """The response file: a row per input line that was not mediated, then the summary."""
    yield RESPONSE_HEADER
    not_mediated = (
        QuarantinedRecord.objects.filter(file=mediation_file)
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
        ("accounted", accounting(f)),
        ("physical_lines", f.physical_lines),
        ("header_lines", f.header_lines),
        ("continuation_lines", f.continuation_lines),
        ("records_committed", f.lines_done),
        ("total_lines", f.total_lines),
        ("mediated", f.mediated),
        ("quarantined", f.quarantined),
        ("duplicates", f.duplicates),
        ("rejected_lines", f.rejected_lines),
        ("pending", f.pending),
        ("void", f.void),
        ("blank_lines", f.blank_lines),
        ("charge", f.charge),
        ("tax", f.tax),
    ]
    for key, value in summary:
        yield ["", "", "summary", key, csv_safe(value)]


def service_usage_records(service, *, categories=None, period=None, allowance_ids=None):
    """Mediated records of a service, optionally of one period, some categories, or drawn against
    some allowances. Filtered by time within the period, so the (service, usage_at) index serves it."""
    qs = UsageRecord.objects.filter(service=service, status=UsageRecord.Status.MEDIATED)
    if categories:
        qs = qs.filter(category__in=categories)
    if period is not None:
        qs = qs.filter(usage_at__gte=period.starts_at, usage_at__lt=period.ends_at, period=period)
    if allowance_ids is not None:
        qs = qs.filter(allowance_id__in=allowance_ids)
    return qs


def service_usage(service, *, categories=None, period=None, allowance_ids=None, before=None, after=None, limit=50):
    """A page of the service's records, newest first, by keyset (no COUNT): limit + 1 rows, so the
    caller knows whether there are more. `before` pages to older records, `after` to newer ones
    (the limit + 1 records just after the cursor, still returned newest first)."""
    qs = service_usage_records(service, categories=categories, period=period, allowance_ids=allowance_ids)
    qs = qs.select_related("period", "rate__rate_card")
    if before is not None:
        usage_at, record_id = before
        qs = qs.filter(Q(usage_at__lt=usage_at) | Q(usage_at=usage_at, id__lt=record_id))
    elif after is not None:
        usage_at, record_id = after
        qs = qs.filter(Q(usage_at__gt=usage_at) | Q(usage_at=usage_at, id__gt=record_id))
        return list(reversed(qs.order_by("usage_at", "id")[: limit + 1]))
    return list(qs.order_by("-usage_at", "-id")[: limit + 1])


def latest_usage_period_id(service) -> int | None:
    """The period of the service's newest mediated record: one probe of the (service, time) index."""
    return (
        UsageRecord.objects.filter(service_id=service.pk, period__isnull=False)
        .order_by("-usage_at")
        .values_list("period_id", flat=True)
        .first()
    )


def service_usage_totals(records):
    """Totals per category and usage type: records, duration, volume, rated, included and charged
    quantity, money allowance used, charge and tax."""
    rows = list(
        records.values("category", "usage_type")
        .annotate(
            records=Count("id"),
            duration=Sum("duration"),
            volume=Sum("volume"),
            rated=Sum("rated_quantity"),
            included=Sum("included_quantity"),
            included_micros=Sum("included_micros"),
            charge_micros=Sum("charge_micros"),
            tax_micros=Sum("tax_micros"),
            unit=Max("rate__unit"),
        )
        .order_by("category", "usage_type")
    )
    for row in rows:
        row["included"] = row["included"] or 0
        row["charged"] = (row["rated"] or 0) - row["included"]
        row["included_amount"] = micros_to_money(row["included_micros"] or 0)
        row["charge"] = micros_to_money(row["charge_micros"] or 0)
        row["tax"] = micros_to_money(row["tax_micros"] or 0)
    keys = ("records", "duration", "volume", "rated", "included", "charged", "included_micros", "charge_micros")
    overall = {key: sum(r[key] or 0 for r in rows) for key in (*keys, "tax_micros")}
    overall["included_amount"] = micros_to_money(overall["included_micros"])
    overall["charge"] = micros_to_money(overall["charge_micros"])
    overall["tax"] = micros_to_money(overall["tax_micros"])
    return rows, overall


USAGE_CSV_HEADER = [
    "usage_at",
    "record_id",
    "identifier",
    "category",
    "usage_type",
    "destination",
    "duration_s",
    "volume_bytes",
    "quantity",
    "rated_quantity",
    "included_quantity",
    "charged_quantity",
    "included_amount",
    "charge",
    "tax",
    "period_start",
    "late",
]


def usage_csv_rows(records):
    """The records as CSV rows, oldest first, streamed from the database in chunks."""
    yield USAGE_CSV_HEADER
    rows = records.select_related("period").order_by("usage_at", "id")
    for r in rows.iterator(chunk_size=5000):
        yield [
            r.usage_at.isoformat() if r.usage_at else "",
            csv_safe(r.record_id),
            csv_safe(r.identifier),
            r.category,
            csv_safe(r.usage_type),
            csv_safe(r.destination),
            plain(r.duration),
            plain(r.volume),
            plain(r.quantity),
            plain(r.rated_quantity),
            plain(r.included_quantity or Decimal(0)),
            plain(r.charged_quantity),
            r.included_amount,
            r.charge,
            r.tax,
            r.period.start_date.isoformat() if r.period_id else "",
            "yes" if r.is_late else "",
        ]
