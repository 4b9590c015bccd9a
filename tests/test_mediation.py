"""Mediation File Processing on a small priced world (`world` in conftest), with numbers worked
out by hand:

line 2  A1  s1 voice 61 s to 44…   plan card 44 @0.40/min, 30 s increments → 90 s → 0.6000, tax 0.0600
line 3  A2  s2 voice 61 s to 441…  default 441 @0.70/min, 1 s → 61/60 × 0.70 = 0.71166… → 0.7117, tax 0.0712
line 4  A3  s2 voice 59 s to 44…   default 44 @0.50/min, 30 s → 60 s → 0.5000, tax 0.0500
line 5  A4  s2 voice 1 s to 61…    prefix 61 (any type) beats the blank voice prefix → 60 s @0.30 → 0.3000
line 6  A5  s2 sms, no quantity    one message @0.25 → 0.2500, tax 0.0250
line 7  A6  s2 data 1,048,577 B    1 KiB increments → 1,049,600 B → 0.020019… → 0.0200, tax 0.0020
line 8  A7  s2 service_charge × 2  2 × 2.50 → 5.0000, tax 0.5000
line 9  A8  s2 equipment 12.345678 pre-priced, kept exact; tax 1.2345678 → 1.2346
line 10 A9  unknown identifier     NO_SERVICE
line 11 A10 s2 in August           NO_PERIOD
line 12 A11 s1 in closed September LATE_CLOSED_PERIOD
line 13 A12 s2 mms                 NO_RATE (no mms rate)
line 14 A1 again                   DUPLICATE of line 2
line 15-17                         PARSE_ERROR: impossible date, negative duration, missing fields
"""

import datetime as dt
import io
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.test import override_settings
from django.urls import reverse

from billing.models import ServiceIdentifier, SubscriptionPeriod, TaxRule
from usage import services
from usage.models import FileRecord, MediationFile, QuarantinedRecord, RecordKey, UsageCollector, UsageRecord

from .conftest import aware, receive

HEADER = "record_id,identifier,start_time,duration,volume,quantity,destination,usage_type,amount\n"
T = "2026-10-05T10:00:00Z"
GOLDEN = (
    HEADER
    + "\n".join(
        [
            f"A1,61400000001,{T},61,,,4420000000,voice,",
            f"A2,61400000002,{T},61,,,4410000000,voice,",
            f"A3,61400000002,{T},59,,,4420000000,voice,",
            f"A4,61400000002,{T},1,,,6120000000,voice,",
            f"A5,61400000002,{T},,,,,sms,",
            f"A6,61400000002,{T},,1048577,,,data,",
            f"A7,61400000002,{T},,,2,,service_charge,",
            f"A8,61400000002,{T},,,1,,equipment,12.345678",
            f"A9,61499999999,{T},60,,,4420000000,voice,",
            "A10,61400000002,2026-08-15T00:00:00Z,60,,,4420000000,voice,",
            "A11,61400000001,2026-09-15T00:00:00Z,60,,,4420000000,voice,",
            f"A12,61400000002,{T},,,1,,mms,",
            f"A1,61400000001,{T},61,,,4420000000,voice,",
            "A13,61400000002,2026-13-45T25:61:00Z,60,,,44,voice,",
            f"A14,61400000002,{T},-30,,,44,voice,",
            "A15,61400000002",
        ]
    )
    + "\n"
)

EXPECTED = {
    2: ("mediated", "", "0.6", "0.06"),
    3: ("mediated", "", "0.7117", "0.0712"),
    4: ("mediated", "", "0.5", "0.05"),
    5: ("mediated", "", "0.3", "0.03"),
    6: ("mediated", "", "0.25", "0.025"),
    7: ("mediated", "", "0.02", "0.002"),
    8: ("mediated", "", "5", "0.5"),
    9: ("mediated", "", "12.345678", "1.2346"),
    10: ("quarantined", "NO_SERVICE", None, None),
    11: ("quarantined", "NO_PERIOD", None, None),
    12: ("quarantined", "LATE_CLOSED_PERIOD", None, None),
    13: ("quarantined", "NO_RATE", None, None),
    14: ("quarantined", "DUPLICATE", None, None),
    15: ("quarantined", "PARSE_ERROR", None, None),
    16: ("quarantined", "PARSE_ERROR", None, None),
    17: ("quarantined", "PARSE_ERROR", None, None),
}


