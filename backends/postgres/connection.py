"""Connections of the PostgreSQL backend: pool, the ``_run`` retry loop, the watchdog, sync-replication handling.

:class:`PostgresCore` is the base every area mixin of :class:`~kit.backends.postgres.PostgresBackend`
builds on: configuration, opening (probe, detect, capabilities), ``_run`` (a pooled connection with
bounded retries of lost connections and transient errors), and the commit acknowledgement rules of
synchronous replication. Every connection the backend makes (pool, listener, probe) is an instance of the
class attribute ``connection_class``, so a test can inject faults at statement boundaries.
"""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar
from urllib.parse import urlsplit, urlunsplit

import psycopg
import psycopg.errors
from psycopg_pool import PoolTimeout

from kit.config import redact_url
from kit.errors import (
    ConfigError,
    DatabaseUnavailableError,
    LeaseLostError,
    SchemaError,
    StorageError,
)
from kit.registry import server_mismatch
from kit.storage import Backend, Capabilities, ServerInfo
from kit.storage.records import WorkerInfo

from .errors import explain, first_attempt
from .lease_connection import LeaseConnection
from .pool import Pool, mark_ok, ok_at
from .queries import MigrationSet, QuerySet
from .server import is_citus, is_cockroachdb, probe_connection, server_capabilities

log = logging.getLogger("kit.postgres")
T = TypeVar("T")

_TRANSIENT_SQLSTATES = {"40001", "40P01", "55P03", "57P01", "57P02", "57P03", "08000", "08003", "08006", "25006"}
# PostgreSQL's WARNING when a commit's wait for synchronous replication is cancelled (the commit is then
# local only): "canceling wait for synchronous replication ..." / "canceling the wait for ...".
_SYNC_REP_CANCELLED = "wait for synchronous replication"
_LIBPQ_SCHEMES = ("postgresql", "postgres")


def is_connection_error(exc: BaseException) -> bool:
    """A lost connection, a pool timeout, or a transient SQLSTATE: worth a retry."""
    if isinstance(exc, (psycopg.OperationalError, PoolTimeout)) and not isinstance(
        exc, psycopg.errors.QueryCanceled
    ):
        return True
    return getattr(exc, "sqlstate", None) in _TRANSIENT_SQLSTATES


def libpq_url(url: str) -> str:
    """``url`` with a scheme libpq understands (a subclass may accept its own scheme, e.g. ``citus://``)."""
    parts = urlsplit(url)
    if parts.scheme.lower() in _LIBPQ_SCHEMES:
        return url
    return urlunsplit(parts._replace(scheme="postgresql"))


def conn_kwargs(dsn: str, url: str, connect_timeout: float) -> dict[str, Any]:
    """Connection options: autocommit, prepared statements, and (unless the URL sets them) a connect
    timeout, the application name and, over TCP, keepalives so a hung socket fails instead of blocking."""
    kwargs: dict[str, Any] = {"autocommit": True, "prepare_threshold": 0}
    try:
        given = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise ConfigError(f"malformed database URL {redact_url(url)}: {exc}") from None
    defaults = {"connect_timeout": str(max(1, int(round(connect_timeout)))), "application_name": "kit"}
    host = str(given.get("host", ""))
    if host and not all(h.startswith("/") for h in host.split(",")):
        # TCP: a hung socket (paused primary, partition) must fail instead of blocking forever.
        defaults.update(keepalives="1", keepalives_idle="5", keepalives_interval="2", keepalives_count="3",
                        tcp_user_timeout="15000")
    for key, value in defaults.items():
        if key not in given:
            kwargs[key] = value
    return kwargs


class _Watchdog:
    """Breaks the socket under a database call that has waited past its bound.

    A frozen server (SIGSTOPped, paused container) keeps its TCP connections open and never answers:
    keepalives and ``tcp_user_timeout`` don't fire because the kernel still acknowledges. Shutting the
    socket down turns the hang into a connection error, which the caller retries and, for writes,
    resolves by reading back the outcome.
    """

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self._active: dict[int, tuple[float, psycopg.Connection]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.broken = 0

    def enter(self, conn: psycopg.Connection) -> None:
        with self._lock:
            self._active[id(conn)] = (time.monotonic() + self.limit, conn)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="kit-db-watchdog", daemon=True)
                self._thread.start()

    def leave(self, conn: psycopg.Connection) -> None:
        with self._lock:
            self._active.pop(id(conn), None)

    def _loop(self) -> None:
        period = max(0.05, min(1.0, self.limit / 4))
        while True:
            time.sleep(period)
            now = time.monotonic()
            with self._lock:
                late = [(k, c) for k, (deadline, c) in self._active.items() if deadline < now]
                for key, _ in late:
                    self._active.pop(key, None)
            for _, conn in late:
                log.warning("database call unanswered for %.0fs: breaking the connection", self.limit)
                self.broken += 1
                break_connection(conn)


