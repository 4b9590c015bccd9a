"""Main Billing Processing on the golden world of tests/test_mediation.py, cycle 2026-10-01.

Worked by hand (GST 10 % default rule; recurring and one-time charges round half-up to cents):

account T00001 (s1): usage A1 0.6000 + tax 0.0600; plan P 30.00 (whole period) + tax 3.00
    subtotal 30.600000, tax 3.060000, total 33.660000
account T00002 (s2): usage A2–A8 19.127378 + tax 1.9128, and A9 0.5000 + 0.0500 once its
    identifier exists (Reprocess activity) → usage 19.627378, tax 1.9628;
    bolt-on "Data 1GB" 10.00 from 2026-10-11: 21/31 days → 6.774… → 6.77, tax 0.677 → 0.68;
    OTC modem 99.95, tax 9.995 → 10.00
    subtotal 126.347378, tax 12.642800, total 138.990178
"""

import datetime as dt
from decimal import Decimal

import pytest
from django.core.management import call_command

from billing import invoicing
from billing.models import Charge, Invoice, SubscriptionPeriod
from console.models import ProcessKind, ProcessRun, RunStatus
from usage.models import FileRecord

from .test_mediation import HEADER

OCTOBER = dt.date(2026, 10, 1)


def run_billing(actor="test", cycle=OCTOBER):
    run = invoicing.request_main_billing(actor, cycle)
    return invoicing.execute_main_billing(run.pk) or ProcessRun.objects.get(pk=run.pk)


def invoice_of(service) -> Invoice:
    return Invoice.objects.get(account=service.account, cycle_start=OCTOBER)


def rated_total(service) -> tuple[int, int]:
    mediated = FileRecord.objects.filter(service=service, status="mediated", period__start_date=OCTOBER)
    return (
        sum(mediated.values_list("charge_micros", flat=True)),
        sum(mediated.values_list("tax_micros", flat=True)),
    )


def assert_reconciles(invoice: Invoice, service):
    """Invoice = rated records + recurring + one-time charges, and tax likewise."""
    charge, tax = rated_total(service)
    other = invoice.charges.exclude(kind=Charge.Kind.USAGE)
    assert invoice.subtotal_micros == charge + sum(other.values_list("amount_micros", flat=True))
    assert invoice.tax_micros == tax + sum(other.values_list("tax_micros", flat=True))
    assert invoice.total_micros == invoice.subtotal_micros + invoice.tax_micros


def test_golden_invoices(billed_world):
    run = run_billing()
    assert run.status == RunStatus.COMPLETED, run.error
    activities = list(run.activities.values_list("name", "status", "records"))
    assert [a[:2] for a in activities] == [(name, "completed") for name in invoicing.ACTIVITIES]
    reprocess = run.activities.get(name="Reprocess")
    assert reprocess.records == 2 and reprocess.detail == "1 mediated, 1 still quarantined"  # A9 mediated, A12 not
    assert run.activities.get(name="Mapping").records == 9  # A1-A9

    s1, s2 = billed_world["s1"], billed_world["s2"]
    first, second = invoice_of(s1), invoice_of(s2)
    assert (first.subtotal, first.tax, first.total) == (Decimal("30.6"), Decimal("3.06"), Decimal("33.66"))
    assert (second.subtotal, second.tax, second.total) == (
        Decimal("126.347378"),
        Decimal("12.6428"),
        Decimal("138.990178"),
    )
    assert second.usage_records == 8
    recurring = second.charges.get(kind=Charge.Kind.RECURRING)
    assert (recurring.amount, recurring.tax, recurring.days) == (Decimal("6.77"), Decimal("0.68"), 21)
    assert "21/31 days" in recurring.description
    otc = second.charges.get(kind=Charge.Kind.ONE_TIME)
    assert (otc.amount, otc.tax) == (Decimal("99.95"), Decimal("10"))
    usage_lines = second.charges.filter(kind=Charge.Kind.USAGE)
    assert sorted(usage_lines.values_list("category", "usage_type", "records")) == [
        ("data", "data", 1),
        ("misc", "equipment", 1),
        ("misc", "service_charge", 1),
        ("telephony", "sms", 1),
        ("telephony", "voice", 4),
    ]
    assert_reconciles(first, s1)
    assert_reconciles(second, s2)


