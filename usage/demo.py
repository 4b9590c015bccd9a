"""The demo carrier's collector: the mapping of files written by `make_usage_file`."""

from .gates.parse import CORRECTION_FIELDS, FIELDS
from .models import UsageCollector

# make_usage_file names its columns after the fields; it writes no corrections.
DEMO_MAPPING = {field: field for field in FIELDS if field not in CORRECTION_FIELDS}
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
            "accept_negative": True,  # the demo carrier sends credit lines (make_usage_file --credits)
        },
    )
    return collector
