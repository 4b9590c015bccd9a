"""Billing actions an operator can trust: a cycle that has not ended is not billed unless it is
closed early with a reason, nothing is deleted in bulk, and an invoice prints (HTML and PDF) with
its figures formatted for people while the stored ones stay exact."""

import datetime as dt
import io
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.test import TestCase
from django.urls import reverse
from django.utils import timezone

from billing import formatting, invoicing, selectors
from billing.models import AuditEvent, Invoice, SubscriptionPeriod
from console.models import ProcessKind, ProcessRun

from .test_main_billing import invoice_of, run_billing

pytestmark = pytest.mark.django_db


@pytest.fixture
def open_cycle(world):
    """A cycle that started by today (after the world's November) and ends in twenty days: not
    billable yet."""
    today = timezone.localdate()
    start, end = max(today - dt.timedelta(days=5), dt.date(2026, 12, 1)), today + dt.timedelta(days=20)
    for service in (world["s1"], world["s2"]):
        SubscriptionPeriod.objects.create(service=service, start_date=start, end_date=end)
    return start, end


def test_a_cycle_that_has_not_ended_is_refused_unless_closed_early_with_a_reason(open_cycle):
    start, end = open_cycle
    with pytest.raises(ValidationError) as refused:
        invoicing.request_main_billing("alice", start)
    message = " ".join(refused.value.messages)
    assert f"has not ended: it ends at the end of {end.isoformat()}" in message and "reason" in message
    assert not ProcessRun.objects.filter(kind=ProcessKind.MAIN_BILLING).exists()
    with pytest.raises(ValidationError):
        invoicing.request_main_billing("alice", start, close_early_reason="   ")  # blank is no reason

    # Scheduled for after its end, it needs no reason.
    after_end = timezone.make_aware(dt.datetime.combine(end + dt.timedelta(days=1), dt.time(6)))
    scheduled = invoicing.request_main_billing("alice", start, run_at=after_end)
    assert "close_early_reason" not in scheduled.params and "(closed early)" not in scheduled.label
    scheduled.delete()

    run = invoicing.request_main_billing("alice", start, close_early_reason="Customer leaves on the 10th")
    assert run.params["close_early_reason"] == "Customer leaves on the 10th"
    assert run.label == f"Cycle starting {start.isoformat()}, ending {end.isoformat()} (closed early)"
    event = AuditEvent.objects.get(action="billing.close_early")
    assert event.actor_label == "alice" and event.summary.endswith(": Customer leaves on the 10th")
    assert event.changes["after"]["close_early_reason"] == "Customer leaves on the 10th"
    assert f"The cycle {start.isoformat()} – {end.isoformat()} is billed before it ends" in event.summary


def test_a_retry_of_an_early_close_keeps_its_reason(open_cycle):
    start, _ = open_cycle
    run = invoicing.request_main_billing("alice", start, close_early_reason="Account closing")
    run.status = "failed"
    run.save(update_fields=["status"])
    retried = invoicing.retry_main_billing_run("bob", run)
    assert retried.pk != run.pk and retried.params["close_early_reason"] == "Account closing"


def test_cycles_say_when_they_end(world, open_cycle):
    start, end = open_cycle
    cycle = selectors.cycle_starting(start)
    assert (cycle.start, cycle.end, cycle.periods, cycle.has_ended()) == (start, end, 2, False)
    october = selectors.cycle_starting(dt.date(2026, 10, 1))
    assert october.end == dt.date(2026, 10, 31) and october.has_ended()
    assert october.ends_at == timezone.make_aware(dt.datetime(2026, 11, 1), timezone.get_default_timezone())
    around = [c.start for c in selectors.cycles_around(timezone.localdate())]
    assert around[0] == start and dt.date(2026, 10, 1) in around
    assert selectors.cycle_starting(dt.date(2026, 10, 2)) is None


