"""The API and the pages under faults: ingest leaves other queued files to the workers, in-flight
idempotency keys expire, deep JSON and oversize uploads are refused clearly, download names are
safe, and no malformed query parameter on any admin or console page is a 500."""

import datetime as dt
import io

import pytest
from django.contrib import admin
from django.urls import reverse
from django.utils import timezone

from billing.models import IdempotencyKey
from usage import services
from usage.models import MediationFile

from .conftest import receive
from .test_api import golden_records, ingest
from .test_mediation import GOLDEN, HEADER, T


def test_ingest_never_mediates_files_queued_before_it(api, world):
    earlier = receive(world["collector"], GOLDEN, "big-earlier.csv")  # queued; no worker has run yet
    reply = ingest(api, golden_records()[:2])
    assert reply.status_code == 202 and reply.data["status"] == "queued"
    earlier.refresh_from_db()
    assert earlier.status == "queued" and earlier.lines_done == 0  # left to the workers, in order
    assert MediationFile.objects.get(pk=reply.data["id"]).lines_done == 0


def in_flight_key(user, key, path, body, age_seconds):
    """The key row a request leaves when its worker is killed before it answers."""
    from types import SimpleNamespace

    from rest_framework.renderers import JSONRenderer

    from billing.api.idempotency import request_digest

    request = SimpleNamespace(method="POST", path=path, _request=SimpleNamespace(body=JSONRenderer().render(body)))
    created = timezone.now() - dt.timedelta(seconds=age_seconds)
    return IdempotencyKey.objects.create(user=user, key=key, request_hash=request_digest(request), created_at=created)


def test_an_in_flight_key_expires_and_a_retry_then_runs(api, world, settings):
    from django.contrib.auth import get_user_model

    settings.TOLLGATE_IDEMPOTENCY_INFLIGHT_SECONDS = 60
    user = get_user_model().objects.get(username="api-crm")
    path = "/api/v1/collectors/DEMO/ingest/"
    batch = golden_records()[:2]
    key = in_flight_key(user, "dead", path, {"records": batch}, age_seconds=30)
    assert ingest(api, batch, key="dead").status_code == 409  # half a minute: it may still be running
    IdempotencyKey.objects.filter(pk=key.pk).update(created_at=timezone.now() - dt.timedelta(seconds=61))
    retried = ingest(api, batch, key="dead")
    assert retried.status_code == 201 and len(retried.data["outcomes"]) == 2  # the retry ran the request
    assert IdempotencyKey.objects.get(pk=key.pk).status_code == 201
    replay = ingest(api, batch, key="dead")
    assert replay["Idempotent-Replayed"] == "true" and MediationFile.objects.count() == 1
    # An expired key of another request is never taken over by this one.
    in_flight_key(user, "other", path, {"records": golden_records()[5:7]}, age_seconds=3600)
    assert ingest(api, golden_records()[2:4], key="other").status_code == 409


def test_deeply_nested_json_is_a_400(api, world):
    body = '{"records": ' + "[" * 5000 + "]" * 5000 + "}"
    reply = api.post("/api/v1/collectors/DEMO/ingest/", body, content_type="application/json")
    assert reply.status_code == 400 and "nested too deeply" in reply.data["detail"]
    reply = api.post("/api/v1/accounts/", body, content_type="application/json")
    assert reply.status_code == 400


def test_uploads_over_the_limit_are_refused_with_a_clear_message(api, world, client, operator, settings):
    settings.TOLLGATE_MAX_UPLOAD_BYTES = 1 << 20
    big = (HEADER + f"A1,61400000002,{T},61,,,4410000000,voice,\n" * 40_000).encode()  # 2.3 MB
    reply = api.post("/api/v1/files/", {"collector": "DEMO", "file": io.BytesIO(big)}, format="multipart")
    assert reply.status_code == 413 and "at most 1 MB" in reply.data["detail"]
    client.force_login(operator)
    page = client.post(
        reverse("admin:usage_mediationfile_upload"),
        {"collector": world["collector"].pk, "files": io.BytesIO(big)},
        follow=True,
    ).content.decode()
    assert "at most 1 MB is taken here" in page
    assert not MediationFile.objects.exists()
    small = api.post("/api/v1/files/", {"collector": "DEMO", "file": io.BytesIO(GOLDEN.encode())}, format="multipart")
    assert small.status_code == 201


