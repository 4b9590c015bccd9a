import io
import itertools
from decimal import Decimal

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from billing import formatting
from billing.admin_tools import AuditedAdminMixin, BigTableAdminMixin, ReadOnlyAdminMixin
from billing.models import plain
from console.tracking import RunBusy

from . import services
from .exports import streaming_csv
from .gates.parse import FileRejected, Parser
from .models import Correction, MediationFile, QuarantinedRecord, Reason, UsageCollector, UsageRecord
from .pipeline import STAGING_COLUMNS

PREVIEW_ROWS = 20


PREVIEW_COLUMNS = (
    ("line_no", "line"),
    ("record_key", "record key"),
    ("record_id", "record id"),
    ("identifier", "identifier"),
    ("usage_at", "usage at (UTC)"),
    ("usage_date", "usage date"),
    ("duration", "duration"),
    ("volume", "volume"),
    ("quantity", "quantity"),
    ("destination", "destination"),
    ("usage_type", "usage type"),
    ("amount_micros", "amount (micros)"),
    ("parse_error", "error"),
)


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("widget", MultipleFileInput())
        super().__init__(*args, **kwargs)

    def clean(self, data, initial=None):
        single = super().clean
        return [single(d, initial) for d in data] if isinstance(data, list | tuple) else [single(data, initial)]


class UploadForm(forms.Form):
    collector = forms.ModelChoiceField(queryset=UsageCollector.objects.filter(is_active=True))
    files = MultipleFileField(help_text="Several files at once are queued in the order shown.")


class PreviewForm(forms.ModelForm):
    sample = forms.FileField(help_text="A sample file; nothing is saved or mediated.")

    class Meta:
        model = UsageCollector
        fields = [
            "format",
            "encoding",
            "delimiter",
            "field_mapping",
            "time_format",
            "time_zone",
            "duration_unit",
            "volume_unit",
            "accept_negative",
            "fraction_rounding",
            "category_rules",
            "default_category",
            "dedup_fields",
        ]


@admin.register(UsageCollector)
class UsageCollectorAdmin(AuditedAdminMixin, admin.ModelAdmin):
    list_display = ("code", "name", "supplier", "format", "late_usage_policy", "is_active", "history_link")
    search_fields = ("code", "name", "supplier")
    readonly_fields = ("links", "lease_owner", "lease_until")

    @admin.display(description="Activity")
    def history_link(self, obj):
        return format_html(
            '<a href="{}">Collector Activity History</a> · <a href="{}">Mapping preview</a>',
            reverse("console:collector_history", args=[obj.pk]),
            reverse("admin:usage_collector_preview", args=[obj.pk]),
        )

    @admin.display(description="See also")
    def links(self, obj):
        if not obj.pk:
            return "Save the collector to preview its mapping."
        return self.history_link(obj)

    def get_urls(self):
        return [
            path("<int:pk>/preview/", self.admin_site.admin_view(self.preview_view), name="usage_collector_preview"),
            *super().get_urls(),
        ]

    def preview_view(self, request, pk):
        """Map a sample file with the collector's settings as edited here, without saving anything."""
        collector = get_object_or_404(UsageCollector, pk=pk)
        if not self.has_view_permission(request, collector):
            return redirect("admin:index")
        form = PreviewForm(request.POST or None, request.FILES or None, instance=collector)
        rows, error = [], None
        if request.method == "POST" and form.is_valid():
            draft = form.save(commit=False)  # not saved: only used to build the parser
            try:
                parser = Parser(draft, settings.TIME_ZONE)
                for row in parser.rows(io.BytesIO(form.cleaned_data["sample"].read())):
                    values = (row[STAGING_COLUMNS.index(name)] for name, _ in PREVIEW_COLUMNS)
                    rows.append([plain(v) if isinstance(v, Decimal) else v for v in values])
                    if len(rows) >= PREVIEW_ROWS:
                        break
            except FileRejected as exc:
                error = str(exc)
            collector.refresh_from_db()
        return TemplateResponse(
            request,
            "admin/usage/preview.html",
            {
                **self.admin_site.each_context(request),
                "title": f"Mapping preview: {collector}",
                "form": form,
                "rows": rows,
                "error": error,
                "collector": collector,
                "opts": self.model._meta,
                "columns": [label for _, label in PREVIEW_COLUMNS],
            },
        )