def outcome(mediation_file):
    return {
        r.line_no: (
            r.status,
            r.reason,
            None if r.charge is None else str(r.charge.normalize()),
            None if r.tax is None else str(r.tax.normalize()),
        )
        for r in mediation_file.records.all()
    }


pytestmark = pytest.mark.django_db


def test_golden_file(mediate):
    f = mediate(GOLDEN)
    assert f.status == "completed", f.error
    assert outcome(f) == EXPECTED
    assert (f.total_lines, f.mediated, f.quarantined, f.duplicates, f.rejected_lines) == (16, 8, 4, 1, 3)
    assert f.charge == Decimal("19.727378") and f.tax == Decimal("1.9728")
    a1 = f.records.get(line_no=2)
    assert (a1.rated_quantity, a1.category, a1.rate.rate_card.code, a1.period.start_date) == (
        90,
        "telephony",
        "PLAN",
        dt.date(2026, 10, 1),
    )


def test_every_input_line_is_accounted_for_exactly_once(mediate):
    f = mediate(GOLDEN)
    lines = sorted(f.records.values_list("line_no", flat=True))
    assert lines == list(range(2, 18))
    assert f.total_lines == f.mediated + f.quarantined + f.duplicates + f.rejected_lines + f.pending


def test_messages_name_the_line_field_and_reason(mediate):
    f = mediate(GOLDEN)
    message = dict(f.records.values_list("line_no", "message"))
    assert message[10] == "No service has identifier 61499999999 active at " + message[10].rsplit("at ", 1)[1]
    assert message[11].startswith("The service has no subscription period containing 2026-08-15")
    assert message[12].startswith("The period containing 2026-09-15") and "closed" in message[12]
    assert message[13] == "No rate for telephony mms on 2026-10-05"
    assert message[14] == "Record key A1 repeats line 2 of this file"
    assert message[15].startswith("Line 15: start_time '2026-13-45T25:61:00Z' is not a valid date and time")
    assert message[16] == "Line 16: duration '-30' must not be negative (the collector does not accept credits)."
    assert message[17] == "Line 17: has 2 fields, the mapping needs 9."
    assert f.records.get(line_no=17).raw == "A15,61400000002"


@override_settings(TOLLGATE_MEDIATION_BATCH=3)
def test_small_batches_give_the_same_outcome(mediate):
    assert outcome(mediate(GOLDEN)) == EXPECTED


def test_same_content_is_refused_with_a_pointer(mediate, world):
    first = mediate(GOLDEN, name="day1.csv")
    with pytest.raises(services.DuplicateFile, match=r"already received as 'day1.csv' \(file \d+, #1 of collector"):
        receive(world["collector"], GOLDEN, name="day1-again.csv")
    assert MediationFile.objects.count() == 1 and first.sequence == 1


def test_a_record_seen_in_an_earlier_file_is_a_duplicate(mediate):
    first = mediate(GOLDEN)
    second = mediate(HEADER + f"A2,61400000002,{T},61,,,4410000000,voice,\nB1,61400000002,{T},61,,,4410000000,voice,\n")
    assert second.sequence == 2
    dup = second.records.get(line_no=2)
    assert (dup.status, dup.reason) == ("quarantined", "DUPLICATE")
    assert dup.message == f"Record key A2 was already received in file {first.pk} line 3"
    assert second.records.get(line_no=3).status == "mediated"
    assert FileRecord.objects.filter(record_key="A2", status="mediated").count() == 1


