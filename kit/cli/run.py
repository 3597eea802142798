"""``kit demo``, ``kit worker``, ``kit migrate`` and ``kit bench``: running things."""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
from typing import Any

from kit.app import Kit
from kit.cli.args import app_from_args, common
from kit.errors import UsageError
from kit.registry import load_backend
from kit.runtime import StopSummary


def add_parsers(sub: Any) -> None:
    """Register ``demo``, ``worker`` and ``migrate``."""
    p = sub.add_parser("demo", help="crash a worker mid-run and watch another finish its work")
    common(p)
    p.add_argument("--orders", type=int, default=6, help="orders to process (default 6)")
    p.add_argument("--step-seconds", type=float, default=0.25, help="work time per step (default 0.25)")
    p.add_argument("--lease-seconds", type=float, default=3.0, help="lease period for the demo workers")
    p.set_defaults(handler=cmd_demo)

    p = sub.add_parser("worker", help="run workflows of MODULE:APP: claim ready and orphaned work")
    common(p)
    p.add_argument("app", metavar="MODULE:APP", help="import path of the Kit application, e.g. shop.app:app")
    p.add_argument("--concurrency", type=int, help="workflows run at once (default 16)")
    p.add_argument("--metrics-port", type=int, metavar="PORT",
                   help="serve Prometheus metrics on http://0.0.0.0:PORT/metrics (0: a free port; needs the "
                        "[prometheus] extra; docs/integrations.md)")
    p.set_defaults(handler=cmd_worker)

    p = sub.add_parser("migrate", help="create or upgrade kit's schema")
    common(p)
    p.add_argument("--print-sql", action="store_true", help="print the DDL instead of applying it")
    p.add_argument("--print-grants", action="store_true",
                   help="print least-privilege GRANTs for --worker-role / --monitor-role (docs/security.md)")
    p.add_argument("--worker-role", help="with --print-grants: the role workers log in as (DML only)")
    p.add_argument("--monitor-role", help="with --print-grants: a read-only role for kit monitor and queries")
    p.set_defaults(handler=cmd_migrate)


def add_bench_parser(sub: Any) -> None:
    """Register ``bench`` (its options come from :mod:`kit.bench`)."""
    p = sub.add_parser("bench", help="benchmarks: seq, par, queue-drain, recovery (JSON results)")
    common(p)
    from kit.bench.params import add_arguments  # on use: the bench's options

    add_arguments(p)
    p.set_defaults(handler=cmd_bench)


def cmd_demo(args: argparse.Namespace) -> int:
    from kit.demo import run_demo

    if args.orders < 1:
        raise UsageError("--orders must be at least 1")
    return run_demo(args)


def load_app_object(spec: str) -> Kit:
    """Import ``module:attribute`` and return the Kit instance it names."""
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
    metrics = None
    if args.metrics_port is not None:
        if not 0 <= args.metrics_port <= 65535:
            raise UsageError(f"--metrics-port must be a port number (0-65535), got {args.metrics_port}")
        from kit.integrations.prometheus import serve  # ConfigError when the extra is missing

        metrics = serve(app, args.metrics_port)  # before launching: every run and claim is counted
        print(f"kit worker: metrics on {metrics.url}", file=sys.stderr, flush=True)
    stop = threading.Event()
    received: list[int] = []

    def on_signal(signum: int, frame: Any) -> None:
        received.append(signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    app.launch()
    print(f"kit worker {app.worker_id}: running {', '.join(app.workflow_names())} "
          f"(concurrency {app.config.worker_concurrency}); Ctrl-C to stop", file=sys.stderr, flush=True)
    worker_id = app.worker_id
    try:
        while not stop.wait(0.5):
            pass
        if received:
            _say_stopping(app, received[0])
    finally:
        summary = app.close()  # hands running workflows over at step boundaries
        if metrics is not None:
            metrics.close()
    print(f"kit worker {worker_id}: stopped; of the workflows running, {summary or StopSummary()}",
          file=sys.stderr, flush=True)
    return 0


def _say_stopping(app: Kit, signum: int) -> None:
    """The first line of a stop: what this worker did, and what happens to what it still runs."""
    claimed = getattr(app.runtime, "claimed_count", 0)
    how = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
    print(f"kit worker {app.worker_id}: stopping ({how}) after claiming {claimed} workflow(s); running ones finish "
          "the step they are in and are handed over to other workers (a step still running after 5s is released "
          "mid-step)", file=sys.stderr, flush=True)


def cmd_migrate(args: argparse.Namespace) -> int:
    app = app_from_args(args, migrate=False)
    if (args.worker_role or args.monitor_role) and not args.print_grants:
        raise UsageError("--worker-role and --monitor-role go with --print-grants")
    if args.print_sql or args.print_grants:
        backend = load_backend(app.config, start_embedded=False)  # printing needs no server
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


def cmd_bench(args: argparse.Namespace) -> int:
    from kit.bench.runner import run_bench

    return run_bench(args)
