"""The embedded default: a private PostgreSQL from the ``pgserver`` package in a data directory."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path

from kit.errors import ConfigError, DatabaseUnavailableError

log = logging.getLogger("kit.embedded")
_announced: set[str] = set()

# The shape of the embedded server's URL: kit.registry resolves it like any URL, and builds the backend from
# this one without starting the server when nothing needs a connection (e.g. `kit migrate --print-sql`).
OFFLINE_URL = "postgresql://localhost/postgres"


def embedded_url(data_dir: str | os.PathLike[str], *, quiet: bool = False) -> str:
    """Start (or reuse) the embedded PostgreSQL in ``data_dir``/pgdata and return its URL.

    The server keeps running after this process exits so the next run reuses it at once; `kit db`
    says where it is. The directory is created when missing.
    """
    root = Path(data_dir).expanduser().resolve()
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
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            server = pgserver.get_server(pgdata, cleanup_mode=None)
    except Exception as exc:  # pgserver raises plain exceptions with the server log
        raise DatabaseUnavailableError(f"cannot start the embedded PostgreSQL in {pgdata}: {exc}") from exc
    url = server.get_uri()
    if str(pgdata) not in _announced and not quiet:
        _announced.add(str(pgdata))
        print(f"kit: using embedded PostgreSQL in {pgdata}", file=sys.stderr)
    return url
