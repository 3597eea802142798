"""``kit bench compare``: the same workloads on every target, worker-process count and Citus lane count.

A *target* is a database and the backend that serves it: ``embedded`` (the default), or ``LABEL=URL`` /
``LABEL=BACKEND:URL`` (``--target``, repeatable). A *cell* is one target x lanes x workload x processes x
repeat; each writes ``<out>/cells/<cell>.json`` and a rerun skips the cells whose file exists (resume).
Cells run in an interleaved order: each repeat runs every (workload, processes) pair on every target in
turn, starting from a different target each repeat, so drifting machine load favours none.

Every cell measures, over its measured window: wall time and completed workflows, client CPU (the client or
worker processes), server CPU, commits and WAL bytes (the backend's bench probe: ``stats()``), sessions of
the database sampled by what they wait on (``activity()``), and the machine's busy percentage. The report
(:mod:`kit.bench.charts`) derives everything else from these files.

Workloads: ``seq`` (1 thread per process starting and awaiting workflows of K steps), ``par`` (M threads per
process), ``queue-drain`` (N single-step workflows enqueued, then drained by P ``kit worker`` processes),
``latency`` (enqueue-to-start with one idle worker), ``recovery`` (a worker SIGKILLed mid-run). With DBOS
installed, ``dbos-seq``, ``dbos-par`` and ``dbos-queue-drain`` run the same shapes through DBOS on the first
PostgreSQL target's database (:mod:`kit.bench.peer`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kit.bench.cells import run_cell
from kit.bench.environment import BenchEnv
from kit.bench.probe import probe_of
from kit.config import load_config, redact_url
from kit.errors import KitError, UsageError

COMPARE_VERSION = 1
DEFAULT_SCHEMA = "kit_bench_cmp"
DEFAULT_OUT = "bench-results/compare"
WORKLOADS = ("seq", "par", "queue-drain", "latency", "recovery")
PEER_WORKLOADS = ("dbos-seq", "dbos-par", "dbos-queue-drain")
SCALED = {"par", "queue-drain", "dbos-par", "dbos-queue-drain"}  # run at every --processes count
DEFAULT_PROCESSES = (1, 2, 4)
DEFAULT_REPEATS = 3


@dataclass(frozen=True)
class Sizes:
    """Workload sizes of one matrix (totals over all processes of a cell)."""

    seq: int = 60  # workflows
    par: int = 300
    steps: int = 5  # steps per seq/par workflow
    threads: int = 8  # par threads per process
    drain: int = 600  # queue-drain workflows (one step each)
    concurrency: int = 16  # worker concurrency (queue-drain, latency)
    latency: int = 60  # latency samples
    recovery: int = 8  # recovery workflows (4 steps of 0.2 s, lease 1 s)


@dataclass(frozen=True)
class Target:
    """A database to measure: ``url`` None is the embedded default; ``lanes`` sets a sharded backend's lane
    count at migration (Backend.lanes_url)."""

    label: str
    url: str | None = None
    backend: str | None = None
    lanes: int | None = None

    @property
    def key(self) -> str:
        return self.label + (f"-l{self.lanes}" if self.lanes else "")

    def connect_url(self, embedded: str) -> str:
        url = self.url or embedded
        if not self.lanes:
            return url
        return _lanes_url(self.backend, url, self.lanes) or url


def _lanes_url(backend: str | None, url: str, lanes: int) -> str | None:
    """``url`` for ``lanes`` lanes on the named backend (Backend.lanes_url), None when it has no lanes."""
    from kit.registry import backend_class

    if backend is None:
        return None
    try:
        return backend_class(backend).lanes_url(url, lanes)
    except KitError:
        return None


@dataclass(frozen=True)
class Cell:
    target: Target
    workload: str
    processes: int
    repeat: int

    @property
    def name(self) -> str:
        return f"{self.target.key}__{self.workload}__p{self.processes}__r{self.repeat}"


_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def parse_target(spec: str) -> Target:
    """``embedded`` or ``LABEL=URL`` or ``LABEL=BACKEND:URL`` (e.g. ``citus2=citus:postgresql://...``)."""
    spec = spec.strip()
    if spec == "embedded":
        return Target("embedded")
    label, sep, rest = spec.partition("=")
    if not sep or not _LABEL.match(label):
        raise UsageError(f"--target {redact_url(spec)!r}: expected 'embedded', LABEL=URL or LABEL=BACKEND:URL "
                         "(LABEL: letters, digits, '.', '_', '-')")
    backend = None
    head, colon, tail = rest.partition(":")
    if colon and "/" not in head and _SCHEME.match(tail):
        backend, rest = head, tail
    if not _SCHEME.match(rest):
        raise UsageError(f"--target {label}: {redact_url(rest)!r} is not a database URL (scheme://...)")
    if label == "embedded":
        raise UsageError("--target: the label 'embedded' is the embedded default; choose another label")
    return Target(label, rest, backend)


def _int_list(name: str, text: str, low: int, high: int) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise UsageError(f"{name} expects comma-separated integers, got {text!r}") from None
    if not values or any(not low <= v <= high for v in values):
        raise UsageError(f"{name} values must be between {low} and {high}, got {text!r}")
    return tuple(sorted(set(values)))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Run the same workloads on every target x worker-process count (x Citus lanes), repeated and "
        "interleaved; one JSON file per cell under --out (an existing file is skipped: rerun to resume), "
        "then the markdown report with charts (kit bench report). The bench schema is dropped and recreated "
        "before every cell.")
    p.add_argument("--target", action="append", metavar="SPEC",
                   help="'embedded', LABEL=URL or LABEL=BACKEND:URL (repeatable; default: embedded)")
    p.add_argument("--workloads", default=",".join(WORKLOADS),
                   help=f"comma list of {', '.join(WORKLOADS)} (default: all)")
    p.add_argument("--processes", default=",".join(map(str, DEFAULT_PROCESSES)),
                   help="worker/client process counts for par and queue-drain (default 1,2,4)")
    p.add_argument("--lanes", default="",
                   help="Citus targets: lane (shard) counts, e.g. 4,16 (default: the cluster's shard count)")
    p.add_argument("--repeats", type=int, default=DEFAULT_REPEATS, help=f"runs of each cell (default {DEFAULT_REPEATS})")
    p.add_argument("--scale", type=float, default=1.0, help="multiply every workload size (default 1)")
    p.add_argument("--dbos", choices=("auto", "yes", "no"), default="auto",
                   help="DBOS side by side on the first PostgreSQL target (auto: when dbos is importable)")
    p.add_argument("--schema", default=DEFAULT_SCHEMA, help=f"bench schema, dropped and recreated (default {DEFAULT_SCHEMA})")
    p.add_argument("--data-dir", default=".kit", help="embedded PostgreSQL data directory (default .kit)")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"results directory (default {DEFAULT_OUT})")
    p.add_argument("--no-report", action="store_true", help="do not write the report at the end")


