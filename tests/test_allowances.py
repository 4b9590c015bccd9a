"""Golden numbers for included value, tiers, zones and rebalance (docs/rating.md, sections 4-6).

Service 61400000010 is on plan AL (card AL, 4 decimals: voice 0.10/min per second, data 0.02/MB)
with 10 voice minutes included, and the bolt-on INTL for October (card INTL: voice to the zone
EU, prefixes 44 and 33, 0.50/min per second) with 5 voice minutes to EU included. Tax 10 %.
"""

import datetime as dt
import re
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command

from billing.models import (
    DestinationZone,
    IncludedValue,
    Plan,
    Product,
    Rate,
    RateCard,
    RateTier,
    Subscription,
    SubscriptionPeriod,
    ZonePrefix,
)
from usage.models import FileRecord, PeriodCounter
from usage.rebalance import do_rebalance

from .test_mediation import HEADER
from .test_rating import rate

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("both_gate_plans")]
MB = 1024 * 1024


@pytest.fixture
def allowances(world, make_service):
    europe = DestinationZone.objects.create(code="EU", name="Europe")
    ZonePrefix.objects.create(zone=europe, prefix="44")
    ZonePrefix.objects.create(zone=europe, prefix="33")
    card = RateCard.objects.create(code="AL", name="Allowance plan card", rounding_decimals=4)
    rate(card, price="0.10")
    rate(card, category="data", usage_type="data", unit="mib", price="0.02", increment=1024)
    intl_card = RateCard.objects.create(code="INTL", name="International bolt-on", rounding_decimals=4)
    rate(intl_card, price="0.50", zone=europe)
    plan = Plan.objects.create(code="AL", name="Plan AL", rate_card=card)
    IncludedValue.objects.create(plan=plan, category="telephony", usage_type="voice", quantity=10, unit="minute")
    intl = Product.objects.create(code="INTL", name="International", kind="bolt_on", rate_card=intl_card)
    IncludedValue.objects.create(
        product=intl, category="telephony", usage_type="voice", zone=europe, quantity=5, unit="minute"
    )

    def customer(identifier):
        service = make_service(identifier=identifier, plan=False)
        Subscription.objects.create(service=service, plan=plan, starts_on=dt.date(2025, 1, 1))
        Subscription.objects.create(
            service=service, product=intl, starts_on=dt.date(2026, 10, 1), ends_on=dt.date(2026, 10, 31)
        )
        SubscriptionPeriod.objects.create(
            service=service, start_date=dt.date(2026, 10, 1), end_date=dt.date(2026, 10, 31)
        )
        return service

    return {**world, "customer": customer, "card": card, "intl_card": intl_card, "plan": plan, "europe": europe}


# record id: (start, seconds, bytes, destination, type) -> included seconds, drawn from, charge, tax
TIMELINE = {
    "T1": ("2026-10-05T10:00:00Z", 400, "", "612345", "voice", 400, "plan", "0", "0"),
    "T2": ("2026-10-05T11:00:00Z", 240, "", "4420", "voice", 240, "INTL", "0", "0"),
    "T3": ("2026-10-05T12:00:00Z", 120, "", "3312", "voice", 120, "INTL", "0", "0"),  # 60 INTL + 60 plan
    "T4": ("2026-10-05T13:00:00Z", 300, "", "612345", "voice", 140, "plan", "0.2667", "0.0267"),
    "T5": ("2026-10-05T14:00:00Z", 60, "", "4420", "voice", 0, None, "0.5", "0.05"),
    "T6": ("2026-10-05T15:00:00Z", "", MB, "", "data", 0, None, "0.02", "0.002"),
}
FILE_ORDER = ["T4", "T6", "T1", "T5", "T3", "T2"]


