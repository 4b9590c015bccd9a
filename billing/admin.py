import datetime as dt
from functools import partial

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import FieldDoesNotExist, PermissionDenied, ValidationError
from django.db import models
from django.db.models import Prefetch
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.html import format_html, format_html_join

from . import formatting, overlaps, selectors, services
from .admin_tools import (
    AuditedAdminMixin,
    BigTableAdminMixin,
    NonOverlappingInlineFormSet,
    PlainDecimalsMixin,
    ReadOnlyAdminMixin,
    message_user_validation_error,
)
from .models import (
    Account,
    AggregateCharge,
    AggregateTier,
    ApiToken,
    AuditEvent,
    Category,
    Charge,
    DestinationZone,
    Discount,
    Holiday,
    IncludedValue,
    IntegrationClient,
    Invoice,
    Plan,
    Product,
    Rate,
    RateCard,
    RateTier,
    Service,
    ServiceIdentifier,
    Subscription,
    SubscriptionPeriod,
    TaxRule,
    TimeBand,
    ZonePrefix,
)

# No list offers "delete selected": one click would remove rows that usage and invoices point at.
# A service or account is retired by its status; a single delete page is for a mistaken entry.
admin.site.disable_action("delete_selected")


PRECISE = 4  # decimals of a per-record figure (the default rate card's rounding)
USAGE_VIEWS = ("console:service_usage", "console:service_equipment_usage", "console:service_bolt_ons")


def usage_view_links(service_pk: int, labels, ids=("", "", "")):
    """A service's three usage views as links (its page says them in full, a list row briefly)."""
    return format_html_join(
        " · ",
        '<a href="{}"{}>{}</a>',
        (
            (reverse(name, args=[service_pk]), format_html(' id="{}"', i) if i else "", label)
            for name, label, i in zip(USAGE_VIEWS, labels, ids, strict=True)
        ),
    )


class TollgateModelAdmin(PlainDecimalsMixin, AuditedAdminMixin, admin.ModelAdmin):
    def get_changeform_initial_data(self, request):
        """Pre-filled forms (a suggested fix links to one): a date-time given as text in the query
        string becomes a date-time in the billing time zone, or is dropped if it is not one."""
        initial = super().get_changeform_initial_data(request)
        for name, value in list(initial.items()):
            try:
                field = self.model._meta.get_field(name)
            except FieldDoesNotExist:
                continue
            if isinstance(field, models.DateTimeField) and isinstance(value, str):
                try:
                    parsed = parse_datetime(value.replace("+", " ").strip())
                except ValueError:
                    parsed = None
                if parsed is None:
                    del initial[name]
                else:
                    initial[name] = parsed if timezone.is_aware(parsed) else timezone.make_aware(parsed)
        return initial


class BigTableAdmin(BigTableAdminMixin, TollgateModelAdmin):
    pass


class PeriodRangeForm(forms.Form):
    start = forms.DateField(label="From", widget=forms.DateInput(attrs={"type": "date"}))
    end = forms.DateField(label="To", widget=forms.DateInput(attrs={"type": "date"}))

    def clean(self):
        data = super().clean()
        if data.get("start") and data.get("end") and data["end"] < data["start"]:
            raise ValidationError("The end date must not be before the start date.")
        if data.get("start") and data.get("end") and (data["end"] - data["start"]).days > 3 * 366:
            raise ValidationError("Generate at most three years of periods at once.")
        return data


def generate_periods_action(model_admin, request, services_qs, title):
    """The intermediate page of the 'generate periods' action: ask for dates, then generate."""
    form = PeriodRangeForm(request.POST if "apply" in request.POST else None)
    if "apply" in request.POST and form.is_valid():
        try:
            created = services.do_generate_subscription_periods(
                request.user, start=form.cleaned_data["start"], end=form.cleaned_data["end"], services=services_qs
            )
        except ValidationError as exc:
            message_user_validation_error(model_admin, request, exc)
            return None
        model_admin.message_user(request, f"Generated {created} subscription periods.")
        return None
    if not form.is_bound:
        today = dt.date.today()
        form = PeriodRangeForm(initial={"start": today.replace(day=1), "end": today.replace(day=1)})
    return TemplateResponse(
        request,
        "admin/billing/generate_periods.html",
        {
            **model_admin.admin_site.each_context(request),
            "title": title,
            "form": form,
            "opts": model_admin.model._meta,
            "queryset": services_qs,
            "action": request.POST.get("action"),
            "select_across": request.POST.get("select_across", "0"),
            "selected": request.POST.getlist(admin.helpers.ACTION_CHECKBOX_NAME),
        },
    )


