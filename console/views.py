"""Operator pages beside the admin: Collector Activity History, response files, View Usage."""

import csv

from django.contrib import admin
from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth.decorators import permission_required
from django.db.models import Count, Q, Sum
from django.http import StreamingHttpResponse
from django.shortcuts import get_object_or_404, render
from django.utils.dateparse import parse_datetime

from billing.models import Category, Service
from usage import selectors
from usage.models import MediationFile, UsageCollector


def page(request, template, context):
    """Console pages wear the admin's header, sidebar and titles."""
    return render(request, template, {**admin.site.each_context(request), **context})


class Echo:
    def write(self, value):
        return value


@staff_member_required
@permission_required("usage.view_mediationfile", raise_exception=True)
def collectors(request):
    rows = UsageCollector.objects.annotate(
        file_count=Count("files"),
        waiting=Count("files", filter=Q(files__status__in=["queued", "processing"])),
    ).order_by("code")
    return page(request, "console/collectors.html", {"collectors": rows, "title": "Collector Activity History"})


@staff_member_required
@permission_required("usage.view_mediationfile", raise_exception=True)
def collector_history(request, collector_id):
    collector = get_object_or_404(UsageCollector, pk=collector_id)
    files = collector.files.select_related("uploaded_by").order_by("-sequence")[:200]
    totals = collector.files.aggregate(
        lines=Sum("total_lines"), mediated=Sum("mediated"), quarantined=Sum("quarantined")
    )
    return page(
        request,
        "console/collector_history.html",
        {"collector": collector, "files": files, "totals": totals, "title": f"Collector Activity History: {collector}"},
    )


@staff_member_required
@permission_required("usage.view_mediationfile", raise_exception=True)
def response_file(request, file_id):
    mediation_file = get_object_or_404(MediationFile.objects.select_related("collector"), pk=file_id)
    writer = csv.writer(Echo())
    response = StreamingHttpResponse(
        (writer.writerow(row) for row in selectors.response_rows(mediation_file)), content_type="text/csv"
    )
    name = mediation_file.name.rsplit(".", 1)[0].replace('"', "")
    response["Content-Disposition"] = f'attachment; filename="{name}.response.csv"'
    return response


USAGE_VIEWS = {
    "usage": ("View Usage", [Category.TELEPHONY, Category.DATA]),
    "equipment": ("View Service & Equipment Usage", [Category.MISC]),
}


@staff_member_required
@permission_required("usage.view_usagerecord", raise_exception=True)
def service_usage(request, service_id, kind="usage"):
    service = get_object_or_404(Service.objects.select_related("account"), pk=service_id)
    title, categories = USAGE_VIEWS[kind]
    before = None
    if request.GET.get("before_at") and request.GET.get("before_id", "").isdigit():
        at = parse_datetime(request.GET["before_at"])
        if at is not None:
            before = (at, int(request.GET["before_id"]))
    rows = selectors.service_usage(service, categories=categories, before=before)
    more = len(rows) > 50
    rows = rows[:50]
    next_params = None
    if more:
        last = rows[-1]
        next_params = {"before_at": last.usage_at.isoformat(), "before_id": last.pk}
    return page(
        request,
        "console/service_usage.html",
        {
            "service": service,
            "rows": rows,
            "next_params": next_params,
            "title": f"{title}: {service}",
            "heading": title,
            "kind": kind,
        },
    )


@staff_member_required
@permission_required("metering.view_meter", raise_exception=True)
def stream_meters(request, stream_id):
    """Inspect: the meters of a stream's processor with key, period, value, last update and flush,
    filterable by meter type and key, newest update first, a page at a time."""
    from django.core.paginator import Paginator

    from metering.models import MeterType, Stream
    from metering.services import schedule_warnings

    stream = get_object_or_404(Stream, pk=stream_id)
    meters = stream.meters.select_related("meter_type").order_by("meter_type__code", "key")
    meter_type = request.GET.get("type", "")
    if meter_type:
        meters = meters.filter(meter_type__code=meter_type)
    key = request.GET.get("key", "").strip()
    if key:
        meters = meters.filter(key=key)
    page_obj = Paginator(meters, 100).get_page(request.GET.get("page"))
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