@dataclass(frozen=True)
class Plan:
    targets: tuple[Target, ...]
    workloads: tuple[str, ...]
    processes: tuple[int, ...]
    repeats: int
    sizes: Sizes
    schema: str
    data_dir: str
    out: Path
    dbos: str

    def cells(self, peer_target: Target | None) -> list[Cell]:
        """Every cell in run order: repeat-major; within a repeat each (workload, processes) pair runs on
        every target in turn, the first target rotating with the repeat."""
        out: list[Cell] = []
        pairs = [(w, n) for w in self.workloads for n in (self.processes if w in SCALED else (1,))]
        peer_pairs = [(w, n) for w in PEER_WORKLOADS if w.removeprefix("dbos-") in self.workloads
                      for n in (self.processes if w in SCALED else (1,))] if peer_target else []
        for rep in range(1, self.repeats + 1):
            rot = (rep - 1) % max(1, len(self.targets))
            order = self.targets[rot:] + self.targets[:rot]
            for w, n in pairs:
                out.extend(Cell(t, w, n, rep) for t in order)
                peer = "dbos-" + w
                if (peer, n) in peer_pairs:
                    out.append(Cell(peer_target, peer, n, rep))  # type: ignore[arg-type]
        return out


def parse_plan(args: argparse.Namespace) -> Plan:
    targets: list[Target] = []
    for spec in args.target or ["embedded"]:
        targets.append(parse_target(spec))
    if len({t.label for t in targets}) != len(targets):
        raise UsageError("--target labels must be unique")
    workloads = tuple(w.strip() for w in args.workloads.split(",") if w.strip())
    bad = [w for w in workloads if w not in WORKLOADS]
    if bad or not workloads:
        raise UsageError(f"--workloads: unknown {', '.join(bad) or '(none)'}; choose from {', '.join(WORKLOADS)}")
    processes = _int_list("--processes", args.processes, 1, 64)
    lanes = _int_list("--lanes", args.lanes, 1, 1024) if args.lanes else ()
    if not 1 <= args.repeats <= 50:
        raise UsageError(f"--repeats must be between 1 and 50, got {args.repeats}")
    if not 0.01 <= args.scale <= 1000:
        raise UsageError(f"--scale must be between 0.01 and 1000, got {args.scale}")
    expanded: list[Target] = []
    for t in targets:
        if lanes and _lanes_url(t.backend, t.url or "", lanes[0]) is not None:
            expanded.extend(replace(t, lanes=n) for n in lanes)
        else:
            expanded.append(t)
    s = Sizes()
    scale = args.scale
    sizes = Sizes(seq=max(2, round(s.seq * scale)), par=max(4, round(s.par * scale)), steps=s.steps,
                  threads=s.threads, drain=max(4, round(s.drain * scale)), concurrency=s.concurrency,
                  latency=max(4, round(s.latency * scale)), recovery=max(2, round(s.recovery * min(1.0, scale))))
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {args.out}: not a directory")
    return Plan(tuple(expanded), workloads, processes, args.repeats, sizes, args.schema, args.data_dir, out, args.dbos)


