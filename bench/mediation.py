"""Mediation benchmark: a 1M-record usage file over 100k services, mediated end to end on PostgreSQL,
against a bare COPY of the same file into an unindexed table.

    python bench/mediation.py [--records N] [--services N] [--keep]

Uses the database BENCH_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/tollgate_bench), which it
drops and recreates unless --keep. The last line printed is

    mediation records=<n> seconds=<s> records_per_s=<r> copy_ratio=<pipeline s / copy s> peak_rss_mb=<m>

then it mediates --cycle-records more records for one mobile service and rebalances that service's
account for the period holding them (docs/rating.md, rebalance):

    rebalance records=<n> seconds=<s> records_per_s=<r>

and, between the two, one execution of a metering stream summing every mediated record into a meter
per service (docs/metering.md):

    metering records=<n> meters=<m> seconds=<s> records_per_s=<r>
"""

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--services", type=int, default=100_000)
    parser.add_argument("--keep", action="store_true", help="Reuse the bench database and its demo data.")
    parser.add_argument("--cycle-records", type=int, default=100_000, help="Records in the rebalanced cycle.")
    args = parser.parse_args()

    url = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/tollgate_bench")
    if not args.keep:
        recreate_database(url)
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    work = Path(tempfile.mkdtemp(prefix="tollgate-bench-"))
    os.environ["MEDIA_ROOT"] = str(work / "media")
    os.environ["Q_SYNC"] = "1"
    # Setup runs in child processes, so that peak_rss_mb (a high-water mark) measures mediation alone.
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "--verbosity", "0"], check=True, cwd=ROOT)
    started = time.monotonic()
    subprocess.run([*manage, "seed_demo", "--services", str(args.services), "--no-users"], check=True, cwd=ROOT)
    print(f"setup: seeded {args.services} services in {time.monotonic() - started:.1f}s", flush=True)
    usage = work / "usage.csv"
    subprocess.run(
        [
            *manage,
            "make_usage_file",
            "--records",
            str(args.records),
            "--services",
            str(args.services),
            "--out",
            str(usage),
            "--id-prefix",
            f"{int(time.time())}-",
        ],
        check=True,
        cwd=ROOT,
    )
    print(f"setup: {usage.stat().st_size / 1e6:.0f} MB usage file", flush=True)

    import django

    django.setup()
    from django.db import connection

    copy_seconds = bare_copy(connection, usage)
    print(f"copy: {copy_seconds:.2f}s bare COPY into an unindexed table", flush=True)

    from usage import services
    from usage.models import UsageCollector

    collector = UsageCollector.objects.get(code="DEMO")
    started = time.monotonic()
    with usage.open("rb") as handle:
        received = services.do_receive_file("bench", collector, usage.name, handle, via="bench")
    seconds = time.monotonic() - started
    received.refresh_from_db()
    assert received.status == "completed", received.error
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"outcome: mediated={received.mediated} quarantined={received.quarantined} "
        f"rejected_lines={received.rejected_lines} duplicates={received.duplicates} charge={received.charge}"
    )
    from usage.engine.timing import report

    print(f"phases: {report()}")
    print(
        f"mediation records={received.total_lines} seconds={seconds:.2f} "
        f"records_per_s={received.total_lines / seconds:.0f} copy_ratio={seconds / copy_seconds:.2f} "
        f"peak_rss_mb={rss_mb:.0f}"
    )
    bench_metering()
    if args.cycle_records:
        bench_rebalance(manage, work, args, collector)


