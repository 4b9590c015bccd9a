"""The two staff roles. Groups are created by a migration; their permissions are synced after
every migrate, because permissions of models added by later migrations only exist then."""

from django.db import transaction

TOLLGATE_APPS = ("billing", "usage", "metering", "console")
# The task queue's admin: operators may manage schedules; everyone on staff may look.
QUEUE_APP = "django_q"
QUEUE_OPERATOR_MODELS = {"schedule"}
OPERATOR = "Billing operator"
VIEWER = "Billing viewer"
# Nobody edits history: audit events are view-only for every role.
READ_ONLY_MODELS = {("billing", "auditevent")}


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
