"""PostgreSQL backend: psycopg 3 + psycopg_pool, named SQL, epoch-fenced writes, LISTEN/NOTIFY."""

from __future__ import annotations

import logging
import os
import random
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from importlib import resources
from typing import Any, TypeVar

import psycopg
import psycopg.errors
from kit.backends.postgres.leases import LeaseConnection
from kit.backends.postgres.pool import Pool, mark_ok, ok_at
from psycopg import sql
from psycopg_pool import PoolTimeout

from kit.config import redact_url
from kit.errors import (
    DatabaseUnavailableError,
    LeaseLostError,
    SchemaError,
    StorageError,
    TransientStorageError,
    UsageError,
    WorkflowConflictError,
    WorkflowDuplicateError,
    WorkflowNotFoundError,
    WorkflowStateError,
)
from kit.groupcommit import GroupCommitter
from kit.storage import (
    Backend,
    Capabilities,
    Claim,
    ClaimRequest,
    Created,
    Finish,
    FinishedBucket,
    ForkRequest,
    MonitorQuery,
    MonitorStats,
    NewWorkflow,
    Percentiles,
    QueueSpec,
    QueueStats,
    Status,
    StepRecord,
    StepResult,
    StepTransaction,
    WorkerInfo,
    WorkerStats,
    WorkflowQuery,
    WorkflowRecord,
)

log = logging.getLogger("kit.postgres")
T = TypeVar("T")

_ORDERS = {  # WorkflowQuery.order -> ORDER BY (the id breaks ties so pages are stable)
    "created_desc": "created_at DESC, workflow_id",
    "created_asc": "created_at ASC, workflow_id",
    "finished_desc": "finished_at DESC NULLS LAST, workflow_id",
    "duration_desc": "finished_at - started_at DESC NULLS LAST, workflow_id",
}
_MIGRATION_LOCK = 0x6B6974  # "kit": pg_advisory_xact_lock key serialising migrations
_TRANSIENT_SQLSTATES = {"40001", "40P01", "55P03", "57P01", "57P02", "57P03", "08000", "08003", "08006", "25006"}


def _load_queries() -> dict[str, str]:
    text = resources.files(__package__).joinpath("queries.sql").read_text(encoding="utf-8")
    out: dict[str, str] = {}
    for block in re.split(r"^-- name: ", text, flags=re.M)[1:]:
        name, _, body = block.partition("\n")
        lines = [ln for ln in body.splitlines() if not ln.lstrip().startswith("--")]
        out[name.strip()] = "\n".join(lines).strip()
    return out


def _load_migrations() -> list[tuple[int, str, str]]:
    folder = resources.files(__package__).joinpath("migrations")
    found = []
    for entry in folder.iterdir():
        m = re.match(r"^(\d+)_(\w+)\.sql$", entry.name)
        if m:
            found.append((int(m.group(1)), m.group(2), entry.read_text(encoding="utf-8")))
    return sorted(found)


_QUERIES = _load_queries()
_MIGRATIONS = _load_migrations()


def capabilities_from_version(version: str) -> Capabilities:
    """Capabilities of a server from its ``SELECT version()`` text (pure, table-tested)."""
    lowered = version.lower()
    if "cockroachdb" in lowered:
        # CockroachDB speaks the protocol but needs its own backend (docs/backends.md).
        return Capabilities(retry_serialization_failures=True, follower_reads=True, server_version=version)
    return Capabilities(
        listen_notify=True,
        skip_locked=True,
        transactional_steps=True,
        advisory_locks=True,
        server_version=version,
    )


# PostgreSQL's WARNING when a commit's wait for synchronous replication is cancelled (the commit is then
# local only): "canceling wait for synchronous replication ..." / "canceling the wait for ...".
_SYNC_REP_CANCELLED = "wait for synchronous replication"


def _is_connection_error(exc: BaseException) -> bool:
    if isinstance(exc, (psycopg.OperationalError, PoolTimeout)) and not isinstance(
        exc, psycopg.errors.QueryCanceled
    ):
        return True
    return getattr(exc, "sqlstate", None) in _TRANSIENT_SQLSTATES


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


class _PgStepTx(StepTransaction):
    def __init__(self, backend: PostgresBackend, conn: psycopg.Connection, step: StepResult) -> None:
        self._backend = backend
        self._conn = conn
        self._step = step
        self.record: StepRecord | None = None
        self.pending: StepResult | None = None

    @property
    def connection(self) -> psycopg.Connection:
        return self._conn

    def checkpoint(self, output: str | None) -> None:
        """Insert the checkpoint inside this transaction; the commit happens on leaving the block."""
        step = replace(self._step, output=output)
        cur = self._conn.execute(self._backend._q["step_record"], _step_params(step))
        if cur.fetchone() is None:
            raise LeaseLostError(f"workflow {step.workflow_id}: step {step.step_id} fenced (lease lost)")
        self.pending = step


def _step_params(step: StepResult) -> dict[str, Any]:
    return {
        "workflow_id": step.workflow_id,
        "step_id": step.step_id,
        "name": step.name,
        "output": step.output,
        "error": step.error,
        "epoch": step.epoch,
        "attempts": step.attempts,
        "started_at": step.started_at,
    }


def _recorded(step: StepResult, finished_at: Any) -> StepRecord:
    return StepRecord(step.workflow_id, step.step_id, step.name, step.output, step.error, step.epoch,
                      step.attempts, step.started_at, finished_at)


def _wf(row: tuple) -> WorkflowRecord:
    return WorkflowRecord(
        workflow_id=row[0], name=row[1], status=Status(row[2]), inputs=row[3], output=row[4], error=row[5],
        queue=row[6], app_version=row[7], owner=row[8], epoch=row[9], lease_expires_at=row[10],
        created_at=row[11], started_at=row[12], finished_at=row[13], recoveries=row[14], parent_id=row[15],
    )


def _step(row: tuple) -> StepRecord:
    return StepRecord(
        workflow_id=row[0], step_id=row[1], name=row[2], output=row[3], error=row[4], epoch=row[5],
        attempts=row[6], started_at=row[7], finished_at=row[8],
    )


