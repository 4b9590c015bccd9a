import csv
import io
import os
import subprocess
import sys
from collections import Counter

import pytest
from django.core.management import call_command
from django.db.models import Count
from django.utils import timezone

from billing import demo
from billing.models import Account, Discount, Service, ServiceIdentifier, Subscription, SubscriptionPeriod

pytestmark = pytest.mark.django_db


def demo_counts():
    models = (Account, Service, ServiceIdentifier, Subscription, SubscriptionPeriod, Discount)
    return [model.objects.count() for model in models]


def test_seed_demo_is_idempotent_and_scales(capsys):
    call_command("seed_demo", "--services", "30")
    counts = demo_counts()
    assert counts[:3] == [15, 30, 30]
    call_command("seed_demo", "--services", "30")
    assert demo_counts() == counts
    call_command("seed_demo", "--services", "40")
    assert Service.objects.count() == 40 and Account.objects.count() == 20
    out = capsys.readouterr().out
    assert "10 services added (40 in the demo)" in out
    assert "operator / tollgate-demo" in out


def test_seed_demo_data_is_believable():
    call_command("seed_demo", "--services", "20")
    nbn = Service.objects.get(service_id=demo.service_id(10))
    assert nbn.service_type == "nbn"
    assert nbn.identifiers.get().value == "nbn00000010@demo.tollgate"
    mobile = Service.objects.get(service_id=demo.service_id(15))
    assert mobile.identifiers.get().value == "61400000015"
    assert {s.plan.code for s in mobile.subscriptions.filter(plan__isnull=False)} == {"MOB-S"}
    assert {s.product.code for s in mobile.subscriptions.filter(product__isnull=False)} == {"INTL-100"}
    large = Service.objects.get(service_id=demo.service_id(12))
    assert {s.plan.code for s in large.subscriptions.filter(plan__isnull=False)} == {"MOB-L"}
    assert {s.product.code for s in large.subscriptions.filter(product__isnull=False)} == {"DATA-10"}
    assert Account.objects.get(number=demo.account_number(7)).bill_day == 15
    assert not SubscriptionPeriod.objects.exclude(status="open").exists()
    # Every service has a period covering every day of last month, so demo usage buckets.
    first, last = demo.previous_month(timezone.localdate())
    for service in Service.objects.all():
        covered = service.periods.filter(start_date__lte=last, end_date__gte=first)
        assert covered.exists()
        assert min(p.start_date for p in covered) <= first and max(p.end_date for p in covered) >= last


def test_demo_logins_work(client):
    call_command("seed_demo", "--services", "2")
    assert client.login(username="operator", password=demo.DEMO_PASSWORD)
    assert client.get("/admin/billing/service/").status_code == 200


def make_file(*args):
    out = io.StringIO()
    call_command("make_usage_file", "--out", "-", *args, stdout=out)
    return out.getvalue()


def test_usage_file_is_deterministic_and_varied(capsys):
    first = make_file("--records", "5000", "--services", "50", "--seed", "7", "--month", "2026-10")
    assert first == make_file("--records", "5000", "--services", "50", "--seed", "7", "--month", "2026-10")
    assert first != make_file("--records", "5000", "--services", "50", "--seed", "8", "--month", "2026-10")
    rows = list(csv.reader(io.StringIO(first)))
    assert rows[0] == [
        "record_id",
        "identifier",
        "start_time",
        "duration",
        "volume",
        "quantity",
        "destination",
        "usage_type",
        "amount",
    ]
    body = rows[1:]
    assert len(body) == 5000
    assert len({r[0] for r in body}) == 5000  # record ids are unique
    types = Counter(r[7] for r in body if len(r) == 9)
    assert {"voice", "sms", "mms", "data", "equipment", "service_charge", "feature"} <= set(types)
    known = {demo.identifier(i) for i in range(1, 51)}
    unknown = sum(1 for r in body if len(r) > 1 and r[1] and r[1] not in known)
    old = sum(1 for r in body if len(r) > 2 and r[2].startswith("2025-"))
    unrated = sum(1 for r in body if len(r) > 6 and r[6].startswith(demo.UNRATED_PREFIX))
    malformed = sum(
        1 for r in body if len(r) != 9 or not r[1] or r[3].endswith("s") or "-13-" in r[2] or r[4] == "lots"
    )
    for count in (unknown, old, malformed):
        assert 20 <= count <= 100, (unknown, old, unrated, malformed)  # about 1% each
    assert 5 <= unrated <= 60
    in_month = [r for r in body if len(r) > 2 and r[2].startswith("2026-10-")]
    assert len(in_month) > 4800


def test_usage_file_writes_to_a_path_and_refuses_bad_arguments(tmp_path):
    target = tmp_path / "usage.csv"
    call_command("make_usage_file", "--records", "10", "--out", str(target))
    assert len(target.read_text().splitlines()) == 11
    from django.core.management import CommandError

    with pytest.raises(CommandError, match="--month must be YYYY-MM"):
        make_file("--records", "1", "--month", "October")