def usage_file(identifier, rows, suffix=""):
    lines = [
        f"{rid}{suffix},{identifier},{start},{seconds},{volume},,{dest},{usage_type},"
        for rid, (start, seconds, volume, dest, usage_type, *_) in rows
    ]
    return HEADER + "\n".join(lines) + "\n"


def charges(service):
    return {
        r.record_id: (r.status, r.included_quantity, str(r.charge.normalize()), str(r.tax.normalize()))
        for r in FileRecord.objects.filter(service=service)
    }


def counters(service):
    return {
        (c.kind, c.ref_id): c.total for c in PeriodCounter.objects.filter(period__service=service).order_by("ref_id")
    }


def test_allowances_are_drawn_in_time_order_not_file_order(allowances, mediate):
    service = allowances["customer"]("61400000010")
    received = mediate(usage_file("61400000010", [(r, TIMELINE[r]) for r in FILE_ORDER]))
    assert received.mediated == 6
    records = {r.record_id: r for r in received.records.all()}
    for rid, (*_, included, drawn, charge, tax) in TIMELINE.items():
        record = records[rid]
        assert (record.included_quantity, record.charge, record.tax) == (included, Decimal(charge), Decimal(tax)), rid
        expected_source = {"plan": "plan", "INTL": "product", None: None}[drawn]
        source = None if record.allowance is None else ("plan" if record.allowance.plan_id else "product")
        assert source == expected_source, rid
        assert record.charged_quantity == record.rated_quantity - included
    assert records["T4"].charged_quantity == 160  # the plan's 10 minutes ran out 140 s into the call
    assert records["T5"].rate.rate_card.code == "INTL"  # zone rate on the bolt-on card
    plan_iv, intl_iv = IncludedValue.objects.order_by("pk")
    assert counters(service) == {("A", plan_iv.pk): 600, ("A", intl_iv.pk): 300}
    assert received.charge == Decimal("0.7867")


def test_a_later_file_draws_what_is_left_and_rebalance_redistributes_in_time_order(allowances, mediate):
    service = allowances["customer"]("61400000010")
    mediate(usage_file("61400000010", [(r, TIMELINE[r]) for r in FILE_ORDER]))
    early = ("2026-10-05T09:00:00Z", 100, "", "612345", "voice")
    late_file = mediate(usage_file("61400000010", [("T0", early)]), name="late.csv")
    (t0,) = late_file.records.all()
    assert (t0.included_quantity, t0.charge) == (0, Decimal("0.1667"))  # the plan minutes were gone on arrival

    result = do_rebalance("test", service.account, dt.date(2026, 10, 15))
    assert (result.records, result.changed) == (7, 2)
    assert (result.old_total, result.new_total) == (Decimal("0.9534"), Decimal("0.9533"))
    assert [(line.record_id, line.old_charge, line.new_charge) for line in result.lines] == [
        ("T0", Decimal("0.1667"), Decimal("0")),
        ("T4", Decimal("0.2667"), Decimal("0.4333")),  # 40 s left of the plan, 260 s charged
    ]
    after = charges(service)
    assert after["T0"][:3] == ("mediated", 100, "0") and after["T4"][:3] == ("mediated", 40, "0.4333")

    # Exactly what rating the whole cycle in time order gives, on an identical customer.
    twin = allowances["customer"]("61400000011")
    everything = [("T0", early), *((r, TIMELINE[r]) for r in FILE_ORDER)]
    mediate(usage_file("61400000011", everything, suffix="b"))
    assert {k + "b": v for k, v in after.items()} == charges(twin)
    plan_iv, intl_iv = IncludedValue.objects.order_by("pk")
    assert counters(service) == {("A", plan_iv.pk): 600, ("A", intl_iv.pk): 300} == counters(twin)
    late_file.refresh_from_db()
    assert late_file.charge == Decimal("0")  # file totals follow the rebalance