class AccountServiceInline(admin.TabularInline):
    model = Service
    fields = ("service_link", "sub_id", "service_type", "status")
    readonly_fields = fields
    extra = 0
    max_num = 0
    show_change_link = False
    can_delete = False

    @admin.display(description="Service ID")
    def service_link(self, obj):
        return format_html('<a href="{}">{}</a>', reverse("admin:billing_service_change", args=[obj.pk]), obj)


class RebalanceForm(forms.Form):
    on_date = forms.DateField(label="A date in the cycle", help_text="YYYY-MM-DD: the periods containing it.")
    service = forms.ModelChoiceField(queryset=Service.objects.none(), required=False, empty_label="All services")
    category = forms.ChoiceField(choices=[("", "All categories"), *Category.choices], required=False)

    def __init__(self, *args, account, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["service"].queryset = account.services.order_by("service_id")


@admin.register(Account)
class AccountAdmin(BigTableAdmin):
    list_display = ("number", "name", "status", "bill_day", "currency", "services_link")
    list_filter = ("status",)
    search_fields = ("number__istartswith", "name__istartswith")
    search_help_text = "Start of an account number or customer name; any case."
    inlines = [AccountServiceInline]
    readonly_fields = ("invoices_list",)
    change_form_template = "admin/billing/account/change_form.html"

    @admin.display(description="Services")
    def services_link(self, obj):
        return format_html(
            '<a href="{}?account__id__exact={}">Services</a> · <a href="{}?account__id__exact={}">Invoices</a>',
            reverse("admin:billing_service_changelist"),
            obj.pk,
            reverse("admin:billing_invoice_changelist"),
            obj.pk,
        )

    @admin.display(description="Invoices")
    def invoices_list(self, obj):
        """The latest twelve, newest first, each with its print view and PDF; the rest in the list."""
        if not obj.pk:
            return "-"
        invoices = list(obj.invoices.order_by("-cycle_start")[:12])
        if not invoices:
            return "No invoices yet."
        rows = format_html_join(
            "",
            '<tr><td><a href="{}">{}</a></td><td>{} – {}</td><td>{}</td><td class="number">{}</td>'
            '<td><a href="{}">Print</a> · <a href="{}">PDF</a></td></tr>',
            (
                (
                    reverse("admin:billing_invoice_change", args=[i.pk]),
                    i.number or "Draft",
                    i.cycle_start.isoformat(),
                    i.cycle_end.isoformat(),
                    i.get_status_display(),
                    formatting.micros(i.total_micros, i.currency),
                    reverse("admin:billing_invoice_print", args=[i.pk]),
                    reverse("admin:billing_invoice_pdf", args=[i.pk]),
                )
                for i in invoices
            ),
        )
        total = obj.invoices.count()
        return format_html(
            '<table id="account-invoices"><thead><tr><th>Invoice</th><th>Cycle</th><th>Status</th>'
            '<th class="number">Total</th><th>Documents</th></tr></thead><tbody>{}</tbody></table>'
            '<p><a href="{}?account__id__exact={}">All {} of this account</a></p>',
            rows,
            reverse("admin:billing_invoice_changelist"),
            obj.pk,
            formatting.plural(total, "invoice"),
        )

    def get_urls(self):
        return [
            path(
                "<int:pk>/rebalance/", self.admin_site.admin_view(self.rebalance_view), name="billing_account_rebalance"
            ),
            *super().get_urls(),
        ]

    def rebalance_view(self, request, pk):
        """Rebalance a cycle: the dry run first (old against new per record), then apply."""
        from console.tracking import RunBusy
        from usage.rebalance import do_rebalance, do_run_rebalance

        account = get_object_or_404(Account, pk=pk)
        if not self.has_view_permission(request, account):
            return redirect("admin:index")
        form = RebalanceForm(request.POST or None, account=account)
        result = None
        if request.method == "POST" and form.is_valid():
            apply = "apply" in request.POST
            if apply and not self.has_change_permission(request, account):
                raise PermissionDenied
            data = form.cleaned_data
            rebalance = do_run_rebalance if apply else partial(do_rebalance, dry_run=True)
            try:
                result = rebalance(
                    request.user, account, data["on_date"], service=data["service"], category=data["category"]
                )
            except ValidationError as exc:
                message_user_validation_error(self, request, exc)
            except RunBusy as exc:
                self.message_user(request, str(exc), level=messages.ERROR)
            else:
                if apply:
                    self.message_user(
                        request,
                        f"Rebalanced {formatting.plural(result.records, 'record')}: {result.changed} changed, total "
                        f"{formatting.money(result.old_total, account.currency, PRECISE)} -> "
                        f"{formatting.money(result.new_total, account.currency, PRECISE)}.",
                        level=messages.SUCCESS,
                    )
                    return redirect("admin:billing_account_change", account.pk)
        return TemplateResponse(
            request,
            "admin/billing/account/rebalance.html",
            {
                **self.admin_site.each_context(request),
                "title": f"Rebalance a cycle of {account}",
                "form": form,
                "result": result,
                "account": account,
                # Rebalance moves charges by fractions of a cent: shown at a card's usual 4 decimals.
                "precise": f"{account.currency}:{PRECISE}",
                "opts": self.model._meta,
                "can_apply": self.has_change_permission(request, account),
            },
        )


class IdentifierFormSet(NonOverlappingInlineFormSet):
    rule = overlaps.IDENTIFIER_OVERLAP


class PlanSubscriptionFormSet(NonOverlappingInlineFormSet):
    rule = overlaps.PLAN_OVERLAP


class PeriodFormSet(NonOverlappingInlineFormSet):
    rule = overlaps.PERIOD_OVERLAP


class ServiceIdentifierInline(admin.TabularInline):
    model = ServiceIdentifier
    formset = IdentifierFormSet
    fields = ("kind", "value", "active_from", "active_to")
    extra = 0


class SubscriptionInline(admin.TabularInline):
    model = Subscription
    formset = PlanSubscriptionFormSet
    fields = ("plan", "product", "starts_on", "ends_on", "quantity")
    extra = 0


class SubscriptionPeriodInline(admin.TabularInline):
    model = SubscriptionPeriod
    formset = PeriodFormSet
    fields = ("start_date", "end_date", "status")
    ordering = ("-start_date",)
    extra = 0


RATE_FIELDS = (
    "category",
    "usage_type",
    "destination_prefix",
    "zone",
    "destination_name",
    "time_band",
    "effective_from",
    "effective_to",
    "unit",
    "price_per_unit",
    "connect_fee",
    "first_increment",
    "increment",
    "minimum_charge",
    "maximum_charge",
    "tier_mode",
    "tier_scope",
)


class RateOverrideInline(PlainDecimalsMixin, admin.TabularInline):
    """Per-service prices: rates with the service set instead of a card; they beat every card."""

    model = Rate
    fk_name = "service"
    fields = RATE_FIELDS
    verbose_name = "rate override"
    verbose_name_plural = "rate overrides"
    extra = 0


@admin.register(Service)
class ServiceAdmin(BigTableAdmin):
    list_display = ("service_id", "identifier_shown", "sub_id", "account", "service_type", "status", "usage_row_links")
    list_filter = ("status", "service_type")
    list_select_related = ("account",)
    # Searching goes through get_search_results (indexed prefix ranges); declared for the box.
    search_fields = ("service_id",)
    search_help_text = (
        "Start of a service ID, sub ID, identifier (MSISDN, username...), account number or customer name; any case."
    )
    autocomplete_fields = ("account",)
    readonly_fields = ("usage_links",)
    inlines = [ServiceIdentifierInline, SubscriptionInline, SubscriptionPeriodInline, RateOverrideInline]

    @admin.display(description="Usage")
    def usage_links(self, obj):
        if not obj.pk:
            return "-"
        return usage_view_links(
            obj.pk,
            ("View Usage", "View Service & Equipment Usage", "Bolt-ons"),
            ("view-usage", "view-equipment-usage", "bolt-ons"),
        )

    actions = ["generate_periods"]

    def has_delete_permission(self, request, obj=None):
        """A service that was billed or has mediated usage is never deleted: set its status instead."""
        if obj is not None and selectors.service_has_history(obj):
            return False
        return super().has_delete_permission(request, obj)

    def get_search_results(self, request, queryset, search_term):
        """Prefix search (see selectors.services_matching); each row then shows the identifier
        the term matched, or its latest identifier."""
        term = search_term.strip()
        identifiers = ServiceIdentifier.objects.order_by("-active_from")
        if term:
            queryset = queryset & selectors.services_matching(term)
            if ServiceIdentifier.objects.filter(value__istartswith=term).exists():
                identifiers = identifiers.filter(value__istartswith=term)
        return queryset.prefetch_related(Prefetch("identifiers", queryset=identifiers, to_attr="shown")), False

    @admin.display(description="Identifier")
    def identifier_shown(self, obj):
        shown = getattr(obj, "shown", None)
        return shown[0].value if shown else ""

    @admin.display(description="Usage")
    def usage_row_links(self, obj):
        return usage_view_links(obj.pk, ("Usage", "Service & Equipment", "Bolt-ons"))

    @admin.action(description="Generate subscription periods…", permissions=["change"])
    def generate_periods(self, request, queryset):
        return generate_periods_action(self, request, queryset, "Generate subscription periods")


@admin.register(SubscriptionPeriod)
class SubscriptionPeriodAdmin(BigTableAdmin):
    list_display = ("service", "start_date", "end_date", "status")
    list_filter = ("status",)
    list_select_related = ("service",)
    search_fields = ("service__service_id__exact",)
    search_help_text = "Exact service ID."
    autocomplete_fields = ("service",)
    readonly_fields = ("starts_at", "ends_at")
    actions = ["close_periods", "reopen_periods", "run_main_billing"]

    @admin.action(description="Run Main Billing for the cycles of the selected periods")
    def run_main_billing(self, request, queryset):
        from .invoicing import request_main_billing

        if not request.user.has_perm("console.change_processrun"):
            raise PermissionDenied
        for cycle_start in sorted(set(queryset.values_list("start_date", flat=True))):
            try:
                run = request_main_billing(request.user, cycle_start)
            except ValidationError as exc:
                message_user_validation_error(self, request, exc)
                continue
            self.message_user(
                request,
                format_html(
                    'Main Billing for the cycle starting {}: <a href="{}">run {}</a> ({}).',
                    cycle_start,
                    reverse("console:run", args=[run.pk]),
                    run.pk,
                    run.get_status_display().lower(),
                ),
            )

    @admin.action(description="Close selected periods", permissions=["change"])
    def close_periods(self, request, queryset):
        self._set_status(request, queryset, SubscriptionPeriod.Status.CLOSED)

    @admin.action(description="Reopen selected periods", permissions=["change"])
    def reopen_periods(self, request, queryset):
        self._set_status(request, queryset, SubscriptionPeriod.Status.OPEN)

    def _set_status(self, request, queryset, status):
        try:
            changed = services.do_set_period_status(request.user, queryset, status)
        except ValidationError as exc:
            message_user_validation_error(self, request, exc)
            return
        self.message_user(request, f"{changed} periods set to {status}.")


@admin.register(ServiceIdentifier)
class ServiceIdentifierAdmin(BigTableAdmin):
    list_display = ("value", "kind", "service", "active_from", "active_to")
    list_filter = ("kind",)
    list_select_related = ("service",)
    search_fields = ("value__exact",)
    search_help_text = "Exact identifier value."
    autocomplete_fields = ("service",)


@admin.register(Subscription)
class SubscriptionAdmin(BigTableAdmin):
    list_display = ("service", "plan", "product", "quantity", "starts_on", "ends_on")
    list_select_related = ("service", "plan", "product")
    search_fields = ("service__service_id__exact",)
    search_help_text = "Exact service ID."
    autocomplete_fields = ("service",)
    list_filter = ("plan", "product")


class RateTierInline(PlainDecimalsMixin, admin.TabularInline):
    model = RateTier
    extra = 0


class RateInline(PlainDecimalsMixin, admin.TabularInline):
    model = Rate
    fk_name = "rate_card"
    fields = RATE_FIELDS
    extra = 0


@admin.register(RateCard)
class RateCardAdmin(TollgateModelAdmin):
    list_display = ("code", "name", "currency", "rounding_decimals", "rounding_mode", "split_time_bands", "is_default")
    search_fields = ("code", "name")
    inlines = [RateInline]


@admin.register(Rate)
class RateAdmin(TollgateModelAdmin):
    list_display = (
        "__str__",
        "rate_card",
        "service",
        "time_band",
        "effective_from",
        "effective_to",
        "connect_fee",
        "tier_mode",
    )
    list_filter = ("rate_card", "category", "time_band", "tier_mode")
    inlines = [RateTierInline]
    list_select_related = ("rate_card", "time_band", "service")
    autocomplete_fields = ("service",)
    search_fields = ("destination_prefix", "destination_name", "usage_type")


class IncludedValueInline(PlainDecimalsMixin, admin.TabularInline):
    model = IncludedValue
    fields = ("category", "usage_type", "zone", "quantity", "unit", "priority")
    extra = 0


class ZonePrefixInline(admin.TabularInline):
    model = ZonePrefix
    extra = 3


@admin.register(DestinationZone)
class DestinationZoneAdmin(TollgateModelAdmin):
    list_display = ("code", "name", "prefix_list")
    search_fields = ("code", "name", "prefixes__prefix")
    inlines = [ZonePrefixInline]

    @admin.display(description="Prefixes")
    def prefix_list(self, obj):
        return ", ".join(p.prefix for p in obj.prefixes.all())

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("prefixes")


class AggregateChargeLinkInline(admin.TabularInline):
    """A plan's or product's aggregate charges, each edited on its own page (it has tiers)."""

    model = AggregateCharge
    fields = ("code", "name", "aggregation", "field", "unit", "charge_model")
    readonly_fields = fields
    extra = 0
    show_change_link = True
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Plan)
class PlanAdmin(TollgateModelAdmin):
    list_display = ("code", "name", "rate_card", "monthly_fee", "is_active")
    list_filter = ("is_active",)
    search_fields = ("code", "name")
    inlines = [IncludedValueInline, AggregateChargeLinkInline]


