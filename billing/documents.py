"""The printable invoice: one HTML page for the browser's print and, rendered by WeasyPrint, the
same page as a PDF. Figures come from the stored invoice and charges, formatted for display only."""

import dataclasses
from collections import defaultdict

from django.conf import settings
from django.db.models import Count
from django.template.loader import render_to_string
from django.utils import timezone

from . import formatting
from .models import Charge, Invoice


class PdfUnavailable(RuntimeError):
    """WeasyPrint or the system libraries it draws with (Pango) are missing."""


@dataclasses.dataclass
class Line:
    description: str
    kind: str
    period: str
    quantity: str
    records: str
    amount: str
    tax: str
    detail: list = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class ServiceLines:
    service: str
    lines: list
    amount: str


def usage_units(invoice: Invoice) -> dict:
    """The unit each usage charge is priced in, by (period, category, usage type): the unit of
    the rates its records were rated with (the most used one if several). A read of the invoice's
    own records, through the (service, usage time) index."""
    from usage.models import UsageRecord

    charges = invoice.charges.filter(kind=Charge.Kind.USAGE).exclude(period=None)
    periods = {c.period_id: c for c in charges.select_related("period")}
    if not periods:
        return {}
    first = min(c.period.starts_at for c in periods.values())
    last = max(c.period.ends_at for c in periods.values())
    rows = (
        UsageRecord.objects.filter(
            service_id__in={c.service_id for c in periods.values()},
            usage_at__gte=first,
            usage_at__lt=last,
            period_id__in=periods,
        )
        .values("period_id", "category", "usage_type", "rate__unit")
        .annotate(n=Count("pk"))
    )
    counted = defaultdict(dict)
    for row in rows:
        counted[(row["period_id"], row["category"], row["usage_type"])][row["rate__unit"]] = row["n"]
    return {key: max(units, key=units.get) for key, units in counted.items()}


def invoice_context(invoice: Invoice) -> dict:
    currency = invoice.currency
    units = usage_units(invoice)
    grouped = defaultdict(list)
    amounts = defaultdict(int)
    charges = invoice.charges.select_related("service", "period", "aggregate").order_by(
        "service__service_id", "kind", "pk"
    )
    for charge in charges:
        detail = []
        if charge.kind == Charge.Kind.AGGREGATE:
            quantity = formatting.aggregate_quantity(charge.quantity, charge.aggregate.unit, currency)
            detail = [formatting.breakdown_line(part, currency) for part in charge.breakdown]
        elif charge.kind == Charge.Kind.USAGE:
            unit = units.get((charge.period_id, charge.category, charge.usage_type))
            quantity = formatting.quantity(charge.rated_quantity, unit)
        else:
            quantity = formatting.plural(charge.days, "day") if charge.days else ""
        period = ""
        if charge.period_id:
            period = f"{charge.period.start_date.isoformat()} – {charge.period.end_date.isoformat()}"
        grouped[charge.service].append(
            Line(
                description=charge.description,
                kind=charge.get_kind_display(),
                period=period,
                quantity=quantity,
                records=formatting.number(charge.records)
                if charge.kind in (Charge.Kind.USAGE, Charge.Kind.AGGREGATE)
                else "",
                amount=formatting.micros(charge.amount_micros, currency),
                tax=formatting.micros(charge.tax_micros, currency),
                detail=detail,
            )
        )
        amounts[charge.service] += charge.amount_micros
    services = [
        ServiceLines(service=str(service), lines=lines, amount=formatting.micros(amounts[service], currency))
        for service, lines in grouped.items()
    ]
    return {
        "invoice": invoice,
        "account": invoice.account,
        "issuer": getattr(settings, "TOLLGATE_INVOICE_ISSUER", "Tollgate"),
        "is_draft": invoice.status == Invoice.Status.DRAFT,
        "services": services,
        "subtotal": formatting.micros(invoice.subtotal_micros, currency),
        "tax": formatting.micros(invoice.tax_micros, currency),
        "total": formatting.micros(invoice.total_micros, currency),
        "usage_records": formatting.number(invoice.usage_records),
        "issued": timezone.localtime(invoice.finalized_at) if invoice.finalized_at else None,
        "billing_tz": timezone.get_default_timezone_name(),
    }


def invoice_html(invoice: Invoice, request=None) -> str:
    return render_to_string("billing/invoice_print.html", invoice_context(invoice), request=request)


def invoice_filename(invoice: Invoice) -> str:
    name = invoice.number or f"draft-{invoice.account.number}-{invoice.cycle_start.isoformat()}"
    return "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in name) + ".pdf"


def invoice_pdf(invoice: Invoice) -> bytes:
    """The print page as a PDF. Everything it shows is inline (no fetched stylesheet or font)."""
    try:
        from weasyprint import HTML
    except (ImportError, OSError) as exc:
        raise PdfUnavailable(f"PDF rendering is not available on this server: {exc}") from exc
    return HTML(string=invoice_html(invoice)).write_pdf()