# -- targets at run time -----------------------------------------------------------------------------------
@dataclass
class Live:
    """A target resolved for this run: its URL, backend name, and the env the workload code takes."""

    target: Target
    env: BenchEnv | None
    backend_name: str | None
    server: str
    unavailable: str | None = None  # why the target's cells are skipped
    hosts_peer: bool = False  # the probe says DBOS can run in this database (a plain PostgreSQL server)
    settings: dict[str, str] | None = None  # the server settings that move the figures (probe.settings())


def open_target(t: Target, plan: Plan, log: Any) -> Live:
    from kit.registry import load_backend

    try:
        embedded = None
        if t.url is None:
            from kit.embedded import embedded_url

            embedded = embedded_url(plan.data_dir, quiet=True)
        url = t.connect_url(embedded or "")
        cfg = load_config({"database_url": url, "backend": t.backend, "schema": plan.schema, "connect_timeout": 5})
        backend = load_backend(cfg)
        probe = probe_of(backend)
        env = BenchEnv(url=url, schema=plan.schema, backend=t.backend, config_file=None, embedded=t.url is None,
                       data_dir=plan.data_dir if t.url is None else None, log=log, probe=probe)
        probe.reset()
        try:
            settings = probe.settings()
        except KitError:
            settings = None
        server = ""
        try:
            app = env.app()
            try:
                server = str(app.describe().get("server_version", ""))
            finally:
                app.close()
        except KitError:
            pass
        return Live(t, env, backend.name, server, settings=settings,
                    hosts_peer=bool(getattr(probe, "hosts_peer", False)))
    except (KitError, OSError) as exc:
        return Live(t, None, t.backend, "", unavailable=" ".join(str(exc).split()) or type(exc).__name__)


# -- the run -----------------------------------------------------------------------------------------------
def _dbos_available() -> str | None:
    """None when DBOS can run here, else why not."""
    try:
        import dbos  # noqa: F401
    except ImportError:
        return "the dbos package is not installed (pip install 'durable-kit[dbos]')"
    return None


