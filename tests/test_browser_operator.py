"""The operator flows of the back-office in headless Chromium at 1366x768: a quarantined record
fixed through its suggested fix and reprocessed, a rebalance previewed then applied, and a viewer
who sees every figure but no control that writes."""

import pytest

from billing.models import ServiceIdentifier
from usage.models import QuarantinedRecord, UsageRecord

from .conftest import admin_login, assert_fits
from .test_mediation import GOLDEN

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_quarantine_fix_through_the_suggested_form_then_reprocess(live_server, page, operator, world, mediate):
    golden = mediate(GOLDEN)
    base = live_server.url
    admin_login(page, base)
    page.goto(f"{base}/admin/usage/quarantinedrecord/?file={golden.pk}&reason__exact=NO_SERVICE")
    assert "No service with that identifier" in page.inner_text("#reason-counts")
    assert_fits(page)
    page.locator("#result_list tbody tr th a").first.click()
    page.wait_for_selector("#suggested-fix")
    record_url = page.url
    assert "Add the identifier to a service" in page.inner_text("#suggested-fix")
    assert_fits(page)
    page.click("text=Add identifier (pre-filled)")
    assert page.input_value("#id_value") == "61499999999" and page.input_value("#id_active_from_0") == "2026-10-05"
    page.click("#id_service + .select2 .select2-selection")
    page.fill(".select2-search__field", "ts00002")
    page.click(f".select2-results__option:has-text('{world['s2'].service_id}')")
    page.click("input[name=_save]")
    page.wait_for_selector(".messagelist .success")
    assert ServiceIdentifier.objects.filter(value="61499999999", service=world["s2"]).exists()
    page.goto(record_url)
    page.click("#reprocess-one")
    page.wait_for_selector(".messagelist .success")
    assert f"Line 10 of file #{golden.pk} is mediated now" in page.inner_text(".messagelist")
    assert UsageRecord.objects.filter(file=golden, line_no=10).exists()
    assert not QuarantinedRecord.objects.filter(file=golden, line_no=10).exists()


def test_rebalance_previewed_then_applied(live_server, page, operator, world, mediate):
    mediate(GOLDEN)
    base = live_server.url
    admin_login(page, base)
    page.goto(f"{base}/admin/billing/account/{world['s2'].account_id}/change/")
    page.click("text=Rebalance a cycle")
    page.fill("#id_on_date", "2026-10-15")
    page.click("input[name=preview]")
    page.wait_for_selector("#rebalance-result")
    assert page.inner_text("#old-total").startswith("AUD\xa0") and "Dry run:" in page.inner_text("#rebalance-result")
    assert_fits(page)
    page.click("input[name=apply]")
    page.wait_for_selector(".messagelist .success")
    assert "Rebalanced" in page.inner_text(".messagelist") and "AUD\xa0" in page.inner_text(".messagelist")


def test_a_viewer_sees_figures_but_no_control_that_writes(live_server, page, viewer, world, mediate):
    golden = mediate(GOLDEN)
    base = live_server.url
    admin_login(page, base, "view", "view-secret-123")
    record = QuarantinedRecord.objects.get(file=golden, line_no=10)
    page.goto(f"{base}/admin/usage/quarantinedrecord/{record.pk}/change/")
    page.wait_for_selector("#suggested-fix")
    assert page.locator("#reprocess-one").count() == 0 and page.locator("input[name=_save]").count() == 0
    page.goto(f"{base}/console/processes/main_billing/")
    assert page.locator("#start-billing").count() == 0
    page.goto(f"{base}/admin/billing/service/")
    assert page.locator("a.addlink").count() == 0 and page.locator("select[name=action]").count() == 0
    page.goto(f"{base}/admin/billing/account/{world['s2'].account_id}/change/")
    assert page.locator("input[name=_save]").count() == 0
    page.goto(f"{base}/console/collectors/{world['collector'].pk}/history/")
    assert page.locator("#blocked form").count() == 0
    assert_fits(page)


def test_an_upload_with_bad_lines_watched_live_to_its_response_file_and_fix(
    live_server, page, operator, world, monkeypatch
):
    """Upload a 3,000-record file with bad lines through the admin, to a real worker that commits a
    batch of 1,000 every 3 s (the page refreshes every 2 s): the collector's history shows the batch
    in progress without a reload, then the outcome counts, which lead to the response file and to
    the quarantine with its fixes."""
    import csv
    import io

    from django_q.conf import Conf

    from usage.models import MediationFile

    from .test_worker import start_cluster, stop, usage_file

    monkeypatch.setattr(Conf, "SYNC", False)  # the upload queues the file for the cluster's workers
    body = usage_file(3000, 7)
    base = live_server.url
    cluster = start_cluster(batch=1000, TOLLGATE_TEST_PAUSE="mediation commit:3")
    try:
        admin_login(page, base)
        page.goto(f"{base}/admin/usage/mediationfile/upload/")
        page.select_option("#id_collector", label=str(world["collector"]))
        page.set_input_files("#id_files", files=[{"name": "bad-lines.csv", "mimeType": "text/csv", "buffer": body}])
        page.click("input[type=submit]")
        page.wait_for_selector("text=bad-lines.csv: queued as #1 of DEMO")
        assert "/console/collectors/" in page.url
        history_url = page.url
        step = page.locator("#history .run-step")
        step.filter(has_text="Batch 2 of 3 (records 1,001–2,000)").wait_for(timeout=60_000)
        assert_fits(page)
        page.locator("#history tr.file-completed").wait_for(timeout=60_000)
        assert page.url == history_url  # refreshed in place, never reloaded
    finally:
        stop(cluster)
    received = MediationFile.objects.get(name="bad-lines.csv")
    assert received.rejected_lines > 0 and received.quarantined > 0
    outcomes = received.mediated + received.quarantined + received.duplicates + received.rejected_lines
    assert received.total_lines == outcomes
    row = page.locator(f'#history tr[data-file="{received.pk}"]')
    assert row.locator("a.rejected").inner_text() == f"{received.rejected_lines:,}"
    assert row.locator("a.quarantined").inner_text() == f"{received.quarantined:,}"
    assert row.locator("td.progress").inner_text() == "3,000"

    with page.expect_download() as download:
        row.locator("text=response.csv").click()
    rows = list(csv.reader(io.StringIO(open(download.value.path()).read())))
    parse_errors = [r for r in rows[1:] if r[3] == "PARSE_ERROR"]
    assert len(parse_errors) == received.rejected_lines
    assert all(r[0].isdigit() and r[4] for r in parse_errors)  # each names its line and says why
    summary = {r[3]: r[4] for r in rows if r[2] == "summary"}
    assert summary["status"] == "completed" and summary["mediated"] == str(received.mediated)

    row.locator("a.quarantined").click()
    page.wait_for_selector("#reason-counts")
    assert "No service with that identifier" in page.inner_text("#reason-counts")
    assert_fits(page)
    page.goto(f"{base}/admin/usage/quarantinedrecord/?file={received.pk}&reason__exact=NO_SERVICE")
    page.locator("#result_list tbody tr th a").first.click()
    page.wait_for_selector("#suggested-fix")
    assert "Add the identifier to a service" in page.inner_text("#suggested-fix")
    assert page.locator("#reprocess-one").count() == 1
    assert_fits(page)
