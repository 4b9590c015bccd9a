"""Admin building blocks shared by every Tollgate app: audited saves, a paginator that does
not count big tables, and inline formsets that check time-range overlaps between their rows."""

from decimal import Decimal

from django import forms
from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters, messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db import connections, models
from django.forms.models import BaseInlineFormSet
from django.utils.functional import cached_property

from . import audit
from .models import plain


class PlainDecimalField(forms.DecimalField):
    """A decimal input showing the stored value without its column's trailing zeros (an increment
    of 60, not 60.000; a price of 0.1, not 0.1000000000); what is saved is unchanged."""

    def prepare_value(self, value):
        return plain(value) if isinstance(value, Decimal) else super().prepare_value(value)


class PlainDecimalsMixin:
    """Admins and inlines whose decimal inputs show plain figures (PlainDecimalField)."""

    formfield_overrides = {models.DecimalField: {"form_class": PlainDecimalField}}


class EstimatedCountPaginator(Paginator):
    """On PostgreSQL, an unfiltered list of a big table uses the planner's row estimate
    instead of COUNT(*), which reads the whole table."""

    exact_below = 50_000

    @cached_property
    def count(self):
        qs = self.object_list
        connection = connections[qs.db]
        if connection.vendor == "postgresql" and not qs.query.where:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass", [qs.model._meta.db_table]
                )
                row = cursor.fetchone()
            if row and row[0] >= self.exact_below:
                return row[0]
        return super().count


class ReadOnlyAdminMixin:
    """A record kept as history: looked at, never added, changed or deleted by hand."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class BigTableAdminMixin:
    """Keeps a changelist fast at millions of rows: no full count, no facets."""

    paginator = EstimatedCountPaginator
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    list_per_page = 50

    def get_changelist_instance(self, request):
        try:
            return super().get_changelist_instance(request)
        except OverflowError as exc:  # a lookup beyond 64 bits (SQLite refuses to bind it): the admin's ?e=1
            raise IncorrectLookupParameters(exc) from exc


class AuditedAdminMixin:
    """Every admin write leaves an audit row with the fields before and after."""

    def save_model(self, request, obj, form, change):
        before = audit.snapshot(type(obj)._default_manager.filter(pk=obj.pk).first()) if change else None
        super().save_model(request, obj, form, change)
        action = f"{obj._meta.model_name}.{'change' if change else 'add'}"
        audit.record(request.user, action, obj, before=before or {}, after=audit.snapshot(obj))

    def save_formset(self, request, form, formset, change):
        befores = {
            f.instance.pk: audit.snapshot(type(f.instance)._default_manager.filter(pk=f.instance.pk).first())
            for f in formset.forms
            if f.instance.pk and f.has_changed()
        }
        super().save_formset(request, form, formset, change)
        for obj in formset.new_objects:
            audit.record(request.user, f"{obj._meta.model_name}.add", obj, before={}, after=audit.snapshot(obj))
        for obj, _fields in formset.changed_objects:
            audit.record(
                request.user,
                f"{obj._meta.model_name}.change",
                obj,
                before=befores.get(obj.pk, {}),
                after=audit.snapshot(obj),
            )
        for obj in formset.deleted_objects:
            audit.record(
                request.user,
                f"{obj._meta.model_name}.delete",
                object_type=obj._meta.label_lower,
                object_id=str(obj.pk),
                summary=str(obj)[:300],
            )

    def delete_model(self, request, obj):
        snap, label, pk, text = audit.snapshot(obj), obj._meta.label_lower, str(obj.pk), str(obj)
        super().delete_model(request, obj)
        audit.record(
            request.user,
            f"{obj._meta.model_name}.delete",
            object_type=label,
            object_id=pk,
            summary=text[:300],
            before=snap,
            after={},
        )

    def delete_queryset(self, request, queryset):
        rows = [(str(o.pk), str(o)) for o in queryset]
        name, label = queryset.model._meta.model_name, queryset.model._meta.label_lower
        super().delete_queryset(request, queryset)
        for pk, text in rows:
            audit.record(request.user, f"{name}.delete", object_type=label, object_id=pk, summary=text[:300])


class NonOverlappingInlineFormSet(BaseInlineFormSet):
    """Checks the rule between the rows of one form too: each row's own `clean()` only sees
    rows already saved, so two new overlapping rows would otherwise reach the database."""

    rule = None  # an OverlapRule

    def clean(self):
        super().clean()
        kept = []
        for form in self.forms:
            data = getattr(form, "cleaned_data", None) or {}
            if data.get("DELETE") or (not data and not form.instance.pk):
                continue  # a deleted row, or an untouched extra form
            kept.append(form.instance)
        for i, a in enumerate(kept):
            for b in kept[i + 1 :]:
                if _overlap(self.rule, a, b):
                    raise ValidationError(f"{self.rule.message} Rows {a} and {b} overlap.")


def _overlap(rule, a, b) -> bool:
    """Whether two unsaved rows clash under `rule` (the Python twin of the database check)."""
    if any(getattr(a, k) != getattr(b, k) for k in rule.keys):
        return False
    if rule.only_when and (getattr(a, rule.only_when) is None or getattr(b, rule.only_when) is None):
        return False
    a0, a1, b0, b1 = (getattr(a, rule.start), getattr(a, rule.end), getattr(b, rule.start), getattr(b, rule.end))
    if a0 is None or b0 is None:
        return False
    if rule.end_inclusive:
        return (a1 is None or a1 >= b0) and (b1 is None or b1 >= a0)
    return (a1 is None or a1 > b0) and (b1 is None or b1 > a0)


def message_user_validation_error(model_admin, request, exc: ValidationError):
    model_admin.message_user(request, " ".join(exc.messages), level=messages.ERROR)
