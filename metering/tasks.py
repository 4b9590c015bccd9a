"""django-q2 entry points for metering: ids in, services do the work; safe to run twice."""

from .models import Stream
from .services import StreamBusy, do_run_stream


def execute_stream(stream_id: int) -> int:
    """A scheduled execution; the records processed (0 when another execution is running)."""
    stream = Stream.objects.filter(pk=stream_id, is_active=True).first()
    if stream is None:
        return 0
    try:
        return do_run_stream(f"schedule {stream.code}", stream, trigger="schedule").records
    except StreamBusy:
        return 0
