"""The workloads of ``kit bench`` that run ``kit worker`` processes: ``queue-drain`` and ``recovery``.

The workers run :mod:`kit.bench.app` (``kit worker kit.bench:bench_app``) on the bench schema; the bench
enqueues, watches the run through the probe (counts by id prefix) and reads rates and latencies from the
database's own timestamps.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kit.bench.app import LIMITED_QUEUE, WF_SLOW, WF_STEPS
from kit.bench.environment import BenchEnv, ms, proc_cpu, rate, ratio
from kit.bench.params import (
    DEFAULT_CONCURRENCY,
    LATENCY_SAMPLES,
    PEER_DRAIN_PER_S,
    TARGET_DRAIN_PER_WORKER,
    Params,
)
from kit.errors import UsageError


# -- worker processes ------------------------------------------------------------------------------------
@dataclass
class Worker:
    proc: subprocess.Popen
    log_path: Path
    ready_cpu: float | None = None

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def worker_env(env: BenchEnv, *, concurrency: int, lease: float | None = None) -> dict[str, str]:
    """Environment for `kit worker kit.bench:bench_app`: the resolved URL and schema, and bench settings."""
    e = dict(os.environ)
    e.update(KIT_DATABASE_URL=env.url, KIT_SCHEMA=env.schema, KIT_WORKER_CONCURRENCY=str(concurrency),
             KIT_POOL_SIZE=str(concurrency + 4), KIT_MIGRATE="false")
    if env.backend:
        e["KIT_BACKEND"] = env.backend
    if env.config_file:
        e["KIT_CONFIG"] = env.config_file
    if lease is not None:
        e.update(KIT_LEASE_SECONDS=repr(lease), KIT_HEARTBEAT_SECONDS=repr(lease / 4),
                 KIT_POLL_SECONDS=repr(min(1.0, lease / 2)))
    else:
        for key in ("KIT_LEASE_SECONDS", "KIT_HEARTBEAT_SECONDS", "KIT_POLL_SECONDS"):
            e.pop(key, None)
    return e


def spawn_worker(env: BenchEnv, wenv: dict[str, str], tag: str) -> Worker:
    fd, name = tempfile.mkstemp(prefix=f"kit-bench-{tag}-", suffix=".log")
    log_path = Path(name)
    env.worker_logs.append(log_path)
    with os.fdopen(fd, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "kit.cli", "worker", "kit.bench:bench_app"],
                                env=wenv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    return Worker(proc, log_path)


def wait_ready(workers: list[Worker], timeout: float) -> None:
    """Wait until every worker printed its start line (then note its CPU, to leave out start-up)."""
    deadline = time.monotonic() + timeout
    pending = list(workers)
    while pending:
        for w in list(pending):
            if w.proc.poll() is not None:
                raise UsageError(f"bench worker exited with code {w.proc.returncode}: {_one_line(w.tail(5))}")
            try:
                text = w.log_path.read_text(errors="replace")
            except OSError:
                text = ""
            if "kit worker " in text:
                w.ready_cpu = proc_cpu(w.proc.pid)
                pending.remove(w)
        if pending and time.monotonic() > deadline:
            raise UsageError(f"bench worker did not start within {timeout:.0f}s: {_one_line(pending[0].tail(5))}")
        time.sleep(0.005)


def stop_workers(workers: list[Worker], grace: float = 10.0) -> None:
    for w in workers:
        if w.proc.poll() is None:
            w.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for w in workers:
        try:
            w.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            w.proc.kill()
            w.proc.wait()


def _one_line(text: str) -> str:
    return " | ".join(ln.strip() for ln in text.splitlines() if ln.strip())[-600:] or "(no output)"


def _enqueue(env: BenchEnv, prefix: str, n: int, name: str, args: tuple, *, queue_limit: int | None = None,
             gap: float = 0.0) -> float:
    """Enqueue ``n`` workflows (PENDING rows) to the default queue, or to the limited bench queue;
    returns the seconds it took. ``gap``: pause between enqueues (latency sampling)."""
    if queue_limit is not None:
        os.environ["KIT_BENCH_QUEUE_LIMIT"] = str(queue_limit)
    app = env.app()
    try:
        app.backend  # noqa: B018 - open and migrate first
        target = next(q for q in app.queues() if q.name == LIMITED_QUEUE) if queue_limit is not None else app
        t0 = time.perf_counter()
        for i in range(n):
            target.enqueue(name, *args, workflow_id=f"{prefix}-{i}")
            if gap:
                time.sleep(gap)
        return time.perf_counter() - t0
    finally:
        app.close()


def _latency(env: BenchEnv, prefix: str, workers: list[Worker], p: Params) -> dict[str, Any]:
    """Enqueue-to-start latency with the workers idle: enqueue one at a time, 5 ms apart, and read
    started_at - created_at (both the server's clock) of each."""
    _enqueue(env, prefix, LATENCY_SAMPLES, WF_STEPS, (1,), queue_limit=p.queue_limit, gap=0.005)
    deadline = time.monotonic() + 60
    while env.probe.progress(prefix).succeeded < LATENCY_SAMPLES:
        _check_alive(workers)
        if time.monotonic() > deadline:
            raise UsageError("queue-drain: latency samples did not finish within 60 s")
        time.sleep(0.02)
    lat = env.probe.latency(prefix)
    return {"samples": LATENCY_SAMPLES, "p50_ms": round(lat.p50_ms, 2), "p99_ms": round(lat.p99_ms, 2),
            "max_ms": round(lat.max_ms, 2), "how": "enqueued one at a time 5 ms apart to idle workers; "
            "started_at - created_at on the server's clock"}


def _check_alive(workers: list[Worker]) -> None:
    for w in workers:
        if w.proc.poll() is not None:
            raise UsageError(f"bench worker exited with code {w.proc.returncode}: {_one_line(w.tail(5))}")


# -- queue-drain ----------------------------------------------------------------------------------------
def run_queue_drain(env: BenchEnv, p: Params, floor: dict[str, Any]) -> dict[str, Any]:
    n, k = p.size("queue-drain")
    w_count = p.workers
    conc = p.concurrency or DEFAULT_CONCURRENCY
    probe = env.probe
    limit_note = f" to a queue limited to {p.queue_limit} at once" if p.queue_limit else ""
    env.log.print(f"[dim]queue-drain: enqueueing {n} workflows of {k} step(s){limit_note}[/dim]")
    enqueue_s = _enqueue(env, "drain", n, WF_STEPS, (k,), queue_limit=p.queue_limit)
    timeout = 60.0 + n * k / 100.0
    workers: list[Worker] = []
    s0 = probe.counters(wal=False).server_cpu_s
    env.log.print(f"[dim]queue-drain: starting {w_count} worker process(es), concurrency {conc}[/dim]")
    wenv = worker_env(env, concurrency=conc)
    t_spawn = time.perf_counter()
    try:
        workers = [spawn_worker(env, wenv, f"drain{i}") for i in range(w_count)]
        wait_ready(workers, timeout=60)
        deadline = time.monotonic() + timeout
        while True:
            progress = probe.progress("drain")
            if progress.failed:
                raise UsageError(f"queue-drain: {progress.failed} workflows failed; see {workers[0].log_path}")
            if progress.succeeded >= n:
                break
            _check_alive(workers)
            if time.monotonic() > deadline:
                raise UsageError(f"queue-drain: only {progress.succeeded}/{n} workflows finished within "
                                 f"{timeout:.0f}s")
            time.sleep(0.02)
        wall_from_spawn = time.perf_counter() - t_spawn
        cpu_end = [proc_cpu(w.proc.pid) for w in workers]
        s1 = probe.counters(wal=False).server_cpu_s
        env.log.print(f"[dim]queue-drain: sampling enqueue-to-start latency ({LATENCY_SAMPLES} workflows)[/dim]")
        latency = _latency(env, "lat", workers, p)
    finally:
        stop_workers(workers)
    drain = probe.drain("drain")
    drain_s, completed, claims = drain.seconds, drain.completed, drain.claims
    checkpoints = probe.checkpoints("drain")
    worker_cpu = None
    if all(c is not None for c in cpu_end) and all(w.ready_cpu is not None for w in workers):
        worker_cpu = sum(c - w.ready_cpu for c, w in zip(cpu_end, workers, strict=True))  # type: ignore[operator]
    server_cpu = None if s0 is None or s1 is None else s1 - s0
    per_s = rate(n, drain_s)
    per_worker = round(per_s / w_count, 1)
    c = floor["concurrent"]
    ms_wf_per_worker = ms(drain_s * w_count, n)
    return {
        "workload": "queue-drain", "workflows": n, "steps_per_workflow": k, "workers": w_count,
        "queue_limit": p.queue_limit, "enqueue_to_start_latency": latency,
        "worker_concurrency": conc, "completed": completed, "checkpoints": checkpoints,
        "claim_transactions": claims, "mean_claim_batch": round(n / claims, 2) if claims else None,
        "enqueue_s": round(enqueue_s, 4), "enqueue_per_s": rate(n, enqueue_s),
        "drain_s": round(drain_s, 4), "wall_from_spawn_s": round(wall_from_spawn, 4),
        "workflows_per_s": per_s, "workflows_per_s_per_worker": per_worker,
        "steps_per_s": rate(n * k, drain_s),
        "ms_per_workflow_per_worker": ms_wf_per_worker,
        "worker_cpu_ms_per_workflow": ms(worker_cpu, n),
        "server_cpu_ms_per_workflow": ms(server_cpu, n),
        "floor_kind": f"insert, {c['connections']} connections (effective)",
        "floor_ms": c["ms_effective"], "floor_per_s": c["per_s"],
        "ratio_to_floor": ratio(ms(drain_s, n), c["ms_effective"]),
        "target_per_worker_per_s": TARGET_DRAIN_PER_WORKER,
        "ratio_to_target": ratio(per_worker, TARGET_DRAIN_PER_WORKER),
        "peer_per_s": PEER_DRAIN_PER_S,
        "speedup_vs_peer": ratio(per_worker, PEER_DRAIN_PER_S),
        "timing": "drain_s = last finished_at - first started_at (server clock); worker CPU excludes start-up",
    }


# -- recovery ------------------------------------------------------------------------------------------
REC = "rec"


def run_recovery(env: BenchEnv, p: Params) -> dict[str, Any]:
    n, k = p.size("recovery")
    secs, lease = p.step_seconds, p.lease_seconds
    conc = p.concurrency or min(n, 256)
    total = n * k
    probe = env.probe
    env.log.print(f"[dim]recovery: {n} workflows x {k} steps of {secs:g}s, lease {lease:g}s[/dim]")
    _enqueue(env, REC, n, WF_SLOW, (k, secs))
    wenv = worker_env(env, concurrency=conc, lease=lease)
    workers: list[Worker] = []
    timeout = 60.0 + 3 * lease + total * secs
    try:
        first = spawn_worker(env, wenv, "rec-a")
        workers.append(first)
        wait_ready([first], timeout=60)
        half = max(1, total // 2)
        deadline = time.monotonic() + timeout
        while True:
            recorded = probe.checkpoints(REC)
            if recorded >= half:
                break
            _check_alive(workers)
            if time.monotonic() > deadline:
                raise UsageError(f"recovery: the first worker recorded only {recorded} checkpoints")
            time.sleep(0.005)
        first.proc.send_signal(signal.SIGKILL)
        t_kill = time.monotonic()
        first.proc.wait()
        second = spawn_worker(env, wenv, "rec-b")
        workers.append(second)
        per_wf = probe.checkpoints_by_workflow(REC)
        at_kill = sum(per_wf.values())
        done_at_kill = sum(1 for v in per_wf.values() if v >= k)
        if done_at_kill >= n:
            raise UsageError("recovery: the worker finished every workflow before it could be killed; "
                             "use more --steps or a longer --step-seconds")
        remaining_work = max((k - v for v in per_wf.values()), default=0) * secs
        t_reclaim = t_checkpoint = t_done = None
        while t_done is None:
            got = probe.recovery(REC)
            now = time.monotonic()
            if t_reclaim is None and got.recovered > 0:
                t_reclaim = now
            if t_checkpoint is None and got.recovered_checkpoints > 0:
                t_checkpoint = now
            if got.succeeded >= n:
                t_done = now
                break
            if second.proc.poll() is not None:
                raise UsageError(f"recovery: the second worker exited: {_one_line(second.tail(5))}")
            if now > deadline:
                raise UsageError(f"recovery: only {got.succeeded}/{n} workflows finished within {timeout:.0f}s")
            time.sleep(0.005)
    finally:
        stop_workers(workers)
    final = probe.recovery(REC)
    recovered, completed = final.recovered, final.succeeded
    checkpoints = probe.checkpoints(REC)

    def since_kill(t: float | None) -> float | None:
        return None if t is None else round(t - t_kill, 3)

    poll = min(1.0, lease / 2)
    return {
        "workload": "recovery", "workflows": n, "steps_per_workflow": k, "step_seconds": secs,
        "worker_concurrency": conc, "lease_seconds": lease, "heartbeat_seconds": lease / 4, "poll_seconds": poll,
        "completed": completed, "recovered_workflows": recovered, "checkpoints": checkpoints,
        "checkpoints_at_kill": at_kill, "workflows_done_at_kill": done_at_kill,
        "remaining_work_s": round(remaining_work, 3),
        "kill_to_first_reclaim_s": since_kill(t_reclaim),
        "kill_to_first_recovered_checkpoint_s": since_kill(t_checkpoint),
        "kill_to_all_done_s": since_kill(t_done),
        "bound_s": round(lease + poll + remaining_work, 3),
        "within_bound": t_done is not None and t_done - t_kill <= lease + poll + remaining_work + 0.5,
        "timing": "bench-process monotonic clock, polled every 5 ms; bound = lease + poll + remaining work",
    }
