"""The ``kit`` command line: a parser builder and a thin handler per command, one error boundary.

User mistakes and an unreachable database print one line and exit 2; never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from kit.errors import ConfigError, KitError, UsageError
from kit.storage import Status, WorkflowQuery

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse's usage dump is noise here)
        # An argument may hold a line break or another control character: escape them, one line stays one.
        message = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in message)
        self.exit(EXIT_USAGE, f"kit: error: {message} (see `{self.prog} --help`)\n")


def _common(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("database")
    g.add_argument("--database-url", help="PostgreSQL URL (default: KIT_DATABASE_URL, kit.toml, or embedded)")
    g.add_argument("--schema", help="schema holding kit's tables (default: kit)")
    g.add_argument("--data-dir", help="embedded PostgreSQL data directory (default: .kit)")
    g.add_argument("--backend", help="storage backend name (default: from the URL scheme)")
    g.add_argument("--config", help="path to a kit.toml or pyproject.toml")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="kit", description="Durable workflows where the database is the orchestrator.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log engine activity")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("demo", help="crash a worker mid-run and watch another finish its work")
    _common(p)
    p.add_argument("--orders", type=int, default=6, help="orders to process (default 6)")
    p.add_argument("--step-seconds", type=float, default=0.25, help="work time per step (default 0.25)")
    p.add_argument("--lease-seconds", type=float, default=3.0, help="lease period for the demo workers")
    p.set_defaults(handler=cmd_demo)

    p = sub.add_parser("worker", help="run workflows of MODULE:APP: claim ready and orphaned work")
    _common(p)
    p.add_argument("app", metavar="MODULE:APP", help="import path of the Kit application, e.g. shop.app:app")
    p.add_argument("--concurrency", type=int, help="workflows run at once (default 16)")
    p.set_defaults(handler=cmd_worker)

    p = sub.add_parser("migrate", help="create or upgrade kit's schema")
    _common(p)
    p.add_argument("--print-sql", action="store_true", help="print the DDL instead of applying it")
    p.add_argument("--print-grants", action="store_true",
                   help="print least-privilege GRANTs for --worker-role / --monitor-role (docs/security.md)")
    p.add_argument("--worker-role", help="with --print-grants: the role workers log in as (DML only)")
    p.add_argument("--monitor-role", help="with --print-grants: a read-only role for kit monitor and queries")
    p.set_defaults(handler=cmd_migrate)

    p = sub.add_parser("workflows", help="query workflows")
    wsub = p.add_subparsers(dest="subcommand", metavar="SUBCOMMAND", parser_class=_Parser)
    wsub.required = True
    lp = wsub.add_parser("list", help="list workflows, newest first")
    _common(lp)
    lp.add_argument("--status", action="append", type=_status, help="filter by status (repeatable)")
    lp.add_argument("--name", help="filter by workflow name")
    lp.add_argument("--queue", help="filter by queue")
    lp.add_argument("--version", dest="app_version", help="filter by application version")
    lp.add_argument("--since", type=_when, help="created at or after: ISO time or age like 30m, 2h, 7d")
    lp.add_argument("--until", type=_when, help="created before: ISO time or age")
    lp.add_argument("--error", dest="error_contains", help="error text contains")
    lp.add_argument("--oldest-first", action="store_true", help="sort oldest first (same as --sort oldest)")
    lp.add_argument("--sort", choices=sorted(_SORTS), help="newest (default), oldest, finished (latest finish "
                    "first) or slowest (longest duration first)")
    lp.add_argument("--limit", type=_positive_int, default=50, help="at most this many (default 50)")
    lp.add_argument("--json", action="store_true", help="print JSON lines")
    lp.set_defaults(handler=cmd_workflows_list)

    p = sub.add_parser("workflow", help="inspect one workflow")
    wsub = p.add_subparsers(dest="subcommand", metavar="SUBCOMMAND", parser_class=_Parser)
    wsub.required = True
    sp = wsub.add_parser("show", help="a workflow and its steps with timings, outputs and errors")
    _common(sp)
    sp.add_argument("workflow_id", metavar="ID")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(handler=cmd_workflow_show)
    cp = wsub.add_parser("cancel", help="cancel a workflow and its unfinished children (stops at the next step)")
    _common(cp)
    cp.add_argument("workflow_id", metavar="ID")
    cp.set_defaults(handler=cmd_workflow_cancel)
    rp = wsub.add_parser("resume", help="run a CANCELLED or ERROR workflow again from its last checkpoint")
    _common(rp)
    rp.add_argument("workflow_id", metavar="ID")
    rp.add_argument("--timeout", type=_timeout, help="new deadline, seconds from now (default: none)")
    rp.set_defaults(handler=cmd_workflow_resume)
    fp = wsub.add_parser("fork", help="start a copy that reuses the checkpoints of steps before --from-step")
    _common(fp)
    fp.add_argument("workflow_id", metavar="ID")
    fp.add_argument("--from-step", type=_non_negative_int, required=True,
                    help="first step to run anew (steps before it are reused)")
    fp.add_argument("--new-id", help="id of the new workflow (default: a random UUID)")
    fp.add_argument("--app-version", help="application version to record on the fork (default: unversioned, "
                    "so any worker that has the workflow runs it)")
    fp.add_argument("--timeout", type=_timeout, help="deadline of the fork, seconds from now")
    fp.set_defaults(handler=cmd_workflow_fork)

    p = sub.add_parser("gc", help="delete finished workflows older than an age, in batches (never live ones)")
    _common(p)
    p.add_argument("--older-than", required=True, metavar="AGE", help="age like 30d, 12h, 90m (finish time)")
    p.add_argument("--batch-size", type=_positive_int, default=1000, help="workflows per transaction (default 1000)")
    p.add_argument("--dry-run", action="store_true", help="only count what would be deleted")
    p.set_defaults(handler=cmd_gc)

    p = sub.add_parser("monitor", help="live dashboard: workers, throughput, queues, latency, failures")
    _common(p)
    p.add_argument("--name", help="only workflows with this name")
    p.add_argument("--queue", help="only this queue ('default': workflows without a queue)")
    p.add_argument("--interval", type=_positive_float, default=1.0, help="seconds between refreshes (default 1)")
    p.add_argument("--once", action="store_true", help="print one frame and exit")
    p.set_defaults(handler=cmd_monitor)

    p = sub.add_parser("queues", help="each queue's depth, in-flight count and limits")
    _common(p)
    p.add_argument("--json", action="store_true", help="print JSON lines")
    p.set_defaults(handler=cmd_queues)

    p = sub.add_parser("schedules", help="cron schedules: expression, time zone, last and next tick")
    _common(p)
    p.add_argument("--json", action="store_true", help="print JSON lines")
    p.set_defaults(handler=cmd_schedules)

    p = sub.add_parser("db", help="backend, URL (password hidden), schema version")
    _common(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_db)

    p = sub.add_parser("bench", help="benchmarks: seq, par, queue-drain, recovery (JSON results)")
    _common(p)
    from kit.bench import add_arguments

    add_arguments(p)
    p.set_defaults(handler=cmd_bench)

    from kit.lab_cli import add_lab_parser

    add_lab_parser(sub, _common)
    return parser


def _status(text: str) -> Status:
    try:
        return Status(text.upper())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"unknown status {text!r}; use one of {', '.join(s.value for s in Status)}"
        ) from None


def _int_at_least(minimum: int, what: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


_positive_int = _int_at_least(1, "a positive integer")
_non_negative_int = _int_at_least(0, "an integer >= 0")


def _timeout(text: str) -> float:
    """A workflow deadline in seconds for the lifecycle commands (same rule as the API's timeout=)."""
    from kit.lifecycle import check_timeout

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    try:
        return check_timeout(value, "--timeout")  # type: ignore[return-value]
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}") from None
    if not value > 0 or value > 3600:
        raise argparse.ArgumentTypeError(f"expected a number of seconds between 0 and 3600, got {text!r}")
    return value


