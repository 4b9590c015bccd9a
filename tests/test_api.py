"""The integration API: roles over every write, provisioning rules and audit, ingest with outcomes
and idempotency, files, usage records by cursor, quarantine, rebalance, processes, meters, schema."""

import io
import re
import threading
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.test import APIClient

from billing.api.auth import do_create_integration_client, do_revoke_tokens
from billing.models import ApiToken, AuditEvent, IdempotencyKey, SubscriptionPeriod
from usage.models import FileRecord, MediationFile

from .test_mediation import EXPECTED, GOLDEN

ROOT_SCHEMA = str(__import__("pathlib").Path(__file__).resolve().parent.parent / "openapi.yaml")


def golden_records():
    """GOLDEN's lines as API records (same order, so line numbers match the file's minus the header)."""
    header, *lines = GOLDEN.strip("\n").split("\n")
    names = header.split(",")
    records = []
    for line in lines:
        values = line.split(",")
        records.append({name: value for name, value in zip(names, values, strict=False) if value != ""})
    return records


def ingest(api, records, key=None, code="DEMO"):
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key else {}
    return api.post(f"/api/v1/collectors/{code}/ingest/", {"records": records}, format="json", **headers)


# -- roles, over the whole URL conf --------------------------------------------------------------

SAMPLE = {"pk": "1", "code": "DEMO", "format": "json"}


def api_routes():
    """(path, method) for every write the API offers, from its URL conf."""
    resolver = get_resolver()
    routes = []

    def walk(patterns, prefix):
        for p in patterns:
            if isinstance(p, URLResolver):
                walk(p.url_patterns, prefix + str(p.pattern))
            elif isinstance(p, URLPattern):
                route = prefix + str(p.pattern)
                if (
                    not route.startswith("api/v1/")
                    or "format" in route
                    or route.endswith("\\.(?P<format>[a-z0-9]+)/?$")
                ):
                    continue
                view = p.callback
                methods = set(getattr(view, "actions", {}) or {})
                if not methods and hasattr(view, "cls"):
                    methods = {m for m in view.cls.http_method_names if hasattr(view.cls, m)}
                path = re.sub(r"\(\?P<(\w+)>[^)]*\)", lambda m: SAMPLE.get(m.group(1), "1"), route)
                path = path.replace("^", "").replace("$", "")
                for method in methods - {"get", "head", "options", "trace"}:
                    routes.append(("/" + path, method))

    walk(resolver.url_patterns, "")
    return sorted(set(routes))


def test_every_write_refuses_anonymous_and_viewer(world, viewer):
    routes = api_routes()
    assert len(routes) >= 20  # provisioning CRUD, ingest, files, reprocess, rebalance, billing, retry
    anonymous = APIClient()
    as_viewer = APIClient()
    as_viewer.force_login(viewer)
    for path, method in routes:
        refused = getattr(anonymous, method)(path, {}, format="json").status_code
        assert refused == 401, (path, method, refused)
        refused = getattr(as_viewer, method)(path, {}, format="json").status_code
        assert refused == 403, (path, method, refused)


def test_reads_need_a_role_and_revoked_tokens_stop_working(world, viewer, api, token):
    assert APIClient().get("/api/v1/accounts/").status_code == 401
    as_viewer = APIClient()
    as_viewer.force_login(viewer)
    for path in ["accounts", "services", "usage-records", "quarantine", "processes", "meters", "invoices", "files"]:
        assert as_viewer.get(f"/api/v1/{path}/").status_code == 200, path
    assert api.get("/api/v1/accounts/").status_code == 200
    do_revoke_tokens("test", ApiToken.objects.all())
    assert api.get("/api/v1/accounts/").status_code == 401
    bad = APIClient()
    bad.credentials(HTTP_AUTHORIZATION="Token nonsense")
    assert bad.get("/api/v1/accounts/").status_code == 401


# -- provisioning ----------------------------------------------------------------------------------


