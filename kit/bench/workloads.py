"""The in-process workloads of ``kit bench``: the floor, ``seq`` and ``par`` (and their profile).

The floor is what one durable step cannot beat on this database: the probe's prepared single-row
inserts, one round trip and one commit each, on one connection and then on M at once. ``seq`` and ``par``
start and await workflows of trivial steps from 1 or M threads and compare the cost per step with it.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any

from kit.app import Kit
from kit.bench.app import WF_STEPS
from kit.bench.environment import BenchEnv, Meter, ms, rate, ratio
from kit.bench.params import DEFAULT_CONCURRENCY, PEER_MS_PER_STEP, TARGET_FLOOR_RATIO, Params
from kit.bench.probe import FloorConnection

FLOOR_ROUNDS = 5


def measure_floor(env: BenchEnv, iterations: int, concurrency: int) -> dict[str, Any]:
    """Prepared single-row INSERTs in autocommit on one connection, the statement kinds interleaved in
    rounds (so drift in the machine's load does not favour one), then plain INSERTs on M connections."""
    probe = env.probe
    kinds = list(probe.floor_kinds)
    out: dict[str, Any] = {"iterations": iterations, "rounds": FLOOR_ROUNDS, "kinds": dict(probe.floor_kinds)}
    warm = min(200, iterations)
    per_round = max(1, iterations // FLOOR_ROUNDS)
    note = probe.server_cpu_note
    out["server_cpu_measured"] = not note
    if note:
        out["server_cpu_note"] = note
    conn = probe.floor_connection()
    try:
        totals = {v: [0.0, 0.0, 0.0, 0, [], 0] for v in kinds}  # wall, cpu, server, n, round ms, wal
        for variant in kinds:
            conn.insert(variant, f"{variant}-warm", 0, warm)
        for rnd in range(FLOOR_ROUNDS):
            for variant, acc in totals.items():
                meter = Meter(probe)
                with meter.measure():
                    conn.insert(variant, variant, rnd * per_round, per_round)
                acc[5] = None if meter.wal_bytes is None or acc[5] is None else acc[5] + meter.wal_bytes
                acc[0] += meter.wall
                acc[1] += meter.client_cpu
                acc[2] = None if meter.server_cpu is None or acc[2] is None else acc[2] + meter.server_cpu
                acc[3] += per_round
                acc[4].append(meter.wall * 1000 / per_round)
        for variant, (wall, cpu, srv, count, rounds, wal) in totals.items():
            out[variant] = {
                "ms": ms(wall, count),
                "client_cpu_ms": ms(cpu, count),
                "server_cpu_ms": ms(srv, count),
                "wal_bytes": None if wal is None else round(wal / count),
                "per_s": rate(count, wall),
                "round_ms": [round(x, 4) for x in rounds],
            }
        out["concurrent"] = _floor_concurrent(env, iterations, concurrency)
    finally:
        conn.close()
    return out


def _floor_concurrent(env: BenchEnv, iterations: int, concurrency: int) -> dict[str, Any]:
    per = max(20, iterations // concurrency)
    conns: list[FloorConnection] = []
    try:
        for n in range(concurrency):  # warm up: prepare on every connection
            conns.append(env.probe.floor_connection())
            conns[-1].insert("insert", f"cwarm-{n}", 0, 20)
        barrier = threading.Barrier(concurrency + 1)
        errors: list[BaseException] = []

        def run(n: int, c: FloorConnection) -> None:
            barrier.wait()
            try:
                c.insert("insert", f"c-{n}", 0, per)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(n, c), daemon=True) for n, c in enumerate(conns)]
        for t in threads:
            t.start()
        meter = Meter(env.probe, wal=False)
        with meter.measure():
            barrier.wait()
            for t in threads:
                t.join()
        if errors:
            raise errors[0]
    finally:
        for c in conns:
            c.close()
    total = per * concurrency
    return {"connections": concurrency, "inserts": total, "ms_effective": ms(meter.wall, total),
            "client_cpu_ms": ms(meter.client_cpu, total), "server_cpu_ms": ms(meter.server_cpu, total),
            "per_s": rate(total, meter.wall)}


# -- in-process workloads: seq and par ---------------------------------------------------------------------
def _run_batch(app: Kit, prefix: str, n: int, k: int, threads: int) -> None:
    """Start and await ``n`` workflows of ``k`` steps, from ``threads`` threads (1: the calling thread)."""
    if threads <= 1:
        for i in range(n):
            app.start(WF_STEPS, k, workflow_id=f"{prefix}-{i}").result()
        return
    import itertools

    counter = itertools.count()
    errors: list[BaseException] = []

    def loop() -> None:
        try:
            while True:
                i = next(counter)
                if i >= n or errors:
                    return
                app.start(WF_STEPS, k, workflow_id=f"{prefix}-{i}").result()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            errors.append(exc)

    pool = [threading.Thread(target=loop, name=f"bench-{t}", daemon=True) for t in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    if errors:
        raise errors[0]


def run_inprocess(env: BenchEnv, p: Params, workload: str, floor: dict[str, Any]) -> dict[str, Any]:
    n, k = p.size(workload)
    m = 1 if workload == "seq" else (p.concurrency or DEFAULT_CONCURRENCY)
    app = env.app(pool_size=m + 4)
    try:
        app.backend  # noqa: B018 - open and migrate before measuring
        _run_batch(app, f"{workload}-warm", max(m, min(20, n)), k, m)
        main = Meter(env.probe)
        env.log.print(f"[dim]{workload}: {n} workflows x {k} steps, {m} thread(s)[/dim]")
        with main.measure():
            _run_batch(app, f"{workload}-main", n, k, m)
        zero = Meter(env.probe)  # the same workflows with no step: the fixed cost per workflow
        with zero.measure():
            _run_batch(app, f"{workload}-zero", n, 0, m)
        completed = env.probe.progress(f"{workload}-main").succeeded
        checkpoints = env.probe.checkpoints(f"{workload}-main")
    finally:
        app.close()
    steps = n * k
    if workload == "seq":
        floor_ms, floor_cpu = floor["insert"]["ms"], floor["insert"]["client_cpu_ms"]
        floor_server, floor_kind = floor["insert"]["server_cpu_ms"], "insert, 1 connection"
    else:
        c = floor["concurrent"]
        floor_ms, floor_cpu, floor_server = c["ms_effective"], c["client_cpu_ms"], c["server_cpu_ms"]
        floor_kind = f"insert, {c['connections']} connections (effective)"
    ms_step = ms(main.wall, steps)
    marginal = ms(main.wall - zero.wall, steps)
    cpu_step = ms(main.client_cpu, steps)
    server_step = ms(main.server_cpu, steps)
    total_cpu = None if server_step is None else round(cpu_step + server_step, 4)
    floor_total = None if floor_server is None else round(floor_cpu + floor_server, 4)
    result = {
        "workload": workload, "workflows": n, "steps_per_workflow": k, "concurrency": m,
        "completed": completed, "checkpoints": checkpoints,
        "wall_s": round(main.wall, 4),
        "workflows_per_s": rate(n, main.wall),
        "steps_per_s": rate(steps, main.wall),
        "ms_per_workflow": ms(main.wall, n),
        "ms_per_step": ms_step,
        "client_cpu_ms_per_step": cpu_step,
        "server_cpu_ms_per_step": server_step,
        "cpu_ms_per_step": total_cpu,
        "wal_bytes_per_step": None if main.wal_bytes is None else round(main.wal_bytes / steps),
        "zero_step_wal_bytes_per_workflow": None if zero.wal_bytes is None else round(zero.wal_bytes / n),
        "marginal_wal_bytes_per_step": None if main.wal_bytes is None or zero.wal_bytes is None
        else round((main.wal_bytes - zero.wal_bytes) / steps),
        "zero_step_ms_per_workflow": ms(zero.wall, n),
        "zero_step_client_cpu_ms_per_workflow": ms(zero.client_cpu, n),
        "marginal_ms_per_step": marginal,
        "marginal_client_cpu_ms_per_step": ms(main.client_cpu - zero.client_cpu, steps),
        "floor_kind": floor_kind,
        "floor_ms": floor_ms,
        "floor_client_cpu_ms": floor_cpu,
        "floor_cpu_ms": floor_total,
        "ratio_to_floor": ratio(ms_step, floor_ms),
        "marginal_ratio_to_floor": ratio(marginal, floor_ms),
        "cpu_ratio_to_floor": ratio(total_cpu, floor_total),
        "client_cpu_ratio_to_floor": ratio(cpu_step, floor_cpu),
        "target_ratio": TARGET_FLOOR_RATIO,
        "peer_ms_per_step": PEER_MS_PER_STEP,
        "speedup_vs_peer_per_step": ratio(PEER_MS_PER_STEP, ms_step),
    }
    if p.profile:
        result["profile"] = profile_inprocess(env, p, workload, n, k, m)
    return result


class ThreadProfiler:
    """cProfile in every thread: one profiler per thread (threads started after ``start``), merged.

    Times are each thread's CPU time (``time.thread_time``), so waiting on the network or on a lock costs
    nothing and the profile shows where the client's CPU goes.
    """

    def __init__(self) -> None:
        import cProfile

        self._cls = cProfile.Profile
        self.profiles: list[Any] = []
        self._lock = threading.Lock()

    def _new(self) -> Any:
        return self._cls(time.thread_time)

    def _hook(self, frame: Any, event: str, arg: Any) -> None:
        prof = self._new()
        with self._lock:
            self.profiles.append(prof)
        prof.enable()  # replaces this hook for the thread

    def start(self) -> None:
        threading.setprofile(self._hook)
        main = self._new()
        self.profiles.append(main)
        main.enable()

    def stop(self) -> Any:
        """Merged stats of the calls that completed. Calls still in progress (a thread asleep) are left
        out: ``disable()`` would close them with the *calling* thread's clock, which is meaningless for
        a per-thread CPU timer."""
        import pstats

        threading.setprofile(None)  # type: ignore[arg-type]
        sys.setprofile(None)  # this thread's profiler stops without closing its open calls
        stats = None
        for prof in self.profiles:
            prof.snapshot_stats()
            snap = _Snapshot(prof.stats)
            if not snap.stats:
                continue
            if stats is None:
                stats = pstats.Stats(snap)
            else:
                stats.add(snap)
        return stats if stats is not None else pstats.Stats()


class _Snapshot:
    """Stats already taken from a profiler, in the shape pstats.Stats loads (it calls create_stats)."""

    def __init__(self, stats: dict) -> None:
        self.stats = stats

    def create_stats(self) -> None:
        pass


def profile_inprocess(env: BenchEnv, p: Params, workload: str, n: int, k: int, m: int) -> dict[str, Any]:
    """Run the workload again under cProfile in every thread (slower: not a timing run)."""
    import io

    env.log.print(f"[dim]{workload}: profiling a second run of {n} workflows (cProfile, CPU time, all "
                  "threads)[/dim]")
    profiler = ThreadProfiler()
    profiler.start()  # before the app exists, so its threads are profiled too
    app = env.app(pool_size=m + 4)
    try:
        app.backend  # noqa: B018
        _run_batch(app, f"{workload}-prof", n, k, m)
    finally:
        app.close()
        time.sleep(0.2)
        stats = profiler.stop()
    assert p.profile is not None
    Path(p.profile).parent.mkdir(parents=True, exist_ok=True)
    stats.dump_stats(p.profile)
    buf = io.StringIO()
    stats.stream = buf
    stats.sort_stats("tottime").print_stats(25)
    print(buf.getvalue())
    return {"path": str(p.profile), "timer": "thread CPU time",
            "note": "cProfile of a separate run, every thread; its times are inflated by profiling"}