def test_console_form_shows_cycles_and_asks_for_a_reason_to_close_early(client, operator, open_cycle, sync_tasks):
    start, end = open_cycle
    client.force_login(operator)
    page = client.get(reverse("console:process", args=["main_billing"])).content.decode()
    assert f'<tr data-cycle="{start.isoformat()}">' in page
    assert f"open until the end of {end.isoformat()}" in page and "ended, ready to bill" in page  # October
    url = reverse("console:start_main_billing")

    refused = client.post(url, {"cycle_start": start.isoformat()}, follow=True).content.decode()
    assert "has not ended" in refused and not ProcessRun.objects.exists()
    no_reason = client.post(url, {"cycle_start": start.isoformat(), "close_early": "on"}, follow=True)
    assert "Give the reason for closing the cycle early." in no_reason.content.decode()
    assert not ProcessRun.objects.exists()
    # A reason typed without ticking "close early" does not close it early.
    client.post(url, {"cycle_start": start.isoformat(), "close_early_reason": "oops"}, follow=True)
    assert not ProcessRun.objects.exists()

    with TestCase.captureOnCommitCallbacks(execute=False):
        done = client.post(
            url, {"cycle_start": start.isoformat(), "close_early": "on", "close_early_reason": "Port-out"}, follow=True
        )
    run = ProcessRun.objects.get(kind=ProcessKind.MAIN_BILLING)
    assert run.params["close_early_reason"] == "Port-out"
    assert f"Main Billing for the cycle starting {start.isoformat()}, ending {end.isoformat()} (closed early)" in (
        done.content.decode()
    )


def test_admin_action_and_command_refuse_an_open_cycle_clearly(client, operator, open_cycle):
    start, _ = open_cycle
    client.force_login(operator)
    periods = list(SubscriptionPeriod.objects.filter(start_date=start).values_list("pk", flat=True))
    page = client.post(
        reverse("admin:billing_subscriptionperiod_changelist"),
        {"action": "run_main_billing", "_selected_action": periods},
        follow=True,
    )
    assert page.status_code == 200 and "has not ended" in page.content.decode()
    assert not ProcessRun.objects.exists()
    with pytest.raises(CommandError, match="has not ended"):
        call_command("run_main_billing", start.isoformat(), "--queue")
    out = io.StringIO()
    call_command("run_main_billing", start.isoformat(), "--queue", "--close-early", "Migration cut-over", stdout=out)
    assert ProcessRun.objects.get().params["close_early_reason"] == "Migration cut-over"


def test_api_refuses_an_open_cycle_and_accepts_a_reason(open_cycle, operator):
    from rest_framework.test import APIClient

    start, _ = open_cycle
    api = APIClient()
    api.force_authenticate(operator)
    refused = api.post("/api/v1/processes/main-billing/", {"cycle_start": start.isoformat()}, format="json")
    assert refused.status_code == 400 and "has not ended" in str(refused.data)
    accepted = api.post(
        "/api/v1/processes/main-billing/",
        {"cycle_start": start.isoformat(), "close_early_reason": "Contract ends"},
        format="json",
    )
    assert accepted.status_code == 201
    assert ProcessRun.objects.get(pk=accepted.data["id"]).params["close_early_reason"] == "Contract ends"


def test_nothing_is_deleted_in_bulk_and_a_billed_service_is_not_deleted(client, operator, billed_world):
    run_billing()
    client.force_login(operator)
    for name in ("billing_service", "billing_account", "usage_mediationfile", "usage_usagerecord", "billing_rate"):
        page = client.get(reverse(f"admin:{name}_changelist")).content.decode()
        assert 'value="delete_selected"' not in page, name
    s2 = billed_world["s2"]
    assert client.get(reverse("admin:billing_service_delete", args=[s2.pk])).status_code == 403
    change = client.get(reverse("admin:billing_service_change", args=[s2.pk])).content.decode()
    assert 'class="deletelink"' not in change


def test_operators_look_at_the_task_queues_schedules_but_do_not_edit_them(client, operator):
    from django_q.models import Schedule

    schedule = Schedule.objects.create(name="Main Billing daily", func="billing.tasks.bill_ended_cycles")
    client.force_login(operator)
    page = client.get(reverse("admin:django_q_schedule_change", args=[schedule.pk]))
    assert page.status_code == 200 and 'name="_save"' not in page.content.decode()
    assert client.get(reverse("admin:django_q_schedule_add")).status_code == 403