def test_provisioning_follows_the_admins_rules_and_is_audited(api, db):
    created = api.post("/api/v1/accounts/", {"number": "A1", "name": "Acme", "bill_day": 1}, format="json")
    assert created.status_code == 201, created.data
    duplicate = api.post("/api/v1/accounts/", {"number": "A1", "name": "Again"}, format="json")
    assert duplicate.status_code == 400 and "number" in duplicate.data
    bad_day = api.post("/api/v1/accounts/", {"number": "A2", "name": "B", "bill_day": 30}, format="json")
    assert bad_day.status_code == 400 and "bill_day" in bad_day.data
    service = api.post("/api/v1/services/", {"account": "A1", "service_id": "S1"}, format="json")
    assert service.status_code == 201, service.data
    first = api.post(
        "/api/v1/service-identifiers/",
        {"service": "S1", "value": "61400000099", "active_from": "2026-01-01T00:00:00Z"},
        format="json",
    )
    assert first.status_code == 201, first.data
    overlapping = api.post(
        "/api/v1/service-identifiers/",
        {"service": "S1", "value": "61400000099", "active_from": "2026-03-01T00:00:00Z"},
        format="json",
    )
    assert overlapping.status_code == 400 and "already active" in str(overlapping.data).lower()
    period = api.post(
        "/api/v1/subscription-periods/",
        {"service": "S1", "start_date": "2026-10-01", "end_date": "2026-10-31"},
        format="json",
    )
    assert period.status_code == 201 and period.data["starts_at"].startswith("2026-10-01")
    SubscriptionPeriod.objects.filter(pk=period.data["id"]).update(status="invoiced")
    reopened = api.patch(f"/api/v1/subscription-periods/{period.data['id']}/", {"status": "open"}, format="json")
    assert reopened.status_code == 400 and "invoiced" in str(reopened.data)
    renamed = api.patch(f"/api/v1/accounts/{created.data['id']}/", {"name": "Acme Pty"}, format="json")
    assert renamed.status_code == 200, renamed.data
    assert api.delete(f"/api/v1/accounts/{created.data['id']}/").status_code == 409  # it has a service
    change = AuditEvent.objects.get(action="account.change")
    assert change.actor_label == "api-crm" and change.changes == {
        "before": {"name": "Acme"},
        "after": {"name": "Acme Pty"},
    }
    assert AuditEvent.objects.filter(action="serviceidentifier.add", actor_label="api-crm").count() == 1
    assert api.get("/api/v1/accounts/", {"number": "A1"}).data["results"][0]["name"] == "Acme Pty"


# -- ingest ------------------------------------------------------------------------------------------


def test_ingest_mediates_through_the_same_gates_with_per_record_outcomes(api, world):
    reply = ingest(api, golden_records())
    assert reply.status_code == 201, reply.data
    outcomes = {o["line"]: o for o in reply.data["outcomes"]}
    assert len(outcomes) == 16
    for file_line, (status, reason, charge, tax) in EXPECTED.items():
        got = outcomes[file_line - 1]  # no header line in a batch
        assert (got["status"], got["reason"]) == (status, reason), (file_line, got)
        if charge is not None:
            assert Decimal(got["charge"]) == Decimal(charge) and Decimal(got["tax"]) == Decimal(tax)
    assert outcomes[14]["message"]  # the impossible date says why
    assert reply.data["mediated"] == 8 and reply.data["status"] == "completed"
    assert MediationFile.objects.get().uploaded_via == "api"


def test_ingest_refuses_bad_structure_oversize_and_resent_batches(api, world, settings):
    unknown = ingest(api, [{"identifier": "1", "start_time": "2026-10-05T10:00:00Z", "colour": "red"}])
    assert unknown.status_code == 400 and unknown.data["records"][0] == {"colour": ["Unknown field."]}
    nested = ingest(api, [{"identifier": {"a": 1}, "start_time": "2026-10-05T10:00:00Z"}])
    assert nested.status_code == 400
    assert ingest(api, []).status_code == 400
    settings.TOLLGATE_API_MAX_RECORDS = 3
    too_many = ingest(api, golden_records()[:4])
    assert too_many.status_code == 413 and "At most 3 records" in too_many.data["detail"]
    settings.TOLLGATE_API_MAX_RECORDS = 10_000
    batch = golden_records()[:2]
    assert ingest(api, batch).status_code == 201
    again = ingest(api, batch)
    assert again.status_code == 409 and "already received" in again.data["detail"]
    overlapping = ingest(api, [golden_records()[0], {**golden_records()[1], "record_id": "NEW1"}])
    lines = {o["line"]: o for o in overlapping.data["outcomes"]}
    assert lines[1]["reason"] == "DUPLICATE" and lines[2]["status"] == "mediated"  # record keys span batches
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    huge = ingest(api, golden_records())
    assert huge.status_code == 413
    assert FileRecord.objects.filter(record_id="A1", is_duplicate=False).count() == 1