@admin.register(Product)
class ProductAdmin(TollgateModelAdmin):
    list_display = ("code", "name", "kind", "charge_type", "price", "rate_card", "is_active")
    list_filter = ("kind", "charge_type", "is_active")
    search_fields = ("code", "name")
    inlines = [IncludedValueInline, AggregateChargeLinkInline]


class AggregateTierInline(PlainDecimalsMixin, admin.TabularInline):
    model = AggregateTier
    fields = ("from_quantity", "price_per_unit", "rate", "flat_fee", "block_size")
    extra = 0


@admin.register(AggregateCharge)
class AggregateChargeAdmin(TollgateModelAdmin):
    """Aggregate charges (docs/rating.md, section 8): the metric, the records it reads, the model."""

    list_display = ("code", "name", "plan", "product", "aggregation", "field", "unit", "charge_model")
    list_filter = ("charge_model", "aggregation")
    list_select_related = ("plan", "product")
    search_fields = ("code", "name")
    inlines = [AggregateTierInline]
    fieldsets = (
        (None, {"fields": ("code", "name", "plan", "product")}),
        ("Metric over the period", {"fields": ("aggregation", "field", "unit")}),
        ("Records it covers", {"fields": ("category", "usage_type", "zone", "filter_field", "filter_values")}),
        (
            "Charge model",
            {
                "fields": (
                    "charge_model",
                    "price_per_unit",
                    ("package_size", "free_units"),
                    ("rate", "fixed_fee"),
                    ("free_events", "free_amount"),
                    ("minimum_per_event", "maximum_per_event"),
                ),
                "description": "Graduated, volume and graduated percentage are priced by the tiers below; "
                "units below the first tier are free.",
            },
        ),
    )


