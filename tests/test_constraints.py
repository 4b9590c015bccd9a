"""Non-overlap rules: refused with a clear message by validation, and by the database itself
(exclusion constraint on PostgreSQL, triggers on SQLite) when validation is bypassed."""

import datetime as dt

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from billing import services
from billing.models import Product, ServiceIdentifier, Subscription, SubscriptionPeriod
from billing.overlaps import message_for_integrity_error

from .conftest import aware

pytestmark = pytest.mark.django_db

IDENT_MSG = "This identifier value is already active on a service during that time."
PERIOD_MSG = "The service already has a subscription period covering part of those dates."


def db_refusal(create):
    """Run `create` in a savepoint; return our rule's message for the IntegrityError it raises."""
    with pytest.raises(IntegrityError) as info, transaction.atomic():
        create()
    return message_for_integrity_error(info.value)


class TestIdentifierOverlap:
    def test_second_service_cannot_take_an_active_value(self, make_service):
        make_service(identifier="61400000001")
        other = make_service()
        with pytest.raises(ValidationError) as info:
            services.do_add_service_identifier("test", other, value="61400000001", active_from=aware(2026, 1, 1))
        assert IDENT_MSG in info.value.messages[0]
        assert "61400000001" in info.value.messages[0]  # names the clashing row

    def test_database_refuses_when_validation_is_bypassed(self, make_service):
        make_service(identifier="61400000001")
        other = make_service()
        message = db_refusal(
            lambda: ServiceIdentifier.objects.create(service=other, value="61400000001", active_from=aware(2026, 1, 1))
        )
        assert message == IDENT_MSG

    def test_bulk_create_is_refused_too(self, make_service):
        make_service(identifier="61400000001")
        other = make_service()
        rows = [
            ServiceIdentifier(
                service=other, value="61400000001", active_from=aware(2024, 6, 1), active_to=aware(2025, 1, 2)
            )
        ]
        assert db_refusal(lambda: ServiceIdentifier.objects.bulk_create(rows)) == IDENT_MSG

    def test_update_into_overlap_is_refused(self, make_service):
        first = make_service()
        second = make_service()
        ServiceIdentifier.objects.create(
            service=first, value="X1", active_from=aware(2025, 1, 1), active_to=aware(2025, 6, 1)
        )
        later = ServiceIdentifier.objects.create(service=second, value="X1", active_from=aware(2025, 6, 1))
        later.active_from = aware(2025, 5, 31)
        assert db_refusal(lambda: later.save()) == IDENT_MSG

    def test_handover_at_the_same_instant_is_allowed(self, make_service):
        """Ranges are half-open: ending at T and starting at T do not overlap."""
        first = make_service()
        second = make_service()
        cutover = aware(2026, 3, 1, 12, 0)
        services.do_add_service_identifier(
            "test", first, value="61400000009", active_from=aware(2025, 1, 1), active_to=cutover
        )
        services.do_add_service_identifier("test", second, value="61400000009", active_from=cutover)
        assert ServiceIdentifier.objects.filter(value="61400000009").count() == 2

    def test_one_microsecond_of_overlap_is_refused(self, make_service):
        first = make_service()
        second = make_service()
        cutover = aware(2026, 3, 1, 12, 0)
        ServiceIdentifier.objects.create(service=first, value="Z", active_from=aware(2025, 1, 1), active_to=cutover)
        early = cutover - dt.timedelta(microseconds=1)
        assert db_refusal(lambda: ServiceIdentifier.objects.create(service=second, value="Z", active_from=early))

    def test_other_values_and_ended_ranges_do_not_clash(self, make_service):
        first = make_service(identifier="A")
        ServiceIdentifier.objects.create(service=first, value="B", active_from=aware(2025, 1, 1))
        old = ServiceIdentifier.objects.create(
            service=make_service(), value="C", active_from=aware(2020, 1, 1), active_to=aware(2021, 1, 1)
        )
        ServiceIdentifier.objects.create(service=first, value="C", active_from=aware(2021, 1, 1))
        assert old.service != first

    def test_end_before_start_is_refused(self, make_service):
        svc = make_service()
        with pytest.raises(ValidationError, match="must end after it starts"):
            services.do_add_service_identifier(
                "test", svc, value="Q", active_from=aware(2026, 2, 1), active_to=aware(2026, 1, 1)
            )
        with pytest.raises(IntegrityError), transaction.atomic():
            ServiceIdentifier.objects.create(
                service=svc, value="Q", active_from=aware(2026, 2, 1), active_to=aware(2026, 1, 1)
            )

    def test_add_writes_an_audit_row(self, make_service):
        from billing.models import AuditEvent

        svc = make_service()
        ident = services.do_add_service_identifier(
            "api:client-1", svc, value="61499999999", active_from=aware(2026, 1, 1)
        )
        event = AuditEvent.objects.get(action="identifier.add")
        assert event.object_id == str(ident.pk)
        assert event.actor_label == "api:client-1"
        assert event.changes["after"]["value"] == "61499999999"


