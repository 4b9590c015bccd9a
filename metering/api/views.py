"""Meters over the API (read only): meter types, meters with current values, flushed readings."""

from rest_framework import serializers, viewsets

from metering.models import Meter, MeterReading, MeterType


class MeterTypeSerializer(serializers.ModelSerializer):
    class Meta:
        model = MeterType
        fields = ["id", "code", "name", "unit", "aggregation", "field", "reset", "cron", "time_zone"]
        read_only_fields = fields


class MeterSerializer(serializers.ModelSerializer):
    stream = serializers.SlugRelatedField(slug_field="code", read_only=True)
    meter_type = serializers.SlugRelatedField(slug_field="code", read_only=True)

    class Meta:
        model = Meter
        fields = [
            "id",
            "stream",
            "meter_type",
            "key",
            "period_start",
            "period_end",
            "value",
            "records",
            "latest_at",
            "updated_at",
            "last_flush_at",
        ]
        read_only_fields = fields


class MeterReadingSerializer(serializers.ModelSerializer):
    stream = serializers.SlugRelatedField(slug_field="code", read_only=True)
    meter_type = serializers.SlugRelatedField(slug_field="code", read_only=True)

    class Meta:
        model = MeterReading
        fields = ["id", "stream", "meter_type", "key", "period_start", "period_end", "value", "records", "flushed_at"]
        read_only_fields = fields


class MeterTypeViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = MeterType.objects.all()
    serializer_class = MeterTypeSerializer
    filterset_fields = ["code"]


class MeterViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = Meter.objects.select_related("stream", "meter_type")
    serializer_class = MeterSerializer
    filterset_fields = {"stream__code": ["exact"], "meter_type__code": ["exact"], "key": ["exact"]}


class MeterReadingViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = MeterReading.objects.select_related("stream", "meter_type")
    serializer_class = MeterReadingSerializer
    filterset_fields = {"stream__code": ["exact"], "meter_type__code": ["exact"], "key": ["exact"]}