def test_rebalance_after_a_rate_fix_equals_a_fresh_rating(allowances, mediate):
    service = allowances["customer"]("61400000010")
    mediate(usage_file("61400000010", [(r, TIMELINE[r]) for r in FILE_ORDER]))
    Rate.objects.filter(rate_card=allowances["intl_card"]).update(price_per_unit=Decimal("0.40"))
    assert charges(service)["T5"][2] == "0.5"  # not re-rated by itself
    result = do_rebalance("test", service.account, dt.date(2026, 10, 1))
    assert (result.changed, result.old_total, result.new_total) == (1, Decimal("0.7867"), Decimal("0.6867"))
    twin = allowances["customer"]("61400000011")
    mediate(usage_file("61400000011", [(r, TIMELINE[r]) for r in FILE_ORDER], suffix="b"))
    assert {k + "b": v for k, v in charges(service).items()} == charges(twin)


def test_dry_run_shows_the_difference_and_writes_nothing(allowances, mediate):
    service = allowances["customer"]("61400000010")
    mediate(usage_file("61400000010", [(r, TIMELINE[r]) for r in FILE_ORDER]))
    mediate(usage_file("61400000010", [("T0", ("2026-10-05T09:00:00Z", 100, "", "612345", "voice"))]), name="l.csv")
    before, before_counters = charges(service), counters(service)
    result = do_rebalance("test", service.account, dt.date(2026, 10, 15), dry_run=True)
    assert not result.applied and result.changed == 2 and result.new_total == Decimal("0.9533")
    assert charges(service) == before and counters(service) == before_counters


def test_rebalance_refuses_an_invoiced_period_and_narrows_by_category(allowances, mediate):
    service = allowances["customer"]("61400000010")
    mediate(usage_file("61400000010", [(r, TIMELINE[r]) for r in FILE_ORDER]))
    Rate.objects.filter(rate_card=allowances["card"]).update(price_per_unit=Decimal("0.30"))
    result = do_rebalance("test", service.account, dt.date(2026, 10, 15), category="data")
    assert result.records == 1 and charges(service)["T6"][2] == "0.3" and charges(service)["T4"][2] == "0.2667"
    SubscriptionPeriod.objects.filter(service=service).update(status="invoiced")
    with pytest.raises(ValidationError, match="Invoiced periods cannot be rebalanced: TS"):
        do_rebalance("test", service.account, dt.date(2026, 10, 15))
    with pytest.raises(ValidationError, match="no subscription period containing 2027-01-01"):
        do_rebalance("test", service.account, dt.date(2027, 1, 1))


def test_rebalance_command_prints_the_dry_run(allowances, mediate, capsys):
    service = allowances["customer"]("61400000010")
    mediate(usage_file("61400000010", [(r, TIMELINE[r]) for r in FILE_ORDER]))
    call_command("rebalance", service.account.number, "2026-10-15", "--dry-run")
    out = capsys.readouterr().out
    assert "dry run: 6 records, 0 changed, total 0.7867 -> 0.7867" in out


TIERED = [
    # usage type, mode, scope: records in MB -> charges
    ("gp", "graduated", "period", [6, 6, 12], ["0.6", "0.5", "0.44"]),  # 4x0.10+2x0.05; 8x0.05+4x0.01
    ("gr", "graduated", "record", [11, 25], ["1.05", "1.55"]),  # 10x0.10+1x0.05; 1.00+10x0.05+5x0.01
    ("vr", "volume", "record", [10, 11], ["1", "0.55"]),  # 10 is not beyond 10: all at 0.10; 11x0.05
    ("vp", "volume", "period", [6, 6, 10], ["0.6", "0.3", "0.1"]),  # cumulative 12 > 10; 22 > 20
]


