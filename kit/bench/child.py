"""A client process of ``kit bench compare``: starts and awaits bench workflows when told to go.

Run as ``python -m kit.bench.child SPEC`` (SPEC: JSON with url, schema, backend, engine ``kit`` or ``dbos``,
workflows, steps, threads, prefix, index). It warms up, prints ``ready``, waits for a line on stdin, runs
its share, and prints one JSON line: the wall time and this process's CPU seconds over the measured run
and each workflow's start-to-result time in milliseconds. The parent measures the server side.
"""

from __future__ import annotations

import itertools
import json
import sys
import threading
import time
from collections.abc import Callable
from typing import Any


def _batch(run_one: Callable[[str], None], ids: list[str], threads: int) -> list[float]:
    """Run ``run_one(id)`` for every id from ``threads`` threads; each call's duration in ms."""
    latencies: list[float] = []
    counter = itertools.count()
    errors: list[BaseException] = []
    lock = threading.Lock()

    def loop() -> None:
        try:
            while not errors:
                i = next(counter)
                if i >= len(ids):
                    return
                t0 = time.perf_counter()
                run_one(ids[i])
                took = (time.perf_counter() - t0) * 1000.0
                with lock:
                    latencies.append(took)
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)

    if threads <= 1:
        loop()
    else:
        pool = [threading.Thread(target=loop, daemon=True) for _ in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
    if errors:
        raise errors[0]
    return latencies


def _kit_runner(spec: dict[str, Any]) -> tuple[Callable[[str], None], Callable[[], None]]:
    from kit.bench.app import WF_STEPS, build_app

    app = build_app(database_url=spec["url"], schema=spec["schema"], backend=spec.get("backend"),
                    pool_size=spec["threads"] + 4, migrate=False)
    k = spec["steps"]

    def run_one(wid: str) -> None:
        app.start(WF_STEPS, k, workflow_id=wid).result()

    return run_one, app.close


def _dbos_runner(spec: dict[str, Any]) -> tuple[Callable[[str], None], Callable[[], None]]:
    from kit.bench.peer import launch_dbos

    dbos, workflow = launch_dbos(spec)
    from dbos import SetWorkflowID

    k = spec["steps"]

    def run_one(wid: str) -> None:
        with SetWorkflowID(wid):
            dbos.start_workflow(workflow, k).get_result()

    return run_one, lambda: dbos.destroy()


def main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    run_one, close = (_dbos_runner if spec.get("engine") == "dbos" else _kit_runner)(spec)
    try:
        prefix, index, threads = spec["prefix"], spec["index"], spec["threads"]
        _batch(run_one, [f"warm{index}-{prefix}-{n}" for n in range(max(threads, 4))], threads)
        print("ready", flush=True)
        if not sys.stdin.readline():
            return 1
        ids = [f"{prefix}-{index}x{n}" for n in range(spec["workflows"])]
        c0, t0 = time.process_time(), time.perf_counter()
        latencies = _batch(run_one, ids, threads)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        print(json.dumps({"wall_s": wall, "cpu_s": cpu, "latencies_ms": [round(x, 3) for x in latencies]}),
              flush=True)
    finally:
        close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