_SORTS = {"newest": "created_desc", "oldest": "created_asc", "finished": "finished_desc",
          "slowest": "duration_desc"}
_AGE = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _when(text: str) -> datetime:
    m = _AGE.match(text.strip())
    if m:
        try:
            return datetime.now(timezone.utc) - timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])
        except OverflowError:
            raise argparse.ArgumentTypeError(f"age {text!r} is too far in the past") from None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid time {text!r}: use ISO 8601 (2026-01-31 or 2026-01-31T12:00+00:00) or an age like 30m, 2h, 7d"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _app_from_args(args: argparse.Namespace, **extra: Any):
    from kit.app import Kit

    return Kit(database_url=args.database_url, schema=args.schema, data_dir=args.data_dir, backend=args.backend,
               config_file=args.config, **extra)


# -- handlers ---------------------------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> int:
    from kit.demo import run_demo

    if args.orders < 1:
        raise UsageError("--orders must be at least 1")
    return run_demo(args)


def load_app_object(spec: str):
    """Import ``module:attribute`` and return the Kit instance it names."""
    from kit.app import Kit

    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise UsageError(f"expected MODULE:APP (e.g. shop.app:app), got {spec!r}")
    sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise UsageError(f"cannot import module {module_name!r}: {exc}") from None
    obj = module
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise UsageError(f"module {module_name!r} has no attribute {attr!r}")
    if not isinstance(obj, Kit):
        raise UsageError(f"{spec} is a {type(obj).__name__}, not a kit.Kit application")
    return obj


