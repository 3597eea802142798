"""The embedded default: a private PostgreSQL from the ``pgserver`` package in a data directory.

The server is started on first use and keeps running after the kit process exits, so the next command
reuses it at once. :func:`embedded_status` says whether it runs (read from ``postmaster.pid``, without
starting anything) and :func:`stop_embedded` stops it; ``kit db status|start|stop`` wraps the three.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from kit.errors import ConfigError, DatabaseUnavailableError

log = logging.getLogger("kit.embedded")

# The shape of the embedded server's URL: kit.registry resolves it like any URL, and builds the backend from
# this one without starting the server when nothing needs a connection (e.g. `kit migrate --print-sql`).
OFFLINE_URL = "postgresql://localhost/postgres"


@dataclass(frozen=True)
class EmbeddedStatus:
    """The embedded server of a data directory as found on disk: ``running`` with its ``pid`` (else None)."""

    data_dir: Path  # the kit data directory (default .kit), resolved
    pgdata: Path  # PostgreSQL's own directory inside it
    running: bool
    pid: int | None = None
    started_at: datetime | None = None
    socket_dir: str | None = None

    @property
    def log_file(self) -> Path:
        return self.pgdata / "log"

    def as_dict(self) -> dict[str, object]:
        return {"running": self.running, "pid": self.pid, "data_dir": str(self.data_dir), "pgdata": str(self.pgdata),
                "log": str(self.log_file), "socket_dir": self.socket_dir,
                "started_at": self.started_at.isoformat() if self.started_at else None}


def _root(data_dir: str | os.PathLike[str]) -> Path:
    return Path(data_dir).expanduser().resolve()


def _alive(pid: int, pgdata: Path) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process (pgserver runs the server as its own user under root)
    try:  # a recycled pid is not our server: the server's command line names its data directory
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc: trust the pid
    return os.fsencode(pgdata) in cmdline


def embedded_status(data_dir: str | os.PathLike[str]) -> EmbeddedStatus:
    """Whether the embedded server of ``data_dir`` runs, from its ``postmaster.pid`` (nothing is started)."""
    root = _root(data_dir)
    pgdata = root / "pgdata"
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
        pid = int(lines[0])
    except (OSError, ValueError, IndexError):
        return EmbeddedStatus(root, pgdata, False)
    if not _alive(pid, pgdata):
        return EmbeddedStatus(root, pgdata, False)
    started = None
    if len(lines) > 2 and lines[2].strip().isdigit():
        started = datetime.fromtimestamp(int(lines[2]), tz=timezone.utc)
    socket_dir = lines[4].strip() if len(lines) > 4 and lines[4].strip() else None
    return EmbeddedStatus(root, pgdata, True, pid, started, socket_dir)


def stop_embedded(data_dir: str | os.PathLike[str], *, timeout: float = 60.0) -> EmbeddedStatus:
    """Stop the embedded server of ``data_dir`` (PostgreSQL's fast shutdown: open sessions are ended,
    running transactions roll back, the data stays). Returns the status it had; waits until it is gone."""
    status = embedded_status(data_dir)
    if not status.running or status.pid is None:
        return status
    try:
        os.kill(status.pid, signal.SIGINT)  # what `pg_ctl stop -m fast` sends
    except ProcessLookupError:
        return status
    except PermissionError as exc:
        raise ConfigError(f"cannot stop the embedded PostgreSQL (pid {status.pid}): {exc.strerror}") from None
    deadline = time.monotonic() + timeout
    while _alive(status.pid, status.pgdata):
        if time.monotonic() > deadline:
            raise DatabaseUnavailableError(f"the embedded PostgreSQL (pid {status.pid}) did not stop within "
                                           f"{timeout:g}s; see {status.log_file}")
        time.sleep(0.05)
    return status


def _shown(path: Path) -> str:
    """``path`` relative to the current directory when it is inside it (shorter on a narrow terminal)."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def embedded_url(data_dir: str | os.PathLike[str], *, quiet: bool = False) -> str:
    """Start (or reuse) the embedded PostgreSQL in ``data_dir``/pgdata and return its URL.

    The server keeps running after this process exits so the next run reuses it at once; when this call
    started it, one line on stderr says so (unless ``quiet``), with how to stop it. The directory is created
    when missing.
    """
    root = _root(data_dir)
    pgdata = root / "pgdata"
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create data directory {root}: {exc.strerror}") from None
    os.environ.setdefault("XDG_RUNTIME_DIR", str(root))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pgserver
    except ImportError as exc:  # pragma: no cover - pgserver is a dependency
        raise ConfigError("no database_url is set and the embedded default needs the 'pgserver' package") from exc
    was_running = embedded_status(root).running
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            server = pgserver.get_server(pgdata, cleanup_mode=None)
    except Exception as exc:  # pgserver raises plain exceptions with the server log
        raise DatabaseUnavailableError(f"cannot start the embedded PostgreSQL in {pgdata}: {exc}") from exc
    if not was_running:
        log.info("started the embedded PostgreSQL in %s", pgdata)
        if not quiet:
            print(f"kit: started the embedded PostgreSQL in {_shown(pgdata)} (it keeps running; `kit db stop` "
                  "stops it)", file=sys.stderr)
    return server.get_uri()