class TestPeriodOverlap:
    def period(self, service, start, end):
        p = SubscriptionPeriod(service=service, start_date=start, end_date=end)
        p.full_clean()
        p.save()
        return p

    def test_overlapping_period_is_refused_with_message(self, make_service):
        svc = make_service()
        self.period(svc, dt.date(2026, 10, 1), dt.date(2026, 10, 31))
        with pytest.raises(ValidationError) as info:
            self.period(svc, dt.date(2026, 10, 15), dt.date(2026, 11, 14))
        assert PERIOD_MSG in " ".join(info.value.messages)

    def test_database_refuses_overlap_when_validation_is_bypassed(self, make_service):
        svc = make_service()
        self.period(svc, dt.date(2026, 10, 1), dt.date(2026, 10, 31))
        # End dates are inclusive: sharing only the 31st is already an overlap.
        message = db_refusal(
            lambda: SubscriptionPeriod.objects.create(
                service=svc, start_date=dt.date(2026, 10, 31), end_date=dt.date(2026, 11, 29)
            )
        )
        assert message == PERIOD_MSG

    def test_adjacent_periods_and_other_services_are_fine(self, make_service):
        svc, other = make_service(), make_service()
        self.period(svc, dt.date(2026, 10, 1), dt.date(2026, 10, 31))
        self.period(svc, dt.date(2026, 11, 1), dt.date(2026, 11, 30))
        self.period(other, dt.date(2026, 10, 1), dt.date(2026, 10, 31))
        assert SubscriptionPeriod.objects.count() == 3

    def test_period_end_before_start_is_refused(self, make_service):
        svc = make_service()
        with pytest.raises(ValidationError, match="cannot end before it starts"):
            self.period(svc, dt.date(2026, 10, 31), dt.date(2026, 10, 1))


class TestPlanOverlap:
    def test_two_plans_at_once_are_refused_but_products_may_overlap(self, make_service):
        svc = make_service()  # has TEST-PLAN from 2025-01-01, open-ended
        plan = Subscription.objects.get(service=svc).plan
        with pytest.raises(ValidationError, match="already has a plan"):
            Subscription(service=svc, plan=plan, starts_on=dt.date(2026, 1, 1)).full_clean()
        assert db_refusal(lambda: Subscription.objects.create(service=svc, plan=plan, starts_on=dt.date(2026, 1, 1)))
        bolt_on = Product.objects.create(code="B1", name="Bolt-on", kind="bolt_on")
        Subscription.objects.create(service=svc, product=bolt_on, starts_on=dt.date(2026, 1, 1))
        Subscription.objects.create(service=svc, product=bolt_on, starts_on=dt.date(2026, 2, 1))
        assert Subscription.objects.filter(service=svc).count() == 3

    def test_plan_xor_product(self, make_service):
        svc = make_service(plan=False)
        with pytest.raises(IntegrityError), transaction.atomic():
            Subscription.objects.create(service=svc, starts_on=dt.date(2026, 1, 1))
