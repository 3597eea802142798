"""The CockroachDB backend and its serializable PostgreSQL profile.

:class:`CockroachBackend` is the PostgreSQL backend with CockroachDB's strategies: its own statements where
CockroachDB differs (``queries.sql``), its own migrations (``migrations/``, lock row, one schema change per
transaction), every transaction retried whole on 40001 with jittered backoff and a bound (``_run``),
ambiguous results (40003) resolved like a lost COMMIT, claims as epoch-guarded conditional updates
(SERIALIZABLE) or, where the cluster grants READ COMMITTED, locked with SKIP LOCKED and then updated under
the epoch read, no notifications (the engine polls), follower reads for observability behind an option.

:class:`SerializableProfileBackend` (``cockroachdb-profile``) runs exactly that logic and those statements
on PostgreSQL 15/16 with ``default_transaction_isolation = serializable`` set on every session. It is only
ever chosen by name (its :meth:`detect` never claims a server), serves plain PostgreSQL only, and says so
in ``describe()``: it is how the CockroachDB logic is exercised where no CockroachDB cluster runs. Only the
dialect layer (:mod:`.dialect`) differs between the two.

Options (environment, read when the backend is built): ``KIT_COCKROACH_CLAIMS`` = ``auto`` (default: READ
COMMITTED claims when the cluster grants them), ``serializable`` or ``read_committed``;
``KIT_COCKROACH_FOLLOWER_READS`` = ``true`` to serve observability reads from follower replicas.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar, TypeVar

import psycopg
import psycopg.errors
from kit.backends.postgres import PostgresBackend
from kit.backends.postgres import rows as pgrows
from kit.backends.postgres.connection import call_token, is_connection_error
from kit.backends.postgres.lease_connection import LeaseConnection
from kit.backends.postgres.queries import MigrationSet, QuerySet

from kit.errors import ConfigError, LeaseLostError, TransientStorageError
from kit.storage import Capabilities, Claim, ClaimRequest, ServerInfo, StepRecord, StepResult

from .dialect import COCKROACHDB, SERIALIZABLE_POSTGRES, Dialect
from .migrations import LockRowMigrationsPart
from .retention import RetentionPart
from .retry import (
    RETRY_SQLSTATES,
    CockroachConnection,
    OperationStats,
    OperationTracker,
    ProfileConnection,
    RetryPolicy,
)
from .server import (
    CLAIM_MODES,
    READ_COMMITTED_SETTING,
    claim_isolation,
    cockroach_capabilities,
    cockroach_version,
    is_cockroachdb,
    is_plain_postgres,
    read_committed_available,
)

log = logging.getLogger("kit.cockroachdb")
T = TypeVar("T")

# PostgreSQL statements this backend never runs (their strategies are off here): dropped from its query set,
# so a path that would use one fails loudly instead of sending PostgreSQL-only SQL to a cluster.
_DROPPED = ("notify", "notify_many", "step_record_many", "workflow_finish_many", "workflow_claim_candidates",
            "workflow_claim_row", "workflow_gc")


def build_queries(dialect: Dialect) -> QuerySet:
    """The PostgreSQL backend's statements with this package's replacing those that differ, new ones added,
    the dialect's statements on top, and the never-used PostgreSQL-only ones dropped."""
    base = PostgresBackend.queries
    own = QuerySet.load(__package__, "queries.sql")
    merged = base.with_overrides({k: own[k] for k in own if k in base}).plus(
        {k: own[k] for k in own if k not in base})
    extra = dict(dialect.statements)
    merged = merged.with_overrides({k: v for k, v in extra.items() if k in merged}).plus(
        {k: v for k, v in extra.items() if k not in merged})
    return QuerySet({k: v for k, v in merged.items() if k not in _DROPPED})


def _env_flag(name: str, default: bool) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"invalid value {raw!r} for environment variable {name}: use true or false")


def _is_retryable(exc: BaseException) -> bool:
    return getattr(exc, "sqlstate", None) in RETRY_SQLSTATES