def cmd_worker(args: argparse.Namespace) -> int:
    if args.config is not None:
        # Read by the app's own Kit(...) when the module is imported: file < env < the app's arguments.
        if not os.path.isfile(args.config):
            raise UsageError(f"config file {args.config} does not exist")
        os.environ["KIT_CONFIG"] = args.config
    app = load_app_object(args.app)
    overrides = {k: getattr(args, k) for k in ("database_url", "schema", "data_dir", "backend")
                 if getattr(args, k) is not None}
    if args.concurrency is not None:
        overrides["worker_concurrency"] = args.concurrency
    if overrides:
        from dataclasses import asdict

        from kit.config import load_config

        merged = {k: v for k, v in asdict(app.config).items()}
        merged.update(overrides)
        app.config = load_config(merged)
    if not app.workflow_names():
        raise UsageError(f"{args.app} registers no workflows: nothing to run")
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    app.launch()
    print(f"kit worker {app.worker_id}: running {', '.join(app.workflow_names())} "
          f"(concurrency {app.config.worker_concurrency}); Ctrl-C to stop", file=sys.stderr, flush=True)
    from kit.worker import StopSummary

    worker_id = app.worker_id
    try:
        while not stop.wait(0.5):
            pass
    finally:
        summary = app.close()  # hands running workflows over at step boundaries
    print(f"kit worker {worker_id}: stopped; of the workflows running, {summary or StopSummary()}",
          file=sys.stderr, flush=True)
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    app = _app_from_args(args, migrate=False)
    if (args.worker_role or args.monitor_role) and not args.print_grants:
        raise UsageError("--worker-role and --monitor-role go with --print-grants")
    if args.print_sql or args.print_grants:
        from kit.app import _backend_class, load_backend

        backend = load_backend(app.config) if app.config.database_url else _backend_class("postgres")(
            "postgresql:///kit", schema=app.config.schema)
        if args.print_sql:
            sys.stdout.write(backend.migration_sql())
        if args.print_grants:
            grants = getattr(backend, "grants_sql", None)
            if grants is None:
                raise UsageError(f"backend '{backend.name}' cannot print grants")
            sys.stdout.write(grants(worker_role=args.worker_role, monitor_role=args.monitor_role))
        return 0
    try:
        applied = app.backend.migrate()
        version = app.backend.schema_version()
    finally:
        app.close()
    if applied:
        print(f"applied migrations {', '.join(map(str, applied))}; schema '{app.config.schema}' at version {version}")
    else:
        print(f"schema '{app.config.schema}' is up to date (version {version})")
    return 0


def _fmt_time(value: datetime | None) -> str:
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S") if value else ""


def _duration(start: datetime | None, end: datetime | None) -> str:
    if not start or not end:
        return ""
    secs = (end - start).total_seconds()
    return f"{secs * 1000:.1f} ms" if secs < 1 else f"{secs:.2f} s"


def _short(text: str | None, width: int = 60) -> str:
    if text is None:
        return ""
    return text if len(text) <= width else text[: width - 1] + "…"


def _error_line(error: str | None) -> str:
    if not error:
        return ""
    try:
        rec = json.loads(error)
        return f"{rec.get('type', '')}: {rec.get('message', '')}"
    except (ValueError, AttributeError):
        return error


def _record_json(rec: Any) -> dict[str, Any]:
    out = {}
    for key, value in rec.__dict__.items():
        if isinstance(value, datetime):
            value = value.isoformat()
        elif isinstance(value, Status):
            value = value.value
        out[key] = value
    return out


def cmd_workflows_list(args: argparse.Namespace) -> int:
    app = _app_from_args(args, migrate=False)
    query = WorkflowQuery(statuses=tuple(args.status or ()), name=args.name, queue=args.queue,
                          app_version=args.app_version, since=args.since, until=args.until,
                          error_contains=args.error_contains, limit=args.limit, order=_order(args))
    try:
        _require_schema(app)
        rows = app.backend.workflow_list(query)
    finally:
        app.close()
    if args.json:
        for rec in rows:
            print(json.dumps(_record_json(rec)))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{len(rows)} workflow(s)")
    for col in ("id", "name", "status", "created (UTC)", "duration", "recoveries", "error"):
        table.add_column(col, overflow="fold")
    for rec in rows:
        table.add_row(rec.workflow_id, rec.name, _styled(rec.status), _fmt_time(rec.created_at),
                      _duration(rec.started_at, rec.finished_at), str(rec.recoveries), _short(_error_line(rec.error)))
    Console().print(table)
    return 0


