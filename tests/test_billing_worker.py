"""Main Billing waits for a Reprocess started by another operator: two real django-q2 workers."""

import datetime as dt
import io

import pytest
from django.urls import reverse

from billing import invoicing
from billing.models import Invoice, ServiceIdentifier
from console.models import ProcessKind, ProcessRun, RunStatus
from usage import services
from usage.models import FileRecord

from .conftest import aware
from .test_mediation import GOLDEN
from .test_worker import start_cluster, stop, wait_for


def status_of(run):
    run.refresh_from_db()
    return run.status


@pytest.mark.django_db(transaction=True)
def test_main_billing_waits_for_another_operators_reprocess(world, mediate, operator, client, monkeypatch):
    from django_q.conf import Conf

    mediate(GOLDEN)
    monkeypatch.setattr(Conf, "SYNC", False)  # from here on, tasks go to the cluster's workers
    ServiceIdentifier.objects.create(service=world["s2"], value="61499999999", active_from=aware(2026, 1, 1))
    client.force_login(operator)
    cluster = start_cluster(TOLLGATE_TEST_PAUSE="reprocess:5", TOLLGATE_BILLING_WAIT_POLL="0.2")
    try:
        reprocess = services.queue_reprocess("alice", {"reason": "NO_SERVICE"})
        wait_for(lambda: status_of(reprocess) == RunStatus.RUNNING, 60, "alice's reprocess to start")
        billing = invoicing.request_main_billing("bob", dt.date(2026, 10, 1))
        wait_for(lambda: status_of(billing) == RunStatus.WAITING, 30, "Main Billing to wait")
        assert billing.waiting_for == f"Reprocess run {reprocess.pk} started by alice"
        assert status_of(reprocess) == RunStatus.RUNNING
        overview = client.get(reverse("console:overview"), {"fragment": "1"}).content.decode()
        assert f"Waiting for Reprocess run {reprocess.pk} started by alice" in overview
        assert billing.activities.filter(status="pending").count() == len(invoicing.ACTIVITIES)

        wait_for(lambda: status_of(billing) in (RunStatus.COMPLETED, RunStatus.FAILED), 60, "Main Billing to end")
    finally:
        stop(cluster)
    assert billing.status == RunStatus.COMPLETED, billing.error
    reprocess.refresh_from_db()
    assert reprocess.status == RunStatus.COMPLETED
    assert reprocess.activities.get().detail == "1 mediated, 0 still quarantined"
    first_activity = billing.activities.order_by("position").first()
    assert first_activity.started_at >= reprocess.finished_at  # nothing ran while Reprocess did
    assert billing.started_at < reprocess.finished_at  # both held a worker at once: billing was waiting
    assert FileRecord.objects.get(record_id="A9").status == "mediated"
    invoice = Invoice.objects.get(account=world["s2"].account, cycle_start=dt.date(2026, 10, 1))
    assert invoice.usage_records == 8
    assert ProcessRun.objects.filter(kind=ProcessKind.MAIN_BILLING).count() == 1


@pytest.mark.django_db(transaction=True)
def test_main_billing_waits_for_files_still_being_mediated(world, mediate, monkeypatch):
    """A file of the cycle is mid-way through mediation when Main Billing starts: billing waits,
    shown as waiting, and its drafts then hold every record of the file."""
    from django_q.conf import Conf

    from usage.models import MediationFile

    from .test_mediation import HEADER, T

    mediate(GOLDEN)
    monkeypatch.setattr(Conf, "SYNC", False)
    late = HEADER + "".join(f"W{i},61400000002,{T},61,,,4410000000,voice,\n" for i in range(40))
    cluster = start_cluster(batch=10, TOLLGATE_TEST_PAUSE="mediation:1", TOLLGATE_BILLING_WAIT_POLL="0.2")
    try:
        received = services.do_receive_file("test", world["collector"], "late.csv", io.BytesIO(late.encode()))
        wait_for(lambda: MediationFile.objects.get(pk=received.pk).status == "processing", 60, "the file to start")
        billing = invoicing.request_main_billing("bob", dt.date(2026, 10, 1))
        wait_for(lambda: status_of(billing) == RunStatus.WAITING, 30, "Main Billing to wait")
        assert billing.waiting_for == "mediation of 1 file received before this run: DEMO #2 late.csv"
        wait_for(lambda: status_of(billing) in (RunStatus.COMPLETED, RunStatus.FAILED), 90, "Main Billing to end")
    finally:
        stop(cluster)
    assert billing.status == RunStatus.COMPLETED, billing.error
    received.refresh_from_db()
    assert received.status == "completed" and received.mediated == 40
    assert billing.activities.order_by("position").first().started_at >= received.finished_at
    invoice = Invoice.objects.get(account=world["s2"].account, cycle_start=dt.date(2026, 10, 1))
    assert invoice.usage_records == 7 + 40 and invoicing.out_of_date(invoice) is None


@pytest.mark.django_db(transaction=True)
def test_concurrent_finalizes_get_sequential_gapless_numbers(make_service):
    """Eight operators finalize eight drafts at once: numbers 1-8, each once (PostgreSQL locks the
    series' counter row until each finalizing transaction ends)."""
    import threading

    from django.db import connection

    from billing.models import SubscriptionPeriod, TaxRule

    if connection.vendor != "postgresql":
        pytest.skip("concurrent writers: SQLite has one writer at a time")
    TaxRule.objects.create(code="GST", name="GST", percent=10, is_default=True)
    for _ in range(8):
        service = make_service()
        SubscriptionPeriod.objects.create(
            service=service, start_date=dt.date(2026, 10, 1), end_date=dt.date(2026, 10, 31)
        )
    run = invoicing.request_main_billing("test", dt.date(2026, 10, 1))
    invoicing.execute_main_billing(run.pk)
    drafts = list(Invoice.objects.filter(status="draft"))
    assert len(drafts) == 8
    barrier = threading.Barrier(len(drafts))
    errors = []

    def finalize(invoice):
        try:
            barrier.wait()
            invoicing.do_finalize_invoice("test", invoice)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=finalize, args=(invoice,)) for invoice in drafts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    numbers = sorted(Invoice.objects.values_list("number", flat=True))
    assert numbers == [f"INV-{n:08d}" for n in range(1, 9)]