def test_late_usage_can_roll_forward_flagged(mediate, world):
    UsageCollector.objects.filter(pk=world["collector"].pk).update(late_usage_policy="roll_forward")
    world["collector"].refresh_from_db()
    f = mediate(GOLDEN)
    late = f.records.get(line_no=12)
    assert (late.status, late.is_late, late.period.start_date, late.charge) == (
        "mediated",
        True,
        dt.date(2026, 10, 1),
        Decimal("0.4"),
    )


def test_without_any_tax_rule_records_wait_in_quarantine(mediate):
    TaxRule.objects.all().delete()
    f = mediate(GOLDEN)
    reasons = dict(f.records.values_list("line_no", "reason"))
    assert [reasons[n] for n in range(2, 10)] == ["NO_TAX"] * 8
    assert f.mediated == 0


def test_reprocess_after_the_cause_is_fixed(mediate, world):
    f = mediate(GOLDEN)
    ServiceIdentifier.objects.create(service=world["s2"], value="61499999999", active_from=aware(2026, 1, 1))
    SubscriptionPeriod.objects.create(
        service=world["s2"], start_date=dt.date(2026, 8, 1), end_date=dt.date(2026, 8, 31)
    )
    result = services.do_reprocess_records("test", QuarantinedRecord.objects.filter(file=f))
    assert result == {"records": 4, "mediated": 2, "quarantined": 2}
    f.refresh_from_db()
    assert (f.mediated, f.quarantined, f.duplicates, f.rejected_lines) == (10, 2, 1, 3)
    # 60 s to 44 on s2 (default card 44 @0.50, 30 s) = 0.50, twice.
    assert f.charge == Decimal("19.727378") + Decimal("1.0")
    assert f.records.get(line_no=10).file_id == f.pk  # keeps its provenance


def test_quarantine_is_its_own_table_and_records_move_across(mediate, world):
    """Mediated records are kept apart from the others; reprocess and rebalance move a record whose
    outcome changes side, keeping its file and line, and the file's counts follow."""
    from billing.models import Rate
    from usage.rebalance import do_rebalance

    f = mediate(GOLDEN)
    mediated = set(UsageRecord.objects.filter(file=f).values_list("line_no", flat=True))
    waiting = set(QuarantinedRecord.objects.filter(file=f).values_list("line_no", flat=True))
    assert mediated == set(range(2, 10)) and waiting == set(range(10, 18))
    assert set(f.records.values_list("line_no", flat=True)) == mediated | waiting
    highest = UsageRecord.objects.order_by("-id").values_list("id", flat=True).first()

    ServiceIdentifier.objects.create(service=world["s1"], value="61499999999", active_from=aware(2026, 1, 1))
    assert services.do_reprocess_records("test", QuarantinedRecord.objects.filter(line_no=10))["mediated"] == 1
    moved = UsageRecord.objects.get(file=f, line_no=10)
    assert not QuarantinedRecord.objects.filter(file=f, line_no=10).exists()
    assert (moved.record_id, moved.status, moved.reason, moved.charge) == (
        "A9",
        "mediated",
        "",
        Decimal("0.4"),
    )  # 60 s on the plan card: 1 min @0.40
    assert moved.id > highest  # a new id in its new table: metering's high mark sees it
    f.refresh_from_db()
    assert (f.mediated, f.quarantined) == (9, 3)

    sms = Rate.objects.get(usage_type="sms")
    Rate.objects.filter(pk=sms.pk).update(effective_to=dt.date(2026, 9, 30))
    result = do_rebalance("test", world["s2"].account, dt.date(2026, 10, 15))
    assert result.changed == 1 and result.old_total - result.new_total == Decimal("0.25")
    gone = QuarantinedRecord.objects.get(file=f, line_no=6)
    assert (gone.record_id, gone.reason, gone.charge_micros) == ("A5", "NO_RATE", None)
    assert not UsageRecord.objects.filter(file=f, line_no=6).exists()
    f.refresh_from_db()
    assert (f.mediated, f.quarantined) == (8, 4)

    Rate.objects.filter(pk=sms.pk).update(effective_to=None)
    do_rebalance("test", world["s2"].account, dt.date(2026, 10, 15))
    back = UsageRecord.objects.get(file=f, line_no=6)
    assert (back.record_id, back.charge, back.tax) == ("A5", Decimal("0.25"), Decimal("0.025"))
    f.refresh_from_db()
    assert (f.mediated, f.quarantined, f.total_lines) == (9, 3, 16)