class PostgresBackend(Backend):
    """Single PostgreSQL (13+). Claims with SKIP LOCKED, checkpoints fenced by the lease epoch."""

    name = "postgres"

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
        self.url = url
        self.schema = schema
        self.pool_size = max(2, pool_size)
        self.connect_timeout = connect_timeout
        self.retry_seconds = retry_seconds
        self.use_notify = notify
        self._pool: Pool | None = None
        self._caps = Capabilities()
        # Rendered to text once: psycopg then caches each statement's conversion and prepared plan.
        self._q = {k: sql.SQL(v).format(schema=sql.Identifier(schema)).as_string(None) for k, v in _QUERIES.items()}
        self._listen_conn: psycopg.Connection | None = None
        self._listen_lock = threading.Lock()
        self._listening: set[str] = set()
        self._closed = False
        self._watchdog = _Watchdog(call_timeout)
        # The heartbeat's own connection (lease_renew), bounded by the renewal budget (set per call).
        self._lease_budget = call_timeout
        self._lease_watchdog = _Watchdog(call_timeout)
        self._leases = LeaseConnection(self._lease_connect, self._lease_watchdog, _is_connection_error,
                                       self._commit_unacknowledged)
        # Connections (by id) that got "canceling wait for synchronous replication": their last commit is
        # local only, not acknowledged (see _commit_unacknowledged).
        self._unreplicated: set[int] = set()
        # Checkpoints and finishes of concurrently running workflows share round trips (group commit).
        self._steps_gc: GroupCommitter[StepResult, StepRecord] = GroupCommitter(self._flush_steps)
        self._finish_gc: GroupCommitter[Finish, bool] = GroupCommitter(self._flush_finishes)

    # -- connection management ----------------------------------------------------------------------
    def _conn_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"autocommit": True, "prepare_threshold": 0}
        try:
            given = psycopg.conninfo.conninfo_to_dict(self.url)
        except psycopg.ProgrammingError as exc:
            from kit.errors import ConfigError

            raise ConfigError(f"malformed database URL {redact_url(self.url)}: {exc}") from None
        defaults = {"connect_timeout": str(max(1, int(round(self.connect_timeout)))), "application_name": "kit"}
        host = str(given.get("host", ""))
        if host and not all(h.startswith("/") for h in host.split(",")):
            # TCP: a hung socket (paused primary, partition) must fail instead of blocking forever.
            defaults.update(keepalives="1", keepalives_idle="5", keepalives_interval="2", keepalives_count="3",
                            tcp_user_timeout="15000")
        for key, value in defaults.items():
            if key not in given:
                kwargs[key] = value
        return kwargs

    def open(self) -> None:
        if self._pool is not None:
            return
        pool = Pool(
            self.url, min_size=1, max_size=self.pool_size, kwargs=self._conn_kwargs(), open=False,
            name="kit", timeout=max(self.connect_timeout * 2, 10.0), reconnect_timeout=self.retry_seconds,
            configure=self._configure_conn,
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
        version = self._run(lambda c: c.execute("SELECT version()").fetchone()[0])
        self._caps = capabilities_from_version(version)

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
        (A transaction that only takes an xid commits asynchronously; a transactional WAL message does not.)"""
        try:
            conn.execute("SELECT pg_logical_emit_message(true, 'kit', 'sync barrier')")
        except psycopg.errors.UndefinedFunction:
            return  # a PostgreSQL-compatible server without WAL messages: nothing to wait for
        if self._commit_unacknowledged(conn):
            raise psycopg.OperationalError("synchronous replication barrier not acknowledged")

    def _probe_error(self) -> str:
        """One direct connection attempt, to report why the pool could not connect."""
        try:
            with psycopg.connect(self.url, **self._conn_kwargs()):
                return "connection timed out"
        except psycopg.Error as exc:
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return _scrub(text, self.url)

    def close(self) -> None:
        self._closed = True
        self._leases.close()
        with self._listen_lock:
            if self._listen_conn is not None:
                try:
                    self._listen_conn.close()
                except psycopg.Error:
                    pass
                self._listen_conn = None
        if self._pool is not None:
            self._pool.close(timeout=2)
            self._pool = None

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
                raise StorageError(_scrub(
                    f"the database role lacks a privilege kit needs ({str(exc).strip()}): grant it with the "
                    f"statements of `kit migrate --print-grants --worker-role ROLE` (docs/security.md)", self.url)
                ) from exc
            except (psycopg.Error, PoolTimeout) as exc:
                if not _is_connection_error(exc):
                    raise StorageError(_scrub(f"{type(exc).__name__}: {exc}", self.url)) from exc
                if conn is not None and conn.broken:
                    pool.mark_lost()
                    if ok_at(conn) < started and free > 0 and not self._closed and time.monotonic() < deadline:
                        free -= 1  # it died before this call could know: not the caller's cost
                        log.debug("a pooled connection was lost (%s): retrying at once on another",
                                  _scrub(str(exc).strip(), self.url))
                        continue
                if not retry or self._closed or time.monotonic() + delay > deadline:
                    raise DatabaseUnavailableError(
                        _scrub(f"database {redact_url(self.url)} unavailable: {exc}", self.url)
                    ) from exc
                log.warning("database error (%s), retrying in %.2fs", _scrub(str(exc).strip(), self.url), delay)
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 2.0)

    # -- schema ------------------------------------------------------------------------------------
    def _migration_statements(self, body: str) -> sql.Composed:
        return sql.SQL(body).format(schema=sql.Identifier(self.schema))

    def migration_sql(self) -> str:
        parts = [f"CREATE SCHEMA IF NOT EXISTS {sql.Identifier(self.schema).as_string(None)};",
                 self._migrations_table_sql().as_string(None) + ";"]
        for version, name, body in _MIGRATIONS:
            parts.append(f"-- migration {version:04d}_{name}")
            parts.append(self._migration_statements(body).as_string(None))
            # Recorded like `kit migrate` does, so a schema built from this script is at this version.
            parts.append(sql.SQL("INSERT INTO {}.schema_migrations (version, name) VALUES ({}, {});").format(
                sql.Identifier(self.schema), sql.Literal(version), sql.Literal(name)).as_string(None))
        return "\n".join(parts) + "\n"

    def grants_sql(self, *, worker_role: str | None = None, monitor_role: str | None = None) -> str:
        """GRANT statements for a least-privilege worker role and a read-only monitor role."""
        from kit.backends.postgres.grants import grants_sql

        return grants_sql(self.schema, _QUERIES, _MIGRATIONS, worker_role=worker_role, monitor_role=monitor_role)

    def _migrations_table_sql(self) -> sql.Composed:
        return sql.SQL(
            "CREATE TABLE IF NOT EXISTS {schema}.schema_migrations "
            "(version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        ).format(schema=sql.Identifier(self.schema))

    def migrate(self) -> list[int]:
        newest = max((v for v, _, _ in _MIGRATIONS), default=0)
        # Already at the latest version: no DDL and no lock, so a role without DDL privileges can open.
        current = self.schema_version()
        if current is not None and current > newest:
            raise SchemaError(f"schema '{self.schema}' is at version {current}, newer than this kit "
                              f"understands ({newest}): upgrade kit")
        if current == newest:
            return []

        def apply(conn: psycopg.Connection) -> list[int]:
            applied: list[int] = []
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
                conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema)))
                conn.execute(self._migrations_table_sql())
                done = {
                    r[0]
                    for r in conn.execute(
                        sql.SQL("SELECT version FROM {}.schema_migrations").format(sql.Identifier(self.schema))
                    )
                }
                newest = max((v for v, _, _ in _MIGRATIONS), default=0)
                if done and max(done) > newest:
                    raise SchemaError(
                        f"schema '{self.schema}' is at version {max(done)}, newer than this kit "
                        f"understands ({newest}): upgrade kit"
                    )
                for version, name, body in _MIGRATIONS:
                    if version in done:
                        continue
                    conn.execute(self._migration_statements(body), prepare=False)
                    conn.execute(
                        sql.SQL("INSERT INTO {}.schema_migrations (version, name) VALUES (%s, %s)").format(
                            sql.Identifier(self.schema)
                        ),
                        (version, name),
                    )
                    applied.append(version)
            return applied

        try:
            return self._run(apply)
        except StorageError as exc:
            if not isinstance(exc.__cause__, psycopg.errors.InsufficientPrivilege):
                raise
            where = "has no kit tables" if current is None else f"is at version {current}"
            raise SchemaError(
                f"schema '{self.schema}' {where} and this kit needs version {newest}, but the database role "
                "may not change the schema: run `kit migrate` as the schema owner first (then open workers "
                "with migrate=False or leave it on: an up-to-date schema needs no privileges to check)"
            ) from exc.__cause__

    def schema_version(self) -> int | None:
        def read(conn: psycopg.Connection) -> int | None:
            exists = conn.execute(
                "SELECT to_regclass(%s) IS NOT NULL",
                (sql.Identifier(self.schema).as_string(conn) + ".schema_migrations",),
            ).fetchone()[0]
            if not exists:
                return None
            row = conn.execute(
                sql.SQL("SELECT max(version) FROM {}.schema_migrations").format(sql.Identifier(self.schema))
            ).fetchone()
            return row[0]

        return self._run(read)

    # -- workflows ------------------------------------------------------------------------------------
    def workflow_create(self, wf: NewWorkflow) -> Created:
        params = {
            "workflow_id": wf.workflow_id, "name": wf.name, "inputs": wf.inputs, "queue": wf.queue,
            "priority": wf.priority, "app_version": wf.app_version, "parent_id": wf.parent_id,
            "owner": wf.owner, "lease": wf.lease_seconds, "dedup_id": wf.dedup_id,
            "delay": float(wf.delay_seconds), "partition_key": wf.partition_key, "channel": self.wake_channel,
            "deadline": wf.deadline, "parent_epoch": wf.parent_epoch,
        }

        attempts = 0
        # Submitted work (no owner) goes through workflow_enqueue, which also wakes idle workers.
        stmt = self._q["workflow_create" if wf.owner is not None else "workflow_enqueue"]

        def create(conn: psycopg.Connection) -> Created:
            nonlocal attempts
            attempts += 1
            try:
                row = conn.execute(stmt, params).fetchone()
            except psycopg.errors.UniqueViolation as exc:
                if wf.dedup_id is None:
                    raise
                live = conn.execute(self._q["workflow_by_dedup"], {"queue": wf.queue,
                                                                    "dedup_id": wf.dedup_id}).fetchone()
                if live is None:  # the holder finished in between: try again
                    raise psycopg.errors.SerializationFailure("dedup holder finished during enqueue") from exc
                raise WorkflowDuplicateError(
                    f"queue {wf.queue or 'default'!r} already has a live workflow {live[0]!r} with dedup id "
                    f"{wf.dedup_id!r}", live[0]) from None
            if row is not None:
                status = Status.RUNNING if wf.owner else Status.PENDING
                return Created(True, row[0], wf.name, status)
            existing = conn.execute(self._q["workflow_get"], {"workflow_id": wf.workflow_id}).fetchone()
            if existing is None and wf.parent_epoch is not None:
                parent = conn.execute(self._q["workflow_epoch"], {"workflow_id": wf.parent_id}).fetchone()
                if parent is None or parent[0] != wf.parent_epoch or parent[1] != Status.RUNNING.value:
                    raise LeaseLostError(f"workflow {wf.parent_id}: lease lost (epoch {wf.parent_epoch} superseded, "
                                         "cancelled or taken over) before it could start a child")
            if existing is None:  # deleted between the two statements: try again
                raise psycopg.errors.SerializationFailure("workflow vanished during create")
            rec = _wf(existing)
            # Our own insert whose acknowledgement was lost (only possible when an earlier attempt of this
            # call ran): same owner, epoch 1, same inputs. On the first attempt an existing row is never ours,
            # even with the same owner (one process starting the same id twice must not run it twice, G1).
            mine = (attempts > 1 and wf.owner is not None and rec.owner == wf.owner and rec.epoch == 1
                    and rec.inputs == wf.inputs)
            return Created(mine, rec.epoch, rec.name, rec.status)

        return self._run(create)

    def workflow_get(self, workflow_id: str) -> WorkflowRecord | None:
        row = self._run(lambda c: c.execute(self._q["workflow_get"], {"workflow_id": workflow_id}).fetchone())
        return _wf(row) if row else None

    def workflow_finish(self, fin: Finish) -> bool:
        return self._finish_gc.submit(fin)

    @staticmethod
    def _error_type(error: str | None) -> str | None:
        if not error:
            return None
        m = re.search(r'"type":\s*"([^"]*)"', error)
        return m.group(1) if m else None

    def _finish_resolved(self, conn: psycopg.Connection, fin: Finish) -> bool:
        """The finish changed nothing: fenced, or our earlier attempt committed and its ack was lost."""
        row = conn.execute(self._q["workflow_epoch"], {"workflow_id": fin.workflow_id}).fetchone()
        return row is not None and row[0] == fin.epoch and row[1] == fin.status.value

    def _flush_finishes(self, batch: Sequence[Finish]) -> list[bool | BaseException]:
        if len(batch) == 1:
            fin = batch[0]
            params = {"workflow_id": fin.workflow_id, "epoch": fin.epoch, "status": fin.status.value,
                      "output": fin.output, "error": fin.error, "error_type": self._error_type(fin.error)}

            def one(conn: psycopg.Connection) -> list[bool | BaseException]:
                if conn.execute(self._q["workflow_finish"], params).rowcount == 1:
                    return [True]
                return [self._finish_resolved(conn, fin)]

            return self._run(one)
        params = {
            "workflow_ids": [f.workflow_id for f in batch], "epochs": [f.epoch for f in batch],
            "statuses": [f.status.value for f in batch], "outputs": [f.output for f in batch],
            "errors": [f.error for f in batch], "error_types": [self._error_type(f.error) for f in batch],
        }

        def many(conn: psycopg.Connection) -> list[bool | BaseException]:
            done = {r[0] for r in conn.execute(self._q["workflow_finish_many"], params)}
            return [True if f.workflow_id in done else self._finish_resolved(conn, f) for f in batch]

        return self._run(many)

    def workflow_release(self, workflow_id: str, epoch: int) -> bool:
        params = {"workflow_id": workflow_id, "epoch": epoch, "channel": self.wake_channel}
        return self._run(lambda c: c.execute(self._q["workflow_release"], params).rowcount == 1)

    def workflow_list(self, query: WorkflowQuery) -> list[WorkflowRecord]:
        cols = sql.SQL(
            "workflow_id, name, status, inputs, output, error, queue, app_version, owner, epoch, "
            "lease_expires_at, created_at, started_at, finished_at, recoveries, parent_id"
        )
        where: list[sql.Composable] = []
        params: list[Any] = []
        if query.statuses:
            where.append(sql.SQL("status = ANY(%s)"))
            params.append([s.value for s in query.statuses])
        for column, value in (("name", query.name), ("queue", query.queue), ("app_version", query.app_version)):
            if value is not None:
                where.append(sql.SQL("{} = %s").format(sql.Identifier(column)))
                params.append(value)
        if query.since is not None:
            where.append(sql.SQL("created_at >= %s"))
            params.append(query.since)
        if query.until is not None:
            where.append(sql.SQL("created_at < %s"))
            params.append(query.until)
        if query.error_contains:
            where.append(sql.SQL("error ILIKE %s"))
            params.append("%" + query.error_contains.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%")
        order = sql.SQL(_ORDERS.get(query.order, _ORDERS["created_desc"]))
        stmt = sql.SQL("SELECT {} FROM {}.workflows {} ORDER BY {} LIMIT %s").format(
            cols,
            sql.Identifier(self.schema),
            sql.SQL("WHERE ") + sql.SQL(" AND ").join(where) if where else sql.SQL(""),
            order,
        )
        params.append(max(1, min(int(query.limit), 100_000)))
        return [_wf(r) for r in self._run(lambda c: c.execute(stmt, params).fetchall())]

    def workflow_wait(self, workflow_ids: Sequence[str], timeout: float) -> list[WorkflowRecord]:
        ids = list(workflow_ids)
        deadline = time.monotonic() + max(0.0, timeout)
        delay = 0.01
        while True:
            rows = self._run(lambda c: c.execute(self._q["workflow_get_many_terminal"],
                                                 {"workflow_ids": ids}).fetchall())
            if rows or time.monotonic() >= deadline:
                return [_wf(r) for r in rows]
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 1.5, 0.5)

    # -- claims and leases ----------------------------------------------------------------------------
    def workflow_claim(self, req: ClaimRequest) -> list[Claim]:
        if not req.names or req.limit <= 0:
            return []
        params = {
            "owner": req.owner, "names": list(req.names), "limit": req.limit, "lease": req.lease_seconds,
            "any_queue": req.queues is None, "queues": list(req.queues or []),
            "versions": None if req.versions is None else list(req.versions),
        }
        rows = self._run(lambda c: c.execute(self._q["workflow_claim"], params).fetchall())
        return [Claim(workflow_id=r[0], name=r[1], inputs=r[2], epoch=r[3], recovery=r[4], deadline=r[5])
                for r in rows]

    def lease_renew(self, owner: str, lease_seconds: float, worker: WorkerInfo | None = None) -> dict[str, int]:
        """On the heartbeat's own connection (never queued behind step traffic), retried within a quarter
        of the lease; a connection that died with the server is replaced at once."""
        if worker is not None:
            params = {"owner": owner, "lease": lease_seconds, "hostname": worker.hostname, "pid": worker.pid}
            stmt = self._q["lease_renew"]
        else:
            params = {"owner": owner, "lease": lease_seconds}
            stmt = self._q["lease_renew_no_worker"]
        if self._pool is None:
            raise StorageError("backend is not open")
        budget = max(0.5, min(self.retry_seconds, lease_seconds / 4))
        self._lease_budget = self._lease_watchdog.limit = budget
        try:
            rows = self._leases.execute(stmt, params, budget)
        except psycopg.errors.UndefinedTable as exc:
            raise SchemaError(f"kit tables are missing in schema '{self.schema}': run `kit migrate`") from exc
        except psycopg.Error as exc:
            cls = DatabaseUnavailableError if _is_connection_error(exc) else StorageError
            raise cls(_scrub(f"lease renewal failed: database {redact_url(self.url)}: {exc}", self.url)) from exc
        return {r[0]: r[1] for r in rows}

    def _lease_connect(self) -> psycopg.Connection:
        kwargs = self._conn_kwargs()
        if "connect_timeout" in kwargs:  # ours, not the URL's: bound a connect by the renewal's budget
            kwargs["connect_timeout"] = str(max(2, int(min(self.connect_timeout, self._lease_budget))))
        conn = psycopg.connect(self.url, **kwargs)
        self._configure_conn(conn)
        return conn

    # -- steps ------------------------------------------------------------------------------------------
    def step_record(self, step: StepResult) -> StepRecord:
        return self._steps_gc.submit(step)

    def _flush_steps(self, batch: Sequence[StepResult]) -> list[StepRecord | BaseException]:
        if len(batch) == 1:
            step = batch[0]
            params = _step_params(step)

            def one(conn: psycopg.Connection) -> list[StepRecord | BaseException]:
                row = conn.execute(self._q["step_record"], params).fetchone()
                if row is not None:
                    return [_recorded(step, row[0])]
                return [self._resolve_step(conn, step)]

            return self._run(one)
        params = {
            "workflow_ids": [s.workflow_id for s in batch], "step_ids": [s.step_id for s in batch],
            "names": [s.name for s in batch], "outputs": [s.output for s in batch],
            "errors": [s.error for s in batch], "epochs": [s.epoch for s in batch],
            "attempts": [s.attempts for s in batch], "started": [s.started_at for s in batch],
        }

        def many(conn: psycopg.Connection) -> list[StepRecord | BaseException]:
            done = {(r[0], r[1]): r[2] for r in conn.execute(self._q["step_record_many"], params)}
            out: list[StepRecord | BaseException] = []
            for step in batch:
                finished = done.get((step.workflow_id, step.step_id))
                if finished is not None:
                    out.append(_recorded(step, finished))
                    continue
                try:
                    out.append(self._resolve_step(conn, step))
                except (LeaseLostError, TransientStorageError) as exc:
                    out.append(exc)
            return out

        return self._run(many)

    def _resolve_step(self, conn: psycopg.Connection, step: StepResult) -> StepRecord:
        """The checkpoint insert changed nothing: find out why instead of guessing."""
        existing = conn.execute(self._q["step_get"],
                                {"workflow_id": step.workflow_id, "step_id": step.step_id}).fetchone()
        owner = conn.execute(self._q["workflow_epoch"], {"workflow_id": step.workflow_id}).fetchone()
        if existing is not None and existing[5] == step.epoch:
            return _step(existing)  # our own commit, acknowledged late (lost connection during COMMIT)
        if owner is None or owner[0] != step.epoch or owner[1] != Status.RUNNING.value:
            raise LeaseLostError(
                f"workflow {step.workflow_id}: lease lost (epoch {step.epoch} superseded) before step "
                f"{step.step_id} '{step.name}' was recorded"
            )
        if existing is not None:
            return _step(existing)  # recorded by an earlier epoch: replay adopts it
        raise TransientStorageError("checkpoint neither recorded nor fenced; retrying")

    def step_list(self, workflow_id: str) -> list[StepRecord]:
        rows = self._run(lambda c: c.execute(self._q["step_list"], {"workflow_id": workflow_id}).fetchall())
        return [_step(r) for r in rows]

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

    @contextmanager
    def step_transaction(self, step: StepResult) -> Iterator[_PgStepTx]:
        """Run a transactional step's body and its checkpoint in one transaction.

        The engine calls ``tx.checkpoint(output)`` as the block's last action; leaving the block commits.
        If the COMMIT's outcome is unknown (connection lost), the checkpoint row is read back: present
        with our epoch means committed (user writes included), absent means rolled back.
        """
        if self._pool is None:
            raise StorageError("backend is not open")
        try:
            # Wait as long as any other call would (the retry budget): a failover must not abandon the step.
            conn_cm, conn = self._checkout_checked(max(1.0, self.retry_seconds))
        except (psycopg.Error, PoolTimeout) as exc:
            raise DatabaseUnavailableError(_scrub(f"database unavailable: {exc}", self.url)) from exc
        tx = _PgStepTx(self, conn, step)
        try:
            committed = False
            try:
                with conn.transaction():
                    yield tx
                    if tx.pending is None:
                        raise StorageError("transactional step finished without a checkpoint")
                if self._commit_unacknowledged(conn):  # local-only commit: resolve it as ambiguous
                    raise psycopg.OperationalError("commit not acknowledged by synchronous replication")
                committed = True
            except psycopg.OperationalError as exc:
                if not (conn.broken or conn.closed):
                    raise  # an error of the user's SQL (e.g. statement timeout): a normal step failure
                if tx.pending is None:
                    raise TransientStorageError(_scrub(f"connection lost during step: {exc}", self.url)) from exc
                # Ambiguous commit: learn the outcome (after a replication barrier: acknowledged state only).
                rec = self._run(lambda c: (self._sync_barrier(c), c.execute(self._q["step_get"], {
                    "workflow_id": step.workflow_id, "step_id": step.step_id}).fetchone())[1])
                if rec is not None and rec[5] == step.epoch:
                    tx.record = _step(rec)
                    return
                raise TransientStorageError("transactional step commit was lost; it will run again") from exc
            if committed and tx.pending is not None:
                p = tx.pending
                tx.record = StepRecord(p.workflow_id, p.step_id, p.name, p.output, p.error, p.epoch,
                                       p.attempts, p.started_at, None)
        finally:
            conn_cm.__exit__(None, None, None)

    # -- workers and notifications ---------------------------------------------------------------------
    def worker_list(self) -> list[WorkerInfo]:
        rows = self._run(lambda c: c.execute(self._q["worker_list"]).fetchall())
        return [WorkerInfo(worker_id=r[0], hostname=r[1], pid=r[2], started_at=r[3], heartbeat_at=r[4]) for r in rows]

    @property
    def wake_channel(self) -> str:
        return f"{self.schema}_wake"

    def notify(self, channel: str, payload: str = "") -> None:
        try:
            self._run(lambda c: c.execute(self._q["notify"], {"channel": channel, "payload": payload}), retry=False)
        except StorageError as exc:  # a lost wake-up only delays work until the next poll
            log.debug("notify failed: %s", exc)

    def notify_wait(self, channels: Sequence[str], timeout: float) -> list[str]:
        if not (self.use_notify and self._caps.listen_notify):
            time.sleep(timeout)
            return []
        with self._listen_lock:
            try:
                conn = self._listen_conn
                if conn is None or conn.closed:
                    conn = psycopg.connect(self.url, **self._conn_kwargs())
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
                log.debug("listen connection lost: %s", _scrub(str(exc), self.url))
                if self._listen_conn is not None:
                    try:
                        self._listen_conn.close()
                    except psycopg.Error:
                        pass
                self._listen_conn = None
                time.sleep(min(timeout, 0.5))
                return []

    # -- observability ---------------------------------------------------------------------------------
    def workflow_children(self, workflow_id: str, limit: int = 1000) -> list[WorkflowRecord]:
        params = {"workflow_id": workflow_id, "limit": max(1, min(int(limit), 100_000))}
        rows = self._run(lambda c: c.execute(self._q["workflow_children"], params).fetchall())
        return [_wf(r) for r in rows]

    def monitor_stats(self, query: MonitorQuery) -> MonitorStats:
        """Seven bounded statements sent in one pipeline (one round trip) on one pooled connection."""
        f = {"name": query.name, "queue": query.queue}
        plan: list[tuple[str, dict[str, Any]]] = [
            ("monitor_node", {}),
            ("monitor_workers", {"alive": float(query.alive_seconds), "limit": int(query.workers)}),
            ("monitor_queues", f),
            ("monitor_finished", {**f, "bucket": int(query.bucket_seconds), "window": int(query.window_seconds)}),
            ("monitor_latency", {**f, "window": int(query.latency_window_seconds), "rows": int(query.latency_rows)}),
            ("monitor_failures", {**f, "limit": int(query.failures)}),
            ("monitor_oldest_pending", f),
        ]

        def read(conn: psycopg.Connection) -> list[list[tuple]]:
            cursors = []
            with conn.pipeline():
                for name, params in plan:
                    cur = conn.cursor()
                    cur.execute(self._q[name], params)
                    cursors.append(cur)
            return [cur.fetchall() for cur in cursors]

        node, workers, queues, finished, latency, failures, oldest = self._run(read)
        now, in_recovery, addr, port = node[0]
        where = f"{addr}:{port}" if addr else "local socket"

        def pct(n: int, p: list[float] | None) -> Percentiles:
            if not n or not p:
                return Percentiles(count=int(n or 0))
            return Percentiles(count=int(n), p50=p[0], p95=p[1], p99=p[2])

        lat = latency[0]
        return MonitorStats(
            server_time=now,
            primary=not in_recovery,
            node=where,
            workers=tuple(WorkerStats(worker_id=r[0], hostname=r[1], pid=r[2], started_at=r[3], heartbeat_at=r[4],
                                      alive=bool(r[5]), claims=int(r[6])) for r in workers),
            queues=tuple(QueueStats(queue=r[0], depth=int(r[1]), in_flight=int(r[2]), concurrency_limit=r[3],
                                    rate_limit_per_second=r[4]) for r in queues),
            finished=tuple(FinishedBucket(start=r[0], status=Status(r[1]), count=int(r[2])) for r in finished),
            workflow_latency=pct(lat[0], lat[1]),
            step_latency=pct(lat[2], lat[3]),
            recent_failures=tuple(_wf(r) for r in failures),
            oldest_pending=_wf(oldest[0]) if oldest else None,
        )


    # -- messages and events ---------------------------------------------------------------------------
    def message_send(self, workflow_id: str, topic: str, body: str, sender_key: str | None = None,
                     sender: tuple[str, int] | None = None) -> bool:
        params = {"workflow_id": workflow_id, "topic": topic, "body": body, "sender_key": sender_key,
                  "channel": self.wake_channel if self.use_notify else None,
                  "sender_id": sender[0] if sender else None, "sender_epoch": sender[1] if sender else None}
        exists, _inserted, _, sender_ok = self._run(lambda c: c.execute(self._q["message_send"], params).fetchone())
        if not sender_ok:
            raise LeaseLostError(f"workflow {sender[0] if sender else '?'}: lease lost (epoch "
                                 f"{sender[1] if sender else '?'} superseded); message not sent")
        return bool(exists)

    def _fenced_transaction(self, step: StepResult,
                            body: Callable[[psycopg.Connection], StepRecord | None]) -> StepRecord | None:
        """Run ``body`` in one transaction holding the workflow row under our epoch (FOR KEY SHARE). If
        the step is already recorded (an earlier attempt whose COMMIT acknowledgement was lost), return
        that record instead; a COMMIT lost this time is resolved by the retry reading it back."""
        key = {"workflow_id": step.workflow_id, "step_id": step.step_id}

        def run(conn: psycopg.Connection) -> StepRecord | None:
            try:
                with conn.transaction():
                    if conn.execute(self._q["workflow_fence"], {"workflow_id": step.workflow_id,
                                                                "epoch": step.epoch}).fetchone() is None:
                        raise LeaseLostError(
                            f"workflow {step.workflow_id}: lease lost (epoch {step.epoch} superseded)")
                    existing = conn.execute(self._q["step_get"], key).fetchone()
                    if existing is not None:
                        return _step(existing)
                    return body(conn)
            except psycopg.errors.UniqueViolation as exc:
                if exc.diag.constraint_name != "steps_pkey":
                    raise TransientStorageError(f"concurrent write: {exc.diag.constraint_name}") from exc
                # The same step committed concurrently (the unique key caught it; ours rolled back).
                return _step(conn.execute(self._q["step_get"], key).fetchone())

        return self._run(run)

    def message_receive(self, step: StepResult, topic: str) -> StepRecord | None:
        waiting = self._run(lambda c: c.execute(self._q["message_waiting"], {
            "workflow_id": step.workflow_id, "topic": topic, "step_id": step.step_id}).fetchone()[0])
        if not waiting:  # nothing to take: no transaction, no locks (a waiting recv re-checks often)
            return None

        def take(conn: psycopg.Connection) -> StepRecord | None:
            row = conn.execute(self._q["message_take"], {"workflow_id": step.workflow_id, "topic": topic,
                                                         "step_id": step.step_id}).fetchone()
            if row is None:
                return None
            recorded = replace(step, output=row[0])
            finished = conn.execute(self._q["step_insert"], _step_params(recorded)).fetchone()[0]
            return _recorded(recorded, finished)

        return self._fenced_transaction(step, take)

    def event_set(self, step: StepResult, key: str) -> StepRecord:
        def upsert(conn: psycopg.Connection) -> StepRecord:
            conn.execute(self._q["event_upsert"], {"workflow_id": step.workflow_id, "key": key,
                                                   "value": step.output, "step_id": step.step_id})
            finished = conn.execute(self._q["step_insert"], _step_params(step)).fetchone()[0]
            if self.use_notify:
                conn.execute(self._q["notify"], {"channel": self.wake_channel, "payload": "e:" + step.workflow_id})
            return _recorded(step, finished)

        record = self._fenced_transaction(step, upsert)
        assert record is not None
        return record

    def event_get(self, workflow_id: str, key: str) -> str | None:
        row = self._run(lambda c: c.execute(self._q["event_get"], {"workflow_id": workflow_id, "key": key}).fetchone())
        return row[0] if row else None

    # -- queues ------------------------------------------------------------------------------------------
    def workflow_enqueue_in(self, connection: Any, wf: NewWorkflow) -> Created:
        if not isinstance(connection, psycopg.Connection):
            raise UsageError(f"connection= must be a psycopg Connection for the PostgreSQL backend, got "
                             f"{type(connection).__name__}")
        params = {
            "workflow_id": wf.workflow_id, "name": wf.name, "inputs": wf.inputs, "queue": wf.queue,
            "priority": wf.priority, "app_version": wf.app_version, "parent_id": wf.parent_id,
            "dedup_id": wf.dedup_id, "delay": float(wf.delay_seconds), "partition_key": wf.partition_key,
            "channel": self.wake_channel, "deadline": wf.deadline, "parent_epoch": None,
        }
        if not connection.autocommit and connection.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
            # No transaction open yet: open the caller's, so their commit or rollback decides (a bare
            # connection.transaction() here would commit the insert on its own).
            connection.execute("BEGIN")
        try:
            with connection.transaction():  # a savepoint inside the caller's transaction
                row = connection.execute(self._q["workflow_enqueue"], params).fetchone()
        except psycopg.errors.UniqueViolation:
            live = connection.execute(self._q["workflow_by_dedup"], {"queue": wf.queue, "dedup_id": wf.dedup_id}
                                      ).fetchone() if wf.dedup_id else None
            if live is None:
                raise
            raise WorkflowDuplicateError(f"queue {wf.queue or 'default'!r} already has a live workflow {live[0]!r} "
                                         f"with dedup id {wf.dedup_id!r}", live[0]) from None
        except psycopg.Error as exc:
            raise StorageError(_scrub(f"{type(exc).__name__}: {exc}", self.url)) from exc
        if row is not None:
            return Created(True, row[0], wf.name, Status.PENDING)
        existing = connection.execute(self._q["workflow_get"], {"workflow_id": wf.workflow_id}).fetchone()
        rec = _wf(existing)
        return Created(False, rec.epoch, rec.name, rec.status)

    def queue_define(self, spec: QueueSpec) -> None:
        params = {"name": spec.name, "concurrency": spec.concurrency, "worker_concurrency": spec.worker_concurrency,
                  "partition_concurrency": spec.partition_concurrency, "rate_count": spec.rate_count,
                  "rate_period": spec.rate_period, "priority": spec.priority, "partitioned": spec.partitioned}
        self._run(lambda c: c.execute(self._q["queue_define"], params))

    def queue_get(self, name: str) -> QueueSpec | None:
        row = self._run(lambda c: c.execute(self._q["queue_get"], {"name": name}).fetchone())
        if row is None:
            return None
        return QueueSpec(name=row[0], concurrency=row[1], worker_concurrency=row[2], partition_concurrency=row[3],
                         rate_count=row[4], rate_period=row[5], priority=row[6], partitioned=row[7])

    def queue_claim(self, req: ClaimRequest, queue: str) -> list[Claim] | None:
        if not req.names or req.limit <= 0:
            return []

        def claim(conn: psycopg.Connection) -> list[Claim] | None:
            with conn.transaction():
                lock = conn.execute(self._q["queue_lock"], {"queue": queue}).fetchone()
                if lock is None:  # another worker is claiming from this queue right now (or no such queue)
                    return None
                concurrency, worker_conc, partition_conc, rate_count, rate_period, partitioned, cursor = lock
                base = {"queue": queue, "owner": req.owner, "names": list(req.names), "limit": req.limit,
                        "lease": req.lease_seconds,
                        "versions": None if req.versions is None else list(req.versions)}
                n_new, n_reclaim = conn.execute(self._q["queue_room"], {
                    **base, "running_here": req.running_here, "concurrency": concurrency,
                    "worker_concurrency": worker_conc, "rate_count": rate_count,
                    "rate_period": rate_period if rate_period is not None else 1.0}).fetchone()
                rows = conn.execute(self._q["queue_reclaim"], {**base, "n": n_reclaim}).fetchall() if n_reclaim else []
                # n_reclaim is this worker's whole room: takeovers use it up before new starts do.
                n_new = max(0, min(n_new, n_reclaim - len(rows), req.limit - len(rows)))
                if n_new > 0 and partitioned:
                    got = conn.execute(self._q["queue_claim_partitioned"], {
                        **base, "n": n_new, "partition_concurrency": partition_conc, "cursor": cursor,
                        "max_partitions": 1000}).fetchall()
                    if got:  # continue after the last tenant served, next time
                        conn.execute(self._q["queue_cursor"], {"queue": queue, "cursor": max(r[6] for r in got)})
                    rows += [r[:6] for r in got]
                elif n_new > 0:
                    rows += conn.execute(self._q["queue_claim"], {**base, "n": n_new}).fetchall()
            return [Claim(workflow_id=r[0], name=r[1], inputs=r[2], epoch=r[3], recovery=r[4], queue=queue,
                          deadline=r[5]) for r in rows]

        return self._run(claim)

    def queue_limited_names(self) -> set[str]:
        return {r[0] for r in self._run(lambda c: c.execute(self._q["queue_limited_names"]).fetchall())}

    def queue_list(self) -> list[QueueStats]:
        rows = self._run(lambda c: c.execute(self._q["queue_list"]).fetchall())
        return [QueueStats(queue=r[0] or "default", depth=int(r[1]), in_flight=int(r[2]), concurrency_limit=r[3],
                           worker_concurrency_limit=r[4], partition_concurrency_limit=r[5],
                           rate_limit_per_second=(r[6] / r[7]) if r[6] is not None and r[7] else None,
                           partitioned=bool(r[8]))
                for r in rows]

    # -- streams ---------------------------------------------------------------------------------------
    def _stream_append(self, step: StepResult, key: str, value: str | None, closed: bool) -> StepRecord:
        """Append an element (or the close row) and its checkpoint in one fenced transaction; the wake-up
        (``s:<id>``) is sent by ``pg_notify`` inside it, so it is delivered at commit, never before."""
        from kit.errors import UsageError

        notify = self.use_notify and self._caps.listen_notify
        where = {"workflow_id": step.workflow_id, "key": key}

        def append(conn: psycopg.Connection) -> StepRecord:
            row = conn.execute(self._q["stream_append"], {**where, "value": value, "closed": closed,
                                                          "step_id": step.step_id}).fetchone()
            if row is None:  # the stream is closed
                if not closed:
                    raise UsageError(f"stream {key!r} of workflow {step.workflow_id} is closed: "
                                     "write_stream after close_stream")
                row = conn.execute(self._q["stream_closed_at"], where).fetchone()
            recorded = replace(step, output=str(int(row[0])))
            finished = conn.execute(self._q["step_insert"], _step_params(recorded)).fetchone()[0]
            if notify:
                conn.execute(self._q["notify"], {"channel": self.wake_channel, "payload": "s:" + step.workflow_id})
            return _recorded(recorded, finished)

        record = self._fenced_transaction(step, append)
        assert record is not None
        return record

    def stream_write(self, step: StepResult, key: str, value: str) -> StepRecord:
        return self._stream_append(step, key, value, False)

    def stream_close(self, step: StepResult, key: str) -> StepRecord:
        return self._stream_append(step, key, None, True)

    def stream_read(self, workflow_id: str, key: str, after_seq: int, limit: int) -> Any:
        from kit.storage import StreamChunk

        limit = max(1, min(int(limit), 100_000))
        params = {"workflow_id": workflow_id, "key": key, "after_seq": int(after_seq), "limit": limit}
        rows = self._run(lambda c: c.execute(self._q["stream_read"], params).fetchall())
        status = Status(rows[0][0]) if rows[0][0] is not None else None
        elements = tuple((r[1], r[2]) for r in rows if r[1] is not None and not r[3])
        closed = rows[-1][1] is not None and bool(rows[-1][3])  # the close row is always the last one
        return StreamChunk(elements[:limit], closed, status)

    # -- observability of messages, events, streams ----------------------------------------------------
    def message_list(self, workflow_id: str, limit: int = 1000) -> list[Any]:
        from kit.storage import MessageInfo

        params = {"workflow_id": workflow_id, "limit": max(1, min(int(limit), 100_000))}
        rows = self._run(lambda c: c.execute(self._q["message_list"], params).fetchall())
        return [MessageInfo(message_id=r[0], topic=r[1], body=r[2], sender_key=r[3], created_at=r[4],
                            consumed_at=r[5], consumed_step=r[6]) for r in rows]

    def event_list(self, workflow_id: str, limit: int = 1000) -> list[Any]:
        from kit.storage import EventInfo

        params = {"workflow_id": workflow_id, "limit": max(1, min(int(limit), 100_000))}
        rows = self._run(lambda c: c.execute(self._q["event_list"], params).fetchall())
        return [EventInfo(key=r[0], value=r[1], step_id=r[2], updated_at=r[3]) for r in rows]

    def stream_list(self, workflow_id: str, limit: int = 1000) -> list[Any]:
        from kit.storage import StreamInfo

        params = {"workflow_id": workflow_id, "limit": max(1, min(int(limit), 100_000))}
        rows = self._run(lambda c: c.execute(self._q["stream_list"], params).fetchall())
        return [StreamInfo(key=r[0], count=int(r[1]), closed=bool(r[2]), last_write_at=r[3]) for r in rows]

    # -- lifecycle -----------------------------------------------------------------------------------------
    def workflow_cancel(self, workflow_id: str, error: str) -> list[str]:
        def cancel(conn: psycopg.Connection) -> list[str]:
            with conn.transaction():
                rows = conn.execute(self._q["workflow_cancel"], {"workflow_id": workflow_id, "error": error}).fetchall()
                if not rows and conn.execute(self._q["workflow_epoch"], {"workflow_id": workflow_id}).fetchone() is None:
                    raise WorkflowNotFoundError(f"no workflow with id {workflow_id!r}")
            return [r[0] for r in rows]

        return self._run(cancel)

    def workflow_resume(self, workflow_id: str, deadline: datetime | None = None) -> list[str]:
        def resume(conn: psycopg.Connection) -> list[str]:
            with conn.transaction():
                row = conn.execute(self._q["workflow_lock_status"], {"workflow_id": workflow_id}).fetchone()
                if row is None:
                    raise WorkflowNotFoundError(f"no workflow with id {workflow_id!r}")
                if row[0] not in (Status.CANCELLED.value, Status.ERROR.value):
                    raise WorkflowStateError(
                        f"workflow {workflow_id!r} is {row[0]}: only CANCELLED or ERROR workflows can be resumed"
                        + (" (a SUCCESS workflow never runs again; fork it to run it anew)"
                           if row[0] == Status.SUCCESS.value else " (it has not finished)"))
                ids = [r[0] for r in conn.execute(self._q["workflow_resume_tree"],
                                                  {"workflow_id": workflow_id}).fetchall()]
                conn.execute(self._q["steps_drop_final_error"], {"workflow_ids": ids})
                try:
                    done = conn.execute(self._q["workflow_resume"], {"workflow_ids": ids, "deadline": deadline,
                                                                     "channel": self.wake_channel}).fetchall()
                except psycopg.errors.UniqueViolation:
                    raise WorkflowStateError(
                        f"cannot resume {workflow_id!r}: a live workflow now holds its queue's deduplication id"
                    ) from None
            return [r[0] for r in done]

        return self._run(resume)

    def workflow_fork(self, req: ForkRequest) -> Created:
        params = {"source_id": req.source_id, "new_id": req.new_id, "from_step": req.from_step,
                  "app_version": req.app_version, "deadline": req.deadline, "channel": self.wake_channel}

        def fork(conn: psycopg.Connection) -> Created:
            with conn.transaction():
                src = conn.execute(self._q["workflow_fork_source"], params).fetchone()
                if src is None:
                    raise WorkflowNotFoundError(f"cannot fork {req.source_id!r}: no such workflow")
                last = -1 if src[4] is None else src[4]
                if not 0 <= req.from_step <= last + 1:
                    raise UsageError(
                        f"cannot fork {req.source_id!r} from step {req.from_step}: it has "
                        + (f"steps 0..{last}, so from_step must be between 0 and {last + 1}" if last >= 0
                           else "no recorded steps, so from_step must be 0"))
                row = conn.execute(self._q["workflow_fork_insert"], params).fetchone()
                if row is None:
                    raise WorkflowConflictError(f"cannot fork into {req.new_id!r}: a workflow with that id exists")
                for name in ("workflow_fork_steps", "workflow_fork_events", "workflow_fork_streams"):
                    conn.execute(self._q[name], params)
            return Created(True, row[0], src[0], Status.PENDING)

        return self._run(fork)

    def workflow_gc(self, older_than_seconds: float, batch_size: int, dry_run: bool = False) -> int:
        params = {"age": float(older_than_seconds), "batch": max(1, int(batch_size))}
        if dry_run:
            return int(self._run(lambda c: c.execute(self._q["workflow_gc_count"], params).fetchone()[0]))

        def gc(conn: psycopg.Connection) -> int:
            with conn.transaction():
                n = len(conn.execute(self._q["workflow_gc"], params).fetchall())
                conn.execute(self._q["workers_gc"], params)
            return n

        return self._run(gc)

    def workflow_version_counts(self) -> dict[str | None, int]:
        rows = self._run(lambda c: c.execute(self._q["workflow_version_counts"]).fetchall())
        return {r[0]: int(r[1]) for r in rows}

    def drop_schema(self) -> None:
        stmt = sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(self.schema))
        self._run(lambda c: c.execute(stmt))

    # -- cron schedules ------------------------------------------------------------------------------------
    # A schedule transaction holds the schedule's row lock; if its process freezes mid-transaction (SIGSTOP,
    # a paused VM), the server ends the session after this long idle, so the other workers' ticks go on.
    schedule_idle_timeout_ms = 10_000

    def schedule_define(self, spec: Any, now: datetime) -> Any:
        params = {"name": spec.name, "workflow_name": spec.workflow_name, "cron": spec.cron,
                  "timezone": spec.timezone, "queue": spec.queue, "catch_up": spec.catch_up,
                  "max_catch_up": spec.max_catch_up, "now": now}

        def define(conn: psycopg.Connection) -> Any:
            with conn.transaction():
                conn.execute(self._q["schedule_tx_guard"], {"idle_ms": str(self.schedule_idle_timeout_ms)})
                before = conn.execute(self._q["schedule_get_locked"], {"name": spec.name}).fetchone()
                conn.execute(self._q["schedule_define"], params)
            return None if before is None else _schedule(before).spec

        return self._run(lambda conn: _retry_if_cut_off(conn, define))

    def schedule_get(self, name: str) -> Any:
        row = self._run(lambda c: c.execute(self._q["schedule_get"], {"name": name}).fetchone())
        return None if row is None else _schedule(row)

    def schedule_list(self) -> list[Any]:
        return [_schedule(r) for r in self._run(lambda c: c.execute(self._q["schedule_list"]).fetchall())]

    def schedule_advance(self, name: str, expected_cursor: datetime, new_cursor: datetime,
                         workflows: Sequence[NewWorkflow]) -> bool:
        last = workflows[-1] if workflows else None
        params = {"name": name, "expected": expected_cursor, "new_cursor": new_cursor,
                  "last_tick": new_cursor if last is not None else None,
                  "last_workflow_id": last.workflow_id if last is not None else None}

        def advance(conn: psycopg.Connection) -> bool:
            with conn.transaction():
                conn.execute(self._q["schedule_tx_guard"], {"idle_ms": str(self.schedule_idle_timeout_ms)})
                if conn.execute(self._q["schedule_advance"], params).fetchone() is None:
                    return False  # another worker moved the cursor first: it enqueued these ticks
                for wf in workflows:  # idempotent by workflow id, and committed with the cursor
                    self.workflow_enqueue_in(conn, wf)
            return True

        # Retried from the start after a lost connection: the compare-and-set then finds out whether the
        # first attempt committed (cursor moved: False) or not (it runs again).
        return self._run(lambda conn: _retry_if_cut_off(conn, advance))


def _retry_if_cut_off(conn: psycopg.Connection, body: Callable[[psycopg.Connection], T]) -> T:
    """Run ``body``; if the server cut the session off (e.g. idle-in-transaction timeout), raise a
    connection error so ``_run`` retries it on a fresh connection."""
    try:
        return body(conn)
    except (psycopg.Error, StorageError) as exc:
        if conn.broken or conn.closed:
            raise psycopg.OperationalError(f"connection lost during a schedule transaction: {exc}") from exc
        raise


def _schedule(row: tuple) -> Any:
    from kit.storage import ScheduleSpec, ScheduleState

    spec = ScheduleSpec(name=row[0], workflow_name=row[1], cron=row[2], timezone=row[3], queue=row[4],
                        catch_up=row[5], max_catch_up=row[6])
    return ScheduleState(spec=spec, cursor_at=row[7], last_tick=row[8], last_workflow_id=row[9], updated_at=row[10])


def _scrub(text: str, url: str) -> str:
    """Remove any password that appears in ``url`` from ``text``."""
    try:
        pw = psycopg.conninfo.conninfo_to_dict(url).get("password")
    except psycopg.Error:
        pw = None
    pw = pw or os.environ.get("PGPASSWORD")
    if pw:
        text = text.replace(str(pw), "***")
    return redact_url(text)


def default_worker_info(owner: str) -> WorkerInfo:
    return WorkerInfo(worker_id=owner, hostname=socket.gethostname(), pid=os.getpid())
