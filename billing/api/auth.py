"""API authentication: a revocable token per integration client (`Authorization: Token <key>`)."""

import hashlib
import secrets

from django.db import transaction
from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions

from billing import audit
from billing.models import ApiToken, IntegrationClient

KEYWORD = "Token"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class ClientTokenAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request):
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() != KEYWORD.lower().encode():
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Send the header as 'Authorization: Token <key>'.")
        try:
            key = header[1].decode()
        except UnicodeError as exc:
            raise exceptions.AuthenticationFailed("The token is not valid.") from exc
        token = (
            ApiToken.objects.select_related("client__user")
            .filter(key_hash=hash_key(key), revoked_at__isnull=True, client__is_active=True)
            .first()
        )
        if token is None or not token.client.user.is_active:
            raise exceptions.AuthenticationFailed("The token is not valid or was revoked.")
        now = timezone.now()
        if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
            ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        return token.client.user, token

    def authenticate_header(self, request):
        return KEYWORD


@transaction.atomic
def do_create_integration_client(actor, name: str) -> tuple[IntegrationClient, str]:
    """A client with its own user in the API client role, and its first token's key."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    from billing import roles

    roles.sync_roles()
    user = get_user_model().objects.create_user(f"api-{name}"[:150])
    user.set_unusable_password()
    user.save(update_fields=["password"])
    user.groups.add(Group.objects.get(name=roles.API_CLIENT))
    client = IntegrationClient.objects.create(name=name, user=user)
    audit.record(actor, "api_client.create", client)
    return client, do_issue_token(actor, client)


@transaction.atomic
def do_issue_token(actor, client: IntegrationClient) -> str:
    key = secrets.token_urlsafe(32)
    token = ApiToken.objects.create(client=client, prefix=key[:8], key_hash=hash_key(key))
    audit.record(actor, "api_token.issue", token, summary=f"Token {token.prefix}… for {client}")
    return key


@transaction.atomic
def do_revoke_tokens(actor, tokens) -> int:
    revoked = 0
    for token in tokens.filter(revoked_at__isnull=True):
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
        audit.record(actor, "api_token.revoke", token, summary=f"Revoked {token.prefix}… of {token.client}")
        revoked += 1
    return revoked


class ClientTokenScheme(OpenApiAuthenticationExtension):
    """How the schema describes the token (registered on import)."""

    target_class = ClientTokenAuthentication
    name = "clientToken"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "An integration client's token: `Token <key>` (issued with `manage.py create_api_client`).",
        }
