from django.db import migrations

from billing import overlaps

RULE_NAMES = [overlaps.IDENTIFIER_OVERLAP.name, overlaps.PLAN_OVERLAP.name, overlaps.PERIOD_OVERLAP.name]
ROLE_NAMES = ["Billing operator", "Billing viewer"]


def install_rules(apps, schema_editor):
    overlaps.install(schema_editor, RULE_NAMES)


def uninstall_rules(apps, schema_editor):
    overlaps.uninstall(schema_editor, RULE_NAMES)


def create_roles(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    for name in ROLE_NAMES:
        Group.objects.get_or_create(name=name)


def delete_roles(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=ROLE_NAMES).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
    ]

    operations = [
        migrations.RunPython(install_rules, uninstall_rules),
        migrations.RunPython(create_roles, delete_roles),
    ]
