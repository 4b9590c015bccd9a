"""`make run`: the web server and a django-q2 cluster together, stopped together.

Each child runs in its own process group, so stopping reaches the cluster's worker processes too:
Ctrl-C or SIGTERM asks both groups to stop, and whatever is still alive after the grace period is
killed, so no process outlives the launcher (the cluster's parent can hang after "stopping")."""

import datetime as dt
import os
import signal
import subprocess
import sys
import time

from django.core.management.base import BaseCommand

GRACE_SECONDS = 7


class Stop(Exception):
    pass


def _raise_stop(signum, frame):
    raise Stop(signum)


def _signal_group(process, sig) -> None:
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass


def stop_all(children, grace: float = GRACE_SECONDS) -> None:
    """SIGTERM each child's group, wait up to `grace` seconds for them, then SIGKILL the groups."""
    for child in children:
        _signal_group(child, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for child in children:
        try:
            child.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for child in children:
        _signal_group(child, signal.SIGKILL)  # the group: workers the cluster left behind too
        child.poll()


def next_billing_run() -> str:
    """When the daily Main Billing schedule runs next, and which cycle it would bill then."""
    from django.utils import timezone
    from django_q.models import Schedule

    from billing.invoicing import ended_cycles

    schedule = Schedule.objects.filter(func="billing.tasks.bill_ended_cycles").order_by("next_run").first()
    if schedule is None or schedule.next_run is None:
        return "no Main Billing schedule: bill a cycle from the Process Console."
    when = timezone.localtime(schedule.next_run)
    cycles = ended_cycles(when.date())
    billed = ", ".join(start.isoformat() for start, _ in cycles) or "none (no cycle will have ended by then)"
    return f"{when:%Y-%m-%d %H:%M} ({timezone.get_default_timezone_name()}); cycles it would bill: {billed}."


class Command(BaseCommand):
    help = "Run the web server and a django-q2 worker cluster together (the `make run` launcher)."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--port", default=os.environ.get("PORT", "8000"))

    def handle(self, *args, host, port, **options):
        manage = [sys.executable, "manage.py"]
        signal.signal(signal.SIGTERM, _raise_stop)
        signal.signal(signal.SIGINT, _raise_stop)
        children = []
        code = 0
        try:
            worker = subprocess.Popen([*manage, "qcluster"], process_group=0)
            children.append(worker)
            web = subprocess.Popen([*manage, "runserver", f"{host}:{port}", "--noreload"], process_group=0)
            children.append(web)
            self.stdout.write(
                f"\nTollgate is starting ({dt.datetime.now():%Y-%m-%d %H:%M}).\n"
                f"  Admin:        http://{host}:{port}/admin/\n"
                f"  Demo login:   operator / tollgate-demo   (read-only: viewer / tollgate-demo)\n"
                f"  Worker:       django-q2 cluster, pid {worker.pid}\n"
                f"  Main Billing: next scheduled run {next_billing_run()}\n"
                f"Press Ctrl-C to stop both.\n"
            )
            self.stdout.flush()
            while all(child.poll() is None for child in children):
                time.sleep(0.2)
            code = next(child.returncode for child in children if child.returncode is not None)
            self.stderr.write(f"A process stopped (exit {code}): stopping the other.")
        except Stop:
            code = 0
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            stop_all(children)
        sys.exit(code)
