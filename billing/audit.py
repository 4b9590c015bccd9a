"""Writing audit rows: one helper used by services, admin saves and (later) the API."""

from decimal import Decimal

from django.forms.models import model_to_dict

from .models import AuditEvent


def snapshot(instance) -> dict:
    """A JSON-safe picture of a model instance's editable fields."""
    if instance is None:
        return {}
    return {k: _jsonable(v) for k, v in model_to_dict(instance).items()}


def _jsonable(value):
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "pk"):
        return value.pk
    return str(value)


def record(actor, action: str, instance=None, *, before=None, after=None, summary="", object_type="", object_id=""):
    """Write one audit row. `actor` is a user, or a string naming a command or task."""
    user = actor if getattr(actor, "is_authenticated", False) else None
    label = actor.get_username() if user else str(actor or "system")
    changes = {}
    if before is not None or after is not None:
        before, after = before or {}, after or {}
        changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
        changes = {
            "before": {k: before.get(k) for k in sorted(changed)},
            "after": {k: after.get(k) for k in sorted(changed)},
        }
    if instance is not None:
        object_type = object_type or instance._meta.label_lower
        object_id = object_id or str(instance.pk)
        summary = summary or str(instance)[:300]
    return AuditEvent.objects.create(
        actor=user,
        actor_label=label[:150],
        action=action,
        object_type=object_type,
        object_id=object_id,
        summary=summary[:300],
        changes=changes,
    )
