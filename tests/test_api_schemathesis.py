"""Schemathesis against the committed OpenAPI schema, over a live server with an API client's token:
whatever the generated requests, the API never answers with a server error."""

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from billing.api.auth import do_create_integration_client

from .test_api import ROOT_SCHEMA

schema = schemathesis.openapi.from_path(ROOT_SCHEMA)


@pytest.fixture
def api_token(transactional_db, world):
    return do_create_integration_client("test", "fuzz")[1]


@pytest.mark.django_db(transaction=True)
@schema.parametrize()
@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case, live_server, api_token):
    case.call_and_validate(
        base_url=live_server.url, headers={"Authorization": f"Token {api_token}"}, checks=[not_a_server_error]
    )
