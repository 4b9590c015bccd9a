"""Base viewsets: writes are atomic and audited (who, when, before and after), like the admin's."""

from django.db import transaction
from django.db.models import ProtectedError
from rest_framework import viewsets

from billing import audit

from .errors import Conflict


class AuditedModelViewSet(viewsets.ModelViewSet):
    def _action(self, instance, verb):
        return f"{instance._meta.model_name}.{verb}"

    @transaction.atomic
    def perform_create(self, serializer):
        instance = serializer.save()
        audit.record(
            self.request.user, self._action(instance, "add"), instance, before={}, after=audit.snapshot(instance)
        )

    @transaction.atomic
    def perform_update(self, serializer):
        before = audit.snapshot(serializer.instance.__class__.objects.get(pk=serializer.instance.pk))
        instance = serializer.save()
        audit.record(
            self.request.user, self._action(instance, "change"), instance, before=before, after=audit.snapshot(instance)
        )

    @transaction.atomic
    def perform_destroy(self, instance):
        before = audit.snapshot(instance)
        label, pk = str(instance), instance.pk
        try:
            with transaction.atomic():
                instance.delete()
        except ProtectedError as exc:
            raise Conflict(f"{label} is still referenced and cannot be deleted.") from exc
        audit.record(
            self.request.user,
            f"{instance._meta.model_name}.delete",
            object_type=instance._meta.label_lower,
            object_id=str(pk),
            summary=label,
            before=before,
            after={},
        )