@admin.register(MediationFile)
class MediationFileAdmin(BigTableAdminMixin, admin.ModelAdmin):
    list_display = (
        "__str__",
        "status",
        "uploaded_at",
        "total_lines",
        "mediated",
        "quarantined",
        "duplicates",
        "rejected_lines",
        "void",
        "response_link",
    )
    list_filter = ("status", "collector")
    list_select_related = ("collector",)
    search_fields = ("name", "sha256__exact")
    readonly_fields = ["waiting_by_reason", *(f.name for f in MediationFile._meta.fields)]
    actions = ["retry_files", "skip_files"]

    @admin.display(description="Quarantine by reason")
    def waiting_by_reason(self, obj):
        """The file's waiting records per reason (its (file, line) index), each linking to them."""
        if not obj.pk:
            return "-"
        counts = (
            QuarantinedRecord.objects.filter(file_id=obj.pk, status=QuarantinedRecord.Status.QUARANTINED)
            .order_by()
            .values("reason")
            .annotate(n=Count("pk"))
            .order_by("-n")
        )
        url = reverse("admin:usage_quarantinedrecord_changelist")
        rows = format_html_join(
            ", ",
            '<a href="{}?file={}&amp;reason__exact={}"><span class="badge">{}</span> {}</a>',
            ((url, obj.pk, row["reason"], row["reason"], formatting.number(row["n"])) for row in counts),
        )
        return rows or "None: every line was mediated or is still to be processed."

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False  # a received file is history: its records point to it

    @admin.display(description="Response file")
    def response_link(self, obj):
        return format_html('<a href="{}">response.csv</a>', reverse("console:response_file", args=[obj.pk]))

    def get_urls(self):
        return [
            path("upload/", self.admin_site.admin_view(self.upload_view), name="usage_mediationfile_upload"),
            *super().get_urls(),
        ]

    def upload_view(self, request):
        if not request.user.has_perm("usage.add_mediationfile"):
            messages.error(request, "You may not upload files.")
            return redirect("admin:usage_mediationfile_changelist")
        limit = services.max_upload_bytes()
        if request.method == "POST" and int(request.META.get("CONTENT_LENGTH") or 0) > limit + (1 << 20):
            messages.error(request, services.upload_too_large_message(int(request.META["CONTENT_LENGTH"])))
            return redirect("admin:usage_mediationfile_upload")
        form = UploadForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            collector = form.cleaned_data["collector"]
            for upload in form.cleaned_data["files"]:
                if upload.size > limit:
                    messages.error(request, f"{upload.name}: refused. {services.upload_too_large_message(upload.size)}")
                    continue
                try:
                    received = services.do_receive_file(request.user, collector, upload.name, upload.file)
                except ValidationError as exc:
                    messages.error(request, f"{upload.name}: refused. {' '.join(exc.messages)}")
                else:
                    messages.success(request, f"{upload.name}: queued as #{received.sequence} of {collector.code}.")
            return redirect(reverse("console:collector_history", args=[collector.pk]))
        return TemplateResponse(
            request,
            "admin/usage/upload.html",
            {
                **self.admin_site.each_context(request),
                "title": "Upload usage files",
                "form": form,
                "opts": self.model._meta,
            },
        )

    @admin.action(description="Queue selected failed files again", permissions=["change"])
    def retry_files(self, request, queryset):
        retried = len(services.do_requeue_files(request.user, queryset))
        self.message_user(
            request, f"{formatting.plural(retried, 'failed file')} queued again; they resume after their last batch."
        )

    @admin.action(description="Skip selected failed files (later files go on)", permissions=["change"])
    def skip_files(self, request, queryset):
        for mediation_file in queryset.select_related("collector"):
            try:
                skipped = services.do_skip_file(request.user, mediation_file, "skipped from the file list")
            except ValidationError as exc:
                self.message_user(request, " ".join(exc.messages), messages.ERROR)
            else:
                self.message_user(request, f"{skipped}: {skipped.error.splitlines()[0]}", messages.WARNING)


class OutcomeFilter(admin.SimpleListFilter):
    """The three outcomes a file's counts keep apart: quarantined at a gate, duplicate, rejected."""

    title = "outcome"
    parameter_name = "outcome"
    FINAL = (Reason.DUPLICATE, Reason.PARSE_ERROR)

    def lookups(self, request, model_admin):
        return [("gate", "Quarantined at a gate"), ("duplicate", "Duplicate"), ("rejected", "Rejected line")]

    def queryset(self, request, queryset):
        if self.value() == "gate":
            return queryset.exclude(reason__in=self.FINAL)
        if self.value() == "duplicate":
            return queryset.filter(reason=Reason.DUPLICATE)
        if self.value() == "rejected":
            return queryset.filter(reason=Reason.PARSE_ERROR)
        return queryset


