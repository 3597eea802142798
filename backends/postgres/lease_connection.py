"""Lease renewal on a connection of its own.

The heartbeat keeps every lease of a worker alive, so it must get through whenever the database does: it
never waits for a pooled connection held by step traffic, a connection that died with the server costs it
nothing (a new one is opened at once), and a server that stays away is retried within a budget well under
the lease, so the worker learns in time that it may have to stop its runs (``kit.worker``).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import psycopg

log = logging.getLogger("kit.postgres")


class _Watchdog(Protocol):
    def enter(self, conn: psycopg.Connection) -> None: ...

    def leave(self, conn: psycopg.Connection) -> None: ...


class LeaseConnection:
    """One dedicated connection running one statement at a time, reconnecting as needed.

    ``connect`` opens a configured connection (bounded by its connect timeout), ``watchdog`` breaks a call
    a frozen server never answers, ``transient`` says whether an error is worth a retry (lost connection,
    read-only server after a failover), and ``unacknowledged`` whether a commit on the connection was
    only local (synchronous replication cancelled): never taken as a renewal.
    """

    def __init__(self, connect: Callable[[], psycopg.Connection], watchdog: _Watchdog,
                 transient: Callable[[BaseException], bool],
                 unacknowledged: Callable[[psycopg.Connection], bool]) -> None:
        self._connect = connect
        self._watchdog = watchdog
        self._transient = transient
        self._unacknowledged = unacknowledged
        self._lock = threading.Lock()
        self._conn: psycopg.Connection | None = None
        self._closed = False

    def execute(self, stmt: str, params: dict[str, Any], budget: float) -> list[tuple]:
        """Run ``stmt`` (idempotent, autocommit) and return its rows, retrying transient failures for up
        to ``budget`` seconds; a connection that was open before this call and turns out dead is replaced
        at once, without counting against the budget. Raises the last ``psycopg.Error``."""
        deadline = time.monotonic() + budget
        delay = 0.05
        with self._lock:
            while True:
                conn = self._conn
                reused = conn is not None
                try:
                    if conn is None:
                        if self._closed:
                            raise psycopg.OperationalError("the backend is closed")
                        conn = self._conn = self._connect()
                    self._watchdog.enter(conn)
                    try:
                        rows = conn.execute(stmt, params).fetchall()
                    finally:
                        self._watchdog.leave(conn)
                    if self._unacknowledged(conn):  # it closed the connection
                        self._conn = None
                        raise psycopg.OperationalError("lease renewal not acknowledged by synchronous replication")
                    return rows
                except psycopg.Error as exc:
                    if not self._transient(exc) or self._closed:
                        self._drop()
                        raise
                    died_before = reused and conn is not None and conn.broken
                    self._drop()  # a lost connection, or one to a server that no longer takes writes
                    if died_before:
                        log.debug("lease connection was lost (%s): reconnecting at once", exc)
                        continue
                    if time.monotonic() + delay > deadline:
                        raise
                    time.sleep(delay * (0.5 + random.random()))
                    delay = min(delay * 2, 0.5)

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except psycopg.Error:
                pass

    def close(self) -> None:
        self._closed = True
        with self._lock:
            self._drop()