def test_each_table_refuses_the_other_sides_records(mediate, world):
    """Integrity in the store: a quarantined record cannot be written into the records table, nor a
    mediated one into the quarantine."""
    from django.db import IntegrityError, transaction

    f = mediate(GOLDEN)
    with pytest.raises(IntegrityError), transaction.atomic():
        UsageRecord.objects.filter(file=f, line_no=2).update(status="quarantined", reason="NO_RATE")
    with pytest.raises(IntegrityError), transaction.atomic():
        QuarantinedRecord.objects.filter(file=f, line_no=10).update(status="mediated", stage="done", reason="")
    with pytest.raises(TypeError):
        services.do_reprocess_records("test", UsageRecord.objects.filter(file=f))


def test_stage_by_stage_equals_a_full_run(world, sync_tasks, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        f = receive(world["collector"], GOLDEN)
    UsageRecord.objects.filter(file=f).delete()
    QuarantinedRecord.objects.filter(file=f).delete()
    RecordKey.objects.filter(file=f).delete()  # the file's kept keys go with its records
    MediationFile.objects.filter(pk=f.pk).update(status="queued", lines_done=0)
    call_command("mediate", "process", "--until", "identify")
    waiting = QuarantinedRecord.objects.filter(file=f, status="pending")
    assert set(waiting.values_list("stage", flat=True)) == {"bucket"}
    for stage in ("bucket", "rate", "tax"):
        call_command("mediate", stage)
    f.refresh_from_db()
    assert outcome(f) == EXPECTED
    assert f.mediated == 8


@pytest.mark.parametrize(
    "content,message",
    [
        (b"", "The file is empty."),
        (HEADER.encode(), "The file has a header but no records."),
        (
            HEADER.replace(",", ";").encode() + b"A1;61400000001;2026-10-05T10:00:00Z;1;;;44;voice;\n",
            "Is the delimiter a semicolon rather than ','?",
        ),
        (
            HEADER.replace("start_time", "begin").encode() + f"A1,61400000001,{T},1,,,44,voice,\n".encode(),
            "the header has no column 'start_time' (for start_time)",
        ),
    ],
)
def test_whole_file_rejections_write_nothing(mediate, content, message):
    f = mediate(content)
    assert f.status == "rejected"
    assert message in f.error
    assert not f.records.exists()


def _quotes_and_encodings_file():
    body = (
        "\ufeff"
        + HEADER.replace("\n", "\r\n")
        + f'A1,61400000002,{T},60,,,"44200\n00000",voice,\r\n'  # a quoted newline inside a field
        + f"A2,61400000002,{T},60,,,4420000000,voice,\r\n"
    ).encode()
    body += f"A3,6140000000\xff2,{T},60,,,44,voice,\r\n".encode("latin-1")
    body += f"A4,61400000002,{T},60,,,{'9' * 20000},voice,\r\n".encode()
    body += f"A5,61400000002,{T},60,,,4420000000,voice,\r\n".encode()
    return body


def test_encodings_line_endings_quotes_and_absurd_fields(mediate):
    """By default each physical line is one record or one error: the open quote costs line 2 and
    line 3 (its tail) two errors, never the lines after them."""
    f = mediate(_quotes_and_encodings_file())
    by_line = {r.line_no: r for r in f.records.all()}
    assert sorted(by_line) == [2, 3, 4, 5, 6, 7]
    assert by_line[2].reason == "PARSE_ERROR" and by_line[2].message == (
        "Line 2: a quoted field is not closed on this line."
    )
    assert by_line[3].reason == "PARSE_ERROR" and by_line[3].message == "Line 3: has 3 fields, the mapping needs 9."
    assert by_line[4].status == "mediated"
    assert by_line[5].reason == "PARSE_ERROR" and "not valid utf-8 at character" in by_line[5].message
    assert by_line[6].reason == "PARSE_ERROR" and "longer than 10,000 characters" in by_line[6].message
    assert by_line[7].status == "mediated"
    assert (f.physical_lines, f.header_lines, f.blank_lines, f.continuation_lines) == (7, 1, 0, 0)
    assert f.mediated + f.quarantined + f.duplicates + f.rejected_lines == 6


def test_quoted_fields_may_span_lines_when_the_collector_says_so(mediate, world):
    collector = world["collector"]
    collector.multiline_fields = True
    collector.save()
    f = mediate(_quotes_and_encodings_file())
    by_line = {r.line_no: r for r in f.records.all()}
    assert sorted(by_line) == [2, 4, 5, 6, 7]  # the quoted field spans lines 2-3
    assert by_line[2].status == "mediated" and by_line[2].destination == "44200\n00000"
    assert by_line[4].status == "mediated"
    assert (f.physical_lines, f.header_lines, f.continuation_lines) == (7, 1, 1)
    # An open quote at the end of the file is its own error, not a silent swallow.
    f = mediate(HEADER + f'B1,61400000002,{T},60,,,"44,voice,\nB2,61400000002,{T},60,,,44,voice,\n')
    rows = list(f.records.order_by("line_no").values_list("line_no", "message"))
    assert rows == [(2, "Line 2: a quoted field is not closed before the end of the file.")]
    assert (f.physical_lines, f.continuation_lines, f.rejected_lines) == (3, 1, 1)


def test_response_file(mediate, client, operator):
    f = mediate(GOLDEN.replace("A12,", "=HYPERLINK(1),"))
    client.force_login(operator)
    response = client.get(reverse("console:response_file", args=[f.pk]))
    assert response.status_code == 200
    assert response["Content-Disposition"] == 'attachment; filename="usage.response.csv"'
    import csv

    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[0] == ["line", "record_id", "status", "reason", "message"]
    body = [r for r in rows[1:] if r[2] != "summary"]
    assert [int(r[0]) for r in body] == list(range(10, 18))
    assert body[3][1] == "'=HYPERLINK(1)"  # no formula injection
    summary = {r[3]: r[4] for r in rows if r[2] == "summary"}
    assert summary["total_lines"] == "16" and summary["mediated"] == "8" and summary["charge"] == "19.727378"


def test_files_of_a_collector_are_processed_in_upload_order(world):
    from usage import mediation

    collector = world["collector"]
    first = receive(collector, GOLDEN, name="one.csv")
    second = receive(
        collector, HEADER + f"A1,61400000001,{T},1,,,44,voice,\nC1,61400000001,{T},1,,,44,voice,\n", name="two.csv"
    )
    assert mediation.claim(collector.pk, "other-worker")
    assert mediation.process_collector_queue(collector.pk, owner="me") == 0  # another worker holds the queue
    mediation.release(collector.pk, "other-worker")
    assert mediation.process_collector_queue(collector.pk, owner="me") == 2
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.finished_at <= second.started_at
    # Because file one ran first, A1 is billed from file one and is a duplicate in file two.
    assert second.records.get(line_no=2).reason == "DUPLICATE"
    assert first.records.get(line_no=2).status == "mediated"


def test_an_expired_lease_can_be_taken_over(world):
    from usage import mediation

    assert mediation.claim(world["collector"].pk, "dead-worker")
    assert not mediation.claim(world["collector"].pk, "me")
    UsageCollector.objects.filter(pk=world["collector"].pk).update(lease_until=aware(2020, 1, 1))
    assert mediation.claim(world["collector"].pk, "me")


def test_pages_history_and_usage(mediate, client, operator, world):
    f = mediate(GOLDEN)
    client.force_login(operator)
    page = client.get(reverse("console:collector_history", args=[world["collector"].pk])).content.decode()
    assert "usage.csv" in page and "completed" in page and reverse("console:response_file", args=[f.pk]) in page
    usage = client.get(reverse("console:service_usage", args=[world["s2"].pk]), {"period": "all"}).content.decode()
    assert "4410000000" in usage and "0.7117" in usage and "Tollgate" in usage
    assert "2026-10-01 to 2026-10-31" in usage  # the bucket, as the operator reads it
    misc = client.get(reverse("console:service_equipment_usage", args=[world["s2"].pk]), {"period": "all"})
    misc = misc.content.decode()
    assert "service_charge" in misc and "4410000000" not in misc
    assert client.get(reverse("console:collectors")).status_code == 200


def test_admin_upload_of_several_files_and_quarantine_reprocess(
    world, operator, client, sync_tasks, django_capture_on_commit_callbacks
):
    from django.core.files.uploadedfile import SimpleUploadedFile

    client.force_login(operator)
    files = [SimpleUploadedFile("a.csv", GOLDEN.encode()), SimpleUploadedFile("b.csv", GOLDEN.encode())]
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("admin:usage_mediationfile_upload"),
            {"collector": world["collector"].pk, "files": files},
            follow=True,
        )
    page = response.content.decode()
    assert "A.csv: queued as #1 of DEMO" in page  # the admin capitalises messages
    assert "B.csv: refused. The same content was already received as &#x27;a.csv&#x27;" in page
    ServiceIdentifier.objects.create(service=world["s2"], value="61499999999", active_from=aware(2026, 1, 1))
    quarantined = list(QuarantinedRecord.objects.filter(status="quarantined").values_list("pk", flat=True))
    response = client.post(
        reverse("admin:usage_quarantinedrecord_changelist"),
        {"action": "reprocess", "_selected_action": quarantined},
        follow=True,
    )
    page = response.content.decode()
    assert 'Reprocessed 4 records: 1 mediated, 3 still quarantined (<a href="/console/runs/' in page
    assert "4 duplicate or unparseable records left alone" in page