class CockroachBackend(LockRowMigrationsPart, RetentionPart, PostgresBackend):
    """CockroachDB (v23.2 or later): SERIALIZABLE with whole-transaction retries, polling, lock-row
    migrations, epoch-guarded claims."""

    name: ClassVar[str] = "cockroachdb"
    url_schemes: ClassVar[tuple[str, ...]] = ("cockroachdb", "postgresql", "postgres")
    specificity: ClassVar[int] = 10
    # SQLAlchemy in transactional steps (kit.integrations.sqlalchemy): CockroachDB's own dialect over psycopg 3,
    # from the sqlalchemy-cockroachdb package (without it, the first such step says what to install).
    sqlalchemy_url: ClassVar[str | None] = "cockroachdb+psycopg://"
    sqlalchemy_package: ClassVar[str | None] = "sqlalchemy-cockroachdb"
    dialect: ClassVar[Dialect] = COCKROACHDB
    connection_class: ClassVar[type[psycopg.Connection]] = CockroachConnection
    queries: ClassVar[QuerySet] = build_queries(COCKROACHDB)
    migrations: ClassVar[MigrationSet] = MigrationSet.load(__package__, "migrations")
    retry_policy: ClassVar[RetryPolicy] = RetryPolicy()
    # After a conflict (and always at READ COMMITTED), claims read candidates from the oldest
    # `claim_window * limit` ready rows.
    claim_window: ClassVar[int] = 4
    claim_mode: ClassVar[str] = "auto"  # KIT_COCKROACH_CLAIMS
    follower_reads: ClassVar[bool] = False  # KIT_COCKROACH_FOLLOWER_READS

    def __init__(self, url: str, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self.ops = OperationTracker()
        mode = os.environ.get("KIT_COCKROACH_CLAIMS", "").strip().lower() or type(self).claim_mode
        if mode not in CLAIM_MODES:
            raise ConfigError(f"invalid value {mode!r} for environment variable KIT_COCKROACH_CLAIMS: use "
                              f"{', '.join(CLAIM_MODES)}")
        self._claim_mode = mode
        self._follower_reads = _env_flag("KIT_COCKROACH_FOLLOWER_READS", type(self).follower_reads)
        self._claim_isolation = "serializable"
        # Heartbeats run on their own connection, retried within a quarter of the lease: counted here too.
        self._leases = LeaseConnection(self._lease_connect, self._lease_watchdog, self._lease_transient,
                                       self._commit_unacknowledged)

    def _lease_transient(self, exc: BaseException) -> bool:
        if _is_retryable(exc):
            self.ops.add("lease_renew", retries=1)
        elif isinstance(exc, psycopg.OperationalError):
            self.ops.add("lease_renew", lost=1)
        return is_connection_error(exc)

    # -- the server ----------------------------------------------------------------------------------
    @classmethod
    def detect(cls, info: ServerInfo) -> bool:
        """CockroachDB says so in its version text."""
        return is_cockroachdb(info)

    @classmethod
    def capabilities_for(cls, info: ServerInfo) -> Capabilities:
        return cockroach_capabilities(info, follower_reads=cls.follower_reads, claims=cls.claim_mode)

    def open(self) -> None:
        if self._pool is not None:
            return
        super().open()
        assert self.server_info is not None
        rc = self._run(read_committed_available)
        info = dataclasses.replace(self.server_info, settings={**self.server_info.settings,
                                                               READ_COMMITTED_SETTING: "true" if rc else "false"})
        self.server_info = info
        self._claim_isolation = claim_isolation(info, self._claim_mode)
        self._caps = cockroach_capabilities(info, follower_reads=self._follower_reads, claims=self._claim_mode)
        if self._claim_mode == "read_committed" and self._claim_isolation != "read committed":
            log.warning("KIT_COCKROACH_CLAIMS=read_committed, but the server runs READ COMMITTED transactions "
                        "as SERIALIZABLE (cluster setting %s off): claims run at SERIALIZABLE",
                        READ_COMMITTED_SETTING)
        version = cockroach_version(info)
        if version is not None and version < (23, 2, 0):
            log.warning("CockroachDB v%d.%d.%d: kit's CockroachDB backend is written for v23.2 and later",
                        *version)

    def _placeholders(self) -> dict[str, str]:
        return type(self).dialect.placeholders()

    @property
    def claim_isolation(self) -> str:
        """``"read committed"`` or ``"serializable"``: how this backend claims (valid after open())."""
        return self._claim_isolation

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out["claims"] = f"{self._claim_isolation} (mode {self._claim_mode})"
        return out

    # -- every transaction: retried whole on 40001 ------------------------------------------------------
    def _run(self, fn: Callable[[psycopg.Connection], T], *, retry: bool = True) -> T:
        """The PostgreSQL backend's ``_run`` (lost connections, the pool, the watchdog) around a loop that
        runs ``fn`` (one whole transaction) again after 40001 on the same connection, with full-jitter
        exponential backoff, at most ``retry_policy.max_attempts`` times and within ``retry_seconds``.
        Counts per operation: 40001 retries, lost or ambiguous attempts (their retry reads back)."""
        op = self.ops.current()
        policy = type(self).retry_policy
        started = time.monotonic()

        def attempts(conn: psycopg.Connection) -> T:
            n = 0
            while True:
                try:
                    result = fn(conn)
                except psycopg.Error as exc:
                    if conn.broken or conn.closed:
                        self.ops.add(op, lost=1)
                        raise
                    if not _is_retryable(exc):
                        raise
                    n += 1
                    if n >= policy.max_attempts or time.monotonic() - started > self.retry_seconds:
                        self.ops.add(op, exhausted=1, in_call=n)
                        raise TransientStorageError(
                            f"{op}: {n} serialization failures in a row (SQLSTATE {exc.sqlstate}); giving up "
                            f"for now: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc}") from exc
                    self.ops.add(op, retries=1, in_call=n)
                    time.sleep(policy.delay(n))
                    continue
                return result

        return super()._run(attempts, retry=retry)

    def retry_stats(self) -> dict[str, OperationStats]:
        """Per interface operation: calls, 40001 retries, lost/ambiguous attempts, budgets exhausted."""
        return self.ops.snapshot()

    # -- notifications: none ------------------------------------------------------------------------
    def notify(self, channel: str, payload: str = "") -> None:
        """No LISTEN/NOTIFY on CockroachDB: waiters poll (kit.notifier), so there is nothing to send."""
        if self._notifying:  # never true here: listen_notify is False
            super().notify(channel, payload)

    # -- claims -------------------------------------------------------------------------------------
    def workflow_claim(self, req: ClaimRequest) -> list[Claim]:
        """Claim at READ COMMITTED where the server grants it (lock candidates with SKIP LOCKED, then update
        them under the epoch read), else at SERIALIZABLE (one conditional UPDATE; a conflict is a 40001 and
        the claim runs again). Either way each row is updated only at the epoch it was read at.

        Every claimed row carries this call's token (``claim_token``, ``claim_recovery``); an attempt after
        one that may have committed (anything but a 40001, which rolled it back: a lost connection, 40003)
        first reads back the rows held under the token (``_claims_read_back``) and claims only the rest of
        ``limit``, as the PostgreSQL backend does."""
        if not req.names or req.limit <= 0:
            return []
        params = {
            "owner": req.owner, "names": list(req.names), "limit": req.limit, "lease": req.lease_seconds,
            "any_queue": req.queues is None, "queues": list(req.queues or []),
            "versions": None if req.versions is None else list(req.versions),
            "window": req.limit * type(self).claim_window, "token": call_token(),
        }
        maybe_claimed = False
        attempt = 0

        def claim(conn: psycopg.Connection) -> list[tuple]:
            nonlocal maybe_claimed, attempt
            attempt += 1
            found: list[tuple] = self._claims_read_back(conn, params) if maybe_claimed else []
            limit = req.limit - len(found)
            if limit <= 0:
                return found
            rest = {**params, "limit": limit, "window": limit * type(self).claim_window}
            try:
                if self._claim_isolation == "read committed":
                    return found + self._claim_read_committed(conn, rest)
                # Strict FIFO first; after a conflict, a random pick from a wider window of the oldest.
                window = limit if attempt == 1 else rest["window"]
                return found + conn.execute(self._q["workflow_claim"], {**rest, "window": window}).fetchall()
            except psycopg.Error as exc:
                maybe_claimed = maybe_claimed or not _is_retryable(exc)
                raise

        return [Claim(workflow_id=r[0], name=r[1], inputs=r[2], epoch=r[3], recovery=r[4], deadline=r[5])
                for r in self._run(claim)]

    def _claim_read_committed(self, conn: psycopg.Connection, params: dict[str, Any]) -> list[tuple]:
        with conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
            locked = conn.execute(self._q["workflow_claim_lock"], params).fetchall()
            if not locked:
                return []
            return conn.execute(self._q["workflow_claim_take"], {
                "owner": params["owner"], "lease": params["lease"], "token": params["token"],
                "ids": [r[0] for r in locked], "epochs": [r[1] for r in locked],
                "recovery": [bool(r[2]) for r in locked]}).fetchall()

    def queue_claim(self, req: ClaimRequest, queue: str) -> list[Claim] | None:
        """Claims from a limited queue, at SERIALIZABLE: the queue's row is locked with NOWAIT (another
        claimer holding it means: skip this queue this round, None), its room counted, and the claims are
        epoch-guarded updates; serializability keeps the limits even if a lock is lost. A lost
        acknowledgement is read back by the claim token, as for :meth:`workflow_claim`; the rows read back
        count within the room (they are RUNNING here already)."""
        if not req.names or req.limit <= 0:
            return []
        token = call_token()
        maybe_claimed = False

        def claim(conn: psycopg.Connection) -> list[tuple] | None:
            nonlocal maybe_claimed
            mine = self._claims_read_back(conn, {"owner": req.owner, "token": token}) if maybe_claimed else []
            if len(mine) >= req.limit:
                return mine
            try:
                found = self._queue_claim_tx(conn, req, queue, token, mine)
            except psycopg.errors.LockNotAvailable:
                found = None  # another worker is claiming from this queue right now
            except psycopg.Error as exc:
                maybe_claimed = maybe_claimed or not _is_retryable(exc)
                raise
            return (mine or None) if found is None else mine + found

        found = self._run(claim)
        if found is None:
            return None
        return [Claim(workflow_id=r[0], name=r[1], inputs=r[2], epoch=r[3], recovery=r[4], queue=queue,
                      deadline=r[5]) for r in found]

    def _queue_claim_tx(self, conn: psycopg.Connection, req: ClaimRequest, queue: str,
                        token: str, mine: list[tuple]) -> list[tuple] | None:
        limit = req.limit - len(mine)
        with conn.transaction():
            lock = conn.execute(self._q["queue_lock"], {"queue": queue}).fetchone()
            if lock is None:  # no such queue
                return None
            concurrency, worker_conc, partition_conc, rate_count, rate_period, partitioned, cursor = lock
            base = {"queue": queue, "owner": req.owner, "names": list(req.names), "limit": limit,
                    "lease": req.lease_seconds, "token": token,
                    "versions": None if req.versions is None else list(req.versions)}
            n_new, n_reclaim = conn.execute(self._q["queue_room"], {
                **base, "running_here": req.running_here + len(mine), "concurrency": concurrency,
                "worker_concurrency": worker_conc, "rate_count": rate_count,
                "rate_period": rate_period if rate_period is not None else 1.0}).fetchone()
            found = conn.execute(self._q["queue_reclaim"], {**base, "n": n_reclaim}).fetchall() if n_reclaim else []
            n_new = max(0, min(n_new, n_reclaim - len(found), limit - len(found)))
            if n_new > 0 and partitioned:
                got = conn.execute(self._q["queue_claim_partitioned"], {
                    **base, "n": n_new, "partition_concurrency": partition_conc, "cursor": cursor,
                    "max_partitions": 1000}).fetchall()
                if got:
                    conn.execute(self._q["queue_cursor"], {"queue": queue, "cursor": max(r[6] for r in got)})
                found += [r[:6] for r in got]
            elif n_new > 0:
                found += conn.execute(self._q["queue_claim"], {**base, "n": n_new}).fetchall()
        return found

    # -- control operations: answers recorded (the PostgreSQL backend's _run_recorded) -------------------
    def _record_outcome(self, conn: psycopg.Connection, token: str, operation: str, value: Any) -> None:
        """The PostgreSQL backend's record of a control operation's answer, in two statements: CockroachDB
        refuses one statement that modifies a table twice (its prune is a DELETE in a CTE of the INSERT)."""
        conn.execute(self._q["call_outcome_prune"], {"keep": max(self.outcome_keep_seconds, 2 * self.retry_seconds)})
        conn.execute(self._q["call_outcome_record"], {"token": token, "operation": operation,
                                                      "result": json.dumps(value)})

    # -- steps --------------------------------------------------------------------------------------
    @contextmanager
    def step_transaction(self, step: StepResult) -> Iterator[Any]:
        """The PostgreSQL backend's transactional step (user writes and the fenced checkpoint in one
        transaction; a lost or ambiguous COMMIT read back), counted: a 40001 anywhere in it rolls everything
        back and the engine runs the step's body again."""
        with self.ops.operation("step_transaction"):
            try:
                with super().step_transaction(step) as tx:
                    record = tx.checkpoint

                    def checkpoint(output: str | None) -> None:
                        row = tx.connection.execute(self._q["workflow_lock_epoch"],
                                                    {"workflow_id": step.workflow_id}).fetchone()
                        if row is None or row[0] != step.epoch or row[1] != "RUNNING":
                            raise LeaseLostError(f"workflow {step.workflow_id}: step {step.step_id} fenced "
                                                 f"(lease lost: epoch {step.epoch} superseded)")
                        record(output)

                    tx.checkpoint = checkpoint  # type: ignore[method-assign]
                    yield tx
            except TransientStorageError as exc:
                cause = exc.__cause__
                if cause is None or not _is_retryable(cause):
                    self.ops.add("step_transaction", lost=1)
                    raise
                # Rolled back by a conflict: run the body again, unless the conflict was a takeover.
                owner = self._run(lambda c: c.execute(self._q["workflow_epoch"],
                                                      {"workflow_id": step.workflow_id}).fetchone())
                if owner is None or owner[0] != step.epoch or owner[1] != "RUNNING":
                    raise LeaseLostError(f"workflow {step.workflow_id}: step {step.step_id} rolled back; the "
                                         f"lease was lost (epoch {step.epoch} superseded)") from exc
                self.ops.add("step_transaction", retries=1)
                raise

    def _fenced_transaction(self, step: StepResult,
                            body: Callable[[psycopg.Connection], StepRecord | None]) -> StepRecord | None:
        """Run ``body`` in one transaction that first reads the workflow row under our epoch (a concurrent
        claim conflicts with that read: one of the two runs again). An already recorded step is returned; a
        unique violation (the same step committed concurrently) is read back, whatever the constraint's name."""
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
                        return pgrows.step(existing)
                    return body(conn)
            except psycopg.errors.UniqueViolation as exc:
                row = conn.execute(self._q["step_get"], key).fetchone()
                if row is None:
                    raise TransientStorageError(f"concurrent write: {exc.diag.constraint_name}") from exc
                return pgrows.step(row)

        return self._run(run)


class SerializableProfileBackend(CockroachBackend):
    """The CockroachDB backend's statements and logic on PostgreSQL 15/16 at SERIALIZABLE (a test profile:
    chosen by name only, never detected; plain PostgreSQL only)."""

    name: ClassVar[str] = "cockroachdb-profile"
    url_schemes: ClassVar[tuple[str, ...]] = ("postgresql", "postgres")
    specificity: ClassVar[int] = 1  # above plain PostgreSQL, so an offline resolution never picks it
    dialect: ClassVar[Dialect] = SERIALIZABLE_POSTGRES
    connection_class: ClassVar[type[psycopg.Connection]] = ProfileConnection
    queries: ClassVar[QuerySet] = build_queries(SERIALIZABLE_POSTGRES)
    # The profile exercises the SERIALIZABLE claim path (the one clusters without READ COMMITTED use) unless
    # KIT_COCKROACH_CLAIMS says otherwise; PostgreSQL always grants READ COMMITTED.
    claim_mode: ClassVar[str] = "serializable"
    # It runs on PostgreSQL: SQLAlchemy in its transactional steps uses PostgreSQL's dialect.
    sqlalchemy_url: ClassVar[str | None] = PostgresBackend.sqlalchemy_url
    sqlalchemy_package: ClassVar[str | None] = None

    NOTE: ClassVar[str] = ("serializable PostgreSQL profile of the cockroachdb backend: its statements and "
                           "retry, claim and migration logic on PostgreSQL at SERIALIZABLE; not CockroachDB")

    @classmethod
    def detect(cls, info: ServerInfo) -> bool:
        """Never: the profile is chosen on purpose (``backend = "cockroachdb-profile"``)."""
        return False

    def _serves(self, info: ServerInfo) -> bool:
        return is_plain_postgres(info)

    def _conn_kwargs(self) -> dict[str, Any]:
        """Every session of the profile runs at SERIALIZABLE (added to any ``options`` of the URL)."""
        kwargs = super()._conn_kwargs()
        given = psycopg.conninfo.conninfo_to_dict(self.dsn).get("options") or ""
        kwargs["options"] = f"{given} -c default_transaction_isolation=serializable".strip()
        return kwargs

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out["note"] = self.NOTE
        return out


def _count_operations(cls: type[CockroachBackend]) -> None:
    """Wrap every interface operation of ``cls`` so its database calls count against its name."""
    from kit.storage.backend import Backend as _Backend

    for name in sorted(_Backend.__abstractmethods__):
        if name == "step_transaction" or isinstance(getattr(_Backend, name, None), property):
            continue
        fn = getattr(cls, name)

        def wrap(fn: Callable[..., Any], name: str) -> Callable[..., Any]:
            @functools.wraps(fn)
            def operation(self: CockroachBackend, *args: Any, **kwargs: Any) -> Any:
                with self.ops.operation(name):
                    return fn(self, *args, **kwargs)

            return operation

        setattr(cls, name, wrap(fn, name))


_count_operations(CockroachBackend)

__all__ = ["CockroachBackend", "SerializableProfileBackend", "build_queries"]
