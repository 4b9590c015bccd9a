"""The back-office reads like a billing tool: figures formatted, one date format, outcome counts
that lead to the records behind them, and pages that fit an operator's 1366 px laptop."""

import pytest
from django.urls import reverse

from usage.models import MediationFile

from .conftest import admin_login, assert_fits
from .test_mediation import GOLDEN

pytestmark = pytest.mark.django_db

LONG_ERROR = "The carrier's file header names columns this collector does not map: " + ", ".join(
    f"unexpected_column_{i}" for i in range(18)
)


def test_collector_history_links_outcomes_to_the_quarantine(client, viewer, world, mediate):
    golden = mediate(GOLDEN)
    client.force_login(viewer)
    page = client.get(reverse("console:collector_history", args=[world["collector"].pk])).content.decode()
    row = page[page.index(f'data-file="{golden.pk}"') :]
    quarantine = reverse("admin:usage_quarantinedrecord_changelist")
    link = f'class="quarantined" href="{quarantine}?file={golden.pk}&amp;outcome=gate">{golden.quarantined}</a>'
    assert link in row
    assert f"{quarantine}?collector__id__exact={world['collector'].pk}" in page
    assert reverse("admin:usage_collector_preview", args=[world["collector"].pk]) in page
    assert f"AUD\xa0{golden.charge_micros / 1_000_000:,.2f}" in row  # the file's charge, with its currency
    for outcome, expected in (
        ("gate", golden.quarantined),
        ("duplicate", golden.duplicates),
        ("rejected", golden.rejected_lines),
    ):
        listed = client.get(quarantine, {"file": golden.pk, "outcome": outcome}).content.decode()
        rows = listed[listed.index('id="result_list"') :]
        assert rows.count('<span class="badge"') == expected, outcome  # each reason a short badge
    listed = client.get(quarantine, {"file": golden.pk, "outcome": "gate"}).content.decode()
    assert 'class="badge" title="No service with that identifier at that time">NO_SERVICE</span>' in listed


def test_quarantine_list_truncates_messages_and_the_record_page_has_them_whole(client, viewer, world, mediate):
    from usage.models import QuarantinedRecord

    mediate(GOLDEN)
    record = QuarantinedRecord.objects.filter(reason="NO_SERVICE").first()
    QuarantinedRecord.objects.filter(pk=record.pk).update(message=LONG_ERROR)
    client.force_login(viewer)
    listed = client.get(reverse("admin:usage_quarantinedrecord_changelist")).content.decode()
    assert f'<span class="truncate" title="{LONG_ERROR}">' in listed.replace("&#x27;", "'")
    detail = client.get(reverse("admin:usage_quarantinedrecord_change", args=[record.pk])).content.decode()
    assert "unexpected_column_17" in detail


def test_dates_are_iso_everywhere_and_pages_have_a_favicon(client, viewer, world, mediate):
    golden = mediate(GOLDEN)
    client.force_login(viewer)
    page = client.get(reverse("admin:usage_mediationfile_changelist")).content.decode()
    uploaded = golden.uploaded_at.astimezone().strftime("%Y-%m-%d")
    assert uploaded in page and " a.m." not in page and " p.m." not in page
    assert 'rel="icon"' in page
    icon = client.get("/favicon.ico")
    assert icon.status_code == 200 and icon["Content-Type"] == "image/svg+xml" and b"<svg" in icon.content


def test_the_console_is_in_the_admin_sidebar(client, viewer):
    client.force_login(viewer)
    page = client.get(reverse("admin:billing_account_changelist")).content.decode()
    sidebar = page[page.index('id="nav-sidebar"') :]
    for url in (
        reverse("console:overview"),
        reverse("console:collectors"),
        reverse("console:process", args=["main_billing"]),
    ):
        assert f'href="{url}"' in sidebar


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_operator_lists_fit_a_laptop_with_long_messages(live_server, page, operator, world, mediate):
    golden = mediate(GOLDEN)
    from usage.models import QuarantinedRecord

    QuarantinedRecord.objects.filter(file=golden).update(message=LONG_ERROR)
    MediationFile.objects.filter(pk=golden.pk).update(error=LONG_ERROR, name="x" * 200 + ".csv")
    base = live_server.url
    admin_login(page, base)
    for url in (
        reverse("admin:usage_quarantinedrecord_changelist"),
        reverse("console:collector_history", args=[world["collector"].pk]),
        reverse("console:collectors"),
        reverse("console:overview"),
        reverse("console:process", args=["mediation"]),
        reverse("admin:usage_mediationfile_changelist"),
        reverse("admin:usage_usagerecord_changelist"),
        reverse("admin:billing_invoice_changelist"),
        reverse("console:process", args=["main_billing"]),
        reverse("console:service_usage", args=[world["s2"].pk]) + "?period=all",
    ):
        page.goto(base + url)
        page.wait_for_selector("#content")
        assert_fits(page)
