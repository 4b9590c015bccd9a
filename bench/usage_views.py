"""Service usage views and Main Billing over one service with 1M mediated records (PostgreSQL).

    python bench/usage_views.py [--records N]

Uses BENCH_CONSOLE_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/tollgate_bench_console), which it
drops and recreates. The records are written by one INSERT … SELECT generate_series (rated as if
mediated), then the pages are fetched through Django's test client as a logged-in operator. Prints

    service_usage records=<n> period_page_ms=<first page with the period's totals> all_page_ms=<first
        page over all periods> next_page_ms=<mean of 20 keyset pages> csv_records_per_s=<r>
    main_billing records=<n> seconds=<s> records_per_s=<r> mapping_seconds=<s>
"""

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=1_000_000)
    args = parser.parse_args()
    from mediation import recreate_database

    url = os.environ.get("BENCH_CONSOLE_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/tollgate_bench_console")
    recreate_database(url)
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ["Q_SYNC"] = "1"
    os.environ.setdefault("ALLOWED_HOSTS", "testserver,localhost")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    service, period = build_world(args.records)
    pages(service, period, args.records)
    billing(period.start_date, args.records)


def build_world(records: int):
    import datetime as dt
    from decimal import Decimal

    from django.db import connection

    from billing.models import Account, Plan, RateCard, Service, Subscription, SubscriptionPeriod, TaxRule
    from usage.demo import ensure_demo_collector
    from usage.models import MediationFile

    card = RateCard.objects.create(code="B", name="Bench", is_default=True)
    plan = Plan.objects.create(code="BP", name="Bench plan", rate_card=card, monthly_fee=Decimal("30"))
    TaxRule.objects.create(code="GST", name="GST", percent=Decimal("10"), is_default=True)
    account = Account.objects.create(number="B00001", name="Bench customer")
    service = Service.objects.create(account=account, service_id="BS00001")
    Subscription.objects.create(service=service, plan=plan, starts_on=dt.date(2026, 1, 1))
    period = SubscriptionPeriod.objects.create(
        service=service, start_date=dt.date(2026, 10, 1), end_date=dt.date(2026, 10, 31)
    )
    collector = ensure_demo_collector()
    mediation_file = MediationFile.objects.create(
        collector=collector, sequence=1, name="bench", raw="bench", sha256="0" * 64, size=0, status="completed"
    )
    started = time.monotonic()
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO usage_usagerecord (file_id, collector_id, line_no, record_key, is_duplicate, record_id,
                identifier, usage_at, usage_date, duration, destination, usage_type, category, service_id,
                account_id, period_id, is_late, rated_quantity, included_quantity, charge_micros, tax_micros,
                stage, status, reason, message, raw)
            SELECT %(file)s, %(collector)s, n, 'R' || n, false, 'R' || n, '61400000001',
                   %(start)s::timestamptz + (n * interval '2.6 seconds'), DATE %(day)s + (n * 2.6 / 86400)::int,
                   60 + n %% 300, '61' || (n %% 1000), CASE WHEN n %% 10 = 0 THEN 'data' ELSE 'voice' END,
                   CASE WHEN n %% 10 = 0 THEN 'data' ELSE 'telephony' END, %(service)s, %(account)s, %(period)s,
                   false, 60 + n %% 300, 0, 1000 + n %% 5000, 100 + n %% 500, 'done', 'mediated', '', '', ''
            FROM generate_series(1, %(records)s) AS n
            """,
            {
                "file": mediation_file.pk,
                "collector": collector.pk,
                "start": period.starts_at.isoformat(),
                "day": period.start_date.isoformat(),
                "service": service.pk,
                "account": account.pk,
                "period": period.pk,
                "records": records,
            },
        )
        cursor.execute("ANALYZE usage_usagerecord")
    print(f"setup: {records} records written in {time.monotonic() - started:.1f}s", flush=True)
    return service, period


def timed_get(client, url, params):
    started = time.monotonic()
    response = client.get(url, params)
    assert response.status_code == 200, response.status_code
    return (time.monotonic() - started) * 1000, response


def pages(service, period, records: int):
    from django.contrib.auth import get_user_model
    from django.test import Client
    from django.test.utils import setup_test_environment
    from django.urls import reverse

    setup_test_environment()  # responses carry their template context (the next page's keyset)

    user = get_user_model().objects.create_superuser("bench", password="bench-secret-1")
    client = Client()
    client.force_login(user)
    url = reverse("console:service_usage", args=[service.pk])
    timed_get(client, url, {"period": period.pk})  # warm caches once
    period_ms, response = timed_get(client, url, {"period": period.pk})
    all_ms, response = timed_get(client, url, {"period": "all"})
    spent = []
    for _ in range(20):
        ms, response = timed_get(client, url, response.context["next_params"])
        spent.append(ms)
    started = time.monotonic()
    exported = client.get(url, {"period": period.pk, "format": "csv"})
    lines = sum(chunk.count(b"\n") for chunk in exported.streaming_content) - 1
    csv_seconds = time.monotonic() - started
    assert lines == records, (lines, records)
    print(
        f"service_usage records={records} period_page_ms={period_ms:.0f} all_page_ms={all_ms:.0f} "
        f"next_page_ms={sum(spent) / len(spent):.0f} csv_records_per_s={records / csv_seconds:.0f}",
        flush=True,
    )


def billing(cycle_start, records: int):
    from billing import invoicing
    from billing.models import Invoice
    from console.models import ProcessRun

    started = time.monotonic()
    run = invoicing.request_main_billing("bench", cycle_start)
    # With Q_SYNC the request already ran it (its task runs inline); otherwise run it here.
    run = invoicing.execute_main_billing(run.pk) or ProcessRun.objects.get(pk=run.pk)
    seconds = time.monotonic() - started
    assert run.status == "completed", run.error
    mapping = run.activities.get(name="Mapping")
    invoice = Invoice.objects.get(cycle_start=cycle_start)
    assert invoice.usage_records == records
    print(
        f"main_billing records={records} seconds={seconds:.2f} records_per_s={records / seconds:.0f} "
        f"mapping_seconds={mapping.seconds:.2f}",
        flush=True,
    )


if __name__ == "__main__":
    main()
