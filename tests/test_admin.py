import datetime as dt

import pytest
from django.contrib import admin
from django.contrib.auth.models import Group
from django.urls import reverse

from billing import roles
from billing.models import AuditEvent, ServiceIdentifier, SubscriptionPeriod

pytestmark = pytest.mark.django_db


def test_roles_exist_with_the_right_permissions(db):
    roles.sync_roles()
    operator = set(Group.objects.get(name=roles.OPERATOR).permissions.values_list("codename", flat=True))
    viewer = set(Group.objects.get(name=roles.VIEWER).permissions.values_list("codename", flat=True))
    assert {"change_service", "add_serviceidentifier", "delete_subscriptionperiod", "view_auditevent"} <= operator
    assert not {"change_auditevent", "delete_auditevent", "add_auditevent"} & operator
    assert viewer and all(code.startswith("view_") for code in viewer)
    assert "view_service" in viewer
    assert {"view_success", "view_failure", "view_ormq", "view_schedule"} <= operator  # the task queue: looked at
    assert not {"change_success", "delete_ormq", "change_schedule", "add_schedule", "delete_schedule"} & operator
    assert "view_schedule" in viewer


def test_every_admin_page_renders_for_an_operator(client, operator, make_service):
    make_service(identifier="61400000001")
    client.force_login(operator)
    for model in admin.site._registry:
        if model._meta.app_label not in roles.TOLLGATE_APPS:
            continue
        info = model._meta.app_label, model._meta.model_name
        assert client.get(reverse(f"admin:{info[0]}_{info[1]}_changelist")).status_code == 200, info
        if admin.site._registry[model].has_add_permission(type("R", (), {"user": operator})()):
            assert client.get(reverse(f"admin:{info[0]}_{info[1]}_add")).status_code == 200, info


@pytest.mark.parametrize("term", ["61400000042", "TS00001", "TSUB00001", "  61400000042 "])
def test_service_search_finds_by_identifier_service_id_and_sub_id(client, operator, make_service, term):
    wanted = make_service(identifier="61400000042")
    make_service(identifier="61400000043")
    client.force_login(operator)
    response = client.get(reverse("admin:billing_service_changelist"), {"q": term})
    assert list(response.context["cl"].result_list) == [wanted]


def test_service_search_with_no_match_is_empty(client, operator, make_service):
    make_service(identifier="61400000042")
    client.force_login(operator)
    response = client.get(reverse("admin:billing_service_changelist"), {"q": "1400000042"})  # not a prefix
    assert list(response.context["cl"].result_list) == []


def test_service_search_by_prefix_of_each_key_any_case(client, operator, make_service):
    from billing.models import Account

    first = make_service(identifier="61400000042")
    second = make_service(identifier="61400000043")
    Account.objects.filter(pk=second.account_id).update(name="Acme Mining Pty Ltd")
    client.force_login(operator)
    url = reverse("admin:billing_service_changelist")

    def found(term):
        return sorted(s.service_id for s in client.get(url, {"q": term}).context["cl"].result_list)

    both = sorted([first.service_id, second.service_id])
    assert found("614000000") == both  # an MSISDN prefix
    assert found(first.service_id.lower()) == [first.service_id]  # service ID, any case
    assert found(first.service_id[:3].lower()) == both
    assert found("tsub0000") == both  # a sub ID prefix
    assert found(second.account.number) == [second.service_id]  # the account's number
    assert found("acme min") == [second.service_id]  # the customer's name
    page = client.get(url, {"q": "6140000004"}).content.decode()
    assert "61400000042" in page and "61400000043" in page  # the matched identifier is shown
    assert reverse("console:service_usage", args=[first.pk]) in page
    assert reverse("console:service_equipment_usage", args=[first.pk]) in page
    assert reverse("console:service_bolt_ons", args=[first.pk]) in page


