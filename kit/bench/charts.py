"""``kit bench report``: the markdown report and PNG charts of a ``kit bench compare`` run, from its JSON.

Everything shown is derived from the cell files (``<results>/cells/*.json``) and ``matrix.json``: medians
over repeats with their range, per-workflow costs (client CPU, server CPU, commits, WAL bytes), where each
target stops scaling and what its measurements say saturated, and a projection to more cores that is
labelled as such. Charts are drawn with matplotlib's headless Agg backend (the optional ``bench`` extra).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from statistics import median
from typing import Any

from kit.errors import UsageError

SCALING_GAIN = 0.15  # less than this much more throughput from the next process count: saturated
BUSY = 85.0  # machine busy % counted as CPU-saturated
WAITING = 0.5  # sessions waiting on average counted as a bottleneck
CHARTS = ("throughput.png", "latency.png", "cpu.png", "commits_wal.png", "projection.png")


def _load(results: Path) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    matrix_path = results / "matrix.json"
    if not matrix_path.is_file():
        raise UsageError(f"{results}: no matrix.json; run `kit bench compare --out {results}` first")
    try:
        matrix = json.loads(matrix_path.read_text(encoding="utf-8"))
        cells = [json.loads(p.read_text(encoding="utf-8")) for p in sorted((results / "cells").glob("*.json"))]
        failures_path = results / "failures.json"
        failures = json.loads(failures_path.read_text(encoding="utf-8")) if failures_path.is_file() else []
    except (OSError, ValueError) as exc:
        raise UsageError(f"{results}: cannot read the compare results: {exc}") from None
    if not cells:
        raise UsageError(f"{results}: no measured cells yet; run `kit bench compare --out {results}`")
    return matrix, cells, failures


def _per_wf(r: dict[str, Any], key: str, scale: float = 1.0) -> float | None:
    v, n = r.get(key), r.get("workflows") or 0
    return None if v is None or not n else v * scale / n


def _derive(r: dict[str, Any]) -> dict[str, Any]:
    """Per-cell derived figures (per workflow, in cores)."""
    window = r.get("window_s") or 0.0
    out = dict(r)
    out["client_cpu_ms_per_wf"] = _per_wf(r, "client_cpu_s", 1000.0)
    out["server_cpu_ms_per_wf"] = _per_wf(r, "server_cpu_s", 1000.0)
    out["commits_per_wf"] = _per_wf(r, "commits")
    out["wal_bytes_per_wf"] = _per_wf(r, "wal_bytes")
    out["client_cores"] = None if r.get("client_cpu_s") is None or not window else r["client_cpu_s"] / window
    out["server_cores"] = None if r.get("server_cpu_s") is None or not window else r["server_cpu_s"] / window
    out["commits_per_s"] = None if r.get("commits") is None or not window else r["commits"] / window
    return out


class Groups:
    """Cells grouped by (target, workload, processes) over repeats: median and range of any figure."""

    def __init__(self, cells: list[dict[str, Any]]) -> None:
        self.by: dict[tuple[str, str, int], list[dict[str, Any]]] = defaultdict(list)
        for c in cells:
            self.by[(c["target"], c["workload"], c["processes"])].append(_derive(c))
        self.targets = sorted({k[0] for k in self.by}, key=lambda t: (t == "dbos", t))

    def stat(self, target: str, workload: str, processes: int, key: str) -> tuple[float, float, float] | None:
        values = [r[key] for r in self.by.get((target, workload, processes), []) if r.get(key) is not None]
        return (median(values), min(values), max(values)) if values else None

    def med(self, target: str, workload: str, processes: int, key: str) -> float | None:
        s = self.stat(target, workload, processes, key)
        return None if s is None else s[0]

    def processes(self, target: str, workload: str) -> list[int]:
        return sorted(p for (t, w, p) in self.by if t == target and w == workload)

    def has(self, workload: str) -> bool:
        return any(w == workload for (_, w, _) in self.by)


def _fmt(v: float | None, digits: int = 1) -> str:
    if v is None:
        return "–"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:,.{digits}f}"


def _rng(s: tuple[float, float, float] | None, digits: int = 1) -> str:
    if s is None:
        return "–"
    m, lo, hi = s
    return _fmt(m, digits) if lo == hi else f"{_fmt(m, digits)} ({_fmt(lo, digits)}–{_fmt(hi, digits)})"


def _table(head: list[str], rows: list[list[str]], *, text: int = 2) -> str:
    """A markdown table; the first ``text`` columns and any column of words are left-aligned."""
    def numeric(i: int) -> bool:
        return i >= text and all(not r[i] or r[i][0] in "0123456789–-" for r in rows)

    align = ["---:" if numeric(i) else "---" for i in range(len(head))]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _kit_workload(workload: str) -> str:
    return workload.removeprefix("dbos-")


# -- saturation and projection -----------------------------------------------------------------------------
def saturation(g: Groups, target: str, workload: str, cores: int) -> dict[str, Any] | None:
    """Where throughput stops growing with processes, and what the measurements at that point say."""
    procs = g.processes(target, workload)
    rates = [(p, g.med(target, workload, p, "workflows_per_s")) for p in procs]
    rates = [(p, r) for p, r in rates if r]
    if not rates:
        return None
    at = rates[-1][0]
    scaling = True
    for (p0, r0), (_, r1) in zip(rates, rates[1:], strict=False):
        if r1 < r0 * (1 + SCALING_GAIN):
            at, scaling = p0, False
            break
    peak_p, peak = max(rates, key=lambda x: x[1])
    busy = g.med(target, workload, at, "machine_busy_percent")
    client = g.med(target, workload, at, "client_cores")
    server = g.med(target, workload, at, "server_cores")
    waits = {k: None for k in ("cpu", "Lock", "LWLock", "IO", "Client")}
    for r in g.by[(target, workload, at)]:
        for k in waits:
            v = (r.get("sessions") or {}).get(k)
            if v is not None:
                waits[k] = (waits[k] or 0.0) + v / len(g.by[(target, workload, at)])
    commits = g.med(target, workload, at, "commits_per_s")
    ours = None if client is None or server is None else client + server
    if ours is not None and ours >= cores * BUSY / 100:
        side = "client processes" if client >= server else "database server"  # type: ignore[operator]
        what = (f"CPU: the run used {ours:.2f} of {cores} cores (client processes {client:.2f}, database "
                f"server {server:.2f}; the larger share is the {side})")
    elif (waits["Lock"] or 0) >= WAITING:
        what = f"lock waits: {waits['Lock']:.1f} sessions waiting on row/table locks on average"
    elif (waits["LWLock"] or 0) + (waits["IO"] or 0) >= WAITING:
        what = (f"commit path: {(waits['LWLock'] or 0) + (waits['IO'] or 0):.1f} sessions waiting on WAL locks or "
                f"flushes on average, {_fmt(commits, 0)} commits/s")
    elif busy is not None and busy >= BUSY:
        what = (f"machine CPU: {busy:.0f}% busy, but this run used only {_fmt(ours, 2)} of {cores} cores: other "
                "processes on the machine took the rest (a noisy measurement; rerun on a quiet machine)")
    else:
        what = (f"neither CPU ({_fmt(ours, 2)} of {cores} cores) nor database waits: the clients' own pacing "
                "(round trips, worker concurrency, polling)")
    return {"target": target, "workload": workload, "saturates_at": at if not scaling else None, "scaling": scaling,
            "peak_processes": peak_p, "peak_per_s": peak, "what": what, "busy": busy, "client_cores": client,
            "server_cores": server, "waits": waits, "commits_per_s": commits}


def projection(g: Groups, target: str, cores: list[int]) -> dict[str, Any] | None:
    """Throughput bounds from measured CPU per workflow (queue-drain, else par): a model, not a measurement."""
    for workload in ("queue-drain", "par", "dbos-queue-drain", "dbos-par"):
        procs = g.processes(target, workload)
        if not procs:
            continue
        p = procs[-1]
        c = g.med(target, workload, p, "client_cpu_ms_per_wf")
        s = g.med(target, workload, p, "server_cpu_ms_per_wf")
        if not c or not s:
            continue
        return {"workload": workload, "processes": p, "client_ms": c, "server_ms": s,
                "one_machine": [n * 1000.0 / (c + s) for n in cores],
                "database_only": [n * 1000.0 / s for n in cores]}
    return None


# -- charts ------------------------------------------------------------------------------------------------
def _plt() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise UsageError("kit bench report needs matplotlib: pip install 'durable-kit[bench]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt: Any, fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _chart_throughput(plt: Any, g: Groups, path: Path) -> None:
    shapes = [w for w in ("par", "queue-drain") if g.has(w) or g.has("dbos-" + w)] or ["seq"]
    fig, axes = plt.subplots(1, len(shapes), figsize=(5.5 * len(shapes), 4), squeeze=False)
    for ax, shape in zip(axes[0], shapes, strict=True):
        ticks: set[int] = set()
        for t in g.targets:
            workload = "dbos-" + shape if t == "dbos" else shape
            procs = g.processes(t, workload)
            stats = [g.stat(t, workload, p, "workflows_per_s") for p in procs]
            pts = [(p, s) for p, s in zip(procs, stats, strict=True) if s]
            if not pts:
                continue
            xs = [p for p, _ in pts]
            ticks.update(xs)
            ys = [s[0] for _, s in pts]
            err = [[s[0] - s[1] for _, s in pts], [s[2] - s[0] for _, s in pts]]
            ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=t, linestyle="--" if t == "dbos" else "-")
        ax.set_xticks(sorted(ticks))
        ax.set_title(f"{shape}: throughput vs processes")
        ax.set_xlabel("worker / client processes")
        ax.set_ylabel("workflows/s (median, range)")
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=8)
    _save(plt, fig, path)


def _bars(ax: Any, labels: list[str], series: dict[str, list[float]], *, stacked: bool = False) -> None:
    import numpy as np

    x = np.arange(len(labels))
    width = 0.8 if stacked else 0.8 / max(1, len(series))
    bottom = np.zeros(len(labels))
    for i, (name, values) in enumerate(series.items()):
        vals = np.array([v or 0.0 for v in values])
        if stacked:
            ax.bar(x, vals, width, bottom=bottom, label=name)
            bottom += vals
        else:
            ax.bar(x + (i - (len(series) - 1) / 2) * width, vals, width, label=name)
    ax.set_xticks(x)
    ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
    ax.legend(fontsize=8)


def _rows_p1(g: Groups, workloads: tuple[str, ...]) -> list[tuple[str, str, int]]:
    rows = []
    for w in workloads:
        for t in g.targets:
            for ww in (w, "dbos-" + w):
                procs = g.processes(t, ww)
                if procs:
                    rows.append((t, ww, procs[0]))
    return rows


def _chart_latency(plt: Any, g: Groups, path: Path) -> None:
    rows = [r for r in _rows_p1(g, ("seq", "par", "latency")) if g.med(*r, "latency_p50_ms") is not None]
    fig, ax = plt.subplots(figsize=(max(6, 0.8 * len(rows) + 2), 4))
    labels = [f"{t}\n{w} p{p}" for t, w, p in rows]
    _bars(ax, labels, {"p50": [g.med(*r, "latency_p50_ms") for r in rows],
                       "p99": [g.med(*r, "latency_p99_ms") for r in rows]})
    ax.set_ylabel("ms (median over repeats)")
    ax.set_title("latency: seq/par start→result per workflow; latency: enqueue→start")
    _save(plt, fig, path)


def _chart_cpu(plt: Any, g: Groups, path: Path) -> None:
    rows = [r for r in _rows_p1(g, ("seq", "par", "queue-drain")) if g.med(*r, "client_cpu_ms_per_wf") is not None]
    fig, ax = plt.subplots(figsize=(max(6, 0.8 * len(rows) + 2), 4))
    _bars(ax, [f"{t}\n{w} p{p}" for t, w, p in rows],
          {"client CPU": [g.med(*r, "client_cpu_ms_per_wf") for r in rows],
           "server CPU": [g.med(*r, "server_cpu_ms_per_wf") for r in rows]}, stacked=True)
    ax.set_ylabel("CPU ms per workflow")
    ax.set_title("CPU per workflow: client + database server (stacked)")
    _save(plt, fig, path)


def _chart_commits(plt: Any, g: Groups, path: Path) -> None:
    rows = _rows_p1(g, ("seq", "par", "queue-drain"))
    fig, axes = plt.subplots(1, 2, figsize=(max(8, 1.2 * len(rows) + 3), 4))
    labels = [f"{t}\n{w} p{p}" for t, w, p in rows]
    _bars(axes[0], labels, {"commits": [g.med(*r, "commits_per_wf") for r in rows]})
    axes[0].set_title("commits per workflow")
    _bars(axes[1], labels, {"WAL bytes": [g.med(*r, "wal_bytes_per_wf") for r in rows]})
    axes[1].set_title("WAL bytes per workflow")
    _save(plt, fig, path)


def _chart_projection(plt: Any, g: Groups, cores: list[int], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for t in g.targets:
        p = projection(g, t, cores)
        if p is None:
            continue
        line = ax.plot(cores, p["one_machine"], marker="o", label=f"{t}: client+server on N cores")[0]
        ax.plot(cores, p["database_only"], linestyle=":", color=line.get_color(),
                label=f"{t}: database on N cores, clients elsewhere")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("cores")
    ax.set_ylabel("workflows/s (projected)")
    ax.set_title("PROJECTION from measured CPU per workflow (not measured)")
    ax.legend(fontsize=7)
    _save(plt, fig, path)


# -- the report --------------------------------------------------------------------------------------------
def write_report(results: str | Path, output: str | Path | None = None) -> Path:
    """Write ``report.md`` and ``charts/*.png`` for a compare run; returns the report's path."""
    plt = _plt()
    results = Path(results)
    out = Path(output) if output else results
    matrix, cells, failures = _load(results)
    charts = out / "charts"
    try:
        charts.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create {charts}: {exc.strerror or exc}") from None
    g = Groups(cells)
    cores = int(matrix.get("machine", {}).get("cpu_count") or 1)
    proj_cores = [1, 2, 4, 8, 16, 32]
    _chart_throughput(plt, g, charts / "throughput.png")
    _chart_latency(plt, g, charts / "latency.png")
    _chart_cpu(plt, g, charts / "cpu.png")
    _chart_commits(plt, g, charts / "commits_wal.png")
    _chart_projection(plt, g, proj_cores, charts / "projection.png")
    rel = Path("charts")
    md: list[str] = ["# kit bench compare", ""]
    m = matrix.get("machine", {})
    starts = sorted(c.get("started_at", "") for c in cells if c.get("started_at"))
    when = f"{starts[0][:16]} to {starts[-1][:16]}" if starts else "?"
    versions = sorted({str(c["kit"]) for c in cells if c.get("kit")})
    md.append(f"Measured {when} UTC (cell starts) on {cores} cores ({m.get('cpu_model', '?')}), "
              f"Python {m.get('python', '?')}, kit {', '.join(versions) or m.get('kit_git', m.get('kit', '?'))}; "
              f"{matrix.get('repeats')} repeats per cell, figures are medians with the range in brackets. "
              f"Sizes: {', '.join(f'{k} {v}' for k, v in matrix.get('sizes', {}).items())}.")
    md += ["", "## Targets", ""]
    md.append(_table(["target", "backend", "lanes", "URL", "server", "settings", "status"],
                     [[k, str(v.get("backend") or "–"), str(v.get("lanes") or "–"), v.get("url", ""),
                       (v.get("server") or "").split(" on ")[0], _settings(v.get("settings")),
                       "skipped: " + v["unavailable"] if v.get("unavailable") else "measured"]
                      for k, v in matrix.get("targets", {}).items()]))
    md += ["", "Settings that move the figures: with `fsync=off` a commit does not wait for the disk, so targets "
           "that differ there are not comparable on commit-bound workloads (seq, latency)."]
    md += ["", "## Throughput vs worker processes", "", f"![throughput]({rel / 'throughput.png'})", ""]
    rows = []
    for w in ("seq", "par", "queue-drain", "dbos-seq", "dbos-par", "dbos-queue-drain"):
        for t in g.targets:
            for p in g.processes(t, w):
                rows.append([t, w, str(p), _rng(g.stat(t, w, p, "workflows_per_s")),
                             _fmt(g.med(t, w, p, "completed"), 0), _fmt(g.med(t, w, p, "machine_busy_percent"), 0)])
    md.append(_table(["target", "workload", "processes", "workflows/s", "completed", "machine busy %"], rows))
    md += ["", "## Latency (p50 / p99)", "", f"![latency]({rel / 'latency.png'})", ""]
    rows = []
    for w in ("seq", "par", "latency", "dbos-seq", "dbos-par"):
        for t in g.targets:
            for p in g.processes(t, w):
                if g.med(t, w, p, "latency_p50_ms") is not None:
                    rows.append([t, w, str(p), _rng(g.stat(t, w, p, "latency_p50_ms"), 2),
                                 _rng(g.stat(t, w, p, "latency_p99_ms"), 2)])
    md.append(_table(["target", "workload", "processes", "p50 ms", "p99 ms"], rows))
    md += ["", "seq/par: start to result of one workflow (client clock, 5 steps); latency: enqueue to start "
           "(server clock) with one idle worker, workflows enqueued 10 ms apart.", ""]
    md += ["## CPU, commits and WAL per workflow", "", f"![cpu]({rel / 'cpu.png'})", "",
           f"![commits and WAL]({rel / 'commits_wal.png'})", ""]
    rows = []
    for w in ("seq", "par", "queue-drain", "dbos-seq", "dbos-par", "dbos-queue-drain"):
        for t in g.targets:
            for p in g.processes(t, w):
                rows.append([t, w, str(p), _fmt(g.med(t, w, p, "client_cpu_ms_per_wf"), 2),
                             _fmt(g.med(t, w, p, "server_cpu_ms_per_wf"), 2),
                             _fmt(g.med(t, w, p, "commits_per_wf"), 1), _fmt(g.med(t, w, p, "wal_bytes_per_wf"), 0)])
    md.append(_table(["target", "workload", "processes", "client CPU ms/wf", "server CPU ms/wf", "commits/wf",
                      "WAL B/wf"], rows))
    md += ["", "Commits are the database's committed transactions (pg_stat_database), read-only ones included "
           "(claim polls); the probe's own statements are subtracted. seq/par workflows have 5 steps, queue-drain "
           "workflows one.", ""]
    md += ["## Where each target saturates", ""]
    rows = []
    for t in g.targets:
        for w in ("par", "queue-drain", "dbos-par", "dbos-queue-drain"):
            s = saturation(g, t, w, cores)
            if s is None:
                continue
            if len(g.processes(t, w)) < 2:
                where = f"one process count measured ({s['peak_processes']})"
            elif s["scaling"]:
                where = f"still scaling at {s['peak_processes']} processes"
            else:
                where = f"{s['saturates_at']} process{'es' if s['saturates_at'] != 1 else ''}"
            rows.append([t, w, where, _fmt(s["peak_per_s"]), s["what"]])
    md.append(_table(["target", "workload", "saturates at", "peak workflows/s", "what the measurements show"],
                     rows) if rows else "No par or queue-drain cells measured.")
    md += ["", f"Saturated: the next process count adds less than {SCALING_GAIN:.0%} throughput. The cause is read "
           f"from the same cells, in this order: the run's own CPU (client processes + database server) >= "
           f"{BUSY:.0f}% of the cores; sessions waiting on locks, or on WAL locks and flushes, >= {WAITING} on "
           "average (pg_stat_activity sampled every 50 ms); the machine busy with other processes; else the "
           f"clients' own pacing. With {cores} cores, client processes and the database share the same CPUs: "
           "more processes mostly move CPU between them.", ""]
    rec = [(t, p) for t in g.targets for p in g.processes(t, "recovery")]
    if rec:
        md += ["## Recovery", ""]
        md.append(_table(["target", "kill → first reclaim s", "kill → all done s", "bound s"],
                         [[t, _rng(g.stat(t, "recovery", p, "kill_to_first_reclaim_s"), 2),
                           _rng(g.stat(t, "recovery", p, "kill_to_all_done_s"), 2),
                           _fmt(g.med(t, "recovery", p, "bound_s"), 2)] for t, p in rec]))
        md += ["", "A worker running 4-step workflows (0.2 s steps, lease 1 s) is SIGKILLed halfway; a second worker "
               "finishes them. Bound = lease + poll + remaining work.", ""]
    md += ["## Scaling projection (a model, not a measurement)", "", f"![projection]({rel / 'projection.png'})", ""]
    rows = []
    for t in g.targets:
        p = projection(g, t, proj_cores)
        if p is None:
            continue
        rows.append([t, f"{p['workload']} p{p['processes']}", _fmt(p["client_ms"], 2), _fmt(p["server_ms"], 2)]
                    + [_fmt(v, 0) for v in p["one_machine"][2:5]] + [_fmt(v, 0) for v in p["database_only"][2:5]])
    md.append(_table(["target", "from", "client ms/wf", "server ms/wf", "4 cores", "8 cores", "16 cores",
                      "DB on 4", "DB on 8", "DB on 16"], rows) if rows else "No CPU measurements to project from.")
    md += ["", "PROJECTION: workflows/s = cores × 1000 / CPU ms per workflow, with the per-workflow CPU measured "
           "here. 'N cores' runs clients and database together; 'DB on N' gives the database N cores and the "
           "clients their own machines. It assumes CPU stays the bottleneck and costs stay flat per workflow; it "
           "ignores commit flush latency, network round trips and lock contention, so it is an upper bound. For "
           "Citus, the server CPU is what this machine's probe sees (the coordinator and any worker nodes whose "
           "processes it can read).", ""]
    md += ["## DBOS side by side", ""]
    dbos = matrix.get("dbos") or {}
    if "dbos" in g.targets:
        md.append(f"DBOS Transact ran the same shapes on the same PostgreSQL database as target "
                  f"`{_kit_peer_target(matrix)}` (its system tables in their own schema). Settings: "
                  + ", ".join(f"{k}: {v}" for k, v in (dbos.get("settings") or {}).items()) + ".")
        md.append("")
        kit_t = _kit_peer_target(matrix)
        rows = []
        for w in ("seq", "par", "queue-drain"):
            for p in g.processes("dbos", "dbos-" + w):
                k = g.med(kit_t, w, p, "workflows_per_s")
                d = g.med("dbos", "dbos-" + w, p, "workflows_per_s")
                kc = _sum(g.med(kit_t, w, p, "client_cpu_ms_per_wf"), g.med(kit_t, w, p, "server_cpu_ms_per_wf"))
                dc = _sum(g.med("dbos", "dbos-" + w, p, "client_cpu_ms_per_wf"),
                          g.med("dbos", "dbos-" + w, p, "server_cpu_ms_per_wf"))
                rows.append([w, str(p), _fmt(k), _fmt(d), _ratio(k, d), _fmt(kc, 2), _fmt(dc, 2), _ratio(dc, kc)])
        md.append(_table(["workload", "processes", "kit wf/s", "DBOS wf/s", "kit ÷ DBOS", "kit CPU ms/wf",
                          "DBOS CPU ms/wf", "DBOS ÷ kit CPU"], rows))
    else:
        md.append(f"Not run: {dbos.get('skipped') or 'dbos not installed'}. Install the optional extra "
                  "(`pip install 'durable-kit[dbos]'`) and rerun to add it.")
    md.append("")
    skipped = {k: v["unavailable"] for k, v in matrix.get("targets", {}).items() if v.get("unavailable")}
    if skipped or failures:
        md += ["## Skipped and failed cells", ""]
        md += [f"- target `{k}` skipped: {v}" for k, v in skipped.items()]
        md += [f"- `{f['cell']}` failed: {f['error']}" for f in failures]
        md.append("")
    path = out / "report.md"
    path.write_text("\n".join(md), encoding="utf-8")
    return path


def _settings(found: dict[str, str] | None) -> str:
    if not found:
        return "–"
    return ", ".join(f"{k}={found[k]}" for k in ("fsync", "synchronous_commit", "shared_buffers") if k in found)


def _kit_peer_target(matrix: dict[str, Any]) -> str:
    """The kit target whose database DBOS ran on (the same URL)."""
    targets = matrix.get("targets", {})
    url = targets.get("dbos", {}).get("url")
    for key, v in targets.items():
        if key != "dbos" and v.get("url") == url and not v.get("unavailable"):
            return key
    return "?"


def _sum(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a + b


def _ratio(a: float | None, b: float | None) -> str:
    return "–" if a is None or not b else f"{a / b:.2f}×"
