"""Property tests (hypothesis): for random usage sets with credits among them, rating in any file order
and then rebalancing equals rating in time order; a charge is never negative except a credit's, a
credit's never positive; included + charged = rated quantity; credits draw nothing. Durations carry
milliseconds and API call quantities tenths, kept exactly. Local calls are rated by a tier increment
of a tenth of a second, data by period-cumulative tiers, API calls by a graduated aggregate charge
(the sum of their quantities over the period), whose price agrees too and is never negative."""

import datetime as dt
import itertools
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from billing.aggregates import period_aggregates
from billing.models import (
    AggregateCharge,
    AggregateTier,
    IncludedValue,
    Plan,
    Product,
    Rate,
    RateTier,
    Subscription,
    SubscriptionPeriod,
)
from usage.models import FileRecord, UsageCollector
from usage.rebalance import do_rebalance

from .test_allowances import MB, allowances  # noqa: F401 - the fixture
from .test_mediation import HEADER

pytestmark = pytest.mark.django_db
DESTINATIONS = {
    "local": ("612345", "voice"),
    "europe": ("4420", "voice"),
    "data": ("", "data"),
    "api": ("", "api_call"),
}
usage = st.tuples(
    st.integers(min_value=0, max_value=86_399),  # second of 5 October
    st.integers(min_value=-300, max_value=900),  # seconds, or hundreds of KiB for data; below 0 a credit
    st.sampled_from(sorted(DESTINATIONS)),
    st.integers(min_value=0, max_value=999),  # milliseconds of a duration
)
examples = itertools.count(1)


