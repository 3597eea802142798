"""``kit bench`` from its options to its report: resolve the database, reset the bench schema, measure the
floor, run the workloads, write the JSON results and print the tables."""

from __future__ import annotations

import argparse
import json
import os
from datetime import datetime, timezone
from typing import Any

from kit.bench.environment import BenchEnv, machine_busy, machine_info, resolve_env
from kit.bench.params import (
    DEFAULT_CONCURRENCY,
    JSON_VERSION,
    PEER_DRAIN_PER_S,
    PEER_MS_PER_STEP,
    TARGET_DRAIN_PER_WORKER,
    TARGET_FLOOR_RATIO,
    TARGET_PEER_SPEEDUP,
    WORKLOADS,
    Params,
    parse_params,
)
from kit.bench.report import render
from kit.bench.workers import run_queue_drain, run_recovery
from kit.bench.workloads import measure_floor, run_inprocess
from kit.errors import UsageError


def run_bench(args: argparse.Namespace) -> int:
    from rich.console import Console

    p = parse_params(args)
    log = Console(stderr=True)
    env = resolve_env(args, log)
    if p.lanes is not None:
        try:
            env.url = lanes_url(env, p.lanes)
        except BaseException:
            env.probe.close()
            raise
    try:
        return _run(env, p)
    finally:
        env.probe.close()


def _run(env: BenchEnv, p: Params) -> int:
    log = env.log
    workloads = list(WORKLOADS) if p.workload == "all" else [p.workload]
    floor_conc = p.concurrency or DEFAULT_CONCURRENCY
    started = datetime.now(timezone.utc)
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    machine_busy()
    results: dict[str, Any] = {}
    try:
        env.probe.reset()
        info_app = env.app()
        try:
            database = info_app.describe()
        finally:
            info_app.close()
        database["embedded"] = env.embedded
        database["settings"] = env.probe.settings()
        log.print(f"[dim]floor: {p.floor_iterations} prepared INSERTs per statement kind, then "
                  f"{floor_conc} connections[/dim]")
        floor = measure_floor(env, p.floor_iterations, floor_conc)
        for i, workload in enumerate(workloads):
            if i:
                env.probe.reset()
            if workload in ("seq", "par"):
                results[workload] = run_inprocess(env, p, workload, floor)
            elif workload == "queue-drain":
                results[workload] = run_queue_drain(env, p, floor)
            else:
                results[workload] = run_recovery(env, p)
    finally:
        for path in env.worker_logs:
            try:
                path.unlink()
            except OSError:
                pass
    report = {
        "kit_bench_version": JSON_VERSION,
        "workload": p.workload,
        "started_at": started.isoformat(),
        "finished_at": datetime.now(timezone.utc).isoformat(),
        "machine": {**machine_info(env), "load_1min_before": load_before,
                    "cpu_busy_percent_during_run": machine_busy()},
        "database": database,
        "parameters": _parameters(p, workloads),
        "targets": {"ratio_to_floor": TARGET_FLOOR_RATIO, "drain_per_worker_per_s": TARGET_DRAIN_PER_WORKER,
                    "speedup_vs_peer": TARGET_PEER_SPEEDUP, "peer_ms_per_step": PEER_MS_PER_STEP,
                    "peer_drain_per_s": PEER_DRAIN_PER_S},
        "floor": floor,
        "results": results,
        "json_path": str(p.json_path),
    }
    try:
        p.json_path.parent.mkdir(parents=True, exist_ok=True)
        p.json_path.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write --json {p.json_path}: {exc.strerror or exc}") from None
    render(report)
    return 0


def _parameters(p: Params, workloads: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"floor_iterations": p.floor_iterations,
                           "floor_concurrency": p.concurrency or DEFAULT_CONCURRENCY}
    if p.lanes is not None:
        out["lanes"] = p.lanes
    for w in workloads:
        n, k = p.size(w)
        entry: dict[str, Any] = {"workflows": n, "steps": k}
        if w == "par":
            entry["concurrency"] = p.concurrency or DEFAULT_CONCURRENCY
        elif w == "queue-drain":
            entry.update(workers=p.workers, concurrency=p.concurrency or DEFAULT_CONCURRENCY)
        elif w == "recovery":
            entry.update(lease_seconds=p.lease_seconds, step_seconds=p.step_seconds,
                         concurrency=p.concurrency or min(n, 256))
        out[w] = entry
    return out


def lanes_url(env: BenchEnv, lanes: int) -> str:
    """The bench URL whose new schema has ``lanes`` ready lanes (Backend.lanes_url, e.g. a sharded backend's
    shard count at migration); UsageError when the database's backend has no lanes."""
    from kit.registry import resolve

    cls = resolve(env.url, env.backend)
    url = cls.lanes_url(env.url, lanes)
    if url is None:
        raise UsageError(f"--lanes applies to a backend with lanes (Citus); this database's backend "
                         f"'{cls.name}' has none: leave it out")
    return url