def service_form(service, identifiers=(), periods=()):
    """POST data for the service change form with its inlines."""
    data = {
        "account": service.account_id,
        "service_id": service.service_id,
        "sub_id": service.sub_id,
        "service_type": service.service_type,
        "status": service.status,
        "description": "changed",
        "identifiers-TOTAL_FORMS": len(identifiers),
        "identifiers-INITIAL_FORMS": 0,
        "subscriptions-TOTAL_FORMS": 0,
        "subscriptions-INITIAL_FORMS": 0,
        "periods-TOTAL_FORMS": len(periods),
        "periods-INITIAL_FORMS": 0,
        "rate_overrides-TOTAL_FORMS": 0,
        "rate_overrides-INITIAL_FORMS": 0,
    }
    for i, (value, start, end) in enumerate(identifiers):
        data.update(
            {
                f"identifiers-{i}-kind": "msisdn",
                f"identifiers-{i}-value": value,
                f"identifiers-{i}-active_from_0": start,
                f"identifiers-{i}-active_from_1": "00:00:00",
                f"identifiers-{i}-active_to_0": end or "",
                f"identifiers-{i}-active_to_1": "00:00:00" if end else "",
            }
        )
    for i, (start, end) in enumerate(periods):
        data.update({f"periods-{i}-start_date": start, f"periods-{i}-end_date": end, f"periods-{i}-status": "open"})
    return data


def test_two_overlapping_new_identifiers_in_one_form_get_a_message_not_a_500(client, operator, make_service):
    svc = make_service(plan=False)
    client.force_login(operator)
    url = reverse("admin:billing_service_change", args=[svc.pk])
    response = client.post(
        url, service_form(svc, identifiers=[("61411111111", "2026-01-01", None), ("61411111111", "2026-06-01", None)])
    )
    assert response.status_code == 200
    assert "already active on a service during that time" in response.content.decode()
    assert not ServiceIdentifier.objects.filter(value="61411111111").exists()


def test_identifier_taken_by_another_service_gets_a_message(client, operator, make_service):
    make_service(identifier="61422222222")
    svc = make_service(plan=False)
    client.force_login(operator)
    response = client.post(
        reverse("admin:billing_service_change", args=[svc.pk]),
        service_form(svc, identifiers=[("61422222222", "2026-01-01", None)]),
    )
    assert response.status_code == 200
    assert "already active on a service during that time" in response.content.decode()


def test_overlapping_periods_in_one_form_get_a_message(client, operator, make_service):
    svc = make_service(plan=False)
    client.force_login(operator)
    response = client.post(
        reverse("admin:billing_service_change", args=[svc.pk]),
        service_form(svc, periods=[("2026-10-01", "2026-10-31"), ("2026-10-31", "2026-11-29")]),
    )
    assert response.status_code == 200
    assert "already has a subscription period covering part of those dates" in response.content.decode()
    assert not SubscriptionPeriod.objects.exists()


def test_operator_change_is_audited_with_before_and_after(client, operator, make_service):
    svc = make_service(plan=False)
    client.force_login(operator)
    response = client.post(
        reverse("admin:billing_service_change", args=[svc.pk]),
        service_form(svc, identifiers=[("61433333333", "2026-01-01", None)]),
    )
    assert response.status_code == 302
    change = AuditEvent.objects.get(action="service.change", object_id=str(svc.pk))
    assert change.actor == operator
    assert change.changes == {"before": {"description": ""}, "after": {"description": "changed"}}
    added = AuditEvent.objects.get(action="serviceidentifier.add")
    assert added.changes["after"]["value"] == "61433333333"


def test_viewer_can_look_but_not_change(client, viewer, make_service):
    svc = make_service(identifier="61444444444")
    client.force_login(viewer)
    url = reverse("admin:billing_service_change", args=[svc.pk])
    page = client.get(url)
    assert page.status_code == 200
    assert "61444444444" in page.content.decode()
    assert 'name="_save"' not in page.content.decode()
    assert client.post(url, service_form(svc)).status_code == 403
    assert client.get(reverse("admin:billing_service_add")).status_code == 403
    svc.refresh_from_db()
    assert svc.description == ""


