"""The two staff roles. Groups are created by a migration; their permissions are synced after
every migrate, because permissions of models added by later migrations only exist then."""

from django.db import transaction

TOLLGATE_APPS = ("billing", "usage", "metering", "console")
OPERATOR = "Billing operator"
VIEWER = "Billing viewer"
# Nobody edits history: audit events are view-only for every role.
READ_ONLY_MODELS = {("billing", "auditevent")}


def role_permissions():
    from django.contrib.auth.models import Permission

    perms = Permission.objects.filter(content_type__app_label__in=TOLLGATE_APPS).select_related("content_type")
    operator, viewer = [], []
    for perm in perms:
        key = (perm.content_type.app_label, perm.content_type.model)
        is_view = perm.codename.startswith("view_")
        if is_view or key not in READ_ONLY_MODELS:
            operator.append(perm)
        if is_view:
            viewer.append(perm)
    return {OPERATOR: operator, VIEWER: viewer}


@transaction.atomic
def sync_roles():
    from django.contrib.auth.models import Group

    for name, perms in role_permissions().items():
        group, _ = Group.objects.get_or_create(name=name)
        group.permissions.set(perms)


def sync_roles_after_migrate(sender, using="default", **kwargs):
    if sender.name == "console":  # the last Tollgate app: all its permissions exist by now
        sync_roles()
