"""`make run`'s launcher: it says when Main Billing will run, and SIGTERM or Ctrl-C stops the web
server and the whole django-q2 cluster within 10 s, leaving no process behind."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def session_processes(sid: int) -> list[int]:
    """Live processes of a session (zombies are already gone in all but name)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[3]) == sid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_the_launcher_stops_web_and_cluster_within_ten_seconds(tmp_path, stop_signal):
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'run.sqlite3'}",
        "MEDIA_ROOT": str(tmp_path / "media"),
        "Q_SYNC": "0",
        "PYTHONUNBUFFERED": "1",
    }
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True)
    port = free_port()
    launcher = subprocess.Popen(
        [sys.executable, "manage.py", "serve_with_worker", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/admin/login/", timeout=2) as response:
                    assert response.status == 200
                break
            except OSError:
                assert launcher.poll() is None and time.monotonic() < deadline, "the web server did not start"
                time.sleep(0.5)
        while len(session_processes(launcher.pid)) < 4:  # launcher, web, cluster parent and its workers
            assert time.monotonic() < deadline, "the cluster did not start"
            time.sleep(0.5)
        started = time.monotonic()
        launcher.send_signal(stop_signal)
        output, _ = launcher.communicate(timeout=10)
        while session_processes(launcher.pid) and time.monotonic() - started < 10:
            time.sleep(0.2)
        assert time.monotonic() - started < 10
        assert session_processes(launcher.pid) == []
        assert launcher.returncode == 0
        assert "Main Billing: next scheduled run" in output and "02:00" in output
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
        for pid in session_processes(launcher.pid):
            os.kill(pid, signal.SIGKILL)
