"""The demo carrier's collector: the mapping of files written by `make_usage_file`."""

from .models import UsageCollector

DEMO_MAPPING = {
    f: f
    for f in (
        "record_id",
        "identifier",
        "start_time",
        "duration",
        "volume",
        "quantity",
        "destination",
        "usage_type",
        "amount",
    )
}
DEMO_RULES = {"voice": "telephony", "sms": "telephony", "mms": "telephony", "data": "data"}


def ensure_demo_collector() -> UsageCollector:
    collector, _ = UsageCollector.objects.update_or_create(
        code="DEMO",
        defaults={
            "name": "Demo carrier usage",
            "supplier": "Demo Carrier Pty Ltd",
            "format": UsageCollector.Format.CSV_HEADER,
            "delimiter": ",",
            "field_mapping": DEMO_MAPPING,
            "time_format": "iso",
            "time_zone": "UTC",
            "category_rules": DEMO_RULES,
            "default_category": "misc",
            "dedup_fields": ["record_id"],
        },
    )
    return collector