def test_nobody_edits_the_audit_trail(client, operator):
    AuditEvent.objects.create(actor_label="x", action="y")
    client.force_login(operator)
    event = AuditEvent.objects.get()
    assert client.get(reverse("admin:billing_auditevent_changelist")).status_code == 200
    assert client.post(reverse("admin:billing_auditevent_delete", args=[event.pk]), {"post": "yes"}).status_code == 403


def test_generate_periods_admin_action(client, operator, make_service):
    a, b = make_service(), make_service(bill_day=15)
    client.force_login(operator)
    url = reverse("admin:billing_service_changelist")
    base = {"action": "generate_periods", "_selected_action": [a.pk, b.pk]}
    page = client.post(url, base)
    assert page.status_code == 200 and "Generate periods" in page.content.decode()
    done = client.post(url, {**base, "apply": "1", "start": "2026-10-01", "end": "2026-10-31"}, follow=True)
    assert "Generated 3 subscription periods." in done.content.decode()
    assert a.periods.count() == 1 and b.periods.count() == 2
    bad = client.post(url, {**base, "apply": "1", "start": "2026-10-31", "end": "2026-10-01"})
    assert "must not be before the start date" in bad.content.decode()


def test_service_changelist_query_count_does_not_grow_with_rows(
    client, operator, make_service, django_assert_max_num_queries
):
    for n in range(30):
        make_service(identifier=f"6145{n:07d}")
    client.force_login(operator)
    with django_assert_max_num_queries(12):
        assert client.get(reverse("admin:billing_service_changelist")).status_code == 200


def test_big_unfiltered_list_uses_the_estimate_not_count(db):
    from django.db import connection

    from billing.admin_tools import EstimatedCountPaginator
    from billing.models import Account

    if connection.vendor != "postgresql":
        pytest.skip("the planner's row estimate is a PostgreSQL feature")
    Account.objects.create(number="E1", name="one")
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE billing_account")
        cursor.execute("UPDATE pg_class SET reltuples = 2000000 WHERE relname = 'billing_account'")
    assert EstimatedCountPaginator(Account.objects.all(), 50).count == 2_000_000
    assert EstimatedCountPaginator(Account.objects.filter(number="E1"), 50).count == 1


def test_period_list_searches_by_service_id(client, operator, make_service):
    svc = make_service()
    SubscriptionPeriod.objects.create(service=svc, start_date=dt.date(2026, 10, 1), end_date=dt.date(2026, 10, 31))
    client.force_login(operator)
    page = client.get(reverse("admin:billing_subscriptionperiod_changelist"), {"q": svc.service_id})
    assert page.status_code == 200 and len(page.context["cl"].result_list) == 1


def test_rate_inputs_show_plain_figures_and_a_fractional_increment_saves_exactly(client, operator, world):
    from decimal import Decimal

    from billing.models import Rate, RateCard

    client.force_login(operator)
    card = RateCard.objects.get(code="DEF")
    voice = Rate.objects.get(rate_card=card, destination_prefix="", usage_type="voice")
    page = client.get(reverse("admin:billing_rate_change", args=[voice.pk])).content.decode()
    assert 'name="increment" value="60"' in page and 'name="price_per_unit" value="0.1"' in page
    assert "60.000" not in page and "0.1000000000" not in page
    form = client.get(reverse("admin:billing_rate_change", args=[voice.pk])).context["adminform"].form
    data = {k: v for k, v in form.initial.items() if v is not None and k in form.fields}
    data.update(
        {
            "increment": "0.1",
            "tiers-TOTAL_FORMS": "0",
            "tiers-INITIAL_FORMS": "0",
            "tiers-MIN_NUM_FORMS": "0",
            "tiers-MAX_NUM_FORMS": "1000",
        }
    )
    reply = client.post(reverse("admin:billing_rate_change", args=[voice.pk]), data)
    assert reply.status_code == 302, reply.context["adminform"].form.errors if reply.context else reply
    voice.refresh_from_db()
    assert voice.increment == Decimal("0.1")
    data["increment"] = "0.0001"  # finer than a thousandth of a base unit
    refused = client.post(reverse("admin:billing_rate_change", args=[voice.pk]), data)
    assert refused.status_code == 200 and "increment" in refused.context["adminform"].form.errors