@pytest.mark.parametrize(("usage_type", "mode", "scope", "sizes", "expected"), TIERED)
def test_tiers(allowances, mediate, usage_type, mode, scope, sizes, expected):
    """Tiers from 10 MB at 0.05 and from 20 MB at 0.01, below them 0.10 per MB, whole MB."""
    collector = allowances["collector"]
    collector.category_rules = {**collector.category_rules, usage_type: "data"}
    collector.save()
    tiered = rate(allowances["card"], category="data", usage_type=usage_type, unit="mib", price="0.10", increment=MB)
    Rate.objects.filter(pk=tiered.pk).update(tier_mode=mode, tier_scope=scope)
    RateTier.objects.create(rate=tiered, from_quantity=10, price_per_unit=Decimal("0.05"))
    RateTier.objects.create(rate=tiered, from_quantity=20, price_per_unit=Decimal("0.01"))
    service = allowances["customer"]("61400000010")
    rows = [(f"D{i}", (f"2026-10-05T1{i}:00:00Z", "", size * MB, "", usage_type)) for i, size in enumerate(sizes)]
    mediate(usage_file("61400000010", list(reversed(rows))))  # file order reversed: tiers follow time
    got = charges(service)
    assert [got[f"D{i}"][2] for i in range(len(sizes))] == expected
    if scope == "period":
        assert counters(service) == {("T", tiered.pk): sum(sizes) * MB}


def test_tier_quantities_across_files_continue_from_the_period_counter(allowances, mediate):
    tiered = Rate.objects.get(rate_card=allowances["card"], category="data")
    Rate.objects.filter(pk=tiered.pk).update(tier_mode="graduated", tier_scope="period", increment=MB)
    RateTier.objects.create(rate=tiered, from_quantity=10, price_per_unit=Decimal("0.01"))
    service = allowances["customer"]("61400000010")
    mediate(usage_file("61400000010", [("D1", ("2026-10-05T10:00:00Z", "", 8 * MB, "", "data"))]))
    mediate(usage_file("61400000010", [("D2", ("2026-10-05T11:00:00Z", "", 4 * MB, "", "data"))]), name="2.csv")
    assert charges(service)["D2"][2] == "0.06"  # 2 x 0.02 + 2 x 0.01


def test_zones_and_prefixes_tie_on_length(allowances, mediate):
    """A zone prefix counts as long as it is: the card's own 4420 beats the zone's 44."""
    rate(allowances["intl_card"], prefix="4420", price="0.25")
    service = allowances["customer"]("61400000010")
    mediate(
        usage_file(
            "61400000010",
            [
                # 300 s from the EU allowance, 600 s from the plan's, 300 s charged at 0.25/min
                ("Z1", ("2026-10-20T10:00:00Z", 1200, "", "4420999", "voice")),
                ("Z2", ("2026-10-20T11:00:00Z", 60, "", "4499", "voice")),  # zone rate 0.50, allowance gone
            ],
        )
    )
    got = charges(service)
    assert got["Z1"][1:3] == (900, "1.25") and got["Z2"][1:3] == (0, "0.5")
    assert FileRecord.objects.get(record_id="Z1").rate.destination_prefix == "4420"


def test_a_zone_needs_prefixes_and_a_rate_not_both(allowances):
    both = Rate(
        rate_card=allowances["card"],
        category="telephony",
        usage_type="voice",
        destination_prefix="44",
        zone=allowances["europe"],
        unit="minute",
        price_per_unit=1,
    )
    with pytest.raises(ValidationError, match="prefix or a zone, not both"):
        both.full_clean()


