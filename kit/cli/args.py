"""Shared pieces of the ``kit`` command line: the one-line-error parser, the database options, argument
types (each a one-line ``kit: error:`` on bad input) and opening the application from the options."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from kit.app import Kit
from kit.errors import UsageError
from kit.lifecycle import check_timeout
from kit.storage import Status

EXIT_USAGE = 2


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse's usage dump is noise here)
        # An argument may hold a line break or another control character: escape them, one line stays one.
        message = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in message)
        self.exit(EXIT_USAGE, f"kit: error: {message} (see `{self.prog} --help`)\n")


def common(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("database")
    g.add_argument("--database-url", help="PostgreSQL URL (default: KIT_DATABASE_URL, kit.toml, or embedded)")
    g.add_argument("--schema", help="schema holding kit's tables (default: kit)")
    g.add_argument("--data-dir", help="embedded PostgreSQL data directory (default: .kit)")
    g.add_argument("--backend", help="storage backend name (default: from the URL scheme)")
    g.add_argument("--config", help="path to a kit.toml or pyproject.toml")


def status_arg(text: str) -> Status:
    try:
        return Status(text.upper())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"unknown status {text!r}; use one of {', '.join(s.value for s in Status)}"
        ) from None


def int_at_least(minimum: int, what: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


positive_int = int_at_least(1, "a positive integer")
non_negative_int = int_at_least(0, "an integer >= 0")


def timeout_arg(text: str) -> float:
    """A workflow deadline in seconds for the lifecycle commands (same rule as the API's timeout=)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    try:
        return check_timeout(value, "--timeout")  # type: ignore[return-value]
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}") from None
    if not value > 0 or value > 3600:
        raise argparse.ArgumentTypeError(f"expected a number of seconds between 0 and 3600, got {text!r}")
    return value


SORTS = {"newest": "created_desc", "oldest": "created_asc", "finished": "finished_desc",
          "slowest": "duration_desc"}
AGE = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def when_arg(text: str) -> datetime:
    m = AGE.match(text.strip())
    if m:
        try:
            return datetime.now(timezone.utc) - timedelta(seconds=float(m.group(1)) * UNITS[m.group(2)])
        except OverflowError:
            raise argparse.ArgumentTypeError(f"age {text!r} is too far in the past") from None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid time {text!r}: use ISO 8601 (2026-01-31 or 2026-01-31T12:00+00:00) or an age like 30m, 2h, 7d"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def app_from_args(args: argparse.Namespace, **extra: Any) -> Kit:
    """The application named by the common database options (``extra``: more Kit settings)."""
    return Kit(database_url=args.database_url, schema=args.schema, data_dir=args.data_dir, backend=args.backend,
               config_file=args.config, **extra)


# -- handlers ---------------------------------------------------------------------------------------


def require_schema(app: Any) -> None:
    """A one-line error when the schema has no kit tables (instead of failing on the first query)."""
    if app.backend.schema_version() is None:
        raise UsageError(f"schema '{app.config.schema}' has no kit tables yet: run `kit migrate` first")
