"""``kit monitor``, ``kit queues``, ``kit schedules`` and ``kit db``: looking at a kit database."""

from __future__ import annotations

import argparse
import logging
from datetime import datetime, timezone
from typing import Any

from kit.app import load_backend
from kit.cli.args import app_from_args, common, positive_float, require_schema
from kit.cli.output import console, print_json
from kit.config import redact_url
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
    p.add_argument("--json", action="store_true", help="print one JSON object per queue (docs/observability.md)")
    p.set_defaults(handler=cmd_queues)

    p = sub.add_parser("schedules", help="cron schedules: expression, time zone, last and next tick")
    common(p)
    p.add_argument("--wide", action="store_true", help="every column and full tick times, whatever the width")
    p.add_argument("--json", action="store_true", help="print one JSON object per schedule (docs/observability.md)")
    p.set_defaults(handler=cmd_schedules)

    p = sub.add_parser("db", help="the database: backend, URL (password hidden), schema version; the embedded "
                       "server: whether it runs, where its data lives, start or stop it")
    common(p)
    p.add_argument("action", nargs="?", choices=("status", "start", "stop"), default="status",
                   help="status (default), or start / stop the embedded PostgreSQL")
    p.add_argument("--json", action="store_true", help="print one JSON object (docs/observability.md)")
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
            print_json(q)
        return 0
    from kit.cli.views import queues_table

    out = console()
    out.print(queues_table(rows, width=out.width))
    return 0


def cmd_schedules(args: argparse.Namespace) -> int:
    from kit.cli.views import schedule_rows, schedules_table

    app = app_from_args(args, migrate=False)
    try:
        require_schema(app)
        states = app.backend.schedule_list()
    finally:
        app.close()
    now = datetime.now(timezone.utc)
    rows = schedule_rows(states, now)
    if args.json:
        for row in rows:
            print_json(row)
        return 0
    out = console()
    out.print(schedules_table(rows, now=now, width=out.width, wide=args.wide))
    return 0


def cmd_db(args: argparse.Namespace) -> int:
    """``kit db``: the configured database, and the embedded server's state (never started by ``status``)."""
    from kit.embedded import embedded_status, embedded_url, stop_embedded

    app = app_from_args(args, migrate=False)
    cfg = app.config
    if cfg.database_url is not None:
        if args.action != "status":
            raise UsageError(f"`kit db {args.action}` manages the embedded PostgreSQL only; this configuration "
                             f"uses {redact_url(cfg.database_url)}, which kit does not run")
        try:
            info = {**app.describe(), "embedded": None}
        finally:
            app.close()
        return _print_db(info, args.json)
    if args.action == "stop":
        was = stop_embedded(cfg.data_dir)
        state = embedded_status(cfg.data_dir)
        if args.json:
            print_json({"stopped": was.running, "embedded": state.as_dict()})
        elif was.running:
            print(f"stopped the embedded PostgreSQL (pid {was.pid}); its data stays in {was.pgdata}")
        else:
            print(f"the embedded PostgreSQL is not running (data: {was.pgdata})")
        return 0
    if args.action == "start":
        embedded_url(cfg.data_dir)
    state = embedded_status(cfg.data_dir)
    info: dict[str, Any] = {"backend": None, "embedded": state.as_dict()}
    if state.running:
        try:
            info = {**app.describe(), "embedded": state.as_dict()}
            info.pop("embedded_data_dir", None)
        finally:
            app.close()
    return _print_db(info, args.json)


def _print_db(info: dict[str, Any], as_json: bool) -> int:
    if as_json:
        print_json(info)
        return 0
    from kit.cli.views import db_view

    out = console()
    out.print(db_view(info, width=out.width), soft_wrap=True, highlight=False)
    return 0