def run_compare(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    plan = parse_plan(args)
    log = Console(stderr=True)
    cells_dir = plan.out / "cells"
    try:
        cells_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create --out {plan.out}: {exc.strerror or exc}") from None
    live: dict[str, Live] = {}
    for t in plan.targets:
        log.print(f"[dim]target {t.key}: {redact_url(t.url) if t.url else 'embedded PostgreSQL'}"
                  f"{f' (backend {t.backend})' if t.backend else ''}[/dim]")
        live[t.key] = open_target(t, plan, log)
        if live[t.key].unavailable:
            log.print(f"[yellow]target {t.key} skipped: {live[t.key].unavailable}[/yellow]")
    peer_target = None
    dbos_note = None
    if plan.dbos != "no":
        dbos_note = _dbos_available()
        first_pg = next((t for t in plan.targets if live[t.key].hosts_peer and not live[t.key].unavailable), None)
        if dbos_note is None and first_pg is None:
            dbos_note = "no PostgreSQL target to run DBOS on"
        if dbos_note is None:
            peer_target = Target("dbos", first_pg.url, None)  # type: ignore[union-attr]
            live["dbos"] = replace(live[first_pg.key], target=peer_target, backend_name="dbos")  # type: ignore[index]
        elif plan.dbos == "yes":
            raise UsageError(f"--dbos yes: {dbos_note}")
        else:
            log.print(f"[dim]DBOS side by side skipped: {dbos_note}[/dim]")
    cells = plan.cells(peer_target)
    todo = [c for c in cells if not (cells_dir / f"{c.name}.json").exists()]
    skipped = [c for c in todo if live[c.target.key].unavailable]
    todo = [c for c in todo if not live[c.target.key].unavailable]
    done_before = len(cells) - len(todo) - len(skipped)
    log.print(f"{len(cells)} cells: {done_before} already done, {len(skipped)} skipped (target unavailable), "
              f"{len(todo)} to run -> {plan.out}")
    failures: list[dict[str, Any]] = []
    kit_version = _write_matrix(plan, live, peer_target, dbos_note, cells)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("ETA"), TimeRemainingColumn())
    try:
        with Progress(*columns, console=log, transient=False) as bar:
            task = bar.add_task("compare", total=len(todo))
            for cell in todo:
                bar.update(task, description=f"{cell.target.key} {cell.workload} p{cell.processes} r{cell.repeat}")
                env = live[cell.target.key].env
                assert env is not None
                started = datetime.now(timezone.utc)
                try:
                    result = run_cell(env, cell, plan.sizes)
                except Exception as exc:  # noqa: BLE001 - one failed cell is recorded; the matrix goes on
                    text = " ".join(str(exc).split())
                    if not isinstance(exc, KitError):
                        text = f"{type(exc).__name__}: {text}"
                    failures.append({"cell": cell.name, "error": text})
                    log.print(f"[red]{cell.name} failed: {failures[-1]['error']}[/red]")
                    bar.advance(task)
                    continue
                record = {"compare_version": COMPARE_VERSION, "cell": cell.name, "target": cell.target.key,
                          "label": cell.target.label, "backend": live[cell.target.key].backend_name,
                          "lanes": cell.target.lanes, "workload": cell.workload, "processes": cell.processes,
                          "repeat": cell.repeat, "started_at": started.isoformat(),
                          "cpu_count": os.cpu_count(), "kit": kit_version, **result}
                _write_json(cells_dir / f"{cell.name}.json", record)
                bar.advance(task)
    finally:
        for lv in live.values():
            if lv.env is not None:
                lv.env.probe.close()
                for path in lv.env.worker_logs:
                    try:
                        path.unlink()
                    except OSError:
                        pass
    _write_json(plan.out / "failures.json", failures)
    log.print(f"{len(todo) - len(failures)} cells measured, {len(failures)} failed"
              + (" (rerun the same command to retry them)" if failures else ""))
    if not args.no_report:
        from kit.bench.charts import write_report

        try:
            path = write_report(plan.out)
            log.print(f"report: {path}")
        except UsageError as exc:
            log.print(f"[yellow]no report: {exc}[/yellow]")
    return 1 if failures else 0


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)  # a cell file exists only when complete (resume relies on it)


def _write_matrix(plan: Plan, live: dict[str, Live], peer: Target | None, dbos_note: str | None,
                  cells: list[Cell]) -> str | None:
    """Write matrix.json (the plan, the targets, the machine); returns kit's version (git revision)."""
    from kit.bench.environment import machine_info

    some_env = next((lv.env for lv in live.values() if lv.env is not None), None)
    machine = machine_info(some_env) if some_env is not None else {"cpu_count": os.cpu_count()}
    targets = {}
    for key, lv in live.items():
        targets[key] = {"label": lv.target.label, "url": redact_url(lv.target.url) if lv.target.url else "embedded",
                        "backend": lv.backend_name, "lanes": lv.target.lanes, "server": lv.server,
                        "unavailable": lv.unavailable, "settings": lv.settings}
    matrix = {"compare_version": COMPARE_VERSION, "written_at": datetime.now(timezone.utc).isoformat(),
              "machine": machine, "targets": targets, "workloads": list(plan.workloads),
              "processes": list(plan.processes), "repeats": plan.repeats, "sizes": asdict(plan.sizes),
              "dbos": {"target": peer.key if peer else None, "skipped": dbos_note,
                       "settings": _dbos_settings() if peer else None},
              "cells": [c.name for c in cells]}
    _write_json(plan.out / "matrix.json", matrix)
    return machine.get("kit_git") or machine.get("kit")


def _dbos_settings() -> dict[str, Any]:
    from kit.bench.peer import settings

    return settings()


__all__ = ["run_compare", "parse_target", "Target", "Plan", "Sizes", "Cell"]