def test_download_names_are_safe_with_newlines_in_ids_and_names(client, operator, world, mediate):
    f = mediate(GOLDEN, name='bad\r\nname".csv')
    client.force_login(operator)
    response = client.get(reverse("console:response_file", args=[f.pk]))
    assert response.status_code == 200 and "\n" not in response["Content-Disposition"]
    assert response["Content-Disposition"] == 'attachment; filename="bad__name\\".response.csv"'
    service = world["s2"]
    service.service_id = "S2\nX"
    service.save()
    usage = client.get(reverse("console:service_usage", args=[service.pk]), {"format": "csv", "period": "all"})
    assert usage.status_code == 200 and usage["Content-Disposition"].startswith('attachment; filename="S2_X-usage')


MALFORMED = [
    {"key": "\x00"},
    {"q": "\x00"},
    {"file": "abc"},
    {"file": "99999999999999999999999"},
    {"before_at": "2026-99-99T00:00:00", "before_id": "1"},
    {"before_at": "2026-10-05T10:00:00", "before_id": "99999999999999999999"},
    {"period": "abc"},
    {"period": "-1"},
    {"page": "-1"},
    {"page": "abc"},
    {"o": "99.x"},
    {"status": "nonsense"},
    {"type": "\u200b"},
    {"category": "<script>"},
    {"id__in": "a,b"},
    {"usage_at__gte": "yesterday"},
    {"collector__id__exact": "x"},
    {"e": "1"},
    {"fragment": "1"},
    {"q": "a" * 5000},
]


def page_urls(world, user):
    """Every admin list and change page, and every console page, with real ids."""
    from django.test import RequestFactory

    request = RequestFactory().get("/")
    request.user = user
    urls = [reverse("admin:index")]
    for model, model_admin in admin.site._registry.items():
        opts = model._meta
        urls.append(reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"))
        first = model_admin.get_queryset(request).order_by("pk").first()
        if first is not None:
            urls.append(reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[first.pk]))
    service = world["s2"]
    urls += [
        reverse("console:overview"),
        reverse("console:collectors"),
        reverse("console:collector_history", args=[world["collector"].pk]),
        reverse("console:service_usage", args=[service.pk]),
        reverse("console:service_equipment_usage", args=[service.pk]),
        reverse("console:service_bolt_ons", args=[service.pk]),
        *[reverse("console:process", args=[kind]) for kind in ("mediation", "main_billing", "reprocess")],
    ]
    from metering.models import Stream

    stream = Stream.objects.first()
    if stream is not None:
        urls.append(reverse("console:stream_meters", args=[stream.pk]))
    return urls


@pytest.mark.django_db
def test_no_query_parameter_on_any_page_is_a_500(client, world, mediate, django_user_model):
    mediate(GOLDEN)
    services.do_receive_file("test", world["collector"], "more.csv", io.BytesIO(GOLDEN.replace("A", "B").encode()))
    admin_user = django_user_model.objects.create_superuser("root", password="root-secret-123")
    client.force_login(admin_user)
    failures = []
    urls = page_urls(world, admin_user)
    assert len(urls) > 30
    print(f"malformed parameters: {len(urls)} pages x {len(MALFORMED)} parameter sets")
    for url in urls:
        for params in MALFORMED:
            try:
                status = client.get(url, params).status_code
            except Exception as exc:  # noqa: BLE001 - each one is a 500 to report
                status = f"500 {type(exc).__name__}: {exc}"
            if str(status).startswith("5"):
                failures.append(f"{url}?{params}: {status}")
    assert failures == []
