import os
import signal
import subprocess
import sys

from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Run the web server and a django-q2 worker cluster together (the `make run` launcher)."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--port", default=os.environ.get("PORT", "8000"))

    def handle(self, *args, host, port, **options):
        manage = [sys.executable, "manage.py"]
        worker = subprocess.Popen([*manage, "qcluster"])
        self.stdout.write(
            f"\nTollgate is starting.\n"
            f"  Admin:      http://{host}:{port}/admin/\n"
            f"  Demo login: operator / tollgate-demo   (read-only: viewer / tollgate-demo)\n"
            f"  Worker:     django-q2 cluster, pid {worker.pid}\n"
            f"Press Ctrl-C to stop both.\n"
        )
        self.stdout.flush()
        try:
            web = subprocess.run([*manage, "runserver", f"{host}:{port}", "--noreload"])
            code = web.returncode
        except KeyboardInterrupt:
            code = 0
        finally:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
                try:
                    worker.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    worker.kill()
        sys.exit(code)
