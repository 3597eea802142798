"""The connection pool: psycopg_pool's, reconnecting promptly after an outage, and telling which of its
connections may have died with the server.

A database restart kills every pooled connection at once; each looks fine until it is used. Callers must
not pay for finding that out (``PostgresBackend._run`` retries at once when a connection that worked before
the call turns out dead), and a connection idle since before the last failure is checked before it carries
a transaction nobody may retry blindly (``suspect``).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

try:  # private, but stable since psycopg_pool 3.2 (the version kit requires)
    from psycopg_pool.base import AttemptWithBackoff
except ImportError:  # pragma: no cover - a future psycopg_pool: keep its own reconnection backoff
    AttemptWithBackoff = None  # type: ignore[assignment,misc]

RECONNECT_FIRST = 0.1  # seconds before the second attempt to replace a lost connection
RECONNECT_MAX = 0.5  # and at most this long between later attempts


if AttemptWithBackoff is not None:

    class _PromptAttempt(AttemptWithBackoff):  # type: ignore[misc,valid-type]
        """psycopg_pool retries a failed connect after 1, 2, 4, 8 … s (up to the reconnect timeout): after
        a 3-second outage the next attempt may come 4 s later, and every caller waits for it. Retry often
        instead, so the pool is back within a fraction of a second of the server."""

        INITIAL_DELAY = RECONNECT_FIRST

        def update_delay(self, now: float) -> None:
            super().update_delay(now)
            self.delay = min(self.delay, RECONNECT_MAX)


def ok_at(conn: psycopg.Connection) -> float:
    """When ``conn`` last did work successfully (monotonic seconds; its connect counts)."""
    return getattr(conn, "_kit_ok_at", 0.0)


def mark_ok(conn: psycopg.Connection) -> None:
    conn._kit_ok_at = time.monotonic()  # type: ignore[attr-defined]


class Pool(ConnectionPool):
    """A ``ConnectionPool`` that reconnects promptly and remembers when a connection was last lost."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lost_lock = threading.Lock()
        self.lost_at = 0.0  # monotonic time a connection of this pool was last found broken

    def _add_connection(self, attempt: Any, growing: bool = False) -> None:
        if attempt is None and AttemptWithBackoff is not None:
            attempt = _PromptAttempt(timeout=self.reconnect_timeout)
        super()._add_connection(attempt, growing=growing)

    def mark_lost(self) -> None:
        """A connection was found broken: the others idle since then may be too (see :meth:`suspect`)."""
        with self._lost_lock:
            self.lost_at = time.monotonic()

    def suspect(self, conn: psycopg.Connection) -> bool:
        """True if ``conn`` has not worked since a connection of this pool was last found broken."""
        return ok_at(conn) < self.lost_at
