"""Wake-ups: the one hook every write that wakes someone goes through, and the process's LISTEN connection.

When the backend notifies (``notify=True`` and the server has ``listen_notify``), a wake-up is always sent
on the session that made the write, so it is delivered at that transaction's commit, never before the row
it announces is visible:

* ``notify_in_statement`` true (plain PostgreSQL): statements that write and wake in one round trip
  (enqueue, release, message send, resume, fork) call ``pg_notify`` themselves, fed the channel by
  :meth:`NotificationsPart._statement_channel`; other writes call :meth:`NotificationsPart._wake_in_tx`
  inside their transaction (event set, stream append/close, schedule tick via enqueue).
* ``notify_in_statement`` false (Citus: a NOTIFY on a shard is lost or fails the two-phase commit): the
  statements get no channel, and :meth:`NotificationsPart._wake_in_tx` sends ``SELECT pg_notify(...)`` on
  the same coordinator session: inside the transaction for multi-statement transactions (delivered at
  commit), right after the statement for single-statement autocommit writes (after commit; if the
  connection dies in between, the wake-up is lost and waiters find the work at their next poll).

Without notifications nothing is sent and every waiter polls (kit.notifier, adaptive backoff).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import psycopg
from psycopg import sql

from kit.errors import StorageError

from .connection import PostgresCore, log, scrub


class NotificationsPart(PostgresCore):
    """notify / notify_wait / wake_channel and the wake-up hook."""

    def __init__(self, url: str, **kwargs: object) -> None:
        super().__init__(url, **kwargs)  # type: ignore[arg-type]
        self._listen_conn: psycopg.Connection | None = None
        self._listen_lock = threading.Lock()
        self._listening: set[str] = set()

    @property
    def wake_channel(self) -> str:
        return f"{self.schema}_wake"

    @property
    def _notifying(self) -> bool:
        return self.use_notify and self._caps.listen_notify

    @property
    def _statement_channel(self) -> str | None:
        """The channel to pass to statements that may notify from inside themselves; None (they then send
        nothing) when notifications are off or this server must not notify inside a data statement."""
        return self.wake_channel if self._notifying and self._caps.notify_in_statement else None

    def _wake_in_tx(self, conn: psycopg.Connection, *payloads: str, sent_by_statement: bool = False) -> None:
        """The wake-up hook: announce ``payloads`` (``q:<queue>``, ``m:<id>``, ``e:<id>``, ``s:<id>``) on
        the session ``conn`` that wrote them. ``sent_by_statement``: the caller's statement was given
        :attr:`_statement_channel` and has notified already when that was not None."""
        if not payloads or not self._notifying:
            return
        if sent_by_statement and self._statement_channel is not None:
            return
        if len(payloads) == 1:
            conn.execute(self._q["notify"], {"channel": self.wake_channel, "payload": payloads[0]})
        else:
            conn.execute(self._q["notify_many"], {"channel": self.wake_channel, "payloads": list(payloads)})

    def notify(self, channel: str, payload: str = "") -> None:
        try:
            self._run(lambda c: c.execute(self._q["notify"], {"channel": channel, "payload": payload}), retry=False)
        except StorageError as exc:  # a lost wake-up only delays work until the next poll
            log.debug("notify failed: %s", exc)

    def notify_wait(self, channels: Sequence[str], timeout: float) -> list[str]:
        if not self._notifying:
            time.sleep(timeout)
            return []
        with self._listen_lock:
            try:
                conn = self._listen_conn
                if conn is None or conn.closed:
                    conn = self.connection_class.connect(self.dsn, **self._conn_kwargs())
                    self._listen_conn = conn
                    self._listening = set()
                fresh = [ch for ch in channels if ch not in self._listening]
                for ch in fresh:
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(ch)))
                    self._listening.add(ch)
                if fresh:
                    # Notifications sent before this LISTEN were missed: tell waiters to re-check.
                    return ["*"]
                got = [n.payload for n in conn.notifies(timeout=timeout, stop_after=1)]
                if got:  # drain whatever else is already queued, in the same call
                    got += [n.payload for n in conn.notifies(timeout=0.001)]
                return got
            except psycopg.Error as exc:
                log.debug("listen connection lost: %s", scrub(str(exc), self.url))
                if self._listen_conn is not None:
                    try:
                        self._listen_conn.close()
                    except psycopg.Error:
                        pass
                self._listen_conn = None
                time.sleep(min(timeout, 0.5))
                return []

    def _close_listener(self) -> None:
        with self._listen_lock:
            if self._listen_conn is not None:
                try:
                    self._listen_conn.close()
                except psycopg.Error:
                    pass
                self._listen_conn = None
