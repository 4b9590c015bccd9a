"""Corrections: a line naming an earlier record by key replaces or cancels it (docs/rating.md, section 9).

Plan CX (card CX, 4 decimals): voice 0.10/min per second, 10 voice minutes included, tax 10 %.
The collector maps `corrects` and `cancels` columns. A correction voids the record it names (kept,
never billed, pointing at its replacement) and re-rates the cycle in time order."""

import datetime as dt
from decimal import Decimal

import pytest

from billing.models import IncludedValue, Plan, RateCard, Subscription, SubscriptionPeriod
from usage.models import Correction, FileRecord, PeriodCounter, QuarantinedRecord, UsageRecord
from usage.selectors import response_rows
from usage.services import do_reprocess_records

from .test_rating import rate

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("both_gate_plans")]
HEADER = "record_id,identifier,start_time,duration,destination,usage_type,corrects,cancels\n"
ID = "61400000070"


def lines(*rows):
    """rows: (record id, start, seconds, corrects, cancels)."""
    body = "\n".join(
        f"{r},{ID},{start},{seconds},612345,voice,{corrects},{cancels}" for r, start, seconds, corrects, cancels in rows
    )
    return HEADER + body + "\n"


@pytest.fixture
def corrections_plan(world, make_service):
    collector = world["collector"]
    collector.field_mapping = {
        "record_id": "record_id",
        "identifier": "identifier",
        "start_time": "start_time",
        "duration": "duration",
        "destination": "destination",
        "usage_type": "usage_type",
        "corrects": "corrects",
        "cancels": "cancels",
    }
    collector.save()
    card = RateCard.objects.create(code="CX", name="Correction card", rounding_decimals=4)
    rate(card, price="0.10")
    plan = Plan.objects.create(code="CX", name="Plan CX", rate_card=card)
    minutes = IncludedValue.objects.create(
        plan=plan, category="telephony", usage_type="voice", quantity=10, unit="minute"
    )
    service = make_service(identifier=ID, plan=False)
    Subscription.objects.create(service=service, plan=plan, starts_on=dt.date(2025, 1, 1))
    period = SubscriptionPeriod.objects.create(
        service=service, start_date=dt.date(2026, 10, 1), end_date=dt.date(2026, 10, 31)
    )
    return {"service": service, "period": period, "minutes": minutes}


def outcome(service):
    return {
        r.record_id: (r.status, r.reason, r.included_quantity, str(r.charge.normalize()))
        for r in FileRecord.objects.filter(service=service).order_by("record_id")
    }


def drawn(world):
    counter = PeriodCounter.objects.filter(period=world["period"], kind="A", ref_id=world["minutes"].pk).first()
    return counter.total if counter else 0


FIRST = lines(
    ("C1", "2026-10-05T10:00:00Z", 300, "", ""),
    ("C2", "2026-10-05T11:00:00Z", 400, "", ""),
)


def test_a_replacement_voids_the_record_it_names_and_the_cycle_is_rerated_in_time_order(corrections_plan, mediate):
    first = mediate(FIRST)
    assert outcome(corrections_plan["service"]) == {
        "C1": ("mediated", "", 300, "0"),
        "C2": ("mediated", "", 300, "0.1667"),  # 100 s beyond the 600 included
    }
    second = mediate(lines(("X1", "2026-10-05T10:00:00Z", 100, "C1", "")))
    assert outcome(corrections_plan["service"]) == {
        "C1": ("void", "SUPERSEDED", 300, "0"),
        # In time order X1 (10:00) draws 100 s, then C2 (11:00) 400 s: all within the 600 s.
        "C2": ("mediated", "", 400, "0"),
        "X1": ("mediated", "", 100, "0"),
    }
    assert drawn(corrections_plan) == 500
    old = QuarantinedRecord.objects.get(record_id="C1")
    assert old.message == f"Replaced by file {second.pk} line 2 (record key X1)"
    (correction,) = Correction.objects.all()
    assert (correction.state, correction.action, correction.original_file_id, correction.original_line) == (
        "applied",
        "replace",
        first.pk,
        2,
    )
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.mediated, first.void, first.charge) == (1, 1, Decimal("0"))
    assert (second.mediated, second.void) == (1, 0)
    rows = list(response_rows(first))
    assert [2, "C1", "void", "SUPERSEDED", old.message] in rows
    assert ["", "", "summary", "void", "1"] in rows


