"""Where a batch's mediation time goes: the gate statement alone, for chains ending at each gate,
over one staged batch of fresh records, on the database `bench/mediation.py` built.

    python bench/mediation.py                 # once: builds tollgate_bench (100k services)
    python bench/gate_steps.py [--records N] [--repeat K] [--last rate tax ...]

For each chain end it runs the gate statement (parse .. that gate, into the outcome table) K times
and prints the best and every time; the difference between two lines is what that gate costs.
The batch is rolled back: nothing is written. The VM timings here vary by up to ±20% between runs,
hence the repeats. Each line is

    gates last=<gate> records=<n> best_s=<s> records_per_s=<r> runs=<s s …>
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=200_000, help="Records in the batch (a mediation batch).")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--last", nargs="+", default=["bucket", "rate", "tax"], help="Chain ends to time.")
    args = parser.parse_args()
    os.environ["DATABASE_URL"] = os.environ.get(
        "BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/tollgate_bench"
    )
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    usage = Path(tempfile.mkdtemp(prefix="tollgate-gates-")) / "usage.csv"
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run(
        [*manage, "make_usage_file", "--records", str(args.records), "--services", "100000", "--out", str(usage)]
        + ["--id-prefix", f"gates-{int(time.time())}-"],
        check=True,
        cwd=ROOT,
    )

    import django

    django.setup()
    from django.conf import settings
    from django.db import connection, transaction

    from usage import pipeline, staging
    from usage.gates.parse import Parser
    from usage.models import UsageCollector

    collector = UsageCollector.objects.filter(code="DEMO").first()
    if collector is None:
        sys.exit("no DEMO collector: run python bench/mediation.py first (it builds the bench database)")
    with usage.open("rb") as raw:
        prepared = staging.prepare(connection.vendor, Parser(collector, settings.TIME_ZONE).rows(raw), args.records)
    staging.load_file(connection, [prepared], collector.pk)
    with transaction.atomic():
        pipeline.tune_session(connection)
        loaded = staging.take_batch(connection, collector.pk, 0, args.records).count
        table = staging.table_name(connection, collector.pk)
        with connection.cursor() as cursor:
            for last in args.last:
                runs = []
                for _ in range(args.repeat):
                    started = time.monotonic()
                    pipeline.gate_outcome(cursor, collector, 0, table, last, small=loaded <= pipeline.small_batch())
                    runs.append(time.monotonic() - started)
                    cursor.execute(f"DROP TABLE {pipeline.OUTCOME_TABLE}")
                best = min(runs)
                print(
                    f"gates last={last} records={loaded} best_s={best:.2f} records_per_s={loaded / best:.0f} "
                    f"runs={' '.join(f'{r:.2f}' for r in runs)}",
                    flush=True,
                )
        transaction.set_rollback(True)


if __name__ == "__main__":
    main()
