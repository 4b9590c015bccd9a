"""One error shape for the API, and never a 500 for something the caller did: Django validation
errors are 400 with field messages, database refusals 409, oversize bodies 413."""

from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError
from rest_framework import status
from rest_framework.exceptions import APIException
from rest_framework.response import Response
from rest_framework.views import exception_handler


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The request conflicts with the current state."
    default_code = "conflict"


class PayloadTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is too large."
    default_code = "too_large"


def validation_detail(exc: DjangoValidationError):
    if hasattr(exc, "error_dict"):
        return {field if field != "__all__" else "non_field_errors": msgs for field, msgs in exc.message_dict.items()}
    return {"non_field_errors": exc.messages}


def api_exception_handler(exc, context):
    if isinstance(exc, DjangoValidationError):
        return Response(validation_detail(exc), status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, RequestDataTooBig):
        return Response({"detail": str(exc) or PayloadTooLarge.default_detail}, status=413)
    if isinstance(exc, IntegrityError):
        from billing.overlaps import message_for_integrity_error

        message = message_for_integrity_error(exc) or "The database refused the change (a uniqueness rule)."
        return Response({"detail": message}, status=status.HTTP_409_CONFLICT)
    return exception_handler(exc, context)