@admin.register(Discount)
class DiscountAdmin(TollgateModelAdmin):
    list_display = ("__str__", "account", "service", "category", "kind", "effective_from", "effective_to")
    list_select_related = ("account", "service")
    autocomplete_fields = ("account", "service")
    list_filter = ("category", "kind")


@admin.register(TimeBand)
class TimeBandAdmin(TollgateModelAdmin):
    list_display = ("code", "name", "days", "starts", "ends")
    search_fields = ("code", "name")


@admin.register(Holiday)
class HolidayAdmin(TollgateModelAdmin):
    list_display = ("date", "name")


@admin.register(TaxRule)
class TaxRuleAdmin(TollgateModelAdmin):
    list_display = ("code", "name", "percent", "category", "is_default")


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdminMixin, BigTableAdminMixin, admin.ModelAdmin):
    list_display = ("created_at", "actor_label", "action", "object_type", "object_id", "summary")
    list_filter = ("object_type",)
    search_fields = ("object_id__exact", "actor_label__exact", "action__exact")
    search_help_text = "Exact object id, actor or action."
    readonly_fields = [f.name for f in AuditEvent._meta.fields]


class ChargeInline(admin.TabularInline):
    model = Charge
    fields = ("kind", "service", "description", "records_shown", "rated", "included", "amount_shown", "tax_shown")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._units = {}

    def _quantity(self, obj, value):
        from .documents import usage_units

        if value is None:
            return ""
        if obj.invoice_id not in self._units:
            self._units[obj.invoice_id] = usage_units(obj.invoice)
        unit = self._units[obj.invoice_id].get((obj.period_id, obj.category, obj.usage_type))
        return format_html('<span class="num">{}</span>', formatting.quantity(value, unit))

    @admin.display(description="Records")
    def records_shown(self, obj):
        return format_html('<span class="num">{}</span>', formatting.number(obj.records))

    @admin.display(description="Rated")
    def rated(self, obj):
        if obj.kind == Charge.Kind.AGGREGATE:  # the period's metric and how it was priced
            currency = obj.invoice.currency
            steps = format_html_join(
                "", "<br><small>{}</small>", ((formatting.breakdown_line(p, currency),) for p in obj.breakdown)
            )
            shown = formatting.aggregate_quantity(obj.quantity, obj.aggregate.unit, currency)
            return format_html('<span class="num">{}</span>{}', shown, steps)
        return self._quantity(obj, obj.rated_quantity)

    @admin.display(description="Included")
    def included(self, obj):
        return self._quantity(obj, obj.included_quantity)

    @admin.display(description="Amount")
    def amount_shown(self, obj):
        return format_html('<span class="num">{}</span>', formatting.micros(obj.amount_micros, obj.invoice.currency))

    @admin.display(description="Tax")
    def tax_shown(self, obj):
        return format_html('<span class="num">{}</span>', formatting.micros(obj.tax_micros, obj.invoice.currency))

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("service", "invoice", "aggregate")