def break_connection(conn: psycopg.Connection) -> None:
    """Shut a connection's socket down under a call that hangs (a frozen server never answers), so the call
    fails at once; a dup of the descriptor keeps psycopg's own file object intact."""
    try:
        dup = socket.socket(fileno=os.dup(conn.pgconn.socket))
        try:
            dup.shutdown(socket.SHUT_RDWR)
        finally:
            dup.close()
    except (OSError, psycopg.Error):
        pass


def scrub(text: str, url: str) -> str:
    """Remove any password that appears in ``url`` from ``text``."""
    try:
        pw = psycopg.conninfo.conninfo_to_dict(libpq_url(url)).get("password")
    except psycopg.Error:
        pw = None
    pw = pw or os.environ.get("PGPASSWORD")
    if pw:
        text = text.replace(str(pw), "***")
    return redact_url(text)


def retry_if_cut_off(conn: psycopg.Connection, body: Callable[[psycopg.Connection], T]) -> T:
    """Run ``body``; if the server cut the session off (e.g. idle-in-transaction timeout), raise a
    connection error so ``_run`` retries it on a fresh connection."""
    try:
        return body(conn)
    except (psycopg.Error, StorageError) as exc:
        if conn.broken or conn.closed:
            raise psycopg.OperationalError(f"connection lost during a transaction: {exc}") from exc
        raise


def call_token() -> str:
    """A fresh per-call token (96 random bits): what a call stamps on the rows it writes (claims) or
    records its answer under (control operations), so its retry can read back what it did."""
    return os.urandom(12).hex()


def default_worker_info(owner: str) -> WorkerInfo:
    return WorkerInfo(worker_id=owner, hostname=socket.gethostname(), pid=os.getpid())


