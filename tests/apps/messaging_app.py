"""A kit app that consumes a stream of messages with durable sleeps in between, for SIGKILL tests.

Run with ``kit worker tests.apps.messaging_app:app`` (configured by KIT_* variables).
"""

from __future__ import annotations

import kit

app = kit.Kit()


@app.workflow(name="messaging_app.consume")
def consume(count: int, pause: float) -> list:
    got = []
    for _ in range(count):
        got.append(app.recv("in", timeout=120))
        app.sleep(pause)  # a durable timer in flight whenever the worker is killed
    return got