@admin.register(Invoice)
class InvoiceAdmin(BigTableAdminMixin, admin.ModelAdmin):
    """Invoices are prepared by Main Billing and finalized here; their figures are never edited."""

    list_display = (
        "__str__",
        "account",
        "cycle_start",
        "cycle_end",
        "status",
        "records_shown",
        "subtotal_shown",
        "tax_shown",
        "total_shown",
        "usage_check",
    )
    list_filter = ("status", "cycle_start")
    list_select_related = ("account",)
    search_fields = ("number__exact", "account__number__exact")
    search_help_text = "Exact invoice number or account number."
    readonly_fields = (
        "account",
        "cycle_start",
        "cycle_end",
        "number",
        "status",
        "currency",
        "records_shown",
        "subtotal_shown",
        "tax_shown",
        "total_shown",
        "prepared_at",
        "finalized_at",
    )
    fields = ("documents", *readonly_fields)
    inlines = [ChargeInline]
    actions = ["finalize"]

    def get_readonly_fields(self, request, obj=None):
        return ("documents", *self.readonly_fields)

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("<int:pk>/print/", view(self.print_view), name="billing_invoice_print"),
            path("<int:pk>/pdf/", view(self.pdf_view), name="billing_invoice_pdf"),
            *super().get_urls(),
        ]

    def _invoice(self, request, pk):
        if not self.has_view_permission(request):
            raise PermissionDenied
        return get_object_or_404(Invoice.objects.select_related("account"), pk=pk)

    def print_view(self, request, pk):
        from .documents import invoice_html

        return HttpResponse(invoice_html(self._invoice(request, pk), request))

    def pdf_view(self, request, pk):
        from .documents import PdfUnavailable, invoice_filename, invoice_pdf

        invoice = self._invoice(request, pk)
        try:
            pdf = invoice_pdf(invoice)
        except PdfUnavailable as exc:
            self.message_user(request, f"{exc}. Use the print view and your browser's Save as PDF.", messages.ERROR)
            return redirect("admin:billing_invoice_print", invoice.pk)
        response = HttpResponse(pdf, content_type="application/pdf")
        response["Content-Disposition"] = f'attachment; filename="{invoice_filename(invoice)}"'
        return response

    @admin.display(description="Usage records", ordering="usage_records")
    def records_shown(self, obj):
        return format_html('<span class="num">{}</span>', formatting.number(obj.usage_records))

    @admin.display(description="Subtotal", ordering="subtotal_micros")
    def subtotal_shown(self, obj):
        return format_html('<span class="num">{}</span>', formatting.micros(obj.subtotal_micros, obj.currency))

    @admin.display(description="Tax", ordering="tax_micros")
    def tax_shown(self, obj):
        return format_html('<span class="num">{}</span>', formatting.micros(obj.tax_micros, obj.currency))

    @admin.display(description="Total", ordering="total_micros")
    def total_shown(self, obj):
        return format_html('<span class="num">{}</span>', formatting.micros(obj.total_micros, obj.currency))

    @admin.display(description="Documents")
    def documents(self, obj):
        if not obj.pk:
            return "-"
        return format_html(
            '<a href="{}" id="print-invoice">Print view</a> · <a href="{}" id="invoice-pdf">PDF</a>',
            reverse("admin:billing_invoice_print", args=[obj.pk]),
            reverse("admin:billing_invoice_pdf", args=[obj.pk]),
        )

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False  # figures come from Main Billing; the only change is finalizing

    def has_finalize_permission(self, request):
        return request.user.has_perm("billing.change_invoice")

    @admin.display(description="Usage")
    def usage_check(self, obj):
        from .invoicing import out_of_date

        if obj.status == Invoice.Status.FINAL:
            return "final"
        return "out of date" if out_of_date(obj) else ("current" if obj.prepared_at else "not prepared")

    @admin.action(
        description="Finalize selected draft invoices (marks their periods invoiced)", permissions=["finalize"]
    )
    def finalize(self, request, queryset):
        """First a confirmation page with each draft's totals and whether it can be finalized;
        then, confirmed, each draft is numbered (or refused with its reason)."""
        from .invoicing import do_finalize_invoice, out_of_date

        drafts = list(queryset.filter(status=Invoice.Status.DRAFT).select_related("account"))
        if request.POST.get("confirm") != "yes":
            rows = []
            for invoice in drafts:
                problem = "not prepared by Main Billing yet" if invoice.prepared_at is None else out_of_date(invoice)
                rows.append(
                    {
                        "invoice": invoice,
                        "problem": problem,
                        "subtotal": formatting.micros(invoice.subtotal_micros, invoice.currency),
                        "tax": formatting.micros(invoice.tax_micros, invoice.currency),
                        "total": formatting.micros(invoice.total_micros, invoice.currency),
                    }
                )
            return TemplateResponse(
                request,
                "admin/billing/invoice/finalize_confirmation.html",
                {
                    **self.admin_site.each_context(request),
                    "title": "Finalize invoices?",
                    "rows": rows,
                    "ready": sum(1 for row in rows if not row["problem"]),
                    "opts": self.model._meta,
                },
            )
        done = []
        for invoice in drafts:
            try:
                done.append(do_finalize_invoice(request.user, invoice).number)
            except ValidationError as exc:
                message_user_validation_error(self, request, exc)
        if done:
            self.message_user(request, f"Finalized {', '.join(done)}.", level=messages.SUCCESS)


