"""Main Billing waits for a Reprocess started by another operator: two real django-q2 workers."""

import datetime as dt

import pytest
from django.urls import reverse

from billing import invoicing
from billing.models import Invoice, ServiceIdentifier
from console.models import ProcessKind, ProcessRun, RunStatus
from usage import services
from usage.models import UsageRecord

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
    assert UsageRecord.objects.get(record_id="A9").status == "mediated"
    invoice = Invoice.objects.get(account=world["s2"].account, cycle_start=dt.date(2026, 10, 1))
    assert invoice.usage_records == 8
    assert ProcessRun.objects.filter(kind=ProcessKind.MAIN_BILLING).count() == 1
