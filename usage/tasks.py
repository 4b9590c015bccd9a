"""django-q2 entry points: ids in, services do the work. Every task is safe to run twice."""

from .mediation import process_collector_queue
from .models import MediationFile


def process_collector(collector_id: int) -> int:
    return process_collector_queue(collector_id)


def sweep_collectors() -> int:
    """Start a worker for every collector with files waiting (a safety net for lost triggers)."""
    from .services import enqueue_collector

    waiting = (
        MediationFile.objects.filter(status__in=[MediationFile.Status.QUEUED, MediationFile.Status.PROCESSING])
        .values_list("collector_id", flat=True)
        .distinct()
    )
    ids = list(waiting)
    for collector_id in ids:
        enqueue_collector(collector_id)
    return len(ids)


def reprocess(run_id: int) -> str:
    """Work a queued Reprocess run (a selection of quarantined records)."""
    from .services import execute_reprocess

    run, outcome = execute_reprocess(run_id)
    return "not claimed" if run is None else f"{outcome['mediated']} of {outcome['records']} mediated"