class FileFilter(admin.SimpleListFilter):
    """The 30 latest files: a filter over a small list, never over the big table."""

    title = "file"
    parameter_name = "file"

    def lookups(self, request, model_admin):
        return [(f.pk, str(f)) for f in MediationFile.objects.select_related("collector").order_by("-pk")[:30]]

    def queryset(self, request, queryset):
        if not self.value():
            return queryset
        if not self.value().isdigit() or int(self.value()) >= 2**63:
            raise IncorrectLookupParameters(f"file must be a file number, not {self.value()!r}")
        return queryset.filter(file_id=int(self.value()))


class UsageRecordAdminBase(BigTableAdminMixin, admin.ModelAdmin):
    list_display = ("line_no", "file_shown", "record_id", "identifier", "usage_at", "type_shown", "charge_shown")
    list_select_related = ("file", "file__collector", "rate__rate_card", "service__account")
    search_fields = ("identifier__exact", "record_id__exact")
    search_help_text = "Exact identifier or record id."
    readonly_fields = [f.name for f in UsageRecord._meta.fields]

    @admin.display(description="File", ordering="file_id")
    def file_shown(self, obj):
        return format_html(
            '<a href="{}" title="{}">#{}</a>',
            reverse("admin:usage_mediationfile_change", args=[obj.file_id]),
            obj.file.name,
            obj.file_id,
        )

    @admin.display(description="Type", ordering="category")
    def type_shown(self, obj):
        return f"{obj.category} · {obj.usage_type}" if obj.usage_type else obj.category

    @admin.display(description="Charge", ordering="charge_micros")
    def charge_shown(self, obj):
        """In the rate card's currency, at its decimals (a record's charge is rounded there)."""
        if obj.charge_micros is None:
            return ""
        card = obj.rate.rate_card if obj.rate_id and obj.rate and obj.rate.rate_card_id else None
        currency = card.currency if card else obj.service.account.currency if obj.service_id else ""
        decimals = obj.rate.charge_decimals if obj.rate_id and obj.rate else None
        shown = formatting.micros(obj.charge_micros, currency, 4 if decimals is None else decimals)
        return format_html('<span class="num">{}</span>', shown)

    @admin.display(description="Reason", ordering="reason")
    def reason_badge(self, obj):
        if not obj.reason:
            return ""
        return format_html('<span class="badge" title="{}">{}</span>', obj.get_reason_display(), obj.reason)

    @admin.display(description="Message")
    def message_short(self, obj):
        """The first words; the whole message is on the record's page (and in its tooltip)."""
        return format_html('<span class="truncate" title="{}">{}</span>', obj.message, obj.message)

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(QuarantinedRecord)
class QuarantinedRecordAdmin(UsageRecordAdminBase):
    list_display = (
        "line_no",
        "file_shown",
        "record_id",
        "identifier",
        "usage_at",
        "type_shown",
        "reason_badge",
        "message_short",
    )
    list_filter = (OutcomeFilter, "reason", "stage", "collector", FileFilter)
    actions = ["reprocess"]
    # Up to this many selected records are reprocessed while the operator waits; "select all" over
    # more is queued for a worker with the changelist's filters as its selection.
    REPROCESS_LIMIT = 10_000

    @staticmethod
    def selection_params(request) -> dict:
        get = request.GET
        return {
            "reason": get.get("reason__exact"),
            "stage": get.get("stage__exact"),
            "collector": get.get("collector__id__exact"),
            "file": get.get("file"),
        }

    change_form_template = "admin/usage/quarantinedrecord/change_form.html"
    change_list_template = "admin/usage/quarantinedrecord/change_list.html"
    EXPORT_COLUMNS = (
        "file_id", "line_no", "record_id", "identifier", "usage_at", "category", "usage_type", "destination",
        "duration", "volume", "quantity", "stage", "reason", "message",
    )  # fmt: skip

    def get_queryset(self, request):
        return super().get_queryset(request).filter(status=QuarantinedRecord.Status.QUARANTINED)

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("export.csv", view(self.export_view), name="usage_quarantinedrecord_export"),
            path("<int:pk>/reprocess/", view(self.reprocess_one_view), name="usage_quarantinedrecord_reprocess"),
            *super().get_urls(),
        ]

    def changelist_view(self, request, extra_context=None):
        """Above the list: how many records wait for each reason, within the list's filters."""
        response = super().changelist_view(request, extra_context)
        context = getattr(response, "context_data", None)
        if context and "cl" in context:
            counts = context["cl"].queryset.order_by().values("reason").annotate(n=Count("pk")).order_by("-n")
            params = request.GET.copy()
            rows = []
            for row in counts:
                params["reason__exact"] = row["reason"]
                rows.append({**row, "label": Reason(row["reason"]).label, "query": params.urlencode()})
            context["reason_counts"] = rows
            context["export_query"] = request.GET.urlencode()
        return response

    def change_view(self, request, object_id, form_url="", extra_context=None):
        from .fixes import suggested_fix

        record = self.get_object(request, object_id)
        extra = {**(extra_context or {})}
        if record is not None:
            extra["fix"] = suggested_fix(record)
            extra["can_reprocess"] = self.has_change_permission(request, record)
        return super().change_view(request, object_id, form_url, extra)

    def export_view(self, request):
        """The list as CSV, with its filters and search: every matching record, streamed."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        records = self.get_changelist_instance(request).queryset.order_by("file_id", "line_no")
        rows = records.values_list(*self.EXPORT_COLUMNS)
        return streaming_csv(itertools.chain([self.EXPORT_COLUMNS], rows.iterator(chunk_size=5000)), "quarantine.csv")

    def reprocess_one_view(self, request, pk):
        record = get_object_or_404(self.get_queryset(request), pk=pk)
        if request.method != "POST" or not self.has_change_permission(request, record):
            raise PermissionDenied
        try:
            run, outcome = services.do_reprocess_now(request.user, {"ids": [record.pk]})
        except RunBusy as exc:
            self.message_user(request, str(exc), level=messages.ERROR)
            return redirect("admin:usage_quarantinedrecord_change", record.pk)
        if outcome["mediated"]:
            self.message_user(
                request,
                f"Line {record.line_no} of file #{record.file_id} is mediated now (run {run.pk}).",
                level=messages.SUCCESS,
            )
            return redirect(f"{reverse('admin:usage_quarantinedrecord_changelist')}?file={record.file_id}")
        still = QuarantinedRecord.objects.filter(file_id=record.file_id, line_no=record.line_no).first()
        reason = f": {still.get_reason_display()} — {still.message}" if still else ""
        self.message_user(request, f"Still quarantined{reason}", level=messages.WARNING)
        return redirect("admin:usage_quarantinedrecord_change", still.pk if still else record.pk)

    @admin.action(description="Reprocess selected records", permissions=["change"])
    def reprocess(self, request, queryset):
        final = queryset.filter(reason__in=[Reason.DUPLICATE, Reason.PARSE_ERROR]).count()
        ids = list(queryset.values_list("pk", flat=True)[: self.REPROCESS_LIMIT + 1])
        if len(ids) > self.REPROCESS_LIMIT:
            run = services.queue_reprocess(request.user, self.selection_params(request))
            self.message_user(
                request,
                format_html(
                    'Reprocess of more than {} records queued as <a href="{}">run {}</a>.',
                    self.REPROCESS_LIMIT,
                    reverse("console:run", args=[run.pk]),
                    run.pk,
                ),
            )
            return
        try:
            run, outcome = services.do_reprocess_now(request.user, {"ids": ids})
        except RunBusy as exc:
            self.message_user(request, str(exc), level=messages.ERROR)
            return
        self.message_user(
            request,
            format_html(
                'Reprocessed {}: {} mediated, {} still quarantined (<a href="{}">run {}</a>).',
                formatting.plural(outcome["records"], "record"),
                outcome["mediated"],
                outcome["quarantined"],
                reverse("console:run", args=[run.pk]),
                run.pk,
            ),
        )
        if final:
            self.message_user(
                request,
                f"{formatting.plural(final, 'duplicate or unparseable record')} left alone: a duplicate is "
                "never billed, and a line that could not be parsed is fixed by sending a "
                "corrected file.",
                level=messages.WARNING,
            )


@admin.register(UsageRecord)
class UsageRecordAdmin(UsageRecordAdminBase):
    list_filter = ("category", "collector")

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Correction)
class CorrectionAdmin(ReadOnlyAdminMixin, BigTableAdminMixin, admin.ModelAdmin):
    """Every correction line and what became of it: read only (a correction is made by sending one)."""

    list_display = ("line_shown", "action", "record_key", "state", "original_shown", "message", "applied_at")
    list_filter = ("state", "action", "collector", FileFilter)
    search_fields = ("record_key",)
    list_select_related = ("file", "collector")
    readonly_fields = [f.name for f in Correction._meta.fields]

    @admin.display(description="correcting line", ordering="file_id")
    def line_shown(self, obj):
        return f"file {obj.file_id} line {obj.line_no}"

    @admin.display(description="corrected record")
    def original_shown(self, obj):
        if obj.original_file_id is None:
            return "—"
        return f"file {obj.original_file_id} line {obj.original_line}"
