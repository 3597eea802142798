"""``kit monitor``, ``kit queues``, ``kit schedules`` and ``kit db``: looking at a kit database."""

from __future__ import annotations

import argparse
import json
import logging
from datetime import datetime, timezone
from typing import Any

from kit.app import load_backend
from kit.cli.args import app_from_args, common, positive_float, require_schema
from kit.cli.output import fmt_time, print_table
from kit.cron import CronError, parse
from kit.errors import UsageError
from kit.storage import MonitorQuery


def add_parsers(sub: Any) -> None:
    """Register ``monitor``, ``queues``, ``schedules`` and ``db``."""
    p = sub.add_parser("monitor", help="live dashboard: workers, throughput, queues, latency, failures")
    common(p)
    p.add_argument("--name", help="only workflows with this name")
    p.add_argument("--queue", help="only this queue ('default': workflows without a queue)")
    p.add_argument("--interval", type=positive_float, default=1.0, help="seconds between refreshes (default 1)")
    p.add_argument("--once", action="store_true", help="print one frame and exit")
    p.set_defaults(handler=cmd_monitor)

    p = sub.add_parser("queues", help="each queue's depth, in-flight count and limits")
    common(p)
    p.add_argument("--json", action="store_true", help="print JSON lines")
    p.set_defaults(handler=cmd_queues)

    p = sub.add_parser("schedules", help="cron schedules: expression, time zone, last and next tick")
    common(p)
    p.add_argument("--json", action="store_true", help="print JSON lines")
    p.set_defaults(handler=cmd_schedules)

    p = sub.add_parser("db", help="backend, URL (password hidden), schema version")
    common(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_db)


def cmd_monitor(args: argparse.Namespace) -> int:
    """Wire a MonitorSource (storage) to the renderer: one frame with --once, else the live loop."""
    from dataclasses import replace

    from kit.monitor import MonitorSource, render, run_live  # on use: the dashboard and rich

    app = app_from_args(args, migrate=False)
    # A dashboard must report an outage within seconds, not wait it out like a worker does.
    cfg = replace(app.config, db_retry_seconds=min(app.config.db_retry_seconds, 2.0),
                  connect_timeout=min(app.config.connect_timeout, 3.0), pool_size=2)
    first = load_backend(cfg)  # configuration errors surface here, before any screen is drawn
    pending = [first]

    def open_backend() -> Any:
        backend = pending.pop() if pending else load_backend(cfg)
        backend.open()
        return backend

    if not args.verbose:  # retries are reported in the frame, not as log lines over it
        logging.getLogger("kit").setLevel(logging.CRITICAL)
        logging.getLogger("psycopg").setLevel(logging.CRITICAL)
    endpoint = cfg.database_url or f"embedded ({cfg.data_dir})"
    source = MonitorSource(open_backend, backend_name=first.name, endpoint=endpoint,
                           query=MonitorQuery(name=args.name, queue=args.queue))
    try:
        if args.once:
            snap = source.poll()
            if snap.error is not None:
                raise UsageError(f"monitor: {snap.error}")
            from rich.console import Console

            Console().print(render(snap, datetime.now(timezone.utc)))
            return 0
        return run_live(source, interval=args.interval)
    finally:
        source.close()


def cmd_queues(args: argparse.Namespace) -> int:
    app = app_from_args(args, migrate=False)
    try:
        require_schema(app)
        rows = app.backend.queue_list()
    finally:
        app.close()
    if args.json:
        for q in rows:
            print(json.dumps(q.__dict__))
        return 0
    from rich.console import Console
    from rich.table import Table

    def limit(value: object) -> str:
        return "—" if value is None else (f"{value:g}/s" if isinstance(value, float) else str(value))

    table = Table(title=f"{len(rows)} queue(s)")
    for col in ("queue", "depth", "in flight", "concurrency", "per worker", "per partition", "rate"):
        table.add_column(col, justify="left" if col == "queue" else "right")
    for q in rows:
        table.add_row(q.queue + (" (partitioned)" if q.partitioned else ""), str(q.depth), str(q.in_flight),
                      limit(q.concurrency_limit), limit(q.worker_concurrency_limit),
                      limit(q.partition_concurrency_limit), limit(q.rate_limit_per_second))
    Console().print(table)
    return 0


def cmd_schedules(args: argparse.Namespace) -> int:
    app = app_from_args(args, migrate=False)
    try:
        require_schema(app)
        states = app.backend.schedule_list()
    finally:
        app.close()
    now = datetime.now(timezone.utc)
    rows = []
    for st in states:
        try:
            nxt: datetime | None = parse(st.spec.cron, st.spec.timezone).next_after(max(now, st.cursor_at))
        except CronError:
            nxt = None  # written by a kit whose cron dialect this one does not understand
        rows.append({**st.spec.__dict__, "queue": st.spec.queue or "default", "cursor_at": st.cursor_at,
                     "last_tick": st.last_tick, "last_workflow_id": st.last_workflow_id, "next_tick": nxt})
    if args.json:
        for row in rows:
            print(json.dumps({k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()}))
        return 0
    from rich.console import Console

    def local(value: datetime | None, tz: str) -> str:
        if value is None:
            return "—"
        try:
            from zoneinfo import ZoneInfo

            return value.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M:%S %Z")
        except (KeyError, ValueError, OSError):
            return fmt_time(value) + " UTC"

    print_table(Console(), "schedules", f"{len(rows)} schedule(s)",
                 ("schedule", "cron", "time zone", "queue", "catch-up", "last tick", "next tick"),
                 [(r["name"], r["cron"], r["timezone"], r["queue"],
                   r["catch_up"] + (f" (max {r['max_catch_up']})" if r["catch_up"] == "all" else ""),
                   local(r["last_tick"], r["timezone"]), local(r["next_tick"], r["timezone"])) for r in rows])
    return 0


def cmd_db(args: argparse.Namespace) -> int:
    app = app_from_args(args, migrate=False)
    try:
        info = app.describe()
    finally:
        app.close()
    if args.json:
        print(json.dumps(info, default=str))
        return 0
    for key in ("backend", "note", "url", "schema", "schema_version", "server_version", "claims",
                "embedded_data_dir"):
        if key in info:
            value = info[key] if info[key] is not None else "(not migrated: run `kit migrate`)"
            print(f"{key:17} {value}")
    caps = ", ".join(k for k, v in info.get("capabilities", {}).items() if v)
    print(f"{'capabilities':17} {caps}")
    return 0