def test_a_cancellation_voids_both_lines_and_gives_the_allowance_back(corrections_plan, mediate):
    mediate(FIRST)
    cancel = mediate(lines(("K1", "2026-10-05T10:00:00Z", 300, "", "C1")))
    assert outcome(corrections_plan["service"]) == {
        "C1": ("void", "SUPERSEDED", 300, "0"),
        "C2": ("mediated", "", 400, "0"),
        "K1": ("void", "CANCELLATION", 0, "0.5"),  # as rated on arrival, before it cancelled C1; never billed
    }
    assert drawn(corrections_plan) == 400
    assert QuarantinedRecord.objects.get(record_id="C1").message.startswith(f"Cancelled by file {cancel.pk} line 2")
    assert QuarantinedRecord.objects.get(record_id="K1").message.startswith("Cancels record key C1 (file ")
    assert not UsageRecord.objects.filter(record_id__in=["C1", "K1"]).exists()


def test_refused_corrections_say_why_and_are_never_billed(corrections_plan, mediate):
    mediate(FIRST)
    mediate(lines(("X1", "2026-10-05T10:00:00Z", 100, "C1", "")))
    received = mediate(
        lines(
            ("X2", "2026-10-05T12:00:00Z", 60, "NOPE", ""),  # never received
            ("X3", "2026-10-05T12:10:00Z", 60, "C1", ""),  # already replaced by X1
            ("X4", "2026-10-05T12:20:00Z", 60, "C2", ""),  # first of two lines correcting C2: applies
            ("X5", "2026-10-05T12:30:00Z", 60, "C2", ""),  # the second: refused
        )
    )
    refused = {r.record_id: r.message for r in QuarantinedRecord.objects.filter(reason="CORRECTION_REFUSED")}
    assert set(refused) == {"X2", "X3", "X5"}
    assert (
        refused["X2"]
        == "Names record key NOPE, which this collector has not received: reprocess this record once it has"
    )
    assert refused["X3"].startswith("Record key C1 is already void (Replaced by file ")
    assert refused["X5"] == (
        f"Record key C2 is corrected by file {received.pk} line 4 in the same run: one correction per record at a "
        "time; a further correction names the key of the line that replaced it"
    )
    assert outcome(corrections_plan["service"])["C2"][:2] == ("void", "SUPERSEDED")
    received.refresh_from_db()
    assert (received.mediated, received.quarantined) == (1, 3)
    assert received.charge == Decimal("0")
    assert dict(Correction.objects.values_list("record_key", "state").filter(file=received).order_by("line_no")) == {
        "NOPE": "refused",
        "C1": "refused",
        "C2": "refused",  # the later line's state: the dict keeps the last of the two C2 rows
    }
    assert Correction.objects.filter(file=received, state="applied").count() == 1


def test_a_correction_of_an_invoiced_period_is_refused(corrections_plan, mediate):
    mediate(FIRST)
    SubscriptionPeriod.objects.filter(pk=corrections_plan["period"].pk).update(status="invoiced")
    november = SubscriptionPeriod.objects.create(
        service=corrections_plan["service"], start_date=dt.date(2026, 11, 1), end_date=dt.date(2026, 11, 30)
    )
    mediate(lines(("X1", "2026-11-02T10:00:00Z", 100, "C1", "")))
    refused = QuarantinedRecord.objects.get(record_id="X1")
    assert refused.reason == "CORRECTION_REFUSED"
    assert "is on an invoiced period: correct it with an adjustment on the next cycle" in refused.message
    assert refused.period_id == november.pk
    assert outcome(corrections_plan["service"])["C1"] == ("mediated", "", 300, "0")


def test_reprocessing_a_refused_correction_applies_it_once_the_record_arrives(corrections_plan, mediate):
    mediate(lines(("X1", "2026-10-05T10:00:00Z", 100, "L1", "")))
    assert QuarantinedRecord.objects.get(record_id="X1").reason == "CORRECTION_REFUSED"
    mediate(lines(("L1", "2026-10-05T09:00:00Z", 700, "", "")))
    assert outcome(corrections_plan["service"])["L1"] == ("mediated", "", 600, "0.1667")
    result = do_reprocess_records("op", QuarantinedRecord.objects.filter(reason="CORRECTION_REFUSED"))
    assert (result["records"], result["mediated"], result["corrections_applied"]) == (1, 1, 1)
    assert outcome(corrections_plan["service"]) == {
        "L1": ("void", "SUPERSEDED", 600, "0.1667"),
        "X1": ("mediated", "", 100, "0"),
    }
    assert drawn(corrections_plan) == 100


def test_a_chain_of_corrections_in_one_file_leaves_the_last(corrections_plan, mediate):
    mediate(FIRST)
    mediate(
        lines(
            ("Y2", "2026-10-05T10:00:00Z", 50, "Y1", ""),  # corrects the line below: applied after it
            ("Y1", "2026-10-05T10:00:00Z", 100, "C1", ""),
        )
    )
    got = outcome(corrections_plan["service"])
    assert (got["C1"][:2], got["Y1"][:2], got["Y2"]) == (
        ("void", "SUPERSEDED"),
        ("void", "SUPERSEDED"),
        ("mediated", "", 50, "0"),
    )
    assert drawn(corrections_plan) == 450


