"""The ``kit`` command line: a parser builder and a thin handler per command, one error boundary.

One module per command group: :mod:`~kit.cli.run` (demo, worker, migrate, bench),
:mod:`~kit.cli.workflows` (workflows, workflow, gc), :mod:`~kit.cli.observe` (monitor, queues,
schedules, db) and :mod:`kit.lab.cli` (lab); :mod:`~kit.cli.args` and :mod:`~kit.cli.output` hold what
they share. User mistakes and an unreachable database print one line and exit 2; never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from kit.cli import observe, run, workflows
from kit.cli.args import EXIT_USAGE, Parser, common
from kit.cli.run import load_app_object
from kit.errors import ConfigError, KitError
from kit.lab.cli import add_lab_parser


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="kit", description="Durable workflows where the database is the orchestrator.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log engine activity")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    run.add_parsers(sub)
    workflows.add_parsers(sub)
    observe.add_parsers(sub)
    run.add_bench_parser(sub)
    add_lab_parser(sub, common)
    return parser


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


__all__ = ["main", "build_parser", "load_app_object", "ConfigError"]