def test_a_subscriptions_quantity_multiplies_its_fee_and_price_before_the_one_rounding(billed_world):
    """Plan P × 2 for s1: 60.00 + 6.00. For s2 the Data 1GB bolt-on × 3 for 21/31 days: 30 × 21 / 31 =
    20.322… → 20.32 (not 3 × 6.77 = 20.31: the quantity multiplies before the rounding point), tax
    2.03; the modem × 2: 199.90, tax 19.99."""
    from billing.models import Subscription

    s1, s2 = billed_world["s1"], billed_world["s2"]
    Subscription.objects.filter(service=s1, plan__code="P").update(quantity=2)
    Subscription.objects.filter(service=s2, product__code="DATA1G").update(quantity=3)
    Subscription.objects.filter(service=s2, product__code="MODEM").update(quantity=2)
    assert run_billing().status == RunStatus.COMPLETED
    plan_fee = invoice_of(s1).charges.get(kind=Charge.Kind.RECURRING)
    assert (plan_fee.amount, plan_fee.tax) == (Decimal("60"), Decimal("6")) and "× 2" in plan_fee.description
    bolt_on = invoice_of(s2).charges.get(kind=Charge.Kind.RECURRING)
    assert (bolt_on.amount, bolt_on.tax) == (Decimal("20.32"), Decimal("2.03"))
    assert bolt_on.description.endswith("× 3 (21/31 days)")
    modem = invoice_of(s2).charges.get(kind=Charge.Kind.ONE_TIME)
    assert (modem.amount, modem.tax) == (Decimal("199.9"), Decimal("19.99")) and modem.description.endswith("× 2")
    assert_reconciles(invoice_of(s1), s1)
    assert_reconciles(invoice_of(s2), s2)
    with pytest.raises(Exception, match="quantity"):
        Subscription(service=s1, plan=s1.subscriptions.first().plan, starts_on=OCTOBER, quantity=0).full_clean()


def test_rerun_is_safe_and_finalize_locks_the_periods(billed_world, mediate):
    s1, s2 = billed_world["s1"], billed_world["s2"]
    run_billing()
    before = {i.pk: (i.total_micros, i.charges.count()) for i in Invoice.objects.all()}
    again = run_billing()
    assert again.status == RunStatus.COMPLETED
    assert {i.pk: (i.total_micros, i.charges.count()) for i in Invoice.objects.all()} == before
    assert Charge.objects.filter(kind=Charge.Kind.ONE_TIME).count() == 1

    final = invoicing.do_finalize_invoice("test", invoice_of(s2))
    assert final.number == "INV-00000001" and final.status == Invoice.Status.FINAL
    assert set(SubscriptionPeriod.objects.filter(service=s2, start_date=OCTOBER).values_list("status", flat=True)) == {
        "invoiced"
    }
    assert SubscriptionPeriod.objects.get(service=s1, start_date=OCTOBER).status == "open"

    # Late usage for the invoiced period follows the collector's policy (quarantine), and a new run
    # leaves the final invoice alone while rebuilding the other draft.
    mediate(HEADER + "L1,61400000002,2026-10-20T10:00:00Z,60,,,4420000000,voice,\n", name="late.csv")
    assert FileRecord.objects.get(record_id="L1").reason == "LATE_CLOSED_PERIOD"
    total = final.total_micros
    run_billing()
    final.refresh_from_db()
    assert final.total_micros == total and final.status == Invoice.Status.FINAL
    with pytest.raises(Exception, match="already final"):
        invoicing.do_finalize_invoice("test", final)


def test_finalize_needs_a_prepared_draft_and_no_active_run(billed_world):
    run = invoicing.request_main_billing("test", OCTOBER)
    invoicing.mapping(OCTOBER)  # a draft exists, but its totals were never prepared
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError, match="has not been prepared"):
        invoicing.do_finalize_invoice("test", invoice_of(billed_world["s1"]))
    invoicing.prepare_invoices(OCTOBER)
    with pytest.raises(ValidationError, match="Main Billing is queued"):
        invoicing.do_finalize_invoice("test", invoice_of(billed_world["s1"]))
    invoicing.execute_main_billing(run.pk)
    assert invoicing.do_finalize_invoice("test", invoice_of(billed_world["s1"])).status == "final"


def test_never_twice_at_once_for_a_cycle(billed_world):
    first = invoicing.request_main_billing("alice", OCTOBER)
    second = invoicing.request_main_billing("bob", OCTOBER)
    assert first.pk == second.pk
    assert ProcessRun.objects.filter(kind=ProcessKind.MAIN_BILLING).count() == 1
    assert invoicing.execute_main_billing(first.pk).status == RunStatus.COMPLETED
    assert invoicing.execute_main_billing(first.pk) is None  # a redelivered task finds it done


def test_no_cycle_is_a_clear_error(world):
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError, match="No subscription period starts on 2026-10-02"):
        invoicing.request_main_billing("test", dt.date(2026, 10, 2))


def test_failed_run_shows_the_error_and_retry_completes(billed_world):
    from billing.models import TaxRule
    from console import tracking

    rules = list(TaxRule.objects.values())
    TaxRule.objects.all().delete()
    run = run_billing()
    assert run.status == RunStatus.FAILED
    assert "No tax rule for service and equipment charges" in run.error
    failed = run.activities.get(name="Subscription Generation")
    assert failed.status == "failed" and "No tax rule" in failed.error
    for rule in rules:
        TaxRule.objects.create(**rule)
    retried = tracking.retry_run("test", run)
    assert retried.retry_of_id == run.pk
    assert invoicing.execute_main_billing(retried.pk).status == RunStatus.COMPLETED
    assert invoice_of(billed_world["s2"]).total == Decimal("138.990178")


