"""API ingest benchmark: batches of 1,000 records posted over HTTP to a production WSGI server.

    python bench/api_ingest.py [--records N] [--services N] [--clients N] [--workers N]

The server is gunicorn (`config.wsgi`, sync workers: each request mediates its batch in the
database, so a thread per request buys nothing on 2 cores, and gunicorn is the WSGI server the
README documents for production). PostgreSQL BENCH_API_DATABASE_URL (default
postgres://postgres@127.0.0.1:5432/tollgate_bench_api) is dropped and recreated. Each client posts to
its own collector (a collector's batches are mediated strictly one after another). Prints

    api_ingest records=<n> seconds=<s> records_per_s=<r> batches=<b> clients=<c> workers=<w>
"""

import argparse
import csv
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
BATCH = 1000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    from mediation import recreate_database

    url = os.environ.get("BENCH_API_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/tollgate_bench_api")
    recreate_database(url)
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "SECRET_KEY": "bench-not-secret",
        "DEBUG": "0",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "SECURE_SSL_REDIRECT": "0",
        "LOG_LEVEL": "WARNING",
        "MEDIA_ROOT": str(Path("/tmp") / "tollgate-bench-api-media"),
        "DJANGO_SETTINGS_MODULE": "config.settings",
    }
    os.environ.update(env)
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "--verbosity", "0"], check=True, cwd=ROOT, env=env)
    subprocess.run(
        [*manage, "seed_demo", "--services", str(args.services), "--no-users"], check=True, cwd=ROOT, env=env
    )
    token = subprocess.run(
        [*manage, "create_api_client", "bench"], check=True, cwd=ROOT, env=env, capture_output=True, text=True
    ).stdout.strip()

    import django

    django.setup()
    from usage.demo import ensure_demo_collector
    from usage.management.commands.make_usage_file import write_usage
    from usage.models import UsageCollector

    demo = ensure_demo_collector()
    codes = []
    for n in range(args.clients):
        code = f"API{n}"
        UsageCollector.objects.update_or_create(
            code=code,
            defaults={
                "name": f"Bench API {n}",
                "field_mapping": demo.field_mapping,
                "category_rules": demo.category_rules,
                "dedup_fields": demo.dedup_fields,
            },
        )
        codes.append(code)
    from django.db import connection

    # Statistics as a running database has them (autovacuum analyzes a table after enough changes;
    # right after seeding it has not yet): the gate statements are planned from them.
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    text = io.StringIO()
    write_usage(text, args.records, args.services, 7, *month_bounds(), 0.0, id_prefix=f"{int(time.time())}-")
    rows = list(csv.DictReader(io.StringIO(text.getvalue())))
    bodies = [
        json.dumps({"records": [{k: v for k, v in r.items() if v} for r in rows[i : i + BATCH]]}).encode()
        for i in range(0, len(rows), BATCH)
    ]
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "config.wsgi:application",
            "--workers",
            str(args.workers),
            "--bind",
            f"127.0.0.1:{port}",
            "--timeout",
            "300",
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
    )
    try:
        wait_until_up(port)
        statuses: dict[int, int] = {}
        lock = threading.Lock()

        def client(n):
            for body in bodies[n :: args.clients]:
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}/api/v1/collectors/{codes[n]}/ingest/",
                    data=body,
                    headers={"Authorization": f"Token {token}", "Content-Type": "application/json"},
                    method="POST",
                )
                try:
                    with urllib.request.urlopen(request, timeout=300) as response:
                        response.read()
                        code = response.status
                except urllib.error.HTTPError as exc:
                    code = exc.code
                    print(f"client {n}: HTTP {code}: {exc.read()[:500]!r}", file=sys.stderr, flush=True)
                with lock:
                    statuses[code] = statuses.get(code, 0) + 1

        started = time.monotonic()
        threads = [threading.Thread(target=client, args=(n,)) for n in range(args.clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        seconds = time.monotonic() - started
    finally:
        server.terminate()
        server.wait(timeout=30)
    from usage.models import UsageRecord

    mediated = UsageRecord.objects.filter(status="mediated").count()
    print(f"outcome: statuses={statuses} mediated={mediated} of {len(rows)}", flush=True)
    if statuses != {201: len(bodies)} or mediated != len(rows):
        sys.exit("api_ingest: not every batch was mediated (see above); no figure")
    print(
        f"api_ingest records={len(rows)} seconds={seconds:.2f} records_per_s={len(rows) / seconds:.0f} "
        f"batches={len(bodies)} clients={args.clients} workers={args.workers}",
        flush=True,
    )


def month_bounds():
    """The month before this one: seed_demo opens periods for it."""
    import datetime as dt

    first_this = dt.date.today().replace(day=1)
    last = first_this - dt.timedelta(days=1)
    return last.replace(day=1), last


def wait_until_up(port: int):
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("gunicorn did not start")


if __name__ == "__main__":
    main()
