"""Two collectors mediating at the same moment draw one allowance: together they never draw more
than it holds (batches that draw take turns), and a batch the database aborts is run again."""

import threading

import pytest
from django.db import connection

from usage.models import FileRecord, PeriodCounter, UsageCollector

from .conftest import receive
from .test_allowances import allowances  # noqa: F401 - the fixture
from .test_mediation import HEADER


@pytest.mark.django_db(transaction=True)
def test_two_collectors_at_once_never_draw_more_than_the_allowance(allowances):  # noqa: F811
    from usage.mediation import process_collector_queue

    allowances["customer"]("61400000010")  # 10 voice minutes included, 0.10/min after
    demo = allowances["collector"]
    second = UsageCollector.objects.create(
        code="SECOND",
        name="Second carrier",
        field_mapping=demo.field_mapping,
        category_rules=demo.category_rules,
        dedup_fields=demo.dedup_fields,
    )
    for collector, prefix in ((demo, "A"), (second, "B")):
        lines = [f"{prefix}{i},61400000010,2026-10-05T1{i}:00:00Z,120,,,612345,voice," for i in range(8)]
        received = receive(collector, HEADER + "\n".join(lines) + "\n", f"{prefix}.csv")
        assert received.status == "queued"
    start = threading.Barrier(2)
    errors = []

    def work(collector_id):
        try:
            start.wait()
            process_collector_queue(collector_id)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(c.pk,)) for c in (demo, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    records = FileRecord.objects.filter(identifier="61400000010")
    assert records.filter(status="mediated").count() == 16
    included = sum(r.included_quantity or 0 for r in records)
    counted = sum(PeriodCounter.objects.filter(kind="A").values_list("total", flat=True))
    assert included == counted == 600  # 10 minutes, not 10 per collector
    charged = sum(r.charge_micros for r in records)
    assert charged == (16 * 120 - 600) * 100_000 // 60  # the rest at 0.10/min, per second


def test_a_batch_aborted_by_a_deadlock_is_run_again(mediate, monkeypatch):
    from django.db import OperationalError

    from usage import pipeline

    real_intake = pipeline.intake
    calls = {"n": 0}

    class Deadlock(Exception):
        pgcode = "40P01"

    def flaky_intake(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            try:
                raise Deadlock("deadlock detected")
            except Deadlock as cause:
                raise OperationalError("deadlock detected") from cause
        return real_intake(*args, **kwargs)

    monkeypatch.setattr(pipeline, "intake", flaky_intake)
    from .test_mediation import GOLDEN

    mediation_file = mediate(GOLDEN)
    assert calls["n"] == 2
    assert mediation_file.status == "completed" and mediation_file.mediated == 8
    assert FileRecord.objects.filter(file=mediation_file).count() == 16  # once, not twice
