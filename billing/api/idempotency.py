"""Idempotency-Key for API writes: a retry with the same key and request gets the stored response
(header Idempotent-Replayed: true); the same key with another request is 409; a retry while the
first is still being handled is 409 too, so two concurrent duplicates never both act."""

import functools
import hashlib

from django.db import IntegrityError, transaction
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from billing.models import IdempotencyKey

from .errors import Conflict

HEADER = "Idempotency-Key"
IDEMPOTENCY_PARAMETER = OpenApiParameter(
    HEADER, OpenApiTypes.STR, OpenApiParameter.HEADER, description="Makes a retry safe."
)


def request_digest(request) -> str:
    digest = hashlib.sha256(f"{request.method} {request.path}\n".encode())
    digest.update(request._request.body)
    return digest.hexdigest()


def idempotent(handler):
    """Wrap a view method (self, request, ...) that writes."""

    @functools.wraps(handler)
    def wrapper(self, request, *args, **kwargs):
        key = request.headers.get(HEADER)
        if not key:
            return handler(self, request, *args, **kwargs)
        if len(key) > 200:
            raise ValidationError({HEADER: "At most 200 characters."})
        digest = request_digest(request)
        try:
            with transaction.atomic():
                record = IdempotencyKey.objects.create(user=request.user, key=key, request_hash=digest)
        except IntegrityError:
            record = IdempotencyKey.objects.get(user=request.user, key=key)
            if record.request_hash != digest:
                raise Conflict(f"This {HEADER} was used with a different request.") from None
            if record.status_code is None:
                raise Conflict(f"A request with this {HEADER} is still being handled; retry it later.") from None
            replay = Response(record.response, status=record.status_code)
            replay["Idempotent-Replayed"] = "true"
            return replay
        try:
            response = handler(self, request, *args, **kwargs)
        except Exception:
            record.delete()  # nothing was done: the key is free for a retry
            raise
        if response.status_code >= 500:
            record.delete()
        else:
            IdempotencyKey.objects.filter(pk=record.pk).update(status_code=response.status_code, response=response.data)
        return response

    return wrapper