def test_viewer_cannot_upload_or_reprocess(world, viewer, client):
    client.force_login(viewer)
    response = client.get(reverse("admin:usage_mediationfile_upload"), follow=True)
    assert "You may not upload files." in response.content.decode()
    assert client.get(reverse("admin:usage_quarantinedrecord_changelist")).status_code == 200


def test_receive_command_takes_files_and_drop_folders(
    world, tmp_path, sync_tasks, capsys, django_capture_on_commit_callbacks
):
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "2.csv").write_text(HEADER + f"Z2,61400000002,{T},1,,,44,voice,\n")
    (drop / "1.csv").write_text(HEADER + f"Z1,61400000002,{T},1,,,44,voice,\n")
    with django_capture_on_commit_callbacks(execute=True):
        call_command("receive", "--collector", "DEMO", str(drop))
        call_command("receive", "--collector", "DEMO", str(drop / "1.csv"))
    captured = capsys.readouterr()
    assert "1.csv: queued as #1" in captured.out and "2.csv: queued as #2" in captured.out
    assert "refused. The same content was already received" in captured.err
    assert list(MediationFile.objects.order_by("sequence").values_list("name", "status")) == [
        ("1.csv", "completed"),
        ("2.csv", "completed"),
    ]


def test_mapping_preview_saves_nothing(world, client, operator):
    from django.core.files.uploadedfile import SimpleUploadedFile

    client.force_login(operator)
    collector = world["collector"]
    url = reverse("admin:usage_collector_preview", args=[collector.pk])
    data = {
        "format": "csv_header",
        "encoding": "utf-8",
        "delimiter": ";",
        "time_format": "iso",
        "time_zone": "UTC",
        "duration_unit": "second",
        "volume_unit": "byte",
        "fraction_rounding": "exact",
        "default_category": "misc",
        "field_mapping": '{"record_id": "id", "identifier": "msisdn", "start_time": "when", "duration": "secs"}',
        "category_rules": "{}",
        "dedup_fields": '["record_id"]',
        "sample": SimpleUploadedFile("s.csv", b"id;msisdn;when;secs\nX1;614;2026-10-05T10:00:00Z;2.5\nX2;615;nope;1\n"),
    }
    page = client.post(url, data).content.decode()
    assert "X1" in page and "Line 3: start_time &#x27;nope&#x27; is not a valid date and time" in page
    assert "<td>2.5</td>" in page  # the exact duration, as it will be kept
    collector.refresh_from_db()
    assert collector.delimiter == "," and "msisdn" not in str(collector.field_mapping)
    assert not MediationFile.objects.exists()


