"""The cells of ``kit bench compare``: one workload on one target at one process count, measured.

Each runner returns the cell's figures: its workflows and completed count, wall time and throughput, client
CPU (the client or worker processes, start-up left out), latency percentiles where the workload has them,
and the server side of its :class:`~kit.bench.environment.Window` (server CPU, commits, WAL bytes, sampled
session activity, the machine's busy percentage).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from kit.bench.environment import BenchEnv, Window, proc_cpu
from kit.errors import UsageError

# ``cell`` and ``sizes`` below are kit.bench.compare's Cell and Sizes (not imported: compare imports this).
Cell = Any
Sizes = Any


def _spawn_clients(env: BenchEnv, cell: Cell, sizes: Sizes, engine: str) -> list[subprocess.Popen]:
    workload = cell.workload.removeprefix("dbos-")
    total = sizes.seq if workload == "seq" else sizes.par
    per = [total // cell.processes + (1 if i < total % cell.processes else 0) for i in range(cell.processes)]
    threads = 1 if workload == "seq" else sizes.threads
    procs = []
    for i, n in enumerate(per):
        spec = {"url": env.url, "schema": env.schema, "backend": env.backend, "engine": engine, "workflows": n,
                "steps": sizes.steps, "threads": threads, "prefix": "main", "index": i,
                "dbos_schema": env.schema + "_dbos"}
        procs.append(subprocess.Popen([sys.executable, "-m", "kit.bench.child", json.dumps(spec)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    return procs


def _fail(procs: list[subprocess.Popen], what: str) -> UsageError:
    for p in procs:
        if p.poll() is None:
            p.kill()
    errs = []
    for p in procs:
        try:
            _, err = p.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            err = ""
        if err:
            errs.append(err.strip().splitlines()[-1])
    return UsageError(f"{what}: {errs[0] if errs else 'a client process failed'}")


def run_clients(env: BenchEnv, cell: Cell, sizes: Sizes) -> dict[str, Any]:
    """seq / par (and their DBOS twins): P client processes start and await workflows."""
    engine = "dbos" if cell.workload.startswith("dbos-") else "kit"
    procs = _spawn_clients(env, cell, sizes, engine)
    try:
        for p in procs:
            assert p.stdout is not None
            line = p.stdout.readline()
            if line.strip() != "ready":
                raise _fail(procs, f"{cell.workload}: client did not start")
        win = Window(env.probe)
        win.start()
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        deadline = time.monotonic() + 120 + sizes.par * sizes.steps * 0.05
        while any(p.poll() is None for p in procs):
            if time.monotonic() > deadline:
                raise _fail(procs, f"{cell.workload}: clients did not finish in time")
            win.tick()
            time.sleep(0.01)
        win.stop()
        results = []
        for p in procs:
            out, _ = p.communicate()
            if p.returncode != 0 or not out.strip():
                raise _fail(procs, f"{cell.workload}: client exited with code {p.returncode}")
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    lat = sorted(x for r in results for x in r["latencies_ms"])
    n = len(lat)
    completed = _completed(env, cell.workload, "main")
    win.probe_statements += 1
    wall = max(r["wall_s"] for r in results)
    out = {"workflows": n, "steps_per_workflow": sizes.steps, "completed": completed,
           "threads_per_process": 1 if cell.workload.endswith("seq") else sizes.threads,
           "wall_s": round(wall, 4), "workflows_per_s": round(n / wall, 2) if wall > 0 else None,
           "client_cpu_s": round(sum(r["cpu_s"] for r in results), 4),
           "latency_p50_ms": _pct(lat, 0.5), "latency_p99_ms": _pct(lat, 0.99),
           "latency_kind": "start to result of one workflow, client clock"}
    out.update(win.result())
    return out


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return round(values[min(len(values) - 1, int(q * len(values)))], 3)


def _completed(env: BenchEnv, workload: str, prefix: str) -> int:
    if workload.startswith("dbos-"):
        from kit.bench.peer import peer_progress

        return peer_progress(env, prefix).succeeded
    return env.probe.progress(prefix).succeeded


def run_drain(env: BenchEnv, cell: Cell, sizes: Sizes) -> dict[str, Any]:
    """queue-drain: N single-step workflows enqueued, then drained by P ``kit worker`` processes."""
    from kit.bench.app import WF_STEPS
    from kit.bench.workers import _check_alive, _enqueue, spawn_worker, stop_workers, wait_ready, worker_env

    n = sizes.drain
    _enqueue(env, "drain", n, WF_STEPS, (1,))
    wenv = worker_env(env, concurrency=sizes.concurrency)
    workers = []
    deadline = time.monotonic() + 120 + n / 20
    try:
        workers = [spawn_worker(env, wenv, f"cmp{i}") for i in range(cell.processes)]
        win = Window(env.probe)
        wait_ready(workers, timeout=60)
        win.start()
        while env.probe.progress("drain").succeeded < n:
            win.probe_statements += 1
            _check_alive(workers)
            if time.monotonic() > deadline:
                raise UsageError(f"queue-drain: workflows did not finish within {deadline:.0f}s")
            win.tick()
            time.sleep(0.02)
        win.stop()
        cpu = [proc_cpu(w.proc.pid) for w in workers]
        client = None if any(c is None for c in cpu) or any(w.ready_cpu is None for w in workers) else \
            sum(c - w.ready_cpu for c, w in zip(cpu, workers, strict=True))  # type: ignore[operator]
    finally:
        stop_workers(workers)
    drain = env.probe.drain("drain")
    win.probe_statements += 1
    out = {"workflows": n, "steps_per_workflow": 1, "completed": drain.completed,
           "worker_concurrency": sizes.concurrency, "wall_s": round(drain.seconds, 4),
           "workflows_per_s": round(n / drain.seconds, 2) if drain.seconds > 0 else None,
           "client_cpu_s": None if client is None else round(client, 4),
           "claim_transactions": drain.claims,
           "latency_p50_ms": None, "latency_p99_ms": None,
           "timing": "wall_s: last finished_at - first started_at (server clock)"}
    out.update(win.result())
    return out


def run_latency(env: BenchEnv, cell: Cell, sizes: Sizes) -> dict[str, Any]:
    """Enqueue-to-start latency: one idle worker; workflows enqueued one at a time, 10 ms apart."""
    from kit.bench.app import WF_STEPS
    from kit.bench.workers import _check_alive, _enqueue, spawn_worker, stop_workers, wait_ready, worker_env

    n = sizes.latency
    workers = [spawn_worker(env, worker_env(env, concurrency=sizes.concurrency), "lat")]
    try:
        wait_ready(workers, timeout=60)
        win = Window(env.probe)
        win.start()
        t0 = time.perf_counter()
        _enqueue(env, "lat", n, WF_STEPS, (1,), gap=0.01)
        deadline = time.monotonic() + 60
        while env.probe.progress("lat").succeeded < n:
            win.probe_statements += 1
            _check_alive(workers)
            if time.monotonic() > deadline:
                raise UsageError("latency: samples did not finish within 60 s")
            win.tick()
            time.sleep(0.02)
        wall = time.perf_counter() - t0
        win.stop()
        cpu = proc_cpu(workers[0].proc.pid)
        ready = workers[0].ready_cpu
    finally:
        stop_workers(workers)
    lat = env.probe.latency("lat")
    win.probe_statements += 2  # and the progress count below
    out = {"workflows": n, "steps_per_workflow": 1, "completed": env.probe.progress("lat").succeeded,
           "wall_s": round(wall, 4), "workflows_per_s": None,
           "client_cpu_s": None if cpu is None or ready is None else round(cpu - ready, 4),
           "latency_p50_ms": round(lat.p50_ms, 3), "latency_p99_ms": round(lat.p99_ms, 3),
           "latency_max_ms": round(lat.max_ms, 3),
           "latency_kind": "enqueue to start (started_at - created_at, server clock), one idle worker"}
    out.update(win.result())
    return out


def run_recovery_cell(env: BenchEnv, cell: Cell, sizes: Sizes) -> dict[str, Any]:
    from kit.bench.params import Params
    from kit.bench.workers import run_recovery

    p = Params("recovery", sizes.recovery, 4, None, 1, None, 1.0, 0.2, 10, None, Path("unused.json"))
    win = Window(env.probe)
    win.start()
    r = run_recovery(env, p)
    win.stop()
    out = {"workflows": r["workflows"], "steps_per_workflow": r["steps_per_workflow"], "completed": r["completed"],
           "wall_s": None, "workflows_per_s": None, "client_cpu_s": None,
           "latency_p50_ms": None, "latency_p99_ms": None,
           **{k: r[k] for k in ("lease_seconds", "step_seconds", "recovered_workflows", "kill_to_first_reclaim_s",
                                "kill_to_first_recovered_checkpoint_s", "kill_to_all_done_s", "bound_s",
                                "within_bound")},
           "commits_note": "includes the recovery workload's own polls (every 5 ms)"}
    out.update(win.result())
    return out


def run_cell(env: BenchEnv, cell: Cell, sizes: Sizes) -> dict[str, Any]:
    w = cell.workload
    if w.startswith("dbos-"):
        from kit.bench.peer import peer_reset, run_peer_drain

        peer_reset(env)
        if w == "dbos-queue-drain":
            return run_peer_drain(env, cell, sizes)
        return run_clients(env, cell, sizes)
    env.probe.reset()
    app = env.app()
    try:
        app.backend  # noqa: B018 - migrate before measuring
    finally:
        app.close()
    if w in ("seq", "par"):
        return run_clients(env, cell, sizes)
    if w == "queue-drain":
        return run_drain(env, cell, sizes)
    if w == "latency":
        return run_latency(env, cell, sizes)
    return run_recovery_cell(env, cell, sizes)
