"""Where mediation's time goes, per phase, summed in the process (read by `bench/mediation.py`)."""

import time
from collections import defaultdict
from contextlib import contextmanager

PHASES: dict[str, float] = defaultdict(float)


@contextmanager
def phase(name: str):
    started = time.perf_counter()
    try:
        yield
    finally:
        PHASES[name] += time.perf_counter() - started


def report() -> str:
    return " ".join(f"{name}={seconds:.2f}" for name, seconds in sorted(PHASES.items(), key=lambda kv: -kv[1]))
