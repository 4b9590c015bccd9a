"""An operator's whole day in headless Chromium, against a real django-q2 cluster: upload a usage
file → watch it in the Process Console until completed → collector history and response file →
the service's usage views → fix a quarantine cause and reprocess → Main Billing → the draft invoice."""

import datetime as dt
from decimal import Decimal

import pytest
from django.utils import timezone

from billing.models import Invoice, Plan, SubscriptionPeriod
from console.models import ProcessKind, ProcessRun

from .conftest import admin_login, assert_fits
from .test_browser_admin import ARTIFACTS
from .test_mediation import GOLDEN
from .test_worker import start_cluster, stop


def shot(page, name):
    page.screenshot(path=str(ARTIFACTS / f"flow-{name}.png"), full_page=True)


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_operator_flow_from_upload_to_draft_invoice(live_server, page, operator, world):
    ARTIFACTS.mkdir(exist_ok=True)
    Plan.objects.filter(code="P").update(monthly_fee=Decimal("30"))
    # A cycle still running (after the world's November): Main Billing must refuse it.
    today = timezone.localdate()
    open_start, open_end = max(today - dt.timedelta(days=1), dt.date(2026, 12, 1)), today + dt.timedelta(days=20)
    for service in (world["s1"], world["s2"]):
        SubscriptionPeriod.objects.create(service=service, start_date=open_start, end_date=open_end)
    base = live_server.url
    cluster = start_cluster()
    try:
        admin_login(page, base)

        # Upload a usage file in the admin.
        page.goto(f"{base}/admin/usage/mediationfile/upload/")
        page.select_option("#id_collector", label=str(world["collector"]))
        page.set_input_files(
            "#id_files", files=[{"name": "golden.csv", "mimeType": "text/csv", "buffer": GOLDEN.encode()}]
        )
        page.click("input[type=submit]")
        page.wait_for_selector("text=golden.csv: queued as #1 of DEMO")

        # Watch it in the Process Console: the overview refreshes in place until the run completes.
        page.goto(f"{base}/admin/")
        page.click("#process-console")
        mediation_row = page.locator('tr.process[data-kind="mediation"]')
        mediation_row.locator("text=Completed").wait_for(timeout=90_000)
        page.wait_for_selector("#processes[data-refreshed]")  # the table is refreshed without a reload
        assert page.url.endswith("/console/")
        shot(page, "1-console-overview")
        mediation_row.locator("a").first.click()
        page.wait_for_selector("#throughput .bar")
        page.locator("#history tbody tr").first.locator("a").click()
        assert page.get_attribute("#run-status", "data-status") == "completed"
        assert "16 of 16 (100%)" in page.inner_text("#run-records")
        shot(page, "2-mediation-run")

        # Collector history, and the response file.
        page.goto(f"{base}/console/collectors/{world['collector'].pk}/history/")
        with page.expect_download() as download:
            page.click("text=response.csv")
        response_file = open(download.value.path()).read()
        assert "A9,quarantined,NO_SERVICE" in response_file.replace('"', "")
        shot(page, "3-collector-history")

        # The service's usage views: find it by identifier, View Usage for October.
        page.goto(f"{base}/admin/billing/service/")
        page.fill("#searchbar", "61400000002")
        page.press("#searchbar", "Enter")
        page.locator("#result_list tbody tr th a").first.click()
        page.click("#view-usage")
        october = world["s2"].periods.get(start_date=dt.date(2026, 10, 1))
        page.select_option("#period", str(october.pk))
        page.click("#usage-filter input[type=submit]")
        page.wait_for_selector("#totals")
        assert (
            page.inner_text("#total-records") == "5" and page.inner_text("#total-charge") == "AUD\xa01.78"
        )  # A2-A6 1.7817, no bolt-on here
        assert "4410000000" in page.inner_text("#usage")
        shot(page, "4-view-usage")

        # Fix a quarantine cause (the unknown number is s2's) and reprocess it.
        page.goto(f"{base}/admin/billing/serviceidentifier/add/")
        page.click("#id_service + .select2 .select2-selection")  # an autocomplete, not a raw id
        page.fill(".select2-search__field", "ts00002")
        page.click(f".select2-results__option:has-text('{world['s2'].service_id}')")
        page.fill("#id_value", "61499999999")
        page.fill("#id_active_from_0", "2026-01-01")
        page.fill("#id_active_from_1", "00:00:00")
        page.click("input[name=_save]")
        page.wait_for_selector(".messagelist .success")
        page.goto(f"{base}/admin/usage/quarantinedrecord/?reason__exact=NO_SERVICE")
        page.check("#action-toggle")
        page.select_option("select[name=action]", "reprocess")
        page.click("button[name=index]")
        page.wait_for_selector("text=Reprocessed 1 record: 1 mediated, 0 still quarantined")
        shot(page, "5-reprocessed")

        # Main Billing from the console. A cycle that has not ended is refused; October has.
        page.goto(f"{base}/console/processes/main_billing/")
        assert page.inner_text('#cycles tr[data-cycle="2026-10-01"]').endswith("ended, ready to bill")
        open_row = page.inner_text(f'#cycles tr[data-cycle="{open_start.isoformat()}"]')
        assert f"open until the end of {open_end.isoformat()}" in open_row
        assert_fits(page)
        page.fill("#id_cycle_start", open_start.isoformat())
        page.click("#start-billing input[type=submit]")
        page.wait_for_selector(".messagelist .error")
        assert f"has not ended: it ends at the end of {open_end.isoformat()}" in page.inner_text(".messagelist")
        assert not ProcessRun.objects.filter(kind=ProcessKind.MAIN_BILLING).exists()
        # The run page refreshes until it completes.
        page.fill("#id_cycle_start", "2026-10-01")
        page.click("#start-billing input[type=submit]")
        page.wait_for_selector('#run-status[data-status="completed"]', timeout=90_000)
        assert page.locator("#activities tr.activity-completed").count() == 5
        shot(page, "6-main-billing-run")

        # The draft reconciles to the rated records: s2 has no plan here; usage 19.627378, tax 1.9628.
        invoice = Invoice.objects.get(account=world["s2"].account, cycle_start=dt.date(2026, 10, 1))
        page.click(f"#run-invoices a[href$='/billing/invoice/{invoice.pk}/change/']")
        page.wait_for_selector("text=Charges")
        body = page.inner_text("#content")
        assert "AUD\xa019.63" in body and "AUD\xa01.96" in body and "AUD\xa021.59" in body
        assert invoice.total == Decimal("21.590178")  # the stored figure stays exact
        assert_fits(page)
        shot(page, "7-draft-invoice")

        # The printable invoice, and its PDF.
        page.click("#print-invoice")
        page.wait_for_selector("#total")
        assert page.inner_text("#total") == "AUD\xa021.59" and page.inner_text("#subtotal") == "AUD\xa019.63"
        assert "DRAFT" in page.inner_text("h1") and "0:04:01" in page.inner_text("body")
        assert_fits(page)
        shot(page, "8-printable-invoice")
        with page.expect_download() as download:
            page.click("#pdf-link")
        assert download.value.suggested_filename == f"draft-{invoice.account.number}-2026-10-01.pdf"
        assert open(download.value.path(), "rb").read(5) == b"%PDF-"
    finally:
        stop(cluster)
