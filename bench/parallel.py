"""Two collectors, one file each, mediated one after the other and then side by side (two workers).

    python bench/parallel.py [--records N] [--services N]

Uses BENCH_DATABASE_URL like bench/mediation.py (dropped and recreated). Prints

    parallel collectors=2 records=<n per file> serial_s=<s> parallel_s=<s> ratio=<parallel/serial>
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
sys.path.insert(0, str(ROOT / "bench"))

from mediation import recreate_database  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--services", type=int, default=100_000)
    args = parser.parse_args()
    url = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/tollgate_bench")
    recreate_database(url)
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    work = Path(tempfile.mkdtemp(prefix="tollgate-parallel-"))
    os.environ["MEDIA_ROOT"] = str(work / "media")
    os.environ["Q_SYNC"] = "1"
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "--verbosity", "0"], check=True, cwd=ROOT)
    subprocess.run([*manage, "seed_demo", "--services", str(args.services), "--no-users"], check=True, cwd=ROOT)
    files = []
    for n in range(4):
        path = work / f"usage-{n}.csv"
        subprocess.run(
            [*manage, "make_usage_file", "--records", str(args.records), "--services", str(args.services)]
            + ["--out", str(path), "--id-prefix", f"p{n}-{int(time.time())}-", "--seed", str(n + 1)],
            check=True,
            cwd=ROOT,
        )
        files.append(path)

    import django

    django.setup()
    from usage.models import UsageCollector

    first = UsageCollector.objects.get(code="DEMO")
    second = UsageCollector.objects.get(pk=first.pk)
    second.pk, second.code, second.name = None, "DEMO2", "Second carrier"
    second.save()

    def receive(code, path):
        """A worker process of its own, as two django-q2 workers would be (mediation runs inline)."""
        return subprocess.Popen([*manage, "receive", "--collector", code, str(path)], cwd=ROOT)

    started = time.monotonic()
    for code, path in (("DEMO", files[0]), ("DEMO2", files[1])):
        assert receive(code, path).wait() == 0
    serial = time.monotonic() - started
    started = time.monotonic()
    workers = [receive("DEMO", files[2]), receive("DEMO2", files[3])]
    assert [w.wait() for w in workers] == [0, 0]
    parallel = time.monotonic() - started
    print(
        f"parallel collectors=2 records={args.records} serial_s={serial:.2f} parallel_s={parallel:.2f} "
        f"ratio={parallel / serial:.2f}"
    )


if __name__ == "__main__":
    main()
