from django.apps import AppConfig
from django.db.models.signals import post_migrate


class BillingConfig(AppConfig):
    name = "billing"
    verbose_name = "Billing"

    def ready(self):
        from . import roles

        post_migrate.connect(roles.sync_roles_after_migrate, dispatch_uid="tollgate-sync-roles")
