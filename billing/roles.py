"""The two staff roles. Groups are created by a migration; their permissions are synced after
every migrate, because permissions of models added by later migrations only exist then."""

from django.db import transaction

TOLLGATE_APPS = ("billing", "usage", "metering", "console")
# The task queue's admin: everyone on staff may look; its schedules (Main Billing's daily run,
# stream flushes) are Tollgate's to write, through its own screens, so no role edits them there.
QUEUE_APP = "django_q"
QUEUE_OPERATOR_MODELS: set[str] = set()
OPERATOR = "Billing operator"
VIEWER = "Billing viewer"
# Integration clients write over the API what operators write in the admin.
API_CLIENT = "API client"
WRITERS = (OPERATOR, API_CLIENT)
# Nobody edits history, and only superusers manage API access: view-only for every role.
READ_ONLY_MODELS = {
    ("billing", "auditevent"),
    ("billing", "integrationclient"),
    ("billing", "apitoken"),
    ("billing", "idempotencykey"),
}


def role_permissions():
    from django.contrib.auth.models import Permission

    perms = Permission.objects.filter(content_type__app_label__in=(*TOLLGATE_APPS, QUEUE_APP)).select_related(
        "content_type"
    )
    operator, viewer = [], []
    for perm in perms:
        app, model = perm.content_type.app_label, perm.content_type.model
        is_view = perm.codename.startswith("view_")
        may_change = model in QUEUE_OPERATOR_MODELS if app == QUEUE_APP else (app, model) not in READ_ONLY_MODELS
        if is_view or may_change:
            operator.append(perm)
        if is_view:
            viewer.append(perm)
    return {OPERATOR: operator, VIEWER: viewer, API_CLIENT: operator}


@transaction.atomic
def sync_roles():
    from django.contrib.auth.models import Group

    for name, perms in role_permissions().items():
        group, _ = Group.objects.get_or_create(name=name)
        group.permissions.set(perms)


def sync_roles_after_migrate(sender, using="default", **kwargs):
    if sender.name == "console":  # the last Tollgate app: all its permissions exist by now
        sync_roles()


def _groups(user) -> set[str]:
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return set()
    cached = getattr(user, "_tollgate_roles", None)
    if cached is None:
        cached = set(user.groups.values_list("name", flat=True))
        user._tollgate_roles = cached
    return cached


def can_read(user) -> bool:
    """Any role (or staff) may read over the API."""
    return bool(getattr(user, "is_superuser", False) or getattr(user, "is_staff", False) or _groups(user))


def can_write(user) -> bool:
    """Operators and API clients write; viewers only read."""
    return bool(getattr(user, "is_superuser", False) or _groups(user) & set(WRITERS))