def records_file(identifier, prefix, rows):
    lines = []
    for n, (second, amount, kind, ms) in rows:
        start = dt.datetime(2026, 10, 5, tzinfo=dt.UTC) + dt.timedelta(seconds=second)
        destination, usage_type = DESTINATIONS[kind]
        seconds, volume, quantity = {
            "data": ("", amount * 100 * 1024, ""),
            "api": ("", "", Decimal(amount) / 10),  # calls, in tenths; below 0 a carrier's credit of calls
        }.get(kind, (Decimal(amount) + (1 if amount >= 0 else -1) * Decimal(ms) / 1000, "", ""))
        lines.append(
            f"{prefix}{n:04d},{identifier},{start:%Y-%m-%dT%H:%M:%SZ},{seconds},{volume},{quantity},{destination},"
            f"{usage_type},"
        )
    return HEADER + "\n".join(lines) + "\n"


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target],  # shrinking a database example is slow
)
@given(
    rows=st.lists(usage, min_size=1, max_size=30),
    plan_minutes=st.integers(min_value=1, max_value=15),
    bolt_on_minutes=st.integers(min_value=1, max_value=8),
    order=st.randoms(use_true_random=False),
    files=st.integers(min_value=1, max_value=4),
)
def test_any_file_order_then_rebalance_equals_time_order(
    allowances,  # noqa: F811
    mediate,
    rows,
    plan_minutes,
    bolt_on_minutes,
    order,
    files,
):
    UsageCollector.objects.filter(code="DEMO").update(accept_negative=True, fraction_rounding="exact")
    data_rate = Rate.objects.get(rate_card=allowances["card"], category="data")
    if not data_rate.tiers.exists():  # period-cumulative graduated data tiers: 0.02, then 0.01 from 1 MB
        Rate.objects.filter(pk=data_rate.pk).update(tier_mode="graduated", tier_scope="period")
        RateTier.objects.create(rate=data_rate, from_quantity=1, price_per_unit=Decimal("0.01"))
        # Local calls: the first minute whole, then by the tenth of a second (a tier with its own increment).
        voice = Rate.objects.get(rate_card=allowances["card"], category="telephony")
        Rate.objects.filter(pk=voice.pk).update(increment=60, tier_mode="graduated", tier_scope="record")
        RateTier.objects.create(rate=voice, from_quantity=1, price_per_unit=Decimal("0.10"), increment=Decimal("0.1"))
    n = next(examples)
    plan = Plan.objects.create(code=f"H{n}", name="Property plan", rate_card=allowances["card"])
    IncludedValue.objects.create(plan=plan, category="telephony", quantity=plan_minutes, unit="minute")
    calls = AggregateCharge.objects.create(
        plan=plan,
        code=f"HC{n}",
        name="Property API calls",
        aggregation="sum",
        field="quantity",
        charge_model="graduated",
        usage_type="api_call",
    )
    AggregateTier.objects.create(charge=calls, from_quantity=0, price_per_unit=Decimal("0"))
    AggregateTier.objects.create(charge=calls, from_quantity=10, price_per_unit=Decimal("0.0300"))
    AggregateTier.objects.create(charge=calls, from_quantity=100, price_per_unit=Decimal("0.0125"), flat_fee=1)
    bolt_on = Product.objects.create(
        code=f"HB{n}", name="Property bolt-on", kind="bolt_on", rate_card=allowances["intl_card"]
    )
    IncludedValue.objects.create(
        product=bolt_on, category="telephony", zone=allowances["europe"], quantity=bolt_on_minutes, unit="minute"
    )
    services = []
    for twin in ("a", "b"):
        identifier = f"6149{n:04d}{1 if twin == 'a' else 2}"
        service = allowances["customer"](identifier)
        Subscription.objects.filter(service=service).delete()
        Subscription.objects.create(service=service, plan=plan, starts_on=dt.date(2025, 1, 1))
        Subscription.objects.create(service=service, product=bolt_on, starts_on=dt.date(2026, 10, 1))
        services.append((service, identifier))
    numbered = list(enumerate(rows))
    (a, a_id), (b, b_id) = services

    shuffled = numbered[:]
    order.shuffle(shuffled)
    size = -(-len(shuffled) // files)
    for k in range(0, len(shuffled), size):
        mediate(records_file(a_id, f"A{n}-", shuffled[k : k + size]), name=f"a{n}-{k}.csv")
    in_time = sorted(numbered, key=lambda item: (item[1][0], f"{item[0]:04d}"))
    mediate(records_file(b_id, f"B{n}-", in_time), name=f"b{n}.csv")

    do_rebalance("test", a.account, dt.date(2026, 10, 5))

    def rated(service):
        return {
            r.record_id[1:]: (r.status, r.rated_quantity, r.included_quantity, r.charge_micros, r.tax_micros)
            for r in FileRecord.objects.filter(service=service)
        }

    assert rated(a) == rated(b)
    periods = [SubscriptionPeriod.objects.get(service=s).pk for s in (a, b)]
    aggregates, stale = period_aggregates(periods)
    priced = {agg.period_id: (agg.records, agg.priced.quantity, agg.amount) for agg in aggregates}
    assert priced[periods[0]] == priced[periods[1]] and stale == 0
    assert priced[periods[0]][2] >= 0
    for record in FileRecord.objects.filter(service__in=[a, b]):
        assert (record.record_id, record.status, record.message) == (record.record_id, "mediated", "")
        credit = (record.duration or 0) < 0 or (record.volume or 0) < 0 or (record.quantity or 0) < 0
        if record.usage_type == "api_call":  # covered: priced by the aggregate, not by itself; draws nothing
            assert (record.aggregate_charge_id, record.charge_micros, record.included_quantity) == (calls.pk, 0, None)
            assert record.rated_quantity == record.charged_quantity == record.quantity
            continue
        if credit:
            assert record.charge_micros <= 0 and record.tax_micros <= 0 and record.included_quantity == 0
            assert record.rated_quantity < 0
        else:
            assert record.charge_micros >= 0 and record.tax_micros >= 0
            assert 0 <= record.included_quantity <= record.rated_quantity
        assert record.included_quantity + record.charged_quantity == record.rated_quantity
    for service in (a, b):
        period = SubscriptionPeriod.objects.get(service=service)
        drawn = sum(c.total for c in period.counters.filter(kind="A"))
        assert drawn == sum(r.included_quantity or 0 for r in FileRecord.objects.filter(service=service))
        assert drawn <= (plan_minutes + bolt_on_minutes) * 60
