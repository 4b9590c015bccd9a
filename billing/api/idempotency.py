"""Idempotency-Key for API writes: a retry with the same key and request gets the stored response
(header Idempotent-Replayed: true); the same key with another request is 409; a retry while the
first is still being handled is 409 too, so two concurrent duplicates never both act. A request
that never finished (its worker was killed) holds its key only for
TOLLGATE_IDEMPOTENCY_INFLIGHT_SECONDS: a retry after that runs the request."""

import datetime as dt
import functools
import hashlib

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
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
            if record.status_code is None and not _take_over(record):
                raise Conflict(f"A request with this {HEADER} is still being handled; retry it later.") from None
            if record.status_code is not None:
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


def _take_over(record) -> bool:
    """Claim a key whose first request has been in flight too long to be alive; one retry wins."""
    seconds = int(getattr(settings, "TOLLGATE_IDEMPOTENCY_INFLIGHT_SECONDS", 300))
    now = timezone.now()
    stale = now - dt.timedelta(seconds=seconds)
    claimed = IdempotencyKey.objects.filter(
        pk=record.pk, status_code__isnull=True, created_at__lt=stale, created_at=record.created_at
    ).update(created_at=now)
    return bool(claimed)
