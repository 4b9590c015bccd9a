import datetime as dt
import io
import os
from decimal import Decimal

import pytest
from django.utils import timezone

# Playwright runs an event loop in the test thread; Django's ORM must still be usable there.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    return {
        **browser_type_launch_args,
        "executable_path": CHROMIUM,
        "args": [
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            "--disable-sync",
        ],
    }


# The operator's laptop: every page the browser tests open must fit it without scrolling sideways.
LAPTOP = {"width": 1366, "height": 768}


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args):
    return {**browser_context_args, "viewport": LAPTOP}


def assert_fits(page) -> None:
    """No horizontal overflow at the laptop's width (the page's own scroll width, not a table's)."""
    widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    if widths[0] > widths[1]:
        wide = page.evaluate(
            """[...document.querySelectorAll('#content th, #content td')].filter(e => e.offsetWidth > 150)
               .map(e => e.tagName + ' ' + e.offsetWidth + ' ' + e.innerText.slice(0, 40)).slice(0, 12)"""
        )
        raise AssertionError(f"{page.url} is {widths[0]} px wide in a {widths[1]} px window; wide cells: {wide}")


def aware(*args) -> dt.datetime:
    return timezone.make_aware(dt.datetime(*args))


@pytest.fixture
def make_service(db):
    """Create a service (and its account) with optional identifier, plan and periods."""
    from billing.models import Account, Plan, RateCard, Service, ServiceIdentifier, Subscription

    counter = {"n": 0}

    def build(*, identifier=None, plan=True, bill_day=1, account=None, status="active"):
        counter["n"] += 1
        n = counter["n"]
        if account is None:
            account = Account.objects.create(number=f"T{n:05d}", name=f"Test customer {n}", bill_day=bill_day)
        service = Service.objects.create(account=account, service_id=f"TS{n:05d}", sub_id=f"TSUB{n:05d}", status=status)
        if identifier:
            ServiceIdentifier.objects.create(service=service, value=identifier, active_from=aware(2025, 1, 1))
        if plan:
            card, _ = RateCard.objects.get_or_create(code="TEST", defaults={"name": "Test card"})
            the_plan, _ = Plan.objects.get_or_create(
                code="TEST-PLAN", defaults={"name": "Test plan", "rate_card": card, "monthly_fee": Decimal("20")}
            )
            Subscription.objects.create(service=service, plan=the_plan, starts_on=dt.date(2025, 1, 1))
        return service

    return build


def staff_user(django_user_model, username, password, role):
    from django.contrib.auth.models import Group

    from billing import roles

    roles.sync_roles()
    user = django_user_model.objects.create_user(username, password=password, is_staff=True)
    user.groups.add(Group.objects.get(name=role))
    return user


@pytest.fixture
def operator(db, django_user_model):
    return staff_user(django_user_model, "op", "op-secret-123", "Billing operator")


@pytest.fixture
def viewer(db, django_user_model):
    return staff_user(django_user_model, "view", "view-secret-123", "Billing viewer")