def test_reprocess_of_a_large_selection(mediate, world):
    """33,000 records in one reprocess: each goes through its gates once and every one is counted."""
    lines = "".join(f"K{i},61499999999,{T},61,,,4410000000,voice,\n" for i in range(33_000))
    f = mediate(HEADER + lines)
    assert f.quarantined == 33_000
    ServiceIdentifier.objects.create(service=world["s2"], value="61499999999", active_from=aware(2026, 1, 1))
    result = services.do_reprocess_records("test", QuarantinedRecord.objects.filter(file=f))
    assert result == {"records": 33_000, "mediated": 33_000, "quarantined": 0}
    f.refresh_from_db()
    assert f.charge == Decimal("0.7117") * 33_000  # each as line 3 of the golden file


BOOM_TRIGGER = {
    "sqlite": (
        "CREATE TRIGGER usage_test_boom BEFORE INSERT ON usage_usagerecord WHEN NEW.record_id = 'BOOM' "
        "BEGIN SELECT RAISE(ABORT, 'the test refuses BOOM'); END",
        "DROP TRIGGER usage_test_boom",
    ),
    "postgresql": (
        "CREATE FUNCTION usage_test_boom() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF NEW.record_id = 'BOOM' THEN RAISE EXCEPTION 'the test refuses BOOM'; END IF; RETURN NEW; END $$; "
        "CREATE TRIGGER usage_test_boom BEFORE INSERT ON usage_usagerecord FOR EACH ROW "
        "EXECUTE FUNCTION usage_test_boom()",
        "DROP TRIGGER usage_test_boom ON usage_usagerecord; DROP FUNCTION usage_test_boom()",
    ),
}


