"""Filters shared by the API's viewsets."""

import datetime as dt

from django.core.exceptions import ValidationError
from django.utils import timezone
from django_filters import rest_framework as filters
from django_filters.fields import IsoDateTimeField


class UtcIsoDateTimeField(IsoDateTimeField):
    """An ISO 8601 instant, sent to the database in UTC: ISO parsing accepts offsets up to ±23:59,
    PostgreSQL only up to ±15:59 (a query with +21:18 was a 500)."""

    def to_python(self, value):
        parsed = super().to_python(value)
        if parsed is None or not timezone.is_aware(parsed):
            return parsed
        try:
            return parsed.astimezone(dt.UTC)
        except OverflowError as exc:
            raise ValidationError("The instant is out of range.", code="invalid") from exc


class UtcIsoDateTimeFilter(filters.IsoDateTimeFilter):
    field_class = UtcIsoDateTimeField