def test_the_printable_invoice_shows_formatted_exact_figures(client, viewer, billed_world):
    run_billing()
    invoice = invoice_of(billed_world["s2"])
    client.force_login(viewer)  # reading an invoice is a viewer's right too
    html = client.get(reverse("admin:billing_invoice_print", args=[invoice.pk])).content.decode()
    assert "DRAFT" in html and "not a tax invoice" in html
    assert 'id="account">T00002' in html and "2026-10-01 – 2026-10-31" in html
    for figure in ("AUD\xa0126.35", "AUD\xa012.64", "AUD\xa0138.99", "AUD\xa099.95", "AUD\xa06.77"):
        assert figure in html, figure
    assert "0:04:01" in html and "1 message" in html and "1.00 MiB" in html and "21 days" in html
    assert "Telephony: voice" in html and "Service &amp; equipment: equipment" in html  # charges named by label
    assert "126.347378" not in html and invoice.subtotal == Decimal("126.347378")  # stored exact

    pdf = client.get(reverse("admin:billing_invoice_pdf", args=[invoice.pk]))
    assert pdf["Content-Type"] == "application/pdf" and pdf.content.startswith(b"%PDF-")
    assert pdf["Content-Disposition"] == 'attachment; filename="draft-T00002-2026-10-01.pdf"'
    from pypdf import PdfReader

    text = " ".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf.content)).pages)
    assert "138.99" in text and "T00002" in text and "DRAFT" in text and "Download PDF" not in text

    invoicing.do_finalize_invoice("test", invoice)
    invoice.refresh_from_db()
    final = client.get(reverse("admin:billing_invoice_print", args=[invoice.pk])).content.decode()
    assert f"Tax invoice {invoice.number}" in final and "DRAFT" not in final
    pdf = client.get(reverse("admin:billing_invoice_pdf", args=[invoice.pk]))
    assert pdf["Content-Disposition"] == f'attachment; filename="{invoice.number}.pdf"'


def test_the_account_page_lists_its_invoices(client, viewer, billed_world):
    run_billing()
    invoice = invoice_of(billed_world["s2"])
    client.force_login(viewer)
    page = client.get(reverse("admin:billing_account_change", args=[invoice.account_id])).content.decode()
    assert 'id="account-invoices"' in page and "AUD\xa0138.99" in page
    assert reverse("admin:billing_invoice_pdf", args=[invoice.pk]) in page and "All 1 invoice of this account" in page
    listed = client.get(reverse("admin:billing_invoice_changelist"), {"account__id__exact": invoice.account_id})
    assert listed.status_code == 200 and "T00002" in listed.content.decode()
    assert Invoice.objects.filter(account_id=invoice.account_id).count() == 1


@pytest.mark.parametrize(
    "shown, expected",
    [
        (formatting.money(Decimal("1234.5"), "AUD"), "AUD\xa01,234.50"),
        (formatting.money(Decimal("-0.005"), "AUD"), "-AUD\xa00.01"),  # half-up, away from zero
        (formatting.money(Decimal("0.125"), "AUD"), "AUD\xa00.13"),
        (formatting.money(Decimal("1234.5"), "JPY"), "JPY\xa01,235"),  # the currency's own decimals
        (formatting.money(Decimal("0.123456"), "AUD", 4), "AUD\xa00.1235"),  # a rate card's decimals
        (formatting.micros(138_990_178, "aud"), "AUD\xa0138.99"),
        (formatting.number(1234567), "1,234,567"),
        (formatting.plural(1, "completed run"), "1 completed run"),
        (formatting.plural(1200, "completed run"), "1,200 completed runs"),
        (formatting.duration(36000), "10:00:00"),
        (formatting.duration(241), "0:04:01"),
        (formatting.duration(90061), "25:01:01"),
        (formatting.volume(6432343712), "5.99 GiB"),
        (formatting.volume(1536, "kib"), "1.50 KiB"),
        (formatting.volume(1536, "kb"), "1.54 kB"),
        (formatting.quantity(2_500_000_000, "gb"), "2.50 GB"),
        (formatting.quantity(2_500_000_000, "gib"), "2.33 GiB"),
        (formatting.volume(512), "512 B"),
        (formatting.quantity(3, "message"), "3 messages"),
        (formatting.quantity(120, "minute"), "0:02:00"),
        (formatting.quantity(None, "minute"), ""),
    ],
)
def test_display_formats(shown, expected):
    assert shown == expected
