"""The quarantine fix flow: each record says what to do about its reason, links to the pre-filled
form that does it, and reprocesses on a button; counts by reason and a CSV of the list."""

import csv
import io

import pytest
from django.urls import reverse

from billing.models import Rate, ServiceIdentifier, SubscriptionPeriod
from usage.models import QuarantinedRecord, UsageRecord

from .test_mediation import GOLDEN

pytestmark = pytest.mark.django_db


def waiting(line):
    return QuarantinedRecord.objects.get(line_no=line)


def test_no_service_fix_prefills_the_identifier_and_reprocess_mediates_it(client, operator, world, mediate):
    golden = mediate(GOLDEN)
    a9 = waiting(10)
    client.force_login(operator)
    page = client.get(reverse("admin:usage_quarantinedrecord_change", args=[a9.pk])).content.decode()
    assert 'id="suggested-fix"' in page and "No service had the identifier &#x27;61499999999&#x27;" in page
    add = reverse("admin:billing_serviceidentifier_add") + "?value=61499999999&amp;active_from=2026-10-05+00%3A00%3A00"
    assert add in page and 'id="reprocess-one"' in page
    form = client.get(add.replace("&amp;", "&")).content.decode()
    assert 'value="61499999999"' in form and 'value="2026-10-05"' in form  # pre-filled

    # Reprocessing before the fix keeps it here and says why.
    still = client.post(reverse("admin:usage_quarantinedrecord_reprocess", args=[a9.pk]), follow=True)
    assert "Still quarantined: No service with that identifier at that time" in still.content.decode()
    assert not UsageRecord.objects.filter(file=golden, line_no=10).exists()

    ServiceIdentifier.objects.create(service=world["s2"], value="61499999999", active_from=a9.usage_at.replace(hour=0))
    a9 = waiting(10)
    done = client.post(reverse("admin:usage_quarantinedrecord_reprocess", args=[a9.pk]), follow=True)
    assert f"Line 10 of file #{golden.pk} is mediated now" in done.content.decode()
    assert UsageRecord.objects.get(file=golden, line_no=10).charge_micros == 500_000  # 0.50, see test_main_billing


def test_each_reason_suggests_its_fix(client, operator, world, mediate):
    mediate(GOLDEN)
    client.force_login(operator)

    def fix(line):
        return client.get(reverse("admin:usage_quarantinedrecord_change", args=[waiting(line).pk])).content.decode()

    no_period = fix(11)
    period_add = reverse("admin:billing_subscriptionperiod_add")
    assert "Generate the missing subscription period" in no_period
    assert f"{period_add}?service={world['s2'].pk}&amp;start_date=2026-08-01&amp;end_date=2026-08-31" in no_period

    no_rate = fix(13)  # an MMS: no rate for that usage type on the default card
    rate_add = reverse("admin:billing_rate_add")
    assert "Add the missing rate" in no_rate and "DEF (Default)" in no_rate
    assert f"{rate_add}?rate_card={world['default'].pk}&amp;category=telephony&amp;usage_type=mms" in no_rate
    form = client.get(f"{rate_add}?rate_card={world['default'].pk}&category=telephony&usage_type=mms").content
    assert b'value="mms"' in form

    late = fix(12)
    assert "Late usage for a closed period" in late and "usagecollector" in late

    duplicate = fix(14)  # A1 again
    assert "a duplicate is never billed" in duplicate and 'id="reprocess-one"' not in duplicate
    unparsable = fix(15)
    assert "Send a corrected line" in unparsable and 'id="reprocess-one"' not in unparsable


def test_viewers_see_the_fix_but_no_reprocess_button(client, viewer, world, mediate):
    mediate(GOLDEN)
    client.force_login(viewer)
    a9 = waiting(10)
    page = client.get(reverse("admin:usage_quarantinedrecord_change", args=[a9.pk])).content.decode()
    assert "Add the identifier to a service" in page and 'id="reprocess-one"' not in page
    assert client.post(reverse("admin:usage_quarantinedrecord_reprocess", args=[a9.pk])).status_code == 403


def test_counts_by_reason_and_csv_export_follow_the_filters(client, viewer, world, mediate):
    golden = mediate(GOLDEN)
    client.force_login(viewer)
    url = reverse("admin:usage_quarantinedrecord_changelist")
    page = client.get(url, {"file": golden.pk}).content.decode()
    counts = page[page.index('id="reason-counts"') : page.index("</table>", page.index('id="reason-counts"'))]
    total = QuarantinedRecord.objects.filter(file=golden, status="quarantined").count()
    by_reason = {
        r: QuarantinedRecord.objects.filter(file=golden, reason=r).count() for r in ("NO_SERVICE", "PARSE_ERROR")
    }
    badge = '<span class="badge">NO_SERVICE</span></a> No service with that identifier at that time</td>'
    assert f'{badge}<td class="number">{by_reason["NO_SERVICE"]}</td>' in counts
    assert "reason__exact=PARSE_ERROR" in counts

    exported = client.get(reverse("admin:usage_quarantinedrecord_export"), {"file": golden.pk})
    assert exported["Content-Type"] == "text/csv"
    rows = list(csv.DictReader(io.StringIO(b"".join(exported.streaming_content).decode())))
    assert len(rows) == total and [int(r["line_no"]) for r in rows] == sorted(int(r["line_no"]) for r in rows)
    assert {r["reason"] for r in rows} >= {"NO_SERVICE", "NO_PERIOD", "NO_RATE", "DUPLICATE", "PARSE_ERROR"}
    only = client.get(
        reverse("admin:usage_quarantinedrecord_export"), {"file": golden.pk, "reason__exact": "PARSE_ERROR"}
    )
    parsed = list(csv.DictReader(io.StringIO(b"".join(only.streaming_content).decode())))
    assert len(parsed) == by_reason["PARSE_ERROR"] and {r["reason"] for r in parsed} == {"PARSE_ERROR"}

    file_page = client.get(reverse("admin:usage_mediationfile_change", args=[golden.pk])).content.decode()
    assert (
        f'{url}?file={golden.pk}&amp;reason__exact=NO_SERVICE"><span class="badge">NO_SERVICE</span> 1</a>' in file_page
    )
    assert Rate.objects.exists() and SubscriptionPeriod.objects.exists()
