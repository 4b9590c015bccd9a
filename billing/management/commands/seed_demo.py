import datetime as dt
import time
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone

from billing import demo, roles, services
from billing.models import (
    Account,
    AggregateCharge,
    AggregateTier,
    DestinationZone,
    Discount,
    IncludedValue,
    Plan,
    Product,
    Rate,
    RateCard,
    Service,
    ServiceIdentifier,
    Subscription,
    TaxRule,
    ZonePrefix,
)
from metering.demo import ensure_demo_stream
from usage.demo import ensure_demo_collector

BATCH = 5000
# Per-item prices of service and equipment charges: plan cards price the last two, the MISC card all.
MISC_CHARGES = (("equipment", "5.00"), ("service_charge", "2.50"), ("feature", "1.00"))
D = Decimal


class Command(BaseCommand):
    help = (
        "Load a believable small telco: rate cards, plans, bolt-ons, tax, accounts, services with "
        "identifiers and open periods for last month and this month. Idempotent; --services scales it."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--services", dest="service_count", type=int, default=200, help="How many services (default 200)."
        )
        parser.add_argument("--no-users", action="store_true", help="Do not create the demo logins.")

    def handle(self, *args, service_count: int, no_users: bool, **options):
        started = time.monotonic()
        with transaction.atomic():
            catalogue = self.catalogue()
            if not no_users:
                self.users()
        created = self.add_services(service_count, catalogue)
        today = timezone.localdate()
        first, _ = demo.previous_month(today)
        _, last = demo.month_bounds(today.year, today.month)
        periods = services.do_generate_subscription_periods("command:seed_demo", start=first, end=last)
        self.stdout.write(
            f"seed_demo: {created} services added ({service_count} in the demo), {periods} periods added, "
            f"{time.monotonic() - started:.1f}s"
        )
        if not no_users:
            self.stdout.write(f"demo logins: operator / {demo.DEMO_PASSWORD}, viewer / {demo.DEMO_PASSWORD}")

    def catalogue(self):
        standard, _ = RateCard.objects.update_or_create(
            code="STD", defaults={"name": "Standard mobile", "is_default": True, "rounding_decimals": 4}
        )
        for prefix, name, per_minute in demo.DESTINATIONS:
            Rate.objects.update_or_create(
                rate_card=standard,
                category="telephony",
                usage_type="voice",
                destination_prefix=prefix,
                defaults={
                    "destination_name": name,
                    "unit": "minute",
                    "price_per_unit": D(str(per_minute)),
                    "increment": 30 if prefix.startswith("61") else 60,
                },
            )
        for usage_type, price in (("sms", "0.25"), ("mms", "0.50")):
            Rate.objects.update_or_create(
                rate_card=standard,
                category="telephony",
                usage_type=usage_type,
                destination_prefix="",
                defaults={"destination_name": "Any", "unit": "message", "price_per_unit": D(price)},
            )
        Rate.objects.update_or_create(
            rate_card=standard,
            category="telephony",
            usage_type="sms",
            destination_prefix="44",
            defaults={"destination_name": "United Kingdom", "unit": "message", "price_per_unit": D("0.50")},
        )
        Rate.objects.update_or_create(
            rate_card=standard,
            category="data",
            usage_type="data",
            destination_prefix="",
            defaults={"destination_name": "Mobile data", "unit": "mib", "price_per_unit": D("0.02"), "increment": 1024},
        )
        nbn_card, _ = RateCard.objects.update_or_create(code="NBN", defaults={"name": "NBN broadband"})
        misc_card, _ = RateCard.objects.update_or_create(code="MISC", defaults={"name": "Service & equipment"})
        for card, items in ((standard, MISC_CHARGES[1:]), (nbn_card, MISC_CHARGES[1:]), (misc_card, MISC_CHARGES)):
            for usage_type, price in items:
                Rate.objects.update_or_create(
                    rate_card=card,
                    category="misc",
                    usage_type=usage_type,
                    destination_prefix="",
                    defaults={
                        "destination_name": usage_type.replace("_", " ").title(),
                        "unit": "each",
                        "price_per_unit": D(price),
                    },
                )
        Rate.objects.update_or_create(
            rate_card=nbn_card,
            category="data",
            usage_type="data",
            destination_prefix="",
            defaults={"destination_name": "NBN data", "unit": "gib", "price_per_unit": D("0.00"), "increment": 1},
        )
        plans = {}
        for code, name, card, fee in (
            ("MOB-S", "Mobile Small", standard, "30"),
            ("MOB-L", "Mobile Large", standard, "60"),
            ("NBN-100", "NBN 100/20", nbn_card, "85"),
        ):
            plans[code], _ = Plan.objects.update_or_create(
                code=code, defaults={"name": name, "rate_card": card, "monthly_fee": D(fee)}
            )
        for plan, category, usage_type, qty, unit in (
            ("MOB-S", "telephony", "voice", "300", "minute"),
            ("MOB-S", "data", "data", "5", "gib"),
            ("MOB-L", "telephony", "voice", "5000", "minute"),
            ("MOB-L", "telephony", "sms", "1000", "message"),
            ("MOB-L", "data", "data", "40", "gib"),
        ):
            IncludedValue.objects.update_or_create(
                plan=plans[plan],
                category=category,
                usage_type=usage_type,
                defaults={"quantity": D(qty), "unit": unit},
            )
        products = {}
        for code, name, kind, charge_type, price, card in (
            ("INTL-100", "International 100 minutes", "bolt_on", "recurring", "10", standard),
            ("DATA-10", "Data pack 10 GB", "bolt_on", "recurring", "15", standard),
            ("HANDSET", "Handset", "equipment", "one_time", "499", misc_card),
            ("SIM", "SIM card", "equipment", "one_time", "5", misc_card),
            ("ACTIVATION", "Activation fee", "service_charge", "one_time", "25", misc_card),
            ("API", "API access", "feature", "recurring", "9", None),
        ):
            products[code], _ = Product.objects.update_or_create(
                code=code,
                defaults={"name": name, "kind": kind, "charge_type": charge_type, "price": D(price), "rate_card": card},
            )
        international, _ = DestinationZone.objects.update_or_create(
            code="INTL", defaults={"name": "International (UK, North America, NZ, China, India)"}
        )
        for prefix in demo.INTERNATIONAL_PREFIXES:
            ZonePrefix.objects.get_or_create(zone=international, prefix=prefix)
        IncludedValue.objects.update_or_create(
            product=products["INTL-100"],
            category="telephony",
            usage_type="voice",
            defaults={"quantity": D("100"), "unit": "minute", "zone": international},
        )
        IncludedValue.objects.update_or_create(
            product=products["DATA-10"],
            category="data",
            usage_type="data",
            defaults={"quantity": D("10"), "unit": "gib"},
        )
        calls, _ = AggregateCharge.objects.update_or_create(
            code="API-CALLS",
            defaults={
                "product": products["API"],
                "name": "API calls",
                "aggregation": "count",
                "unit": "each",
                "usage_type": "api_call",
                "charge_model": "graduated",
            },
        )
        for start, price in demo.API_TIERS:
            AggregateTier.objects.update_or_create(
                charge=calls, from_quantity=D(start), defaults={"price_per_unit": D(price)}
            )
        TaxRule.objects.update_or_create(code="GST", defaults={"name": "GST", "percent": D("10"), "is_default": True})
        ensure_demo_collector()
        ensure_demo_stream()
        return {"plans": plans, "products": products}

    def users(self):
        User = get_user_model()
        roles.sync_roles()
        for username, group in (("operator", roles.OPERATOR), ("viewer", roles.VIEWER)):
            user, created = User.objects.get_or_create(username=username, defaults={"is_staff": True})
            if created:
                user.set_password(demo.DEMO_PASSWORD)
                user.save()
            user.groups.add(Group.objects.get(name=group))

    def add_services(self, count: int, catalogue) -> int:
        existing = set(Service.objects.filter(service_id__startswith="SVC").values_list("service_id", flat=True))
        missing = [i for i in range(1, count + 1) if demo.service_id(i) not in existing]
        since = timezone.make_aware(dt.datetime(2025, 1, 1))
        plans, products = catalogue["plans"], catalogue["products"]
        for start in range(0, len(missing), BATCH):
            chunk = missing[start : start + BATCH]
            with transaction.atomic():
                numbers = {demo.account_index(i) for i in chunk}
                have = dict(
                    Account.objects.filter(number__in=[demo.account_number(k) for k in numbers]).values_list(
                        "number", "pk"
                    )
                )
                new_accounts = [
                    Account(number=demo.account_number(k), name=f"Demo Customer {k}", bill_day=demo.bill_day(k))
                    for k in sorted(numbers)
                    if demo.account_number(k) not in have
                ]
                Account.objects.bulk_create(new_accounts, batch_size=BATCH)
                have.update(
                    Account.objects.filter(number__in=[a.number for a in new_accounts]).values_list("number", "pk")
                )
                rows = [
                    Service(
                        account_id=have[demo.account_number(demo.account_index(i))],
                        service_id=demo.service_id(i),
                        sub_id=demo.sub_id(i),
                        service_type=Service.Type.NBN if demo.is_nbn(i) else Service.Type.MOBILE,
                        description="NBN broadband" if demo.is_nbn(i) else "Mobile",
                    )
                    for i in chunk
                ]
                Service.objects.bulk_create(rows, batch_size=BATCH)
                pk_of = dict(
                    Service.objects.filter(service_id__in=[s.service_id for s in rows]).values_list("service_id", "pk")
                )
                identifiers, subscriptions, discounts = [], [], []
                for i in chunk:
                    pk = pk_of[demo.service_id(i)]
                    kind = ServiceIdentifier.Kind.USERNAME if demo.is_nbn(i) else ServiceIdentifier.Kind.MSISDN
                    identifiers.append(
                        ServiceIdentifier(service_id=pk, kind=kind, value=demo.identifier(i), active_from=since)
                    )
                    plan = plans["NBN-100"] if demo.is_nbn(i) else plans["MOB-L" if i % 4 == 0 else "MOB-S"]
                    subscriptions.append(Subscription(service_id=pk, plan=plan, starts_on=since.date()))
                    if not demo.is_nbn(i) and i % 5 == 0:
                        subscriptions.append(
                            Subscription(service_id=pk, product=products["INTL-100"], starts_on=since.date())
                        )
                    if not demo.is_nbn(i) and i % 6 == 0:
                        subscriptions.append(
                            Subscription(service_id=pk, product=products["DATA-10"], starts_on=since.date())
                        )
                    if demo.has_api(i):
                        api = Subscription(service_id=pk, product=products["API"], starts_on=since.date())
                        subscriptions.append(api)
                    if i % 25 == 0:
                        discounts.append(
                            Discount(
                                service_id=pk,
                                category="telephony",
                                percent=D("10"),
                                effective_from=since.date(),
                                description="Loyalty 10% off calls",
                            )
                        )
                ServiceIdentifier.objects.bulk_create(identifiers, batch_size=BATCH)
                Subscription.objects.bulk_create(subscriptions, batch_size=BATCH)
                Discount.objects.bulk_create(discounts, batch_size=BATCH)
        return len(missing)
