"""The malformed-input corpus (tests/corpus.py) through the real receive and mediate path: no file
fails or hangs, every good line is mediated, every bad line is its own error naming its line and
field, nothing beyond a collector's bounds is rated, and every physical line is accounted for."""

import io
import time

from usage import services
from usage.demo import DEMO_RULES
from usage.mediation import process_collector_queue
from usage.models import FileRecord, MediationFile, UsageCollector

from .corpus import COLLECTORS, GOOD, build

LINE_ERRORS = ("PARSE_ERROR", "OUT_OF_RANGE")


def test_malformed_corpus(world):
    collectors = {
        kind: UsageCollector.objects.create(
            code=f"M{kind}", name=f"Corpus {kind}", category_rules=DEMO_RULES, dedup_fields=["record_id"], **config
        )
        for kind, config in COLLECTORS.items()
    }
    cases = build()
    assert len(cases) >= 1000
    received = {}
    for case in cases:
        mediation_file = services.do_receive_file(
            "corpus", collectors[case.collector], case.name, io.BytesIO(case.content), enqueue=False
        )
        received[mediation_file.pk] = case
    started = time.monotonic()
    for collector in collectors.values():
        process_collector_queue(collector.pk)
    seconds = time.monotonic() - started

    records = {}
    for file_id, line_no, status, reason, message in FileRecord.objects.filter(file_id__in=received).values_list(
        "file_id", "line_no", "status", "reason", "message"
    ):
        records[(file_id, line_no)] = (status, reason, message)
    problems = []
    for f in MediationFile.objects.filter(pk__in=received):
        case = received[f.pk]
        if case.rejected:
            if f.status != "rejected" or case.rejected not in f.error:
                problems.append(f"{case.name}: expected a rejection with {case.rejected!r}, got {f.status} {f.error!r}")
            continue
        if f.status != "completed":
            problems.append(f"{case.name}: {f.status} {f.error}")
            continue
        mine = {line: value for (file_id, line), value in records.items() if file_id == f.pk}
        if set(mine) != set(case.expect):
            problems.append(f"{case.name}: records at lines {sorted(mine)}, expected {sorted(case.expect)}")
        for line, what in case.expect.items():
            status, reason, message = mine.get(line, (None, None, ""))
            if what == GOOD and status != "mediated":
                problems.append(f"{case.name} line {line}: good line is {status} {reason} {message}")
            elif what != GOOD and (
                reason not in LINE_ERRORS or not message.startswith(f"Line {line}: ") or what[1] not in message
            ):
                problems.append(
                    f"{case.name} line {line}: expected an error with {what[1]!r}, got {reason} {message!r}"
                )
        counted = f.header_lines + f.blank_lines + f.continuation_lines + f.total_lines
        outcomes = f.mediated + f.quarantined + f.duplicates + f.rejected_lines + f.pending
        if (f.physical_lines, f.total_lines, f.blank_lines) != (counted, outcomes, case.blank):
            problems.append(
                f"{case.name}: {f.physical_lines} physical lines, {counted} accounted "
                f"({f.header_lines} header, {f.blank_lines} blank of {case.blank}), {f.total_lines} records, "
                f"{outcomes} outcomes"
            )
    assert problems == [], f"{len(problems)} problems, e.g.:\n" + "\n".join(problems[:40])
    mediated = FileRecord.objects.filter(file_id__in=received, status="mediated")
    bounds = UsageCollector._meta.get_field
    assert not mediated.filter(duration__gt=bounds("max_duration_seconds").default).exists()
    assert not mediated.filter(volume__gt=bounds("max_volume_bytes").default).exists()
    assert not mediated.filter(quantity__gt=bounds("max_quantity").default).exists()
    print(f"corpus: {len(cases)} files, {len(records)} records mediated or quarantined in {seconds:.1f} s")
