"""The data units migration: "kb", "mb" and "gb" always meant binary units, so existing rates,
allowances and collectors become KiB, MiB and GiB and keep their prices."""

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [("billing", "0016_subscription_quantity"), ("usage", "0015_quarantine_table")]


@pytest.mark.django_db(transaction=True)
def test_old_binary_units_are_renamed_and_keep_their_size():
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    old = executor.loader.project_state(BEFORE).apps
    card = old.get_model("billing", "RateCard").objects.create(code="OLD", name="Old card")
    rate = old.get_model("billing", "Rate").objects.create(
        rate_card=card, category="data", usage_type="data", unit="mb", price_per_unit="0.02", increment=1024
    )
    plan = old.get_model("billing", "Plan").objects.create(code="OLD", name="Old plan", rate_card=card)
    allowance = old.get_model("billing", "IncludedValue").objects.create(
        plan=plan, category="data", usage_type="data", quantity=5, unit="gb"
    )
    collector = old.get_model("usage", "UsageCollector").objects.create(code="OLD", name="Old", volume_unit="kb")

    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())

    from billing.models import UNIT_BASE_SIZE, IncludedValue, Rate
    from usage.models import UsageCollector

    assert Rate.objects.get(pk=rate.pk).unit == "mib" and UNIT_BASE_SIZE["mib"] == 1024**2
    assert IncludedValue.objects.get(pk=allowance.pk).unit == "gib"
    assert UsageCollector.objects.get(pk=collector.pk).volume_unit == "kib"
    assert UNIT_BASE_SIZE["mb"] == 10**6  # the name now means the decimal unit