def _order(args: argparse.Namespace) -> str:
    if args.sort and args.oldest_first and args.sort != "oldest":
        raise UsageError(f"--oldest-first contradicts --sort {args.sort}: use one of them")
    if args.sort:
        return _SORTS[args.sort]
    return "created_asc" if args.oldest_first else "created_desc"


def _styled(status: Status) -> str:
    color = {"SUCCESS": "green", "ERROR": "red", "RUNNING": "cyan", "PENDING": "yellow"}.get(status.value, "white")
    return f"[{color}]{status.value}[/{color}]"


def _require_schema(app: Any) -> None:
    if app.backend.schema_version() is None:
        raise UsageError(f"schema '{app.config.schema}' has no kit tables yet: run `kit migrate` first")


def cmd_workflow_show(args: argparse.Namespace) -> int:
    from kit.app import validate_workflow_id

    validate_workflow_id(args.workflow_id)
    app = _app_from_args(args, migrate=False)
    try:
        _require_schema(app)
        rec = app.backend.workflow_get(args.workflow_id)
        if rec is None:
            raise UsageError(f"no workflow with id {args.workflow_id!r}")
        steps = app.backend.step_list(args.workflow_id)
        children = app.backend.workflow_children(args.workflow_id)
        messages = app.backend.message_list(args.workflow_id)
        events = app.backend.event_list(args.workflow_id)
        streams = app.backend.stream_list(args.workflow_id)
    finally:
        app.close()
    if args.json:
        print(json.dumps({"workflow": _record_json(rec), "steps": [_record_json(s) for s in steps],
                          "children": [_record_json(c) for c in children],
                          "messages": [_record_json(m) for m in messages],
                          "events": [_record_json(e) for e in events],
                          "streams": [_record_json(s) for s in streams]}))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"[bold]{rec.workflow_id}[/bold]  {rec.name}  {_styled(rec.status)}")
    console.print(f"created {_fmt_time(rec.created_at)}  started {_fmt_time(rec.started_at)}  "
                  f"finished {_fmt_time(rec.finished_at)}  duration {_duration(rec.started_at, rec.finished_at)}  "
                  f"epoch {rec.epoch}  recoveries {rec.recoveries}")
    console.print(f"inputs: {_short(rec.inputs, 200)}", markup=False)
    if rec.status == Status.SUCCESS:
        console.print(f"output: {_short(rec.output, 200)}", markup=False)
    if rec.error:
        console.print(f"error: {_error_line(rec.error)}", markup=False, style="red")
    table = Table(title="steps")
    for col in ("#", "name", "attempts", "epoch", "started (UTC)", "duration", "output / error"):
        table.add_column(col, overflow="fold")
    for s in steps:
        outcome = _short(_error_line(s.error), 70) if s.error else _short(s.output, 70)
        table.add_row(str(s.step_id), s.name, str(s.attempts), str(s.epoch), _fmt_time(s.started_at),
                      _duration(s.started_at, s.finished_at), outcome)
    console.print(table)
    if children:
        kids = Table(title=f"children ({len(children)})")
        for col in ("id", "name", "status", "created (UTC)", "duration", "error"):
            kids.add_column(col, overflow="fold")
        for c in children:
            kids.add_row(c.workflow_id, c.name, _styled(c.status), _fmt_time(c.created_at),
                         _duration(c.started_at, c.finished_at), _short(_error_line(c.error)))
        console.print(kids)
    else:
        console.print("children: none")
    _print_messages_events_streams(console, messages, events, streams)
    return 0


def cmd_workflow_cancel(args: argparse.Namespace) -> int:
    from kit.validation import validate_workflow_id

    validate_workflow_id(args.workflow_id)
    app = _app_from_args(args, migrate=False)
    try:
        _require_schema(app)
        ids = app.cancel(args.workflow_id)
        status = app.backend.workflow_get(args.workflow_id)
    finally:
        app.close()
    if not ids:
        print(f"{args.workflow_id} had already finished ({status.status.value if status else 'gone'}); "
              "nothing cancelled")
        return 0
    print(f"cancelled {len(ids)} workflow(s): {', '.join(ids)}")
    return 0


def cmd_workflow_resume(args: argparse.Namespace) -> int:
    from kit.validation import validate_workflow_id

    validate_workflow_id(args.workflow_id)
    app = _app_from_args(args, migrate=False)
    try:
        _require_schema(app)
        app.resume(args.workflow_id, timeout=args.timeout)
    finally:
        app.close()
    print(f"resumed {args.workflow_id}: PENDING, a worker will continue it from its last checkpoint")
    return 0