class PostgresCore(Backend):
    """Configuration, connections and the server of a PostgreSQL-protocol backend (no operations)."""

    name: ClassVar[str] = "postgres"
    url_schemes: ClassVar[tuple[str, ...]] = _LIBPQ_SCHEMES
    specificity: ClassVar[int] = 0
    # Every connection the backend makes is of this class (pool, listener, probe): tests inject faults here.
    connection_class: ClassVar[type[psycopg.Connection]] = psycopg.Connection
    queries: ClassVar[QuerySet]
    migrations: ClassVar[MigrationSet]

    def __init__(
        self,
        url: str,
        *,
        schema: str = "kit",
        pool_size: int = 8,
        connect_timeout: float = 5.0,
        retry_seconds: float = 60.0,
        notify: bool = True,
        call_timeout: float = 20.0,
    ) -> None:
        parts = urlsplit(url)
        if not parts.netloc and "host=" not in (parts.query or ""):
            raise ConfigError(f"malformed database URL {redact_url(url)}: no host; use "
                              "postgresql://user@host:5432/dbname or ?host=/socket/dir")
        self.url = url
        self.dsn = libpq_url(url)
        self.schema = schema
        self.pool_size = max(2, pool_size)
        self.connect_timeout = connect_timeout
        self.retry_seconds = retry_seconds
        self.use_notify = notify
        self._pool: Pool | None = None
        self._caps = Capabilities()
        self.server_info: ServerInfo | None = None
        self._q = type(self).queries.render(schema)
        self._closed = False
        self._watchdog = _Watchdog(call_timeout)
        # The heartbeat's own connection (lease_renew), bounded by the renewal budget (set per call).
        self._lease_budget = call_timeout
        self._lease_watchdog = _Watchdog(call_timeout)
        self._leases = LeaseConnection(self._lease_connect, self._lease_watchdog, is_connection_error,
                                       self._commit_unacknowledged)
        # Connections (by id) that got "canceling wait for synchronous replication": their last commit is
        # local only, not acknowledged (see _commit_unacknowledged).
        self._unreplicated: set[int] = set()

    # -- the server ------------------------------------------------------------------------------------
    @classmethod
    def probe(cls, url: str, *, connect_timeout: float) -> ServerInfo:
        """Connect once (with ``connection_class``) and describe the server."""
        dsn = libpq_url(url)
        try:
            with cls.connection_class.connect(dsn, **conn_kwargs(dsn, url, connect_timeout)) as conn:
                return probe_connection(conn)
        except psycopg.Error as exc:
            text = explain(scrub(str(exc).strip() or type(exc).__name__, url))
            raise DatabaseUnavailableError(f"cannot connect to {redact_url(url)}: {text}") from None

    @classmethod
    def detect(cls, info: ServerInfo) -> bool:
        """Plain PostgreSQL: not CockroachDB (its version text) and not a Citus database (its extension)."""
        return not (is_cockroachdb(info) or is_citus(info))

    @classmethod
    def capabilities_for(cls, info: ServerInfo) -> Capabilities:
        """This backend's capabilities on a probed server (pure)."""
        return server_capabilities(info)

    def _conn_kwargs(self) -> dict[str, Any]:
        return conn_kwargs(self.dsn, self.url, self.connect_timeout)

    # -- connection management ----------------------------------------------------------------------
    def open(self) -> None:
        if self._pool is not None:
            return
        # One direct attempt first (backends/postgres/errors.py): a failure no retry can fix (refused, unknown
        # database or role, bad password, TLS) raises at once; a transient one is retried, and says so.
        first_attempt(lambda: self.connection_class.connect(self.dsn, **self._conn_kwargs()), self.url, scrub,
                      retry_for=self.connect_timeout + 1)
        pool = Pool(
            self.dsn, min_size=1, max_size=self.pool_size, kwargs=self._conn_kwargs(), open=False,
            name="kit", timeout=max(self.connect_timeout * 2, 10.0), reconnect_timeout=self.retry_seconds,
            configure=self._configure_conn, connection_class=self.connection_class,
        )
        try:
            pool.open(wait=True, timeout=self.connect_timeout + 1)
        except PoolTimeout:
            err = self._probe_error()
            pool.close(timeout=0)
            raise DatabaseUnavailableError(
                f"cannot connect to PostgreSQL at {redact_url(self.url)}: {err}"
            ) from None
        self._pool = pool
        info = self._run(probe_connection)
        if not type(self).detect(info):
            self._pool = None
            pool.close(timeout=0)
            raise server_mismatch(type(self), info, self.url)
        self.server_info = info
        self._caps = type(self).capabilities_for(info)

    def _configure_conn(self, conn: psycopg.Connection) -> None:
        """Watch every pooled connection's notices for a synchronous-replication wait that was cancelled."""
        key = id(conn)
        self._unreplicated.discard(key)
        mark_ok(conn)

        def on_notice(diag: psycopg.errors.Diagnostic, key: int = key) -> None:
            if _SYNC_REP_CANCELLED in (diag.message_primary or "").lower():
                self._unreplicated.add(key)

        conn.add_notice_handler(on_notice)

    def _commit_unacknowledged(self, conn: psycopg.Connection) -> bool:
        """True (once) if a commit on ``conn`` returned with PostgreSQL's "canceling wait for synchronous
        replication" warning: committed locally but not replicated, so not acknowledged; the connection is
        closed (the pool drops it) and the caller resolves the outcome after a replication barrier."""
        if id(conn) not in self._unreplicated:
            return False
        self._unreplicated.discard(id(conn))
        log.warning("commit not acknowledged by synchronous replication: resolving its outcome")
        conn.close()
        return True

    def _sync_barrier(self, conn: psycopg.Connection) -> None:
        """Commit a transaction that writes WAL: under synchronous replication it returns only once every
        earlier commit of this server is replicated, so a following read-back reads acknowledged state.
        (A transaction that only takes an xid commits asynchronously; a transactional WAL message does not.)
        A server without such a barrier (``replication_barrier`` false) has nothing to wait for."""
        if not self._caps.replication_barrier:
            return
        conn.execute("SELECT pg_logical_emit_message(true, 'kit', 'sync barrier')")
        if self._commit_unacknowledged(conn):
            raise psycopg.OperationalError("synchronous replication barrier not acknowledged")

    def _probe_error(self) -> str:
        """One direct connection attempt, to report why the pool could not connect."""
        try:
            with self.connection_class.connect(self.dsn, **self._conn_kwargs()):
                return "connection timed out"
        except psycopg.Error as exc:
            return explain(scrub(str(exc).strip() or type(exc).__name__, self.url))

    def close(self) -> None:
        self._closed = True
        self._leases.close()
        self._close_listener()
        if self._pool is not None:
            self._pool.close(timeout=2)
            self._pool = None

    def _close_listener(self) -> None:
        """Overridden by the notifications part (it owns the LISTEN connection)."""

    @property
    def capabilities(self) -> Capabilities:
        return self._caps

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "url": redact_url(self.url),
            "schema": self.schema,
            "server_version": self._caps.server_version,
            "schema_version": self.schema_version(),
            "capabilities": {k: v for k, v in self._caps.__dict__.items() if k != "server_version"},
        }

    def _observe(self, fn: Callable[[psycopg.Connection], T]) -> T:
        """Run a read-only observability read (listings, ``kit monitor``). With ``follower_reads`` (and a
        ``follower_read`` statement, e.g. CockroachDB's ``SET TRANSACTION AS OF SYSTEM TIME
        follower_read_timestamp()``) it runs in a transaction that starts with that statement, served by
        a nearby replica's slightly stale snapshot."""
        stale = self._q.get("follower_read") if self._caps.follower_reads else None
        if stale is None:
            return self._run(fn)

        def read(conn: psycopg.Connection) -> T:
            with conn.transaction():
                conn.execute(stale)
                return fn(conn)

        return self._run(read)

    def _run(self, fn: Callable[[psycopg.Connection], T], *, retry: bool = True) -> T:
        """Run ``fn`` on a pooled connection; retry lost connections and transient errors with backoff
        for up to ``retry_seconds``. Every statement run this way is idempotent or read-back checked.

        A pooled connection that worked before this call and is found dead (it died with a restarted or
        failed-over server, like every connection idle in the pool) is not charged: the call goes on at
        once with another one. Only a server that stays unreachable costs backoff and budget."""
        pool = self._pool
        if pool is None:
            raise StorageError("backend is not open")
        started = time.monotonic()
        deadline = started + self.retry_seconds
        delay = 0.05
        watchdog = self._watchdog
        barrier = False
        free = self.pool_size + 1  # bound on retries that are not charged
        while True:
            conn: psycopg.Connection | None = None
            try:
                # Waiting for a pooled connection counts against the same retry budget.
                with pool.connection(timeout=max(0.1, deadline - time.monotonic())) as conn:
                    watchdog.enter(conn)
                    try:
                        if barrier:
                            self._sync_barrier(conn)
                        result = fn(conn)
                        if self._commit_unacknowledged(conn):
                            # Never taken as success: retry fn (idempotent / read-back) after a barrier.
                            barrier = True
                            raise psycopg.OperationalError("commit not acknowledged by synchronous replication")
                        mark_ok(conn)
                        return result
                    finally:
                        watchdog.leave(conn)
            except LeaseLostError:
                raise
            except psycopg.errors.UndefinedTable as exc:
                raise SchemaError(
                    f"kit tables are missing in schema '{self.schema}': run `kit migrate` "
                    "(or let the app migrate on start)"
                ) from exc
            except psycopg.errors.InsufficientPrivilege as exc:
                raise StorageError(scrub(
                    f"the database role lacks a privilege kit needs ({str(exc).strip()}): grant it with the "
                    f"statements of `kit migrate --print-grants --worker-role ROLE` (docs/security.md)", self.url)
                ) from exc
            except (psycopg.Error, PoolTimeout) as exc:
                if not is_connection_error(exc):
                    raise StorageError(scrub(f"{type(exc).__name__}: {exc}", self.url)) from exc
                if conn is not None and conn.broken:
                    pool.mark_lost()
                    if ok_at(conn) < started and free > 0 and not self._closed and time.monotonic() < deadline:
                        free -= 1  # it died before this call could know: not the caller's cost
                        log.debug("a pooled connection was lost (%s): retrying at once on another",
                                  scrub(str(exc).strip(), self.url))
                        continue
                if not retry or self._closed or time.monotonic() + delay > deadline:
                    raise DatabaseUnavailableError(
                        scrub(f"database {redact_url(self.url)} unavailable: {exc}", self.url)
                    ) from exc
                log.warning("database error (%s), retrying in %.2fs", scrub(str(exc).strip(), self.url), delay)
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 2.0)

    # Recorded answers (call_outcomes) are deleted after this long: far beyond any call's retries.
    outcome_keep_seconds: ClassVar[float] = 86_400.0

    def _run_recorded(self, operation: str, body: Callable[[psycopg.Connection], T], *,
                      encode: Callable[[T], Any] = lambda r: r, decode: Callable[[Any], T] = lambda v: v) -> T:
        """Run ``body`` in one transaction that also records its answer (``encode``d to JSON) under a
        per-call token; ``_run`` retries lost connections. A retry first reads that token back: a row means
        an earlier attempt committed (its acknowledgement was lost), and that attempt's answer is returned
        (``decode``d) without running ``body`` again; no row means it rolled back. Never a guess: the answer
        commits with the writes or not at all. For control operations, not hot paths (one more statement)."""
        token = call_token()
        attempts = 0

        def attempt(conn: psycopg.Connection) -> T:
            nonlocal attempts
            attempts += 1
            if attempts > 1:
                row = conn.execute(self._q["call_outcome_get"], {"token": token}).fetchone()
                if row is not None:
                    return decode(json.loads(row[0]))
            with conn.transaction():
                result = body(conn)
                self._record_outcome(conn, token, operation, encode(result))
            return result

        return self._run(lambda conn: retry_if_cut_off(conn, attempt))

    def _record_outcome(self, conn: psycopg.Connection, token: str, operation: str, value: Any) -> None:
        """Inside the caller's transaction: its answer under ``token`` (see :meth:`_run_recorded`)."""
        conn.execute(self._q["call_outcome_record"], {"token": token, "operation": operation,
                                                      "result": json.dumps(value),
                                                      "keep": max(self.outcome_keep_seconds, 2 * self.retry_seconds)})

    def _claims_read_back(self, conn: psycopg.Connection, params: dict[str, Any]) -> list[tuple]:
        """What earlier attempts of a claim call took (``params``: its ``owner`` and ``token``), in the shape
        of a claim statement's rows: workflow id, name, inputs, epoch, recovery, deadline."""
        return conn.execute(self._q["claim_read_back"], {"owner": params["owner"],
                                                         "token": params["token"]}).fetchall()

    def _checkout_checked(self, timeout: float) -> tuple[Any, psycopg.Connection]:
        """A pooled connection for a transaction nobody retries blindly (a user's transactional step): one
        idle since a connection of the pool was found broken is checked first (one round trip, only then),
        and a dead one is dropped and replaced at once. Returns the pool's context manager and the connection."""
        pool = self._pool
        assert pool is not None
        deadline = time.monotonic() + timeout
        for _ in range(self.pool_size + 1):
            conn_cm = pool.connection(timeout=max(0.1, deadline - time.monotonic()))
            conn = conn_cm.__enter__()
            if not pool.suspect(conn):
                return conn_cm, conn
            self._watchdog.enter(conn)
            try:
                conn.execute("")
                mark_ok(conn)
                return conn_cm, conn
            except psycopg.Error as exc:
                if not conn.broken:
                    conn_cm.__exit__(type(exc), exc, exc.__traceback__)
                    raise
                pool.mark_lost()
                conn_cm.__exit__(type(exc), exc, exc.__traceback__)  # the pool drops the broken connection
            finally:
                self._watchdog.leave(conn)
        conn_cm = pool.connection(timeout=max(0.1, deadline - time.monotonic()))
        return conn_cm, conn_cm.__enter__()

    def _lease_connect(self) -> psycopg.Connection:
        """A new connection for the heartbeat (:class:`LeaseConnection`), its connect bounded by the
        renewal's budget."""
        kwargs = self._conn_kwargs()
        if "connect_timeout" in kwargs:  # ours, not the URL's: bound a connect by the renewal's budget
            kwargs["connect_timeout"] = str(max(2, int(min(self.connect_timeout, self._lease_budget))))
        conn = self.connection_class.connect(self.dsn, **kwargs)
        self._configure_conn(conn)
        return conn