class ApiTokenInline(admin.TabularInline):
    model = ApiToken
    fields = ("prefix", "created_at", "last_used_at", "revoked_at")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(IntegrationClient)
class IntegrationClientAdmin(admin.ModelAdmin):
    """API access: superusers issue and revoke tokens; a new key is shown once, in the message."""

    list_display = ("name", "user", "is_active", "created_at")
    readonly_fields = ("user", "created_at")
    fields = ("name", "is_active", "user", "created_at")
    inlines = [ApiTokenInline]
    actions = ["issue_token", "revoke_tokens"]

    def has_add_permission(self, request):
        return False  # created with `manage.py create_api_client`, which also makes its user and role

    @admin.action(description="Issue a new token (shown once)", permissions=["change"])
    def issue_token(self, request, queryset):
        from .api.auth import do_issue_token

        for client in queryset:
            key = do_issue_token(request.user, client)
            self.message_user(request, f"New token for {client}: {key} — copy it now, it is not shown again.")

    @admin.action(description="Revoke all tokens of the selected clients", permissions=["change"])
    def revoke_tokens(self, request, queryset):
        from .api.auth import do_revoke_tokens

        revoked = do_revoke_tokens(request.user, ApiToken.objects.filter(client__in=queryset))
        self.message_user(request, f"Revoked {formatting.plural(revoked, 'token')}.")
