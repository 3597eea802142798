"""DBOS Transact side by side in ``kit bench compare`` (only when the ``dbos`` package is importable).

The same shapes as kit's seq / par / queue-drain run through DBOS's public API on the same PostgreSQL
database, DBOS's system tables in their own schema (``<bench schema>_dbos``), with DBOS's defaults (the queue
without limits) and a unique ``executor_id`` per process, as DBOS's docs require for several processes.
Nothing else in kit imports dbos.

``python -m kit.bench.peer enqueue|worker SPEC`` are the processes of the queue drain: ``enqueue`` creates
DBOS's tables and enqueues the workflows with ``DBOSClient``; ``worker`` launches DBOS with the queue
declared, prints ``ready`` and dequeues until its stdin closes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

QUEUE = "kit_bench"
WORKFLOW = "kit_bench_steps"


def settings() -> dict[str, Any]:
    """What the side by side sets; everything else is DBOS's default."""
    try:
        from importlib.metadata import version

        v = version("dbos")
    except Exception:  # noqa: BLE001 - metadata missing
        v = "?"
    return {"dbos_version": v, "system_database": "the target's PostgreSQL database, schema <bench schema>_dbos",
            "queue": "DBOS.register_queue defaults (no concurrency limits, polling_interval_sec 1.0)",
            "executor_id": "unique per process (DBOS's docs: required for several processes without Conductor)",
            "api": "DBOS.workflow / DBOS.step / DBOS.start_workflow / DBOS.register_queue / DBOSClient.enqueue"}


def _config(spec: dict[str, Any]) -> dict[str, Any]:
    return {"name": "kit-bench-peer", "system_database_url": spec["url"], "dbos_system_schema": spec["dbos_schema"],
            "run_migrations": True, "log_level": "WARNING",
            "executor_id": f"kit-bench-{spec.get('role', 'client')}-{spec.get('index', 0)}"}


def launch_dbos(spec: dict[str, Any], *, queue: bool = False) -> tuple[Any, Any]:
    """Configure and launch DBOS in this process with the bench workflow (and the bench queue)."""
    import logging

    from dbos import DBOS

    logging.getLogger("dbos").setLevel(logging.WARNING)
    DBOS(config=_config(spec))  # type: ignore[arg-type]

    @DBOS.step()
    def noop(i: int) -> int:
        return i

    @DBOS.workflow(name=WORKFLOW)
    def steps_workflow(k: int) -> int:
        for i in range(k):
            noop(i)
        return k

    DBOS.launch()
    if queue:
        DBOS.register_queue(QUEUE)
    return DBOS, steps_workflow


def _enqueue(spec: dict[str, Any]) -> None:
    from dbos import DBOS, DBOSClient

    launch_dbos(spec)  # creates DBOS's tables
    DBOS.register_queue(QUEUE)
    DBOS.destroy()
    client = DBOSClient(system_database_url=spec["url"], dbos_system_schema=spec["dbos_schema"])
    try:
        for n in range(spec["workflows"]):
            client.enqueue({"queue_name": QUEUE, "workflow_name": WORKFLOW, "workflow_id": f"drain-{n}"}, 1)
    finally:
        client.destroy()


def _worker(spec: dict[str, Any]) -> None:
    dbos, _ = launch_dbos(spec, queue=True)
    print("ready", flush=True)
    sys.stdin.read()  # until the parent closes stdin
    dbos.destroy()


# -- the parent's side -------------------------------------------------------------------------------------
def _schema(env: Any) -> str:
    return env.schema + "_dbos"


def peer_reset(env: Any) -> None:
    env.probe.peer_reset(_schema(env))


def peer_progress(env: Any, prefix: str) -> Any:
    return env.probe.peer_progress(_schema(env), prefix)


def run_peer_drain(env: Any, cell: Any, sizes: Any) -> dict[str, Any]:
    """dbos-queue-drain: N single-step DBOS workflows enqueued, then dequeued by P DBOS processes."""
    from kit.bench.environment import Window, proc_cpu
    from kit.errors import UsageError

    n = sizes.drain
    spec = {"url": env.url, "dbos_schema": _schema(env), "workflows": n}
    done = subprocess.run([sys.executable, "-m", "kit.bench.peer", "enqueue", json.dumps(spec)],
                          capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise UsageError(f"dbos-queue-drain: enqueue failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
    procs: list[subprocess.Popen] = []
    ready_cpu: list[float | None] = []
    deadline = time.monotonic() + 120 + n / 10
    try:
        for i in range(cell.processes):
            wspec = {**spec, "role": "worker", "index": i}
            procs.append(subprocess.Popen([sys.executable, "-m", "kit.bench.peer", "worker", json.dumps(wspec)],
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          text=True))
        win = Window(env.probe)
        win.start()
        for p in procs:
            assert p.stdout is not None
            if p.stdout.readline().strip() != "ready":
                raise UsageError("dbos-queue-drain: a DBOS worker did not start")
            ready_cpu.append(proc_cpu(p.pid))
        while peer_progress(env, "drain").succeeded < n:
            win.probe_statements += 1
            if any(p.poll() is not None for p in procs):
                raise UsageError("dbos-queue-drain: a DBOS worker exited")
            if time.monotonic() > deadline:
                raise UsageError("dbos-queue-drain: workflows did not finish in time")
            win.tick()
            time.sleep(0.02)
        win.stop()
        cpu = [proc_cpu(p.pid) for p in procs]
        client = None if any(c is None for c in cpu + ready_cpu) else \
            sum(c - r for c, r in zip(cpu, ready_cpu, strict=True))  # type: ignore[operator]
    finally:
        for p in procs:
            try:
                if p.stdin:
                    p.stdin.close()
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    drain = env.probe.peer_drain(_schema(env), "drain")
    win.probe_statements += 1
    span = drain.finish_span_s or 0.0
    out = {"workflows": n, "steps_per_workflow": 1, "completed": drain.completed, "worker_concurrency": None,
           "wall_s": round(span, 4), "workflows_per_s": round((n - 1) / span, 2) if span > 0 else None,
           "client_cpu_s": None if client is None else round(client, 4),
           "latency_p50_ms": None, "latency_p99_ms": None,
           "timing": "wall_s: last - first finish (updated_at of DBOS's workflow_status); client CPU from "
                     "each worker's ready line"}
    out.update(win.result())
    return out


if __name__ == "__main__":
    role, raw = sys.argv[1], sys.argv[2]
    (_enqueue if role == "enqueue" else _worker)(json.loads(raw))
