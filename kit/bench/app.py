"""The bench application: the workflows every workload runs (also ``kit worker kit.bench:bench_app``)."""

from __future__ import annotations

import os
import time
from typing import Any

from kit.app import Kit

LIMITED_QUEUE = "bench.limited"
WF_STEPS = "bench.steps"
WF_SLOW = "bench.slow"


def build_app(**settings: Any) -> Kit:
    """A Kit application with the bench workflows; ``settings`` are Kit keyword arguments (the rest
    comes from ``KIT_*`` environment variables and kit.toml, as for any application)."""
    app = Kit(**settings)
    # queue-drain --queue-limit L: a queue whose global concurrency limit every worker enforces.
    app.queue(LIMITED_QUEUE, concurrency=int(os.environ.get("KIT_BENCH_QUEUE_LIMIT", "8")))

    @app.step(name="bench.noop")
    def noop(i: int) -> int:
        return i

    @app.step(name="bench.sleep")
    def sleep_step(i: int, seconds: float) -> int:
        time.sleep(seconds)
        return i

    @app.workflow(name=WF_STEPS)
    def steps_workflow(k: int) -> int:
        for i in range(k):
            noop(i)
        return k

    @app.workflow(name=WF_SLOW)
    def slow_workflow(k: int, seconds: float) -> int:
        for i in range(k):
            sleep_step(i, seconds)
        return k

    return app