def test_admin_rebalance_previews_then_applies(allowances, mediate, client, operator, viewer):
    service = allowances["customer"]("61400000010")
    mediate(usage_file("61400000010", [(r, TIMELINE[r]) for r in FILE_ORDER]))
    mediate(usage_file("61400000010", [("T0", ("2026-10-05T09:00:00Z", 100, "", "612345", "voice"))]), name="l.csv")
    url = f"/admin/billing/account/{service.account.pk}/rebalance/"
    client.force_login(viewer)
    page = client.post(url, {"on_date": "2026-10-15", "preview": "1"})
    assert page.status_code == 200 and 'id="new-total">AUD\xa00.9533<' in page.content.decode()
    assert b'name="apply"' not in page.content  # a viewer may look, not apply
    assert client.post(url, {"on_date": "2026-10-15", "apply": "1"}).status_code == 403
    assert charges(service)["T0"][2] == "0.1667"

    client.force_login(operator)
    assert b"Rebalance a cycle" in client.get(f"/admin/billing/account/{service.account.pk}/change/").content
    page = client.post(url, {"on_date": "2026-10-15", "preview": "1"})
    assert b"Dry run: 7 records, 2 change" in page.content and b'name="apply"' in page.content
    html = re.sub(r">\s+<", "><", page.content.decode())
    cell = '<td class="number">'
    assert f"<td>T4</td><td>telephony</td><td>mediated</td>{cell}AUD\xa00.2667</td>{cell}140</td>" in html
    assert f"<td>mediated</td>{cell}AUD\xa00.4333</td>{cell}40</td></tr>" in html
    done = client.post(url, {"on_date": "2026-10-15", "apply": "1"}, follow=True)
    assert "Rebalanced 7 records: 2 changed, total AUD\xa00.9534 -&gt; AUD\xa00.9533." in done.content.decode()
    assert charges(service)["T0"][2] == "0" and charges(service)["T4"][2] == "0.4333"
    SubscriptionPeriod.objects.filter(service=service).update(status="invoiced")
    refused = client.post(url, {"on_date": "2026-10-15", "preview": "1"})
    assert refused.status_code == 200 and b"Invoiced periods cannot be rebalanced" in refused.content


def test_only_records_that_end_mediated_draw_allowances(allowances, mediate):
    """A duplicate line in the same file is quarantined: it must not take the allowance away from
    the call after it (before the fix the duplicate drew the last 200 s and D2 paid for all 300 s)."""
    service = allowances["customer"]("61400000010")
    rows = [
        ("D1", ("2026-10-05T10:00:00Z", 400, "", "612345", "voice")),
        ("D1", ("2026-10-05T10:00:00Z", 400, "", "612345", "voice")),
        ("D2", ("2026-10-05T11:00:00Z", 300, "", "612345", "voice")),
    ]
    received = mediate(usage_file("61400000010", rows))
    assert (received.mediated, received.duplicates) == (2, 1)
    mediated = {r.record_id: r for r in received.records.filter(status="mediated")}
    assert mediated["D1"].included_quantity == 400
    assert (mediated["D2"].included_quantity, mediated["D2"].charge) == (200, Decimal("0.1667"))  # 100 s at 0.10/min
    duplicate = received.records.get(reason="DUPLICATE")
    assert not duplicate.included_quantity and duplicate.allowance_id is None
    plan_iv = IncludedValue.objects.order_by("pk").first()
    assert counters(service)[("A", plan_iv.pk)] == 600


def test_a_files_charges_do_not_depend_on_the_batch_size(allowances, mediate, settings):
    """The same 120 calls and sessions, in shuffled file order, mediated in batches of 7, 25 and
    1,000 records: every record is charged alike, because a file's records go through the gates in
    time order, batch after batch, and draw allowances in that order."""
    import random

    rng = random.Random(16)
    rows = []
    for n in range(120):
        minute = rng.randrange(0, 60 * 24 * 20)
        start = (dt.datetime(2026, 10, 2, tzinfo=dt.UTC) + dt.timedelta(minutes=minute)).strftime("%Y-%m-%dT%H:%M:%SZ")
        if n % 5 == 4:
            rows.append((f"B{n}", (start, "", rng.randrange(1, 3 * MB), "", "data")))
        else:
            rows.append((f"B{n}", (start, rng.randrange(1, 400), "", rng.choice(["612345", "4420", "3312"]), "voice")))
    rows.append(("B3", rows[3][1]))  # a duplicate line: never drawn, whatever batch it is in
    outcomes = []
    for size, identifier in ((7, "61400000021"), (25, "61400000022"), (1000, "61400000023")):
        service = allowances["customer"](identifier)
        settings.TOLLGATE_MEDIATION_BATCH = size
        received = mediate(usage_file(identifier, rows, suffix=f"-{size}"), name=f"batch-{size}.csv")
        assert (received.mediated, received.duplicates) == (120, 1)
        outcomes.append(
            {
                (r.record_id.split("-")[0], r.status): (
                    r.included_quantity,
                    r.charge_micros,
                    r.tax_micros,
                    r.allowance_id,
                )
                for r in FileRecord.objects.filter(service=service)
            }
        )
        outcomes[-1]["counters"] = sorted(counters(service).items())
    assert outcomes[0] == outcomes[1] == outcomes[2]
    assert sum(v[1] or 0 for k, v in outcomes[0].items() if k != "counters") > 0