def bench_metering():
    """One batch execution of a stream over the mediated file: the rated quantity summed per service
    (one meter per service, about 100k)."""
    from metering.models import GuidingRule, MeterType, Stream
    from metering.services import do_execute_stream

    quantity = MeterType.objects.create(code="BENCH", name="Rated quantity", aggregation="sum", field="rated_quantity")
    stream = Stream.objects.create(code="BENCH", name="Bench", is_active=False)
    GuidingRule.objects.create(stream=stream, conditions=[], meter_type=quantity, key_fields="service_id")
    started = time.monotonic()
    execution = do_execute_stream("bench", stream)
    seconds = time.monotonic() - started
    print(
        f"metering records={execution.records} meters={stream.meters.count()} seconds={seconds:.2f} "
        f"records_per_s={execution.records / seconds:.0f}",
        flush=True,
    )


def bench_rebalance(manage, work: Path, args, collector):
    from django.db.models import Count

    from billing import demo
    from usage import services
    from usage.models import UsageRecord
    from usage.rebalance import do_rebalance

    number = next(i for i in range(7, args.services + 1) if not demo.is_nbn(i))
    cycle = work / "cycle.csv"
    subprocess.run(
        [
            *manage,
            "make_usage_file",
            "--records",
            str(args.cycle_records),
            "--only-service",
            str(number),
            "--error-rate",
            "0",
            "--out",
            str(cycle),
            "--id-prefix",
            f"cycle-{int(time.time())}-",
        ],
        check=True,
        cwd=ROOT,
    )
    with cycle.open("rb") as handle:
        received = services.do_receive_file("bench", collector, cycle.name, handle, via="bench")
    received.refresh_from_db()
    assert received.status == "completed", received.error
    busiest = (
        UsageRecord.objects.filter(file=received, period__isnull=False)
        .values("period_id", "period__start_date", "service_id")
        .annotate(n=Count("id"))
        .order_by("-n")
        .first()
    )
    from billing.models import Service

    service = Service.objects.select_related("account").get(pk=busiest["service_id"])
    started = time.monotonic()
    dry = do_rebalance("bench", service.account, busiest["period__start_date"], dry_run=True)
    dry_seconds = time.monotonic() - started
    started = time.monotonic()
    result = do_rebalance("bench", service.account, busiest["period__start_date"])
    seconds = time.monotonic() - started
    print(f"rebalance dry run: records={dry.records} changed={dry.changed} seconds={dry_seconds:.2f}")
    print(f"rebalance records={result.records} seconds={seconds:.2f} records_per_s={result.records / seconds:.0f}")


def bare_copy(connection, path: Path) -> float:
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS bench_bare_copy")
        # One text column a line: the file has malformed lines that a typed COPY would refuse.
        cursor.execute("CREATE TABLE bench_bare_copy (line text)")
        started = time.monotonic()
        if connection.vendor == "sqlite":  # no COPY: one executemany of the lines
            with path.open("r", encoding="utf-8", errors="replace") as handle:
                cursor.executemany("INSERT INTO bench_bare_copy (line) VALUES (%s)", ((line,) for line in handle))
            elapsed = time.monotonic() - started
            cursor.execute("DROP TABLE bench_bare_copy")
            return elapsed
        with path.open("rb") as handle:
            cursor.cursor.copy_expert(
                "COPY bench_bare_copy FROM STDIN WITH (FORMAT csv, DELIMITER E'\\x01', QUOTE E'\\x02', HEADER true)",
                handle,
            )
        elapsed = time.monotonic() - started
        cursor.execute("DROP TABLE bench_bare_copy")
    return elapsed


def recreate_database(url: str):
    import dj_database_url
    import psycopg2

    if url.startswith("sqlite"):
        Path(dj_database_url.parse(url)["NAME"]).unlink(missing_ok=True)
        return
    cfg = dj_database_url.parse(url)
    admin = psycopg2.connect(
        dbname="postgres",
        user=cfg["USER"],
        host=cfg["HOST"],
        port=cfg["PORT"] or 5432,
        password=cfg["PASSWORD"] or None,
    )
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{cfg["NAME"]}"')
        cursor.execute(f'CREATE DATABASE "{cfg["NAME"]}"')
    admin.close()


if __name__ == "__main__":
    main()
