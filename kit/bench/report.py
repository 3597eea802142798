"""The report of ``kit bench``: the results as tables on stdout (the JSON file is the full record)."""

from __future__ import annotations

from typing import Any

from kit.bench.params import PEER_DRAIN_PER_S, PEER_MS_PER_STEP, TARGET_DRAIN_PER_WORKER, TARGET_FLOOR_RATIO


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def _kv_table(title: str, rows: list[tuple[str, str]]) -> Any:
    from rich.table import Table

    t = Table(title=title)
    t.add_column("metric")
    t.add_column("value", justify="right")
    for label, value in rows:
        t.add_row(label, value)
    return t


def render(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    db = report["database"]
    busy = report["machine"].get("cpu_busy_percent_during_run")
    console.print(f"[bold]kit bench {report['workload']}[/bold]  {report['machine']['cpu_count']} CPUs "
                  f"({_fmt(busy, 0)}% busy during the run, all processes), "
                  f"Python {report['machine']['python']}, {db.get('server_version', '?').split(',')[0]}"
                  f"{' (embedded)' if db.get('embedded') else ''}, schema {db.get('schema')}")
    settings = db.get("settings", {})
    console.print("server: " + ", ".join(f"{k}={v}" for k, v in list(settings.items())[:3]))
    floor = report["floor"]
    t = Table(title="floor: prepared single-row INSERT, autocommit (one round trip, one commit)")
    for col in ("statement", "ms", "client CPU ms", "server CPU ms", "WAL B", "per s"):
        t.add_column(col, justify="right" if col != "statement" else "left")
    for variant, label in floor["kinds"].items():
        f = floor[variant]
        t.add_row(label, _fmt(f["ms"]), _fmt(f["client_cpu_ms"]), _fmt(f["server_cpu_ms"]),
                  _fmt(f.get("wal_bytes")), _fmt(f["per_s"]))
    c = floor["concurrent"]
    t.add_row(f"insert x {c['connections']} conns", _fmt(c["ms_effective"]), _fmt(c["client_cpu_ms"]),
              _fmt(c["server_cpu_ms"]), "", _fmt(c["per_s"]))
    console.print(t)
    res = report["results"]
    inproc = [res[w] for w in ("seq", "par") if w in res]
    if inproc:
        t = Table(title=f"in-process workflows (target: <= {TARGET_FLOOR_RATIO}x floor; peer ~{PEER_MS_PER_STEP:g} "
                        "ms/step)")
        t.add_column("metric")
        for r in inproc:
            t.add_column(f"{r['workload']} ({r['concurrency']} thr)", justify="right")
        rows = [
            ("workflows x steps", lambda r: f"{r['workflows']} x {r['steps_per_workflow']}"),
            ("workflows/s", lambda r: _fmt(r["workflows_per_s"])),
            ("steps/s", lambda r: _fmt(r["steps_per_s"])),
            ("ms per step (wall)", lambda r: _fmt(r["ms_per_step"])),
            ("marginal ms per step", lambda r: _fmt(r["marginal_ms_per_step"])),
            ("ms per 0-step workflow", lambda r: _fmt(r["zero_step_ms_per_workflow"])),
            ("client CPU ms per step", lambda r: _fmt(r["client_cpu_ms_per_step"])),
            ("server CPU ms per step", lambda r: _fmt(r["server_cpu_ms_per_step"])),
            ("WAL bytes per step (marginal)", lambda r: f"{_fmt(r['wal_bytes_per_step'])} "
                                                        f"({_fmt(r['marginal_wal_bytes_per_step'])})"),
            ("floor ms", lambda r: _fmt(r["floor_ms"])),
            ("x floor (wall)", lambda r: _fmt(r["ratio_to_floor"], 2)),
            ("x floor (marginal)", lambda r: _fmt(r["marginal_ratio_to_floor"], 2)),
            ("x floor (client+server CPU)", lambda r: _fmt(r["cpu_ratio_to_floor"], 2)),
            ("vs peer 2 ms/step", lambda r: f"{_fmt(r['speedup_vs_peer_per_step'], 1)}x"),
        ]
        for label, get in rows:
            t.add_row(label, *(get(r) for r in inproc))
        console.print(t)
    if "queue-drain" in res:
        r = res["queue-drain"]
        console.print(_kv_table(
            f"queue drain (target: {TARGET_DRAIN_PER_WORKER:,.0f}/s per worker; peer {PEER_DRAIN_PER_S:g}/s)", [
                ("workflows x steps", f"{r['workflows']} x {r['steps_per_workflow']}"),
                ("workers x concurrency", f"{r['workers']} x {r['worker_concurrency']}"),
                ("queue's global limit", str(r["queue_limit"]) if r["queue_limit"] else "none"),
                ("enqueue (app.enqueue) per s", _fmt(r["enqueue_per_s"])),
                ("enqueue -> start ms p50 / p99", f"{_fmt(r['enqueue_to_start_latency']['p50_ms'], 2)} / "
                                                 f"{_fmt(r['enqueue_to_start_latency']['p99_ms'], 2)}"),
                ("drain s (first start -> last finish)", _fmt(r["drain_s"])),
                ("workflows/s", _fmt(r["workflows_per_s"])),
                ("workflows/s per worker", _fmt(r["workflows_per_s_per_worker"])),
                ("claims (workflows per claim)", f"{r['claim_transactions']} ({_fmt(r['mean_claim_batch'], 2)})"),
                ("worker CPU ms per workflow", _fmt(r["worker_cpu_ms_per_workflow"])),
                ("server CPU ms per workflow", _fmt(r["server_cpu_ms_per_workflow"])),
                ("x target", _fmt(r["ratio_to_target"], 2)),
                ("vs peer", f"{_fmt(r['speedup_vs_peer'], 1)}x"),
            ]))
    if "recovery" in res:
        r = res["recovery"]
        console.print(_kv_table("recovery after SIGKILL of a worker mid-run", [
            ("workflows x steps x step time", f"{r['workflows']} x {r['steps_per_workflow']} x {r['step_seconds']:g}s"),
            ("lease / heartbeat / poll s", f"{r['lease_seconds']:g} / {r['heartbeat_seconds']:g} / "
                                           f"{r['poll_seconds']:g}"),
            ("checkpoints at kill", f"{r['checkpoints_at_kill']} of {r['workflows'] * r['steps_per_workflow']}"),
            ("kill -> first reclaim s", _fmt(r["kill_to_first_reclaim_s"])),
            ("kill -> first recovered checkpoint s", _fmt(r["kill_to_first_recovered_checkpoint_s"])),
            ("kill -> all done s", _fmt(r["kill_to_all_done_s"])),
            ("remaining work at kill s", _fmt(r["remaining_work_s"])),
            ("bound (lease + poll + remaining) s", _fmt(r["bound_s"])),
            ("recovered workflows", f"{r['recovered_workflows']} of {r['workflows']}"),
        ]))
    console.print(f"results: {report['json_path']}")
