"""An operator's first minute in the admin, in headless Chromium."""

from pathlib import Path

import pytest

from .conftest import admin_login

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_operator_logs_in_finds_a_service_by_identifier_and_opens_it(live_server, page, operator, make_service):
    make_service(identifier="61400000007")
    wanted = make_service(identifier="61400000042")
    ARTIFACTS.mkdir(exist_ok=True)

    admin_login(page, live_server.url)
    assert "Usage mediation, metering and rating" in page.content()

    page.goto(f"{live_server.url}/admin/billing/service/")
    page.fill("#searchbar", "61400000042")
    page.press("#searchbar", "Enter")
    results = page.locator("#result_list tbody tr")
    results.first.wait_for()
    assert results.count() == 1
    assert wanted.service_id in results.first.inner_text()

    results.first.locator("th a").click()
    page.wait_for_selector("text=Change service")
    assert page.input_value("#id_service_id") == wanted.service_id
    assert page.input_value("#id_identifiers-0-value") == "61400000042"
    page.screenshot(path=str(ARTIFACTS / "admin-service-found-by-identifier.png"), full_page=True)


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_api_docs_render_offline_from_the_admin(live_server, page, operator):
    """Swagger UI comes from the sidecar package: no request leaves the server."""
    outside = []
    page.on(
        "request",
        lambda r: outside.append(r.url) if not r.url.startswith((live_server.url, "blob:", "data:")) else None,
    )
    admin_login(page, live_server.url)
    page.click("text=Integration API")
    page.wait_for_selector(".swagger-ui .opblock-tag", timeout=30_000)
    tags = page.locator(".swagger-ui .opblock-tag").all_inner_texts()
    assert any("collectors" in t for t in tags) and any("processes" in t for t in tags)
    assert outside == []
    page.screenshot(path=str(ARTIFACTS / "api-docs.png"), full_page=False)
    # Redoc too: its fonts are the system's, not Google's.
    blocked = []
    page.on("requestfailed", lambda r: blocked.append(r.url) if r.failure == "csp" else None)
    page.goto(f"{live_server.url}/api/v1/redoc/")
    page.wait_for_selector("#redoc-container h1", timeout=30_000)
    assert "Tollgate API" in page.inner_text("#redoc-container h1")
    # The bundle's hard-coded Redocly logo is the only outside address, and the browser refuses it.
    page.wait_for_timeout(500)
    assert set(outside) <= set(blocked), (outside, blocked)


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_service_search_by_each_key_leads_to_the_usage_views(live_server, page, operator, make_service):
    from billing.models import Account

    from .conftest import assert_fits

    wanted = make_service(identifier="61400000042")
    make_service(identifier="61400000777")
    Account.objects.filter(pk=wanted.account_id).update(name="Acme Mining Pty Ltd")
    admin_login(page, live_server.url)
    for term in ("6140000004", wanted.service_id.lower(), "tsub00001", wanted.account.number, "acme mi"):
        page.goto(f"{live_server.url}/admin/billing/service/")
        page.fill("#searchbar", term)
        page.press("#searchbar", "Enter")
        rows = page.locator("#result_list tbody tr")
        rows.first.wait_for()
        assert rows.count() == 1 and wanted.service_id in rows.first.inner_text(), term
        assert "61400000042" in rows.first.inner_text()  # the matched (or latest) identifier
        assert_fits(page)
    for label, heading in (("Usage", "View Usage"), ("Service & Equipment", "Service & Equipment"), ("Bolt-ons", "")):
        page.locator("#result_list tbody tr").first.get_by_role("link", name=label, exact=True).click()
        page.wait_for_selector("#content")
        assert wanted.service_id in page.inner_text("#content"), label
        assert heading in page.inner_text("#content")
        assert_fits(page)
        page.go_back()
