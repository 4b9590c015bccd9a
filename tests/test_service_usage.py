"""Cumulus-like service usage views: View Usage, View Service & Equipment Usage, Bolt-ons → View
Usage; period and category filters, totals (included against charged), CSV, no full counts."""

import csv
import datetime as dt
import io
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from billing.models import IncludedValue, Product, Subscription, SubscriptionPeriod

from .test_mediation import GOLDEN


@pytest.fixture
def usage_world(world, mediate):
    """s2 has a 1 MB data bolt-on: A6 (1,049,600 B rated) draws 1,048,576 B of it, 1,024 B are charged."""
    product = Product.objects.create(code="D1M", name="Data 1MB", kind=Product.Kind.BOLT_ON, price=Decimal("5"))
    IncludedValue.objects.create(product=product, category="data", quantity=Decimal("1"), unit="mib")
    subscription = Subscription.objects.create(service=world["s2"], product=product, starts_on=dt.date(2026, 10, 1))
    mediate(GOLDEN)
    october = SubscriptionPeriod.objects.get(service=world["s2"], start_date=dt.date(2026, 10, 1))
    return {**world, "bolt_on": subscription, "october": october}


def cell(page: str, element_id: str) -> str:
    """The text of the first element with that id (or, with a space, that class attribute)."""
    marker = f'class="{element_id}">' if " " in element_id else f'id="{element_id}">'
    start = page.index(marker) + len(marker)
    return page[start : page.index("<", start)]


def test_view_usage_totals_filters_and_csv(usage_world, client, operator):
    client.force_login(operator)
    s2, october = usage_world["s2"], usage_world["october"]
    url = reverse("console:service_usage", args=[s2.pk])
    page = client.get(url, {"period": october.pk}).content.decode()
    # A2-A6: telephony and data of October.
    assert cell(page, "total-records") == "5"
    assert cell(page, "total-charge") == "AUD\xa01.76"  # 0.7117 + 0.5 + 0.3 + 0.25 + 0.0000 = 1.7617
    assert cell(page, "total-duration") == "0:02:01"  # A2-A4 used 61 + 59 + 1 s (rated 61 + 60 + 60)
    # Quantities per type in the type's unit: A6 rated 1,049,600 B, 1 MB of it included, 1 KB charged.
    data = page[page.index('data-usage="data/data"') :]
    assert cell(data, "number rated") == "1.00 MiB" and cell(data, "number included") == "1.00 MiB"
    assert cell(data, "number charged") == "1.00 KiB"
    sms = page[page.index('data-usage="telephony/sms"') :]
    assert cell(sms, "number rated") == "1 message" and cell(sms, "number charged") == "1 message"
    # Each record's charge at its rate card's 4 decimals: A2 is 61 s at 0.70/min, per second.
    assert "AUD\xa00.7117" in page and "Local seconds" not in page

    data_only = client.get(url, {"period": october.pk, "category": "data"}).content.decode()
    assert cell(data_only, "total-records") == "1" and "4410000000" not in data_only

    exported = client.get(url, {"period": october.pk, "format": "csv"})
    assert exported["Content-Disposition"] == f'attachment; filename="{s2.service_id}-usage-2026-10-01.csv"'
    rows = list(csv.DictReader(io.StringIO(b"".join(exported.streaming_content).decode())))
    assert sorted(r["record_id"] for r in rows) == ["A2", "A3", "A4", "A5", "A6"]
    a6 = next(r for r in rows if r["record_id"] == "A6")
    assert (a6["rated_quantity"], a6["included_quantity"], a6["charged_quantity"]) == ("1049600", "1048576", "1024")

    equipment = client.get(reverse("console:service_equipment_usage", args=[s2.pk]), {"period": october.pk})
    equipment = equipment.content.decode()
    assert cell(equipment, "total-records") == "2" and cell(equipment, "total-charge") == "AUD\xa017.35"


def test_bolt_on_usage(usage_world, client, operator):
    client.force_login(operator)
    s2, october, bolt_on = usage_world["s2"], usage_world["october"], usage_world["bolt_on"]
    page = client.get(reverse("console:service_bolt_ons", args=[s2.pk]), {"period": october.pk}).content.decode()
    assert "Data 1MB" in page and page.count("1.00 MiB") == 2  # included 1 MB, drawn 1 MB this period
    usage = client.get(
        reverse("console:service_bolt_on_usage", args=[s2.pk, bolt_on.pk]), {"period": october.pk}
    ).content.decode()
    # Record ids as table cells: a bare "A2" can occur inside the page's random CSRF token.
    assert "<td>A6</td>" in usage and "<td>A2</td>" not in usage and cell(usage, "total-records") == "1"
    other = Subscription.objects.get(service=usage_world["s1"])
    assert client.get(reverse("console:service_bolt_on_usage", args=[s2.pk, other.pk])).status_code == 404


def test_usage_pages_never_count_all_records(usage_world, client, operator):
    """Over all periods there are no totals and paging is by keyset: no COUNT over the service."""
    client.force_login(operator)
    with CaptureQueriesContext(connection) as queries:
        response = client.get(reverse("console:service_usage", args=[usage_world["s2"].pk]), {"period": "all"})
    assert response.status_code == 200
    assert not [q["sql"] for q in queries if "usage_usagerecord" in q["sql"] and "COUNT(" in q["sql"].upper()]


def test_keyset_pages_walk_every_record_once(world, mediate, client, operator):
    from .test_mediation import HEADER

    lines = [
        f"P{i},61400000002,2026-10-{1 + i % 28:02d}T{i % 24:02d}:00:00Z,60,,,4420000000,voice," for i in range(120)
    ]
    mediate(HEADER + "\n".join(lines) + "\n")
    client.force_login(operator)
    url = reverse("console:service_usage", args=[world["s2"].pk])
    seen, params = [], {"period": "all"}
    while True:
        response = client.get(url, params)
        rows = response.context["rows"]
        seen += [r.record_id for r in rows]
        if not response.context["next_params"]:
            break
        params = response.context["next_params"]
    assert len(seen) == 120 and len(set(seen)) == 120
    assert response.context["prev_params"]  # on the oldest page, a way back to newer records

    # And back, newest-ward: every page in the same order, each record once.
    back, params = [], response.context["prev_params"]
    while params:
        response = client.get(url, params)
        back = [r.record_id for r in response.context["rows"]] + back
        params = response.context["prev_params"]
    assert back == seen[: len(back)] and len(back) == 120 - len(rows)
    assert response.context["next_params"] and not response.context["prev_params"]


def test_usage_views_open_on_the_latest_period_with_usage(usage_world, client, operator):
    """Today is after the world's periods; the newest with usage is October, not the empty November."""
    client.force_login(operator)
    response = client.get(reverse("console:service_usage", args=[usage_world["s2"].pk]))
    assert response.context["period"] == usage_world["october"]
    assert response.context["totals"][1]["records"] == 5
