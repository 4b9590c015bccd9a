"""The demo's metering: two meter types and a stream, so meters fill in after `make run`."""

from .models import GuidingRule, MeterType, Stream


def ensure_demo_stream() -> Stream:
    """Idempotent: daily data volume and daily calls per service, by a batch stream every 5 minutes."""
    volume, _ = MeterType.objects.update_or_create(
        code="DATA_DAY",
        defaults={"name": "Data volume per day", "aggregation": "sum", "field": "volume", "unit": "bytes"},
    )
    calls, _ = MeterType.objects.update_or_create(
        code="CALLS_DAY", defaults={"name": "Calls per day", "aggregation": "count", "field": "", "unit": "calls"}
    )
    stream, _ = Stream.objects.update_or_create(
        code="DEMO", defaults={"name": "Demo usage meters", "mode": "batch", "every_minutes": 5}
    )
    rules = [
        ([["category", "=", "data"]], volume),
        ([["category", "=", "telephony"], ["usage_type", "=", "voice"]], calls),
    ]
    for position, (conditions, meter_type) in enumerate(rules, start=1):
        GuidingRule.objects.update_or_create(
            stream=stream,
            position=position,
            defaults={"conditions": conditions, "meter_type": meter_type, "key_fields": "service_id"},
        )
    return stream