@pytest.fixture
def any_telephony(world, make_service):
    """Plan ANY: calls 0.10/min per second, SMS 0.05 each, data 0.02/MB; 10 minutes for any telephony."""
    card = RateCard.objects.create(code="ANY", name="Any telephony card", rounding_decimals=4)
    rate(card, price="0.10")
    rate(card, usage_type="sms", unit="message", price="0.05")
    rate(card, category="data", usage_type="data", unit="mib", price="0.02", increment=1024)
    plan = Plan.objects.create(code="ANY", name="Plan ANY", rate_card=card)

    def customer(identifier, quantity=10, unit="minute", seats=1):
        IncludedValue.objects.get_or_create(
            plan=plan, category="telephony", usage_type="", quantity=quantity, unit=unit
        )
        service = make_service(identifier=identifier, plan=False)
        Subscription.objects.create(service=service, plan=plan, starts_on=dt.date(2025, 1, 1), quantity=seats)
        SubscriptionPeriod.objects.create(
            service=service, start_date=dt.date(2026, 10, 1), end_date=dt.date(2026, 10, 31)
        )
        return service

    return customer


# record id: (start, seconds, bytes, destination, type) -> included, charge
MIXED = {
    "C1": ("2026-10-05T10:00:00Z", 300, "", "612345", "voice", 300, "0"),
    "S1": ("2026-10-05T10:10:00Z", "", "", "612345", "sms", 0, "0.05"),  # an SMS takes no minute
    "D1": ("2026-10-05T10:20:00Z", "", MB, "", "data", 0, "0.02"),
    "S2": ("2026-10-05T10:30:00Z", "", "", "612345", "sms", 0, "0.05"),
    "C2": ("2026-10-05T11:00:00Z", 400, "", "612345", "voice", 300, "0.1667"),  # 100 s after the 10 minutes
}


def test_a_time_allowance_is_drawn_by_calls_only_not_by_sms_or_data(any_telephony, mediate):
    service = any_telephony("61400000020")
    received = mediate(usage_file("61400000020", [(r, MIXED[r]) for r in ["C2", "S2", "D1", "S1", "C1"]]))
    assert received.mediated == 5
    got = {r: (q, c) for r, (_, q, c, _) in charges(service).items()}
    assert got == {rid: (included, charge) for rid, (*_, included, charge) in MIXED.items()}
    (allowance,) = IncludedValue.objects.filter(plan__code="ANY")
    assert counters(service) == {("A", allowance.pk): 600}  # all ten minutes, by the two calls
    assert received.charge == Decimal("0.2867")


def test_a_message_allowance_is_drawn_by_sms_only_not_by_calls(any_telephony, mediate):
    service = any_telephony("61400000021", quantity=1, unit="message")
    mediate(usage_file("61400000021", [(r, MIXED[r]) for r in MIXED]))
    got = {r: (q, c) for r, (_, q, c, _) in charges(service).items()}
    assert got == {
        "C1": (0, "0.5"),
        "S1": (1, "0"),  # the one included message, first in time
        "D1": (0, "0.02"),
        "S2": (0, "0.05"),
        "C2": (0, "0.6667"),
    }