def test_a_resent_correction_file_is_refused_as_duplicates(corrections_plan, mediate):
    mediate(FIRST)
    content = lines(("X1", "2026-10-05T10:00:00Z", 100, "C1", ""))
    mediate(content)
    again = mediate(content + f"Z1,{ID},2026-10-06T10:00:00Z,60,612345,voice,,\n", name="again.csv")
    assert FileRecord.objects.get(file=again, line_no=2).reason == "DUPLICATE"
    (correction,) = Correction.objects.filter(file=again)
    assert correction.state == "refused"
    assert correction.message.startswith("The correcting line is a duplicate (Record key X1 was already received")
    kept = UsageRecord.objects.get(record_id="X1")
    assert (kept.file_id, kept.included_quantity) == (correction.file_id - 1, 100)
    assert Correction.objects.filter(state="applied").count() == 1


def test_a_bad_correction_line_is_a_parse_error_naming_the_field(corrections_plan, mediate):
    received = mediate(
        lines(
            ("B1", "2026-10-05T10:00:00Z", 60, "C1", "C2"),
            ("B2", "2026-10-05T10:00:00Z", 60, "B2", ""),
        )
    )
    messages = sorted(QuarantinedRecord.objects.filter(file=received).values_list("message", flat=True))
    assert messages == [
        "Line 2: corrects and cancels are both set: a line either replaces a record or cancels it.",
        "Line 3: corrects 'B2' is this line's own record key: a correction needs a key of its own.",
    ]
    assert not Correction.objects.exists()


def test_corrections_need_a_record_key_of_one_field(corrections_plan, world, mediate):
    collector = world["collector"]
    collector.dedup_fields = ["record_id", "identifier"]
    collector.save()
    received = mediate(FIRST)
    assert received.status == "rejected"
    assert "record key must then be one field, not record_id + identifier" in received.error


def test_records_sent_to_the_api_correct_like_a_file(corrections_plan, mediate, api):
    mediate(FIRST)
    reply = api.post(
        "/api/v1/collectors/DEMO/ingest/",
        {"records": [{"record_id": "A1", "identifier": ID, "start_time": "2026-10-05T10:00:00Z", "duration": "100",
                      "destination": "612345", "usage_type": "voice", "corrects": "C1"}]},
        format="json",
    )  # fmt: skip
    assert reply.status_code == 201, reply.data
    assert (reply.data["mediated"], reply.data["void"]) == (1, 0)
    assert outcome(corrections_plan["service"])["C1"][:2] == ("void", "SUPERSEDED")
    assert outcome(corrections_plan["service"])["C2"] == ("mediated", "", 400, "0")


def test_applying_again_changes_nothing(corrections_plan, mediate):
    """A worker killed after the file's batches and before its corrections: the rerun applies them
    once; a further run finds nothing to do."""
    from usage.corrections import do_apply_corrections

    mediate(FIRST)
    second = mediate(lines(("X1", "2026-10-05T10:00:00Z", 100, "C1", "")))
    before = outcome(corrections_plan["service"])
    again = do_apply_corrections("test", second.collector_id, [second.pk])
    assert (again.applied, again.refused, again.rerated) == (0, 0, 0)
    assert outcome(corrections_plan["service"]) == before
    assert drawn(corrections_plan) == 500


def test_the_corrections_list_shows_each_line_and_what_became_of_it(corrections_plan, mediate, client, operator):
    mediate(FIRST)
    second = mediate(
        lines(("X1", "2026-10-05T10:00:00Z", 100, "C1", ""), ("X2", "2026-10-05T12:00:00Z", 60, "NOPE", ""))
    )
    client.force_login(operator)
    page = client.get("/admin/usage/correction/").content.decode()
    assert f"file {second.pk} line 2" in page and f"file {second.pk - 1} line 2" in page
    assert "Names record key NOPE, which this collector has not received" in page
    fix = client.get(f"/admin/usage/quarantinedrecord/{QuarantinedRecord.objects.get(record_id='X2').pk}/change/")
    assert "A correction that could not be applied" in fix.content.decode()


def test_corrections_that_name_each_other_are_refused_not_left_waiting(corrections_plan, mediate):
    received = mediate(
        lines(
            ("Z1", "2026-10-05T10:00:00Z", 60, "Z2", ""),
            ("Z2", "2026-10-05T10:05:00Z", 60, "Z1", ""),
        )
    )
    refused = dict(QuarantinedRecord.objects.filter(file=received).values_list("record_id", "message"))
    assert refused == {
        "Z1": "Names record key Z2, a correction that itself waits on this line: corrections that name each other "
        "are not applied",
        "Z2": "Names record key Z1, a correction that itself waits on this line: corrections that name each other "
        "are not applied",
    }
    assert set(Correction.objects.values_list("state", flat=True)) == {"refused"}
    assert drawn(corrections_plan) == 0  # what they drew on arrival is given back
