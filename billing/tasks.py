"""django-q2 entry points for billing: ids in, services do the work; safe to run twice."""

from . import invoicing


def run_main_billing(run_id: int) -> str:
    """Work a queued Main Billing run; a run already finished or held by another worker is left alone."""
    run = invoicing.execute_main_billing(run_id)
    return run.status if run is not None else "not claimed"


def bill_ended_cycles() -> int:
    """Daily: queue Main Billing for every cycle that ended and was not billed since."""
    return len(invoicing.bill_ended_cycles("schedule: Main Billing"))
