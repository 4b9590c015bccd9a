"""Bucket: the service's subscription period containing the usage time. Usage for a closed or
invoiced period follows the collector's late-usage policy: quarantine, or roll into the next open
period of the service, flagged late."""

from .base import Gate

PRODUCES = ("period_id", "is_late")  # the record columns this gate sets


def gate(collector) -> Gate:
    next_open = (
        "(SELECT np.id FROM billing_subscriptionperiod np WHERE np.service_id = s.service_id "
        "AND np.status = 'open' AND np.starts_at > s.usage_at ORDER BY np.starts_at LIMIT 1)"
    )
    return Gate(
        name="bucket",
        produces=PRODUCES,
        steps=(
            (
                "p.id AS _found_period, p.status AS _found_status",
                "LEFT JOIN billing_subscriptionperiod p ON p.service_id = s.service_id "
                "AND p.starts_at <= s.usage_at AND p.ends_at > s.usage_at",
            ),
            (
                "CASE WHEN s._found_status = 'open' THEN s._found_period "
                f"WHEN s._found_period IS NOT NULL AND $late_policy = 'roll_forward' THEN {next_open} "
                "END AS period_id",
                "",
            ),
            (
                "CASE WHEN s.period_id IS NOT NULL AND s._found_status <> 'open' THEN TRUE ELSE FALSE END AS is_late",
                "",
            ),
        ),
        ok="period_id IS NOT NULL",
        reason="CASE WHEN _found_period IS NOT NULL THEN 'LATE_CLOSED_PERIOD' ELSE 'NO_PERIOD' END",
        message=(
            "CASE WHEN _found_period IS NOT NULL THEN 'The period containing ' || usage_at || ' is ' || "
            "_found_status || (CASE WHEN $late_policy = 'roll_forward' THEN ' and the service has no later open "
            "period' ELSE '' END) ELSE 'The service has no subscription period containing ' || usage_at END"
        ),
        params={"late_policy": collector.late_usage_policy if collector else "quarantine"},
    )