def boom(on: bool):
    """A database that refuses one record: an unexpected failure in the middle of a file."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(BOOM_TRIGGER[connection.vendor][0 if on else 1])


def lines(*record_ids, identifier="61400000002"):
    """Calls a minute apart, in file order: they are mediated in that order (time order)."""
    return HEADER + "".join(
        f"{r},{identifier},2026-10-05T10:{i:02d}:00Z,61,,,4410000000,voice,\n" for i, r in enumerate(record_ids)
    )


@override_settings(TOLLGATE_MEDIATION_BATCH=2)
def test_a_failed_file_tells_what_was_committed_and_blocks_later_files(world, client, operator):
    from django.core.management.base import CommandError

    from billing.models import AuditEvent

    collector = world["collector"]
    boom(True)
    first = receive(collector, lines("F1", "F2", "BOOM", "F4", "F5"), "first.csv")
    later = receive(collector, lines("L1", "L2"), "later.csv")
    with pytest.raises(CommandError) as failure:
        call_command("mediate", "process", "--collector", collector.code)
    first.refresh_from_db(), later.refresh_from_db()
    assert first.status == "failed" and later.status == "queued"  # upload order holds after a failure
    assert first.error.startswith("Batch 2 (lines 4–5, 2 records): ")
    assert "the test refuses BOOM" in first.error and "first.csv failed" in str(failure.value)
    # What was committed is what the file reports: batch 1, lines 2-3, 0.7117 each (A2 of the golden file).
    assert (first.lines_done, first.mediated, first.charge_micros) == (2, 2, 2 * 711_700)
    client.force_login(operator)
    rows = b"".join(client.get(reverse("console:response_file", args=[first.pk])).streaming_content).decode()
    assert "Failed: 2 records committed = 2 mediated + 0 quarantined" in rows
    history = client.get(reverse("console:collector_history", args=[collector.pk])).content.decode()
    assert 'id="blocked"' in history and "first.csv failed" in history
    assert "Blocked" in client.get(reverse("console:collectors")).content.decode()
    # Still blocked on the next run, and said so.
    with pytest.raises(CommandError, match="DEMO is blocked: DEMO #1 first.csv failed earlier"):
        call_command("mediate", "process")
    # Retried after the cause is gone, it resumes after its committed batch; then the later file runs.
    boom(False)
    assert client.post(reverse("console:file_retry", args=[first.pk])).status_code == 302
    call_command("mediate", "process", "--collector", collector.code)
    first.refresh_from_db(), later.refresh_from_db()
    assert (first.status, first.mediated, later.status, later.mediated) == ("completed", 5, "completed", 2)
    assert first.finished_at <= later.started_at
    assert AuditEvent.objects.filter(action="file.requeue").count() == 1


@override_settings(TOLLGATE_MEDIATION_BATCH=2)
def test_an_operator_skips_a_failed_file_and_the_audit_says_what_was_skipped(world, client, operator, viewer):
    from billing.models import AuditEvent

    collector = world["collector"]
    boom(True)
    first = receive(collector, lines("S1", "S2", "BOOM", "S4"), "first.csv")
    later = receive(collector, lines("T1"), "later.csv")
    from usage.mediation import process_collector_queue

    process_collector_queue(collector.pk)
    client.force_login(viewer)
    assert client.post(reverse("console:file_skip", args=[first.pk])).status_code == 403
    client.force_login(operator)
    client.post(reverse("console:file_skip", args=[first.pk]), {"reason": "carrier resends lines 4-5"})
    first.refresh_from_db()
    assert first.status == "skipped"
    assert first.error.startswith("Skipped by op: carrier resends lines 4-5. 2 records were committed (2 mediated")
    entry = AuditEvent.objects.get(action="file.skip")
    assert entry.changes["after"]["lines_done"] == 2 and "the rest not mediated" in entry.summary
    process_collector_queue(collector.pk)
    later.refresh_from_db()
    assert later.status == "completed" and later.mediated == 1
    # A skipped or completed file is not skipped (or retried) again.
    with pytest.raises(ValidationError, match="Only a failed file can be skipped"):
        services.do_skip_file(operator, first)
    boom(False)


def test_retry_of_a_reaped_run_whose_file_then_completed_has_nothing_to_retry(mediate, client, operator):
    from console import tracking
    from console.models import ProcessRun

    f = mediate(lines("R1"))
    run = ProcessRun.objects.get(subject=f"file:{f.pk}")
    ProcessRun.objects.filter(pk=run.pk).update(status="failed", error="worker lost")  # reaped after a kill
    run.refresh_from_db()
    with pytest.raises(ValidationError, match="Nothing to retry: DEMO #1 usage.csv is completed"):
        tracking.retry_run(operator, run)
    client.force_login(operator)
    page = client.post(reverse("console:run_retry", args=[run.pk]), follow=True).content.decode()
    assert "Nothing to retry" in page
