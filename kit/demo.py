"""``kit demo``: a real crash and a real recovery, checked against a ledger of side effects.

Orders are submitted by inserting rows; worker A (a separate process) starts processing them; the demo
SIGKILLs A in the middle of a step; worker B claims A's workflows once their leases expire and finishes
them from their checkpoints. The ledger then proves that no step whose checkpoint committed ran twice.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from kit import demo_app
from kit.cli import layout
from kit.client import Client
from kit.config import redact_url
from kit.errors import KitError
from kit.storage import Status, WorkflowQuery

DEMO_SCHEMA = "kit_demo"


def _spawn_worker(label: str, env: dict[str, str], log_dir: Path) -> tuple[subprocess.Popen, Path]:
    log_path = log_dir / f"worker-{label}.log"
    log_file = open(log_path, "w")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        [sys.executable, "-m", "kit.cli", "worker", "kit.demo_app:app", "--concurrency", env["KIT_DEMO_CONCURRENCY"]],
        env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
    )
    return proc, log_path


def _read_ledger(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        if line.strip():
            out.append(json.loads(line))
    return out


def run_demo(args: argparse.Namespace) -> int:
    console = Console()
    data_dir = Path(args.data_dir or os.environ.get("KIT_DATA_DIR") or ".kit")
    # Submits the demo app's workflows by name; the worker processes run them.
    app = Client(database_url=args.database_url, schema=args.schema or DEMO_SCHEMA, data_dir=str(data_dir),
                 backend=args.backend, config_file=args.config, migrate=False)
    backend = app.backend
    url = getattr(backend, "url", None)
    schema = app.config.schema
    backend.drop_schema()  # the demo owns its schema: each run starts from nothing, so the summary is this run's
    backend.migrate()

    run_dir = data_dir / "demo"
    run_dir.mkdir(parents=True, exist_ok=True)
    ledger = run_dir / "ledger.jsonl"
    ledger.unlink(missing_ok=True)
    env = dict(os.environ)
    env.update({
        "KIT_DATABASE_URL": url or "", "KIT_SCHEMA": schema, "KIT_LEASE_SECONDS": str(args.lease_seconds),
        "KIT_HEARTBEAT_SECONDS": str(max(0.2, args.lease_seconds / 4)), "KIT_POLL_SECONDS": "0.25",
        "KIT_DEMO_LEDGER": str(ledger.resolve()), "KIT_DEMO_STEP_SECONDS": str(args.step_seconds),
        "KIT_DEMO_CONCURRENCY": "3", "KIT_MIGRATE": "false",
    })
    env.pop("KIT_CONFIG", None)

    where = (f"embedded PostgreSQL ({data_dir / 'pgdata'})" if app.config.database_url is None
             else redact_url(url or ""))
    console.print(Panel.fit(Text.assemble(
        ("kit demo", "bold"), f": an order pipeline of {len(demo_app.STEPS)} steps, {args.orders} orders\n",
        f"database: {where}\nschema: {schema}\n",
        "worker A is killed (SIGKILL) mid-step; worker B recovers its work"), border_style="cyan"))

    order_ids = [f"order-{i + 1:03d}" for i in range(args.orders)]
    for i, oid in enumerate(order_ids):
        app.enqueue("process_order", oid, [f"sku-{i % 4}", "sku-9"], 1999 + 500 * i, workflow_id=oid)
    console.print(f"submitted {len(order_ids)} orders (one INSERT each, status PENDING)")

    total_steps = len(order_ids) * len(demo_app.STEPS)
    kill_after = max(1, int(total_steps * 0.4))
    worker_a, _ = _spawn_worker("A", env, run_dir)
    pids = {worker_a.pid: "A"}
    worker_b = None
    killed_at = None
    first_recovery: float | None = None
    t0 = time.monotonic()
    deadline = t0 + 120 + args.orders * len(demo_app.STEPS) * args.step_seconds
    events: list[str] = [f"worker A started (pid {worker_a.pid})"]
    try:
        with Live(console=console, refresh_per_second=8, transient=False) as live:
            while True:
                for proc, label in ((worker_a, "A"), (worker_b, "B")):
                    if proc is not None and proc.poll() is not None and not (label == "A" and killed_at):
                        tail = (run_dir / f"worker-{label}.log").read_text()[-2000:]
                        raise KitError(f"demo worker {label} exited unexpectedly (code {proc.returncode}): "
                                       f"{tail.strip().splitlines()[-1] if tail.strip() else 'no output'}")
                rows = {r.workflow_id: r for r in backend.workflow_list(WorkflowQuery(limit=10_000))}
                steps_by_wf = {oid: backend.step_list(oid) for oid in order_ids}
                done_steps = sum(len(s) for s in steps_by_wf.values())
                if killed_at is None and done_steps >= kill_after:
                    in_flight = _in_flight(ledger, steps_by_wf)
                    if in_flight or time.monotonic() - t0 > 30:
                        os.kill(worker_a.pid, signal.SIGKILL)
                        worker_a.wait()
                        killed_at = time.monotonic()
                        events.append(f"[red]SIGKILL worker A[/red] (pid {worker_a.pid}) after {done_steps} "
                                      "checkpointed steps")
                        events.append(f"  A was mid-step in: {_by_step(in_flight)}")
                        worker_b, _ = _spawn_worker("B", env, run_dir)
                        pids[worker_b.pid] = "B"
                        events.append(f"worker B started (pid {worker_b.pid}); A's leases expire within "
                                      f"{args.lease_seconds:g}s")
                if killed_at is not None and first_recovery is None and any(
                        r.recoveries > 0 and r.owner for r in rows.values()):
                    first_recovery = time.monotonic() - killed_at
                    events.append(f"worker B reclaimed A's workflows {first_recovery:.1f}s after the kill")
                live.update(_render(order_ids, rows, steps_by_wf, pids, events, _ledger_owner(ledger),
                                    console.width))
                if all(rows.get(o) and rows[o].status.terminal for o in order_ids):
                    break
                if time.monotonic() > deadline:
                    raise KitError("demo did not finish in time; see the worker logs in " + str(run_dir))
                time.sleep(0.15)
        console.print()
        elapsed = time.monotonic() - (killed_at or t0)
    finally:
        for proc in (worker_a, worker_b):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
    ok = _summary(console, backend, order_ids, ledger, pids, elapsed, killed_at is not None)
    if killed_at is None:
        console.print("[red]the crash never happened (worker A finished first): run with more --orders[/red]")
        ok = False
    app.close()
    console.print(f"ledger: {ledger}\nworker logs: {run_dir}/worker-*.log", highlight=False)
    opts = f"--schema {schema}" + (f" --data-dir {args.data_dir}" if args.data_dir else "")
    console.print(f"inspect it yourself:\n  kit workflows list {opts}\n  kit workflow show {order_ids[0]} {opts}",
                  highlight=False, markup=False)
    return 0 if ok else 1


def _by_step(in_flight: list[str]) -> str:
    """``order-1/charge, order-2/charge`` as ``charge of order-1, order-2`` (one clause per step)."""
    orders: dict[str, list[str]] = defaultdict(list)
    for item in in_flight:
        order, _, step = item.partition("/")
        orders[step].append(order)
    return "; ".join(f"{step} of {', '.join(o)}" for step, o in orders.items()) or "none"


def _in_flight(ledger: Path, steps_by_wf: dict[str, list]) -> list[str]:
    """Steps whose side effect happened but whose checkpoint has not committed yet."""
    done = {(wid, s.step_id) for wid, steps in steps_by_wf.items() for s in steps}
    return [f"{e['order']}/{e['step']}" for e in _read_ledger(ledger) if (e["order"], e["step_id"]) not in done]


def _ledger_owner(ledger: Path) -> dict[tuple[str, int], int]:
    return {(e["order"], e["step_id"]): e["pid"] for e in _read_ledger(ledger)}


LEGEND = ("✔ A  ✔ B   step checkpointed; worker A or B did its side effect\n"
          "… A  … B   side effect done, checkpoint not committed (yet)\n"
          "·          not started")


def _render(order_ids: list[str], rows: dict[str, Any], steps_by_wf: dict[str, list], pids: dict[int, str],
            events: list[str], owners: dict[tuple[str, int], int], width: int = 80) -> Group:
    """The live view (pure): one row per order, one column per step. Step names head their columns on one
    line when the table fits ``width`` that way, else one word per line; nothing is cut."""
    steps = demo_app.STEPS

    def build(one_line: bool) -> Table:
        table = layout.table("orders")
        table.add_column("order", no_wrap=True)
        for name in steps:
            table.add_column(name if one_line else name.replace("_", "\n"), justify="center", no_wrap=True)
        table.add_column("status", no_wrap=True)
        for oid in order_ids:
            rec = rows.get(oid)
            recorded = {s.step_id for s in steps_by_wf.get(oid, [])}
            cells = []
            for i in range(len(steps)):
                who = pids.get(owners.get((oid, i), -1), "")
                if i in recorded:
                    cells.append(Text(f"✔ {who}", style="green" if who == "A" else "bold blue"))
                elif (oid, i) in owners:
                    cells.append(Text(f"… {who}", style="yellow"))
                else:
                    cells.append(Text("·", style="dim"))
            status = rec.status.value if rec else "?"
            style = {"SUCCESS": "green", "RUNNING": "cyan", "PENDING": "yellow", "ERROR": "red"}.get(status, "")
            table.add_row(oid, *cells, Text(status, style=style))
        return table

    table = layout.first_that_fits(width, (lambda: build(True), lambda: build(False)))
    return Group(table, Text(LEGEND, style="dim"), Text(""), Text.from_markup("\n".join(events[-6:])))


def _summary(console: Console, backend: Any, order_ids: list[str], ledger: Path, pids: dict[int, str],
             elapsed: float, crashed: bool) -> bool:
    entries = _read_ledger(ledger)
    by_step: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for e in entries:
        by_step[(e["order"], e["step_id"])].append(e)
    violations: list[str] = []
    reruns: list[str] = []
    checkpointed = 0
    for oid in order_ids:
        rec = backend.workflow_get(oid)
        if rec is None or rec.status != Status.SUCCESS:
            violations.append(f"{oid} ended {rec.status.value if rec else 'missing'}")
        for s in backend.step_list(oid):
            checkpointed += 1
            effects = by_step.get((oid, s.step_id), [])
            committed_run = [e for e in effects if e["epoch"] == s.epoch]
            after = [e for e in effects if e["epoch"] > s.epoch]
            before = [e for e in effects if e["epoch"] < s.epoch]
            if len(committed_run) != 1 or after:
                violations.append(f"{oid} step {s.name}: {len(effects)} side effects for one checkpoint")
            for e in before:
                reruns.append(f"{oid}/{s.name} ({pids.get(e['pid'], e['pid'])} died before its checkpoint committed)")
    per_worker = Counter(pids.get(e["pid"], str(e["pid"])) for e in entries)
    table = Table(title="summary", show_header=False)
    table.add_row("orders completed", f"{sum(1 for o in order_ids if backend.workflow_get(o).status == Status.SUCCESS)}"
                  f"/{len(order_ids)}")
    table.add_row("steps checkpointed", str(checkpointed))
    table.add_row("side effects by worker", ", ".join(f"{k}: {v}" for k, v in sorted(per_worker.items())))
    table.add_row("crash", "worker A SIGKILLed mid-step" if crashed else "no crash happened")
    table.add_row("recovery to all done", f"{elapsed:.1f}s after the kill")
    table.add_row("completed steps run twice", "[green]0[/green]" if not violations else f"[red]{len(violations)}[/red]")
    table.add_row("in-flight steps re-run", f"{len(reruns)} (allowed: their checkpoint never committed)")
    console.print(table)
    for line in reruns:
        console.print(f"  re-run: {line}")
    for line in violations:
        console.print(f"  [red]VIOLATION[/red]: {line}")
    if not violations:
        console.print("[bold green]✔ every order completed once; no step whose checkpoint committed ran again[/bold green]")
    return not violations