@pytest.mark.parametrize(
    "category, usage_type, unit, message",
    [
        ("misc", "", "minute", "Service & equipment usage is priced in items, not time: use message, each or money."),
        ("data", "", "message", "Data usage is priced in volume or time, not items"),
        ("telephony", "sms", "minute", "Telephony usage of type sms is priced in items, not time"),
        ("telephony", "voice", "gb", "Telephony usage of type voice is priced in time, not volume"),
        ("telephony", "", "mb", "Telephony usage is priced in time or items, not volume"),
    ],
)
def test_an_allowance_in_a_unit_its_usage_is_never_priced_in_is_refused(
    any_telephony, category, usage_type, unit, message
):
    from django.db import IntegrityError, transaction

    plan = Plan.objects.get(code="ANY")
    allowance = IncludedValue(plan=plan, category=category, usage_type=usage_type, quantity=1, unit=unit)
    with pytest.raises(ValidationError) as refused:
        allowance.full_clean()
    assert message in " ".join(refused.value.message_dict["unit"] + refused.value.message_dict.get("__all__", []))
    if usage_type == "":  # the database refuses a unit of another measure than the category's too
        with pytest.raises(IntegrityError), transaction.atomic():
            allowance.save()
    for fits in (
        "money",
        {"misc": "each", "data": "gb", "telephony": "minute" if usage_type != "sms" else "message"}[category],
    ):
        IncludedValue(plan=plan, category=category, usage_type=usage_type, quantity=1, unit=fits).full_clean()


def test_an_explicit_priority_orders_the_draws_plan_before_bolt_on(allowances, mediate):
    """The plan's minutes given priority 10 (the bolt-on keeps the default 100): they are drawn first,
    by calls to Europe too; the bolt-on's Europe minutes then cover what the plan's no longer do."""
    plan_iv, intl_iv = IncludedValue.objects.order_by("pk")
    IncludedValue.objects.filter(pk=plan_iv.pk).update(priority=10)
    service = allowances["customer"]("61400000010")
    received = mediate(usage_file("61400000010", [(r, TIMELINE[r]) for r in FILE_ORDER]))
    records = {r.record_id: r for r in received.records.all()}
    got = {rid: (r.included_quantity, str(r.charge.normalize()), r.allowance_id) for rid, r in records.items()}
    assert got == {
        "T1": (400, "0", plan_iv.pk),  # plan 400, 200 left
        "T2": (240, "0", plan_iv.pk),  # plan 200, then INTL 40 (260 left)
        "T3": (120, "0", intl_iv.pk),
        "T4": (0, "0.5", None),  # local: the bolt-on's minutes are for Europe only
        "T5": (60, "0", intl_iv.pk),
        "T6": (0, "0.02", None),
    }
    assert counters(service) == {("A", plan_iv.pk): 600, ("A", intl_iv.pk): 220}
    assert received.charge == Decimal("0.52")


def test_a_subscription_of_quantity_two_includes_twice_the_allowance(any_telephony, mediate):
    """Two seats of plan ANY: 20 minutes. C1 300 s and C2 400 s are covered whole; SMS still pay."""
    service = any_telephony("61400000022", seats=2)
    mediate(usage_file("61400000022", [(r, MIXED[r]) for r in MIXED]))
    got = {r: (q, c) for r, (_, q, c, _) in charges(service).items()}
    assert got == {"C1": (300, "0"), "S1": (0, "0.05"), "D1": (0, "0.02"), "S2": (0, "0.05"), "C2": (400, "0")}
    (allowance,) = IncludedValue.objects.filter(plan__code="ANY")
    assert counters(service) == {("A", allowance.pk): 700}