def test_deploy_check_is_clean_with_production_settings(tmp_path):
    inherited = {k: v for k, v in os.environ.items() if k != "DJANGO_ALLOW_ASYNC_UNSAFE"}  # set for playwright
    env = {
        **inherited,
        "DEBUG": "0",
        "SECRET_KEY": "x" * 20 + "-production-secret-key-with-enough-entropy-9c3f",
        "ALLOWED_HOSTS": "tollgate.example.com",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_demo_usage_shows_allowances_bolt_ons_and_discounts(sync_tasks, django_capture_on_commit_callbacks):
    from usage.models import UsageCollector, UsageRecord

    from .conftest import receive

    call_command("seed_demo", "--services", "30")
    first, _ = demo.previous_month(timezone.localdate())
    content = make_file("--records", "3000", "--services", "30", "--error-rate", "0", "--month", f"{first:%Y-%m}")
    with django_capture_on_commit_callbacks(execute=True):
        received = receive(UsageCollector.objects.get(code="DEMO"), content)
    received.refresh_from_db()
    assert received.mediated == 3000
    mediated = UsageRecord.objects.filter(status="mediated")
    covered = mediated.filter(included_quantity__gt=0)
    assert covered.filter(allowance__plan__code="MOB-S").exists()
    international = covered.filter(allowance__product__code="INTL-100")
    assert international.exists()  # the bolt-on's minutes, drawn before the plan's
    assert all(r.destination.startswith(demo.INTERNATIONAL_PREFIXES) for r in international)
    assert covered.filter(charge_micros__gt=0).exists()  # an allowance ran out during a call
    assert mediated.filter(included_quantity=0, category="telephony", charge_micros__gt=0).exists()
    assert mediated.filter(discount__isnull=False).exists()


def test_demo_meters_fill_in_from_demo_usage(tmp_path, sync_tasks, django_capture_on_commit_callbacks):
    """After `make run`'s steps (seed, a demo file, received), the demo stream's meters have values."""
    import datetime as dt

    from metering.models import Meter, Stream
    from metering.services import do_execute_stream
    from usage.models import UsageRecord

    call_command("seed_demo", "--services", "20")
    call_command("seed_demo", "--services", "20")  # idempotent: still one stream with two rules
    stream = Stream.objects.get(code="DEMO")
    assert stream.rules.count() == 2
    out = tmp_path / "demo.csv"
    call_command("make_usage_file", "--records", "300", "--out", str(out))
    with django_capture_on_commit_callbacks(execute=True):
        call_command("receive", "--collector", "DEMO", str(out))
    mediated = UsageRecord.objects.filter(status="mediated")
    do_execute_stream("test", stream, now=timezone.now() + dt.timedelta(minutes=1))
    volume = Meter.objects.filter(stream=stream, meter_type__code="DATA_DAY")
    calls = Meter.objects.filter(stream=stream, meter_type__code="CALLS_DAY")
    assert volume.exists() and calls.exists()
    assert sum(m.records for m in volume) == mediated.filter(category="data").count()
    assert sum(m.records for m in calls) == mediated.filter(category="telephony", usage_type="voice").count()


def test_usage_file_ends_with_credit_lines_when_asked():
    body = list(csv.reader(io.StringIO(make_file("--records", "20", "--credits", "3", "--month", "2026-10"))))[1:]
    assert len(body) == 23
    credits = body[20:]
    assert [r[0][:2] for r in credits] == ["CR"] * 3
    assert all(r[7] == "voice" and -600 < int(r[3]) <= -60 for r in credits)


def test_demo_api_calls_are_priced_by_the_api_access_aggregate_charge(sync_tasks, django_capture_on_commit_callbacks):
    """`make run`'s demo: the API access product's calls arrive as records and are priced once, on
    the period's count, graduated: the first 100 free, then 0.02 each up to 1,000."""
    from decimal import Decimal

    from billing import invoicing
    from billing.models import Charge
    from usage.models import UsageCollector, UsageRecord

    from .conftest import receive

    call_command("seed_demo", "--services", "30")
    first, _ = demo.previous_month(timezone.localdate())
    args = ("--records", "200", "--services", "30", "--error-rate", "0", "--month", f"{first:%Y-%m}")
    content = make_file(*args, "--api-calls", "400", "--credits", "2")
    with django_capture_on_commit_callbacks(execute=True):
        received = receive(UsageCollector.objects.get(code="DEMO"), content)
    received.refresh_from_db()
    assert received.mediated == 602
    calls = UsageRecord.objects.filter(usage_type="api_call")
    assert calls.count() == 400 and not calls.exclude(charge_micros=0).exists()
    assert set(calls.values_list("aggregate_charge__code", flat=True)) == {"API-CALLS"}
    run = invoicing.request_main_billing("test", first)
    invoicing.execute_main_billing(run.pk)
    lines = Charge.objects.filter(kind=Charge.Kind.AGGREGATE, aggregate__code="API-CALLS")
    per_service = dict(calls.values_list("service_id").annotate(n=Count("id")))
    assert {line.service_id: line.records for line in lines if line.records} == per_service
    for line in lines:  # 3 services with API access (8, 16, 24): each its own period's count
        assert line.amount == max(Decimal(line.records) - 100, Decimal(0)) * Decimal("0.02")
    assert Charge.objects.filter(kind=Charge.Kind.USAGE, is_credit=True).exists()  # and a credit line