@pytest.fixture(autouse=True)
def media_in_tmp(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture(params=["small batch", "large batch"])
def both_gate_plans(request, settings):
    """Run the test with files mediated in batches of 3 records (many batches, each drawing after the
    counters the one before added, on one DuckDB thread) and of 200,000 (one batch, two threads).
    The numbers must agree: they depend neither on the batch size nor on the threads."""
    small = request.param == "small batch"
    settings.TOLLGATE_MEDIATION_BATCH = 3 if small else 200_000
    settings.TOLLGATE_DUCKDB_THREADS = 1 if small else 2


@pytest.fixture
def sync_tasks(monkeypatch):
    """django-q2 tasks run inline (the worker path minus the process)."""
    from django_q.conf import Conf

    monkeypatch.setattr(Conf, "SYNC", True)


@pytest.fixture
def world(db, make_service):
    """A small priced world with golden numbers: see tests/test_mediation.py."""
    from billing.models import Plan, Rate, RateCard, SubscriptionPeriod, TaxRule
    from usage.demo import ensure_demo_collector

    default = RateCard.objects.create(code="DEF", name="Default", is_default=True, rounding_decimals=4)
    plan_card = RateCard.objects.create(code="PLAN", name="Plan card", rounding_decimals=4)
    rates = [
        (default, "telephony", "voice", "", "minute", "0.10", 60),
        (default, "telephony", "voice", "44", "minute", "0.50", 30),
        (default, "telephony", "voice", "441", "minute", "0.70", 1),
        (default, "telephony", "sms", "", "message", "0.25", 1),
        (default, "telephony", "", "61", "minute", "0.30", 60),
        (default, "data", "data", "", "mib", "0.02", 1024),
        (default, "misc", "service_charge", "", "each", "2.50", 1),
        (plan_card, "telephony", "voice", "44", "minute", "0.40", 30),
    ]
    for card, category, usage_type, prefix, unit, price, inc in rates:
        Rate.objects.create(
            rate_card=card,
            category=category,
            usage_type=usage_type,
            destination_prefix=prefix,
            unit=unit,
            price_per_unit=Decimal(price),
            increment=inc,
        )
    TaxRule.objects.create(code="GST", name="GST", percent=Decimal("10"), is_default=True)
    plan = Plan.objects.create(code="P", name="Plan P", rate_card=plan_card)
    s1 = make_service(identifier="61400000001", plan=False)
    s2 = make_service(identifier="61400000002", plan=False)
    from billing.models import Subscription

    Subscription.objects.create(service=s1, plan=plan, starts_on=dt.date(2025, 1, 1))
    for service in (s1, s2):
        SubscriptionPeriod.objects.create(
            service=service, start_date=dt.date(2026, 10, 1), end_date=dt.date(2026, 10, 31)
        )
        SubscriptionPeriod.objects.create(
            service=service, start_date=dt.date(2026, 11, 1), end_date=dt.date(2026, 11, 30)
        )
    SubscriptionPeriod.objects.create(
        service=s1, start_date=dt.date(2026, 9, 1), end_date=dt.date(2026, 9, 30), status="closed"
    )
    collector = ensure_demo_collector()
    # The demo carrier's mapping, but refusing credits: the golden file's negative duration is a bad line
    # here (tests/test_credits.py turns credits on).
    collector.accept_negative = False
    collector.save(update_fields=["accept_negative"])
    return {"collector": collector, "s1": s1, "s2": s2, "default": default, "plan_card": plan_card}


def receive(collector, content: str | bytes, name="usage.csv", actor="test"):
    from usage import services

    data = content.encode() if isinstance(content, str) else content
    return services.do_receive_file(actor, collector, name, io.BytesIO(data))


@pytest.fixture
def mediate(world, sync_tasks, django_capture_on_commit_callbacks):
    """Receive a file on the demo collector and mediate it now; the file, refreshed."""

    def run(content, name="usage.csv", collector=None):
        with django_capture_on_commit_callbacks(execute=True):
            received = receive(collector or world["collector"], content, name)
        received.refresh_from_db()
        return received

    return run


def admin_login(page, base_url: str, username: str = "op", password: str = "op-secret-123") -> None:
    """Log in to the admin in the browser as the `operator` fixture's user."""
    page.goto(f"{base_url}/admin/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("input[type=submit]")
    page.wait_for_selector("#user-tools")


@pytest.fixture
def token(db):
    from billing.api.auth import do_create_integration_client

    _, key = do_create_integration_client("test", "crm")
    return key


@pytest.fixture
def api(token):
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


@pytest.fixture
def billed_world(world, mediate):
    """The golden world with a bolt-on and a modem, its file mediated: Main Billing's golden
    numbers are in tests/test_main_billing.py."""
    from billing.models import Plan, Product, ServiceIdentifier, Subscription

    from .test_mediation import GOLDEN

    Plan.objects.filter(code="P").update(monthly_fee=Decimal("30"))
    data = Product.objects.create(
        code="DATA1G", name="Data 1GB", kind=Product.Kind.BOLT_ON, price=Decimal("10"), charge_type="recurring"
    )
    modem = Product.objects.create(
        code="MODEM", name="Modem", kind=Product.Kind.EQUIPMENT, price=Decimal("99.95"), charge_type="one_time"
    )
    Subscription.objects.create(service=world["s2"], product=data, starts_on=dt.date(2026, 10, 11))
    Subscription.objects.create(service=world["s2"], product=modem, starts_on=dt.date(2026, 10, 3))
    mediate(GOLDEN)
    # The cause of A9's quarantine is fixed: Main Billing's Reprocess activity mediates it.
    ServiceIdentifier.objects.create(service=world["s2"], value="61499999999", active_from=aware(2026, 1, 1))
    return world
