import datetime as dt
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