def cmd_workflow_fork(args: argparse.Namespace) -> int:
    from kit.validation import validate_workflow_id

    validate_workflow_id(args.workflow_id)
    app = _app_from_args(args, migrate=False, app_version=args.app_version)
    try:
        _require_schema(app)
        handle = app.fork(args.workflow_id, from_step=args.from_step, new_workflow_id=args.new_id,
                          timeout=args.timeout)
    finally:
        app.close()
    print(f"forked {args.workflow_id} from step {args.from_step} as {handle.workflow_id}")
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    from kit.lifecycle import parse_age

    age = parse_age(args.older_than)
    app = _app_from_args(args, migrate=False)
    try:
        _require_schema(app)
        n = app.gc(age, batch_size=args.batch_size, dry_run=args.dry_run)
    finally:
        app.close()
    verb = "would delete" if args.dry_run else "deleted"
    print(f"{verb} {n} workflow(s) finished more than {args.older_than} ago")
    return 0


def _print_messages_events_streams(console: Any, messages: list, events: list, streams: list) -> None:
    from rich.text import Text  # user data is never read as markup

    waiting = sum(1 for m in messages if m.consumed_at is None)
    _print_table(console, "messages", f"messages received ({len(messages)}, {waiting} still waiting)",
                 ("#", "topic", "created (UTC)", "consumed by step", "body"),
                 [(str(m.message_id), Text(m.topic or "(none)"), _fmt_time(m.created_at),
                   str(m.consumed_step) if m.consumed_at is not None else "waiting", Text(_short(m.body, 70)))
                  for m in messages])
    _print_table(console, "events", f"events ({len(events)})", ("key", "value", "set by step", "updated (UTC)"),
                 [(Text(e.key), Text(_short(e.value, 70)), str(e.step_id), _fmt_time(e.updated_at))
                  for e in events])
    _print_table(console, "streams", f"streams ({len(streams)})",
                 ("key", "elements", "closed", "last write (UTC)"),
                 [(Text(st.key), str(st.count), "closed" if st.closed else "open", _fmt_time(st.last_write_at))
                  for st in streams])


def _print_table(console: Any, what: str, title: str, columns: Sequence[str], rows: list[tuple]) -> None:
    """A rich table of ``rows``, or "<what>: none" when there are none."""
    from rich.table import Table

    if not rows:
        console.print(f"{what}: none")
        return
    table = Table(title=title)
    for col in columns:
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*row)
    console.print(table)


def cmd_monitor(args: argparse.Namespace) -> int:
    """Wire a MonitorSource (storage) to the renderer: one frame with --once, else the live loop."""
    from dataclasses import replace

    from kit.app import load_backend
    from kit.monitor import MonitorSource, render, run_live
    from kit.storage import MonitorQuery

    app = _app_from_args(args, migrate=False)
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
    app = _app_from_args(args, migrate=False)
    try:
        _require_schema(app)
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
    from kit.cron import CronError, parse

    app = _app_from_args(args, migrate=False)
    try:
        _require_schema(app)
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
            return _fmt_time(value) + " UTC"

    _print_table(Console(), "schedules", f"{len(rows)} schedule(s)",
                 ("schedule", "cron", "time zone", "queue", "catch-up", "last tick", "next tick"),
                 [(r["name"], r["cron"], r["timezone"], r["queue"],
                   r["catch_up"] + (f" (max {r['max_catch_up']})" if r["catch_up"] == "all" else ""),
                   local(r["last_tick"], r["timezone"]), local(r["next_tick"], r["timezone"])) for r in rows])
    return 0


def cmd_db(args: argparse.Namespace) -> int:
    app = _app_from_args(args, migrate=False)
    try:
        info = app.describe()
    finally:
        app.close()
    if args.json:
        print(json.dumps(info, default=str))
        return 0
    for key in ("backend", "url", "schema", "schema_version", "server_version", "embedded_data_dir"):
        if key in info:
            value = info[key] if info[key] is not None else "(not migrated: run `kit migrate`)"
            print(f"{key:17} {value}")
    caps = ", ".join(k for k, v in info.get("capabilities", {}).items() if v)
    print(f"{'capabilities':17} {caps}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from kit.bench import run_bench

    return run_bench(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``kit`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        # The pool logs every failed connection attempt; kit reports the outcome itself (one line).
        logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except KitError as exc:
        print(f"kit: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("kit: interrupted", file=sys.stderr)
        return 130


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

__all__ = ["main", "build_parser", "ConfigError"]
