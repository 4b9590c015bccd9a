"""Requests per integration client (or operator) per period: a runaway integration gets 429 with
`Retry-After` instead of crowding out the others. The rate is a setting, read per request."""

from django.conf import settings
from rest_framework.throttling import UserRateThrottle


class ClientRateThrottle(UserRateThrottle):
    scope = "client"

    def get_rate(self):
        """`TOLLGATE_API_RATE` ("3000/min" by default; empty turns throttling off)."""
        return getattr(settings, "TOLLGATE_API_RATE", "") or None


def document_throttling(result, generator, request, public):
    """Schema post-processing: every operation may answer 429 (the throttle applies to all)."""
    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            if isinstance(operation, dict) and "responses" in operation:
                operation["responses"].setdefault(
                    "429",
                    {"description": "Too many requests from this client: wait the seconds in Retry-After."},
                )
    return result