def test_idempotency_key_replays_refuses_other_bodies_and_in_flight_duplicates(api, world):
    batch = golden_records()[:3]
    first = ingest(api, batch, key="k-1")
    assert first.status_code == 201
    replay = ingest(api, batch, key="k-1")
    assert replay.status_code == 201 and replay["Idempotent-Replayed"] == "true" and replay.data == first.data
    other = ingest(api, golden_records()[3:5], key="k-1")
    assert other.status_code == 409 and "different request" in other.data["detail"]
    assert MediationFile.objects.count() == 1
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.get(username="api-crm")
    IdempotencyKey.objects.create(user=user, key="k-2", request_hash="pending")  # a request still running
    pending = ingest(api, batch, key="k-2")
    assert pending.status_code == 409
    failed = ingest(api, [{"identifier": {"x": 1}}], key="k-3")
    assert failed.status_code == 400
    # A refused request did nothing, so its key is not spent (as Stripe does): a corrected retry goes through.
    assert ingest(api, golden_records()[5:7], key="k-3").status_code == 201


@pytest.mark.django_db(transaction=True)
def test_concurrent_duplicates_with_one_key_act_once(world, token):
    batch = golden_records()[:4]
    results = []

    def send():
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
        results.append(ingest(client, batch, key="same-key").status_code)
        connection.close()

    threads = [threading.Thread(target=send) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert MediationFile.objects.count() == 1
    assert results.count(201) >= 1 and set(results) <= {201, 409}
    assert FileRecord.objects.filter(record_id="A1").count() == 1


# -- files, usage records, quarantine ------------------------------------------------------------------


def test_files_upload_list_and_response_file(api, world):
    upload = api.post("/api/v1/files/", {"collector": "DEMO", "file": io.BytesIO(GOLDEN.encode())}, format="multipart")
    assert upload.status_code == 201, upload.data
    file_id = upload.data["id"]
    assert upload.data["status"] == "queued" and upload.data["sequence"] == 1
    from usage.mediation import process_collector_queue

    process_collector_queue(world["collector"].pk)
    listed = api.get("/api/v1/files/", {"collector__code": "DEMO"}).data["results"]
    assert listed[0]["id"] == file_id and listed[0]["status"] == "completed" and listed[0]["mediated"] == 8
    assert (listed[0]["physical_lines"], listed[0]["header_lines"], listed[0]["total_lines"]) == (17, 1, 16)
    response = api.get(f"/api/v1/files/{file_id}/response/")
    text = b"".join(response.streaming_content).decode()
    assert response["Content-Type"] == "text/csv" and "NO_SERVICE" in text
    resent = api.post("/api/v1/files/", {"collector": "DEMO", "file": io.BytesIO(GOLDEN.encode())}, format="multipart")
    assert resent.status_code == 409
    assert api.get("/api/v1/files/999999/").status_code == 404


def test_usage_records_filters_and_cursor_pages_without_counting(api, world):
    ingest(api, golden_records())
    seen, url = [], "/api/v1/usage-records/?status=mediated&page_size=3"
    with CaptureQueriesContext(connection) as queries:
        while url:
            page = api.get(url).data
            seen += [r["record_id"] for r in page["results"]]
            url = page["next"]
    assert sorted(seen) == [f"A{i}" for i in range(1, 9)] and len(seen) == len(set(seen))
    assert not [q for q in queries if "COUNT(" in q["sql"].upper() and "usage_usagerecord" in q["sql"]]
    s2 = world["s2"]
    by_service = api.get("/api/v1/usage-records/", {"service": s2.service_id, "category": "data"}).data["results"]
    assert [r["record_id"] for r in by_service] == ["A6"] and by_service[0]["charge"] == "0.020000"
    august = {"usage_from": "2026-08-01T00:00:00Z", "usage_to": "2026-09-01T00:00:00Z"}
    assert api.get("/api/v1/usage-records/", august).data["results"] == []  # A10 is not mediated (NO_PERIOD)
    window = api.get("/api/v1/quarantine/", august).data["results"]
    assert [r["record_id"] for r in window] == ["A10"]
    # Offsets ISO allows but PostgreSQL does not (beyond ±15:59) are converted, not a 500.
    far = api.get("/api/v1/quarantine/", {"usage_from": "2026-08-01T21:18:00+21:18", "usage_to": "2026-09-01T00:00Z"})
    assert far.status_code == 200 and [r["record_id"] for r in far.data["results"]] == ["A10"]
    beyond = api.get("/api/v1/usage-records/", {"usage_from": "9999-12-31T23:59:59-05:00"})
    assert beyond.status_code == 400 and "usage_from" in beyond.data
    assert api.get("/api/v1/usage-records/", {"account": s2.account.number, "status": "mediated"}).data["results"]


def test_quarantine_list_and_reprocess(api, world):
    ingest(api, golden_records())
    listed = api.get("/api/v1/quarantine/", {"reason": "NO_SERVICE"}).data["results"]
    assert [r["record_id"] for r in listed] == ["A9"]
    from billing.models import ServiceIdentifier

    from .conftest import aware

    ServiceIdentifier.objects.create(service=world["s2"], value="61499999999", active_from=aware(2026, 1, 1))
    done = api.post("/api/v1/quarantine/reprocess/", {"ids": [listed[0]["id"]]}, format="json")
    assert done.status_code == 200 and done.data["mediated"] == 1 and done.data["run"]
    assert api.post("/api/v1/quarantine/reprocess/", {}, format="json").status_code == 400


# -- rebalance, processes, meters ------------------------------------------------------------------------


def test_rebalance_dry_run_and_apply(api, world):
    ingest(api, golden_records())
    account = world["s2"].account.number
    dry = api.post("/api/v1/rebalance/", {"account": account, "date": "2026-10-15"}, format="json")
    assert dry.status_code == 200 and dry.data["applied"] is False
    assert dry.data["records"] == 8  # A2-A8 and A12, which waits at rate (no mms price)
    applied = api.post("/api/v1/rebalance/", {"account": account, "date": "2026-10-15", "apply": True}, format="json")
    assert applied.status_code == 200 and applied.data["applied"] and applied.data["run"]
    assert api.get(f"/api/v1/processes/{applied.data['run']}/").data["status"] == "completed"
    missing = api.post("/api/v1/rebalance/", {"account": account, "date": "2026-12-15"}, format="json")
    assert missing.status_code == 400 and "no subscription period" in str(missing.data)
    assert api.post("/api/v1/rebalance/", {"account": "nope", "date": "2026-10-15"}, format="json").status_code == 404


def test_processes_start_main_billing_once_and_show_eta(api, world, sync_tasks, django_capture_on_commit_callbacks):
    ingest(api, golden_records())
    with django_capture_on_commit_callbacks(execute=True):
        started = api.post("/api/v1/processes/main-billing/", {"cycle_start": "2026-10-01"}, format="json")
    assert started.status_code == 201, started.data
    again = api.post("/api/v1/processes/main-billing/", {"cycle_start": "2026-10-01"}, format="json")
    assert again.status_code == 201 and again.data["id"] != started.data["id"]  # the first one completed
    run = api.get(f"/api/v1/processes/{started.data['id']}/").data
    assert [a["name"] for a in run["activities"]][:2] == ["Reprocess", "Mapping"] and "eta" in run
    listed = api.get("/api/v1/processes/", {"kind": "main_billing"}).data["results"]
    assert [r["id"] for r in listed] == [again.data["id"], started.data["id"]]  # newest first
    nothing = api.post("/api/v1/processes/main-billing/", {"cycle_start": "2026-10-02"}, format="json")
    assert nothing.status_code == 400
    retry = api.post(f"/api/v1/processes/{started.data['id']}/retry/")
    assert retry.status_code == 409  # only failed runs
    invoices = api.get("/api/v1/invoices/", {"cycle_start": "2026-10-01"}).data["results"]
    assert len(invoices) == 2 and {i["status"] for i in invoices} == {"draft"}


def test_meters_are_readable(api, db):
    for path in ["meter-types", "meters", "meter-readings"]:
        assert api.get(f"/api/v1/{path}/").status_code == 200


# -- schema and docs -----------------------------------------------------------------------------------


def test_committed_schema_is_current_and_docs_are_served_offline(client, operator, tmp_path):
    from pathlib import Path

    from django.core.management import call_command

    generated = tmp_path / "openapi.yaml"
    call_command("spectacular", "--file", str(generated), "--validate", "--fail-on-warn")
    committed = Path(ROOT_SCHEMA)
    assert generated.read_text() == committed.read_text(), "run: python manage.py spectacular --file openapi.yaml"
    client.force_login(operator)
    docs = client.get("/api/v1/docs/").content.decode()
    # Served from the sidecar, nothing loaded from another host (no CDN on an air-gapped back-office).
    assert "drf_spectacular_sidecar/swagger-ui-dist" in docs
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", docs)


def test_subscriptions_follow_the_plan_or_product_rule(api, world):
    from billing.models import Plan, Product

    plan = Plan.objects.get(code="P")
    product = Product.objects.create(code="BO", name="Bolt-on", kind="bolt_on")
    s2 = world["s2"].service_id
    both = api.post(
        "/api/v1/subscriptions/",
        {"service": s2, "plan": plan.pk, "product": product.pk, "starts_on": "2026-10-01"},
        format="json",
    )
    assert both.status_code == 400 and "exactly one" in str(both.data)
    backwards = api.post(
        "/api/v1/subscriptions/",
        {"service": s2, "product": product.pk, "starts_on": "2026-10-10", "ends_on": "2026-10-01"},
        format="json",
    )
    assert backwards.status_code == 400 and "ends_on" in backwards.data
    made = api.post(
        "/api/v1/subscriptions/", {"service": s2, "product": product.pk, "starts_on": "2026-10-01"}, format="json"
    )
    assert made.status_code == 201
    assert api.get("/api/v1/subscriptions/", {"service__service_id": s2}).data["results"][0]["product"] == product.pk


def test_meters_show_current_values_and_readings(api, world, mediate):
    import datetime as dt

    from metering.models import GuidingRule, MeterType, Stream
    from metering.services import do_execute_stream

    mediate(GOLDEN)
    calls = MeterType.objects.create(code="CALLS", name="Calls", aggregation="count", reset="monthly")
    for code, flush in (("S", "period_end"), ("R", "execution")):
        stream = Stream.objects.create(code=code, name=f"Calls per service {code}", is_active=False, flush=flush)
        GuidingRule.objects.create(stream=stream, conditions=[["category", "=", "telephony"]], meter_type=calls)
        do_execute_stream("test", stream, now=dt.datetime(2026, 10, 6, tzinfo=dt.UTC))
    meters = api.get("/api/v1/meters/", {"stream__code": "S"}).data["results"]
    assert sorted((m["key"], m["value"]) for m in meters) == sorted(
        [(str(world["s1"].pk), "1.000000"), (str(world["s2"].pk), "4.000000")]
    )
    readings = api.get("/api/v1/meter-readings/", {"stream__code": "R"}).data["results"]
    assert sorted(r["value"] for r in readings) == ["1.000000", "4.000000"]
    assert api.get("/api/v1/meter-types/").data["results"][0]["code"] == "CALLS"


def test_a_client_over_its_rate_gets_429_and_other_clients_do_not(api, world, settings):
    from django.core.cache import cache

    cache.clear()
    settings.TOLLGATE_API_RATE = "3/min"
    assert [api.get("/api/v1/accounts/").status_code for _ in range(3)] == [200, 200, 200]
    refused = api.get("/api/v1/accounts/")
    assert refused.status_code == 429 and 0 < int(refused["Retry-After"]) <= 60
    # Refused before anything runs: no file received, the idempotency key not taken.
    files = MediationFile.objects.count()
    assert ingest(api, golden_records(), key="over-the-rate").status_code == 429
    assert MediationFile.objects.count() == files and not IdempotencyKey.objects.filter(key="over-the-rate").exists()
    _, other_key = do_create_integration_client("test", "portal")
    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION=f"Token {other_key}")
    assert other.get("/api/v1/accounts/").status_code == 200
    settings.TOLLGATE_API_RATE = ""
    assert api.get("/api/v1/accounts/").status_code == 200
