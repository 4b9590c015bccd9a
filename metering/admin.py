"""Design objects of metering in the admin: meter types, streams with their guiding rules, and
read-only meters, readings and executions. Preview and Inspect pages hang off the stream."""

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from billing.admin import BigTableAdmin, TollgateModelAdmin

from . import selectors, services
from .models import GuidingRule, Meter, MeterReading, MeterType, Stream, StreamExecution


@admin.register(MeterType)
class MeterTypeAdmin(TollgateModelAdmin):
    list_display = ("code", "name", "aggregation", "field", "unit", "reset", "cron", "time_zone")
    search_fields = ("code", "name")


class GuidingRuleInline(admin.TabularInline):
    model = GuidingRule
    extra = 1


class PreviewForm(forms.Form):
    last = forms.IntegerField(
        label="Last mediated records", min_value=1, max_value=100_000, initial=100, help_text="Sample size."
    )


@admin.register(Stream)
class StreamAdmin(TollgateModelAdmin):
    list_display = ("code", "name", "mode", "flush", "every_minutes", "is_active", "watermark", "links")
    search_fields = ("code", "name")
    readonly_fields = ("watermark",)
    inlines = [GuidingRuleInline]
    actions = ["execute_now"]

    @admin.display(description="")
    def links(self, obj):
        return format_html(
            '<a href="{}">Inspect</a> · <a href="{}">Preview</a>',
            reverse("console:stream_meters", args=[obj.pk]),
            reverse("admin:metering_stream_preview", args=[obj.pk]),
        )

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        for warning in services.schedule_warnings(form.instance):
            messages.warning(request, warning)

    @admin.action(description="Execute the selected streams now", permissions=["change"])
    def execute_now(self, request, queryset):
        for stream in queryset:
            try:
                execution = services.do_run_stream(request.user, stream, trigger="admin")
            except services.StreamBusy as exc:
                messages.error(request, str(exc))
            else:
                messages.success(
                    request,
                    f"{stream.code}: {execution.records} records, {execution.meter_updates} meters updated, "
                    f"{execution.flushed} flushed.",
                )

    def get_urls(self):
        return [
            path("<int:pk>/preview/", self.admin_site.admin_view(self.preview_view), name="metering_stream_preview"),
            *super().get_urls(),
        ]

    def preview_view(self, request, pk):
        """Run the guiding rules on a sample and show which meters would change; writes nothing."""
        stream = get_object_or_404(Stream, pk=pk)
        if not self.has_view_permission(request, stream):
            raise PermissionDenied
        form = PreviewForm(request.POST or None)
        changes = None
        if request.method == "POST" and form.is_valid():
            changes = services.preview_rules(stream, last=form.cleaned_data["last"])
        context = {
            **self.admin_site.each_context(request),
            "title": f"Preview guiding rules: {stream}",
            "opts": self.model._meta,
            "original": stream,
            "form": form,
            "changes": changes,
        }
        return TemplateResponse(request, "admin/metering/stream/preview.html", context)

    def response_change(self, request, obj):
        if "_inspect" in request.POST:
            return redirect("console:stream_meters", obj.pk)
        return super().response_change(request, obj)


class LabelledKeysChangeList(ChangeList):
    def get_results(self, request):
        super().get_results(request)
        self.result_list = selectors.label_keys(self.result_list)


class ReadOnlyAdmin(BigTableAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class MeterKeysAdmin(ReadOnlyAdmin):
    """Keys read as service and account numbers; the search takes a key, a service ID or an
    account number."""

    list_filter = ("stream", "meter_type")
    search_fields = ("key__exact",)
    search_help_text = "A meter key, service ID or account number."

    def get_changelist(self, request, **kwargs):
        return LabelledKeysChangeList

    def get_search_results(self, request, queryset, search_term):
        if not search_term.strip():
            return queryset, False
        return queryset.filter(selectors.key_filter(search_term)), False

    @admin.display(description="Key", ordering="key")
    def key_shown(self, obj):
        return getattr(obj, "key_shown", obj.key)


@admin.register(Meter)
class MeterAdmin(MeterKeysAdmin):
    list_display = ("meter_type", "key_shown", "stream", "period_start", "period_end", "value", "records", "updated_at")


@admin.register(MeterReading)
class MeterReadingAdmin(MeterKeysAdmin):
    list_display = ("meter_type", "key_shown", "stream", "period_start", "period_end", "value", "records", "flushed_at")


@admin.register(StreamExecution)
class StreamExecutionAdmin(ReadOnlyAdmin):
    list_display = (
        "stream",
        "status",
        "trigger",
        "started_at",
        "finished_at",
        "records",
        "records_per_second",
        "meter_updates",
        "flushed",
    )
    list_filter = ("stream", "status")