def test_scheduled_daily_billing_of_ended_cycles(billed_world, sync_tasks, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        runs = invoicing.bill_ended_cycles("schedule", today=dt.date(2026, 11, 1))
    assert [r.params["cycle_start"] for r in runs] == ["2026-10-01"]
    assert ProcessRun.objects.get(pk=runs[0].pk).status == RunStatus.COMPLETED  # ran inline (sync)
    assert invoicing.bill_ended_cycles("schedule", today=dt.date(2026, 11, 2)) == []  # billed since it ended


def test_command_runs_main_billing(billed_world, capsys):
    call_command("run_main_billing", "2026-10-01")
    out = capsys.readouterr().out
    assert "completed" in out and "T00002" in out and "138.990178" in out


def test_admin_action_on_periods_runs_main_billing(billed_world, client, operator, viewer, sync_tasks):
    from django.urls import reverse

    october = SubscriptionPeriod.objects.filter(start_date=OCTOBER).values_list("pk", flat=True)
    url = reverse("admin:billing_subscriptionperiod_changelist")
    client.force_login(viewer)
    refused = client.post(url, {"action": "run_main_billing", "_selected_action": list(october)})
    assert refused.status_code == 403 and not ProcessRun.objects.filter(kind=ProcessKind.MAIN_BILLING).exists()
    client.force_login(operator)
    from django.test import TestCase

    with TestCase.captureOnCommitCallbacks(execute=True):
        page = client.post(url, {"action": "run_main_billing", "_selected_action": list(october)}, follow=True)
    run = ProcessRun.objects.get(kind=ProcessKind.MAIN_BILLING)
    assert f'Main Billing for the cycle starting 2026-10-01: <a href="/console/runs/{run.pk}/">run {run.pk}</a>' in (
        page.content.decode()
    )
    assert run.status == RunStatus.COMPLETED  # executed by the (inline) worker
    assert invoice_of(billed_world["s2"]).total == Decimal("138.990178")


def test_invoice_admin_is_read_only_and_finalizes_for_operators(billed_world, client, operator, viewer):
    from django.urls import reverse

    run_billing()
    draft = invoice_of(billed_world["s2"])
    client.force_login(operator)
    page = client.get(reverse("admin:billing_invoice_change", args=[draft.pk])).content.decode()
    # Shown with its currency and 2 decimals; the invoice keeps the exact figure.
    assert "AUD\xa0138.99" in page and "138.990178" not in page and 'name="_save"' not in page
    assert draft.total == Decimal("138.990178")
    changelist = reverse("admin:billing_invoice_changelist")
    confirm = client.post(changelist, {"action": "finalize", "_selected_action": [draft.pk]}).content.decode()
    draft.refresh_from_db()
    assert draft.status == Invoice.Status.DRAFT  # first a confirmation page with the totals
    assert "Finalize 1 invoice" in confirm and "AUD\xa0138.99" in confirm and "Ready" in confirm
    client.post(changelist, {"action": "finalize", "_selected_action": [draft.pk], "confirm": "yes"})
    draft.refresh_from_db()
    assert draft.status == Invoice.Status.FINAL
    client.force_login(viewer)
    other = invoice_of(billed_world["s1"])
    client.post(changelist, {"action": "finalize", "_selected_action": [other.pk], "confirm": "yes"})
    other.refresh_from_db()
    assert other.status == Invoice.Status.DRAFT


def test_a_draft_is_out_of_date_when_its_cycle_usage_changes_and_cannot_be_finalized(billed_world, mediate):
    from django.core.exceptions import ValidationError

    s2 = billed_world["s2"]
    run_billing()
    draft = invoice_of(s2)
    assert draft.usage_fingerprint and invoicing.out_of_date(draft) is None
    # Usage for the cycle arrives after the draft was built.
    mediate(HEADER + "N1,61400000002,2026-10-21T10:00:00Z,61,,,4410000000,voice,\n", name="more.csv")
    draft.refresh_from_db()
    assert invoicing.out_of_date(draft).startswith("the cycle's usage changed after the draft was built (8 mediated")
    with pytest.raises(ValidationError, match="out of date"):
        invoicing.do_finalize_invoice("test", draft)
    assert (
        invoice_of(billed_world["s1"]).status == "draft"
        and invoicing.out_of_date(invoice_of(billed_world["s1"])) is None
    )
    run_billing()  # rebuilt from the usage as it is now
    draft.refresh_from_db()
    assert invoicing.out_of_date(draft) is None and draft.usage_records == 9
    assert invoicing.do_finalize_invoice("test", draft).number == "INV-00000001"


def test_invoice_numbers_are_gapless_when_a_finalize_rolls_back(billed_world):
    from django.db import transaction

    run_billing()
    first, second = invoice_of(billed_world["s1"]), invoice_of(billed_world["s2"])
    with pytest.raises(RuntimeError), transaction.atomic():
        assert invoicing.do_finalize_invoice("test", first).number == "INV-00000001"
        raise RuntimeError("the finalizing transaction fails after numbering")
    first.refresh_from_db()
    assert first.status == "draft" and first.number is None
    assert invoicing.do_finalize_invoice("test", second).number == "INV-00000001"  # the number came back
    assert invoicing.do_finalize_invoice("test", first).number == "INV-00000002"
