import csv
import datetime as dt
import random

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from billing import demo
from usage.demo import DEMO_MAPPING

HEADER = list(DEMO_MAPPING)  # the demo collector's columns: no corrections
BAD_LINES = [
    # (what is wrong, a row builder) - each yields a line mediation must reject with a reason
    ("impossible date", lambda r: r[:2] + ["2026-13-45T25:61:00Z"] + r[3:]),
    ("duration with its unit", lambda r: r[:3] + ["30s"] + r[4:]),
    ("non-numeric volume", lambda r: r[:4] + ["lots"] + r[5:]),
    ("missing fields", lambda r: r[:4]),
    ("empty identifier", lambda r: r[:1] + [""] + r[2:]),
]


class Command(BaseCommand):
    help = (
        "Write a realistic, deterministic usage CSV for the demo telco: voice, SMS, data, service and equipment "
        "charges, with a few per cent unknown identifiers, out-of-period dates, unrated destinations and "
        "malformed lines. Streams, so any size fits in memory."
    )

    def add_arguments(self, parser):
        parser.add_argument("--records", type=int, required=True)
        parser.add_argument("--out", required=True, help="File path, or - for standard output.")
        parser.add_argument("--services", type=int, default=200, help="Services in the demo (seed_demo --services).")
        parser.add_argument("--seed", type=int, default=1)
        parser.add_argument("--month", help="YYYY-MM the usage falls in (default: last month).")
        parser.add_argument("--error-rate", type=float, default=0.04, help="Share of problem records (default 0.04).")
        parser.add_argument("--id-prefix", default="", help="Prefix for record ids (to make files that differ).")
        parser.add_argument("--only-service", type=int, help="All records for demo service number N (a big cycle).")
        parser.add_argument(
            "--credits", type=int, default=0, help="Carrier credit lines (negative call durations) after the records."
        )
        parser.add_argument(
            "--api-calls", type=int, default=0, help="API call lines of the services with API access, at the end."
        )

    def handle(
        self,
        *args,
        records,
        out,
        services,
        seed,
        month,
        error_rate,
        id_prefix,
        only_service,
        credits,
        api_calls,
        **options,
    ):
        if records < 0 or services < 1:
            raise CommandError("--records must be >= 0 and --services >= 1.")
        if month:
            try:
                year, mon = (int(x) for x in month.split("-"))
                first, last = demo.month_bounds(year, mon)
            except ValueError as exc:
                raise CommandError(f"--month must be YYYY-MM, not {month!r}.") from exc
        else:
            first, last = demo.previous_month(timezone.localdate())
        stream = self.stdout if out == "-" else open(out, "w", newline="", encoding="utf-8")  # noqa: SIM115
        try:
            counts = write_usage(
                stream, records, services, seed, first, last, error_rate, id_prefix, only_service, credits, api_calls
            )
        finally:
            if stream is not self.stdout:
                stream.close()
        if out != "-":
            summary = ", ".join(f"{k}={v}" for k, v in sorted(counts.items()))
            self.stderr.write(f"make_usage_file: wrote {records} records to {out} ({summary})")


def write_usage(
    stream, records, services, seed, first, last, error_rate, id_prefix="", only_service=None, credits=0, api_calls=0
) -> dict:
    """`records` usage lines, then `credits` credit lines (a carrier's refund of part of a call),
    then `api_calls` API calls of the services with API access (an aggregate charge prices them)."""
    rng = random.Random(seed)
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(HEADER)
    start = dt.datetime.combine(first, dt.time.min, tzinfo=dt.UTC)
    span = int((dt.datetime.combine(last, dt.time.max, tzinfo=dt.UTC) - start).total_seconds())
    rated_prefixes = [p for p, _, _ in demo.DESTINATIONS]
    counts = {"ok": 0, "unknown_identifier": 0, "out_of_period": 0, "unrated_destination": 0, "malformed": 0}
    share = error_rate / 4
    for n in range(1, records + 1):
        i = only_service or rng.randint(1, services)
        when = start + dt.timedelta(seconds=rng.randrange(span))
        problem = rng.random()
        ident = demo.identifier(i)
        if problem < share:
            ident = f"6149{rng.randrange(10**7):07d}"  # nobody's number
            counts["unknown_identifier"] += 1
        elif problem < 2 * share:
            when -= dt.timedelta(days=365)  # the identifier is active then, but there is no period
            counts["out_of_period"] += 1
        row = [f"{id_prefix}R{seed}-{n:09d}", ident, when.strftime("%Y-%m-%dT%H:%M:%SZ")]
        kind = rng.random()
        if demo.is_nbn(i) or 0.65 <= kind < 0.95:
            row += ["", str(rng.randrange(1024, 2 * 1024**3)), "", "", "data", ""]
        elif kind < 0.45:
            dest = rng.choice(rated_prefixes) + f"{rng.randrange(10**8):08d}"
            if 2 * share <= problem < 3 * share:
                dest = demo.UNRATED_PREFIX + dest
                counts["unrated_destination"] += 1
            row += [str(rng.randrange(1, 3600)), "", "", dest, "voice", ""]
        elif kind < 0.62:
            row += ["", "", "1", rng.choice(rated_prefixes) + f"{rng.randrange(10**8):08d}", "sms", ""]
        elif kind < 0.65:
            row += ["", "", "1", "", "mms", ""]
        else:
            usage_type = rng.choice(["equipment", "service_charge", "feature"])
            amount = f"{rng.randrange(100, 50000) / 100:.2f}" if usage_type == "equipment" else ""
            row += ["", "", str(rng.randint(1, 3)), "", usage_type, amount]
        if 3 * share <= problem < 4 * share:
            _, build = BAD_LINES[n % len(BAD_LINES)]
            row = build(row)
            counts["malformed"] += 1
        writer.writerow(row)
    counts["ok"] = records - sum(v for k, v in counts.items() if k != "ok")
    for n in range(1, credits + 1):
        i = only_service or rng.randint(1, services)
        when = start + dt.timedelta(seconds=rng.randrange(span))
        dest = rng.choice(rated_prefixes) + f"{rng.randrange(10**8):08d}"
        row = [f"{id_prefix}CR{seed}-{n:06d}", demo.identifier(i), when.strftime("%Y-%m-%dT%H:%M:%SZ")]
        writer.writerow(row + [str(-rng.randrange(60, 600)), "", "", dest, "voice", ""])
    counts["credit"] = credits
    with_api = [i for i in range(1, services + 1) if demo.has_api(i)]
    for n in range(1, api_calls + 1 if with_api else 1):
        i = rng.choice(with_api)
        when = start + dt.timedelta(seconds=rng.randrange(span))
        row = [f"{id_prefix}API{seed}-{n:06d}", demo.identifier(i), when.strftime("%Y-%m-%dT%H:%M:%SZ")]
        writer.writerow(row + ["", "", "", "", "api_call", ""])
    counts["api_call"] = api_calls if with_api else 0
    return counts
