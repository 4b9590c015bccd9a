"""Identify: the service whose identifier was active at the usage time."""

from .base import Gate

PRODUCES = ("service_id", "account_id")  # the record columns this gate sets

GATE = Gate(
    name="identify",
    produces=PRODUCES,
    steps=(
        (
            "i.service_id AS service_id, sv.account_id AS account_id",
            "LEFT JOIN billing_serviceidentifier i ON i.value = s.identifier AND i.active_from <= s.usage_at "
            "AND (i.active_to IS NULL OR i.active_to > s.usage_at) "
            "LEFT JOIN billing_service sv ON sv.id = i.service_id",
        ),
    ),
    ok="service_id IS NOT NULL",
    reason="'NO_SERVICE'",
    message="'No service has identifier ' || identifier || ' active at ' || usage_at",
)
