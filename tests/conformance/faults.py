"""Fault injection at the driver level: the conformance suite's second pass runs through it.

A backend built on psycopg takes its connections from one class, ``connection_class`` (every pooled,
listener and probe connection). :func:`fault_injecting` returns a subclass of the backend under test whose
connection class injects faults at statement boundaries, following a seeded :class:`FaultPlan`:

``serialization``  the statement (or the COMMIT of a transaction block) fails with SQLSTATE 40001, raised
                   as :class:`psycopg.errors.SerializationFailure`; inside a transaction the server-side
                   transaction is aborted first, as a real one would be. Nothing of it committed.
``ambiguous``      the statement (autocommit) or the COMMIT reached the server and committed; then the
                   connection is lost before the client reads the acknowledgement: the caller gets a genuine
                   psycopg ``OperationalError`` from a broken connection and must read back the outcome.

Faults are injected only while one of the backend's interface operations runs on the calling thread
(the subclass wraps each of them), at most ``per_operation`` per call so that the backend's retries
converge, on about one eligible boundary in ``every`` (seeded by the test id, so a single-threaded test
sees the same faults on every run). Statements that carry no data (LISTEN, explicit transaction control)
are left alone. Operations that make one attempt by design (a heartbeat, a wake-up) are spared, each with
its reason (:data:`SINGLE_ATTEMPT`); so are the fault kinds a backend is known not to withstand yet, each
with its reason in the register (:data:`conformance.differences.FAULT_GAPS`).
"""

from __future__ import annotations

import functools
import inspect
import os
import random
import re
import socket
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import psycopg
import psycopg.errors
from psycopg import sql
from psycopg.pq import TransactionStatus

from kit.storage import Backend

KINDS = ("serialization", "ambiguous")

# Interface operations that make one attempt by design; the fault pass leaves them alone.
SINGLE_ATTEMPT: Mapping[str, str] = {
    "notify": "a wake-up is best effort (one attempt): a lost one only delays work until the next poll",
    "notify_wait": "waits on its own listener connection; LISTEN carries no data",
}

_NOT_FAULTED = re.compile(r"^\s*(LISTEN|UNLISTEN|BEGIN|COMMIT|ROLLBACK|SAVEPOINT|RELEASE|START\s+TRANSACTION)\b",
                          re.I)


class FaultPlan:
    """Which boundaries fail and how; counts what was injected (``injected``, ``log``).

    The first fault falls on one of the first three eligible boundaries (seeded); after it, each
    eligible boundary fails with probability 1/``every`` (seeded: a single-threaded test sees the same
    faults on every run, and a retry loop never meets the same fault forever). ``spared`` maps an operation
    to the fault kinds it is spared (:data:`SINGLE_ATTEMPT`, and the known gaps of the backend under test
    from :mod:`conformance.differences`)."""

    def __init__(self, *, seed: int = 1, label: str = "", every: int = 10, per_operation: int = 2,
                 kinds: tuple[str, ...] = KINDS, spared: Mapping[str, tuple[str, ...]] | None = None) -> None:
        if every < 1 or per_operation < 0 or not kinds or set(kinds) - set(KINDS):
            raise ValueError(f"bad fault plan: every={every} per_operation={per_operation} kinds={kinds}")
        self.seed = seed
        self.label = label
        self.every = every
        self.per_operation = per_operation
        self.kinds = tuple(kinds)
        self.spared = {op: KINDS for op in SINGLE_ATTEMPT} if spared is None else dict(spared)
        self._rng = random.Random(f"{seed}:{label}")
        self.first = self._rng.randrange(min(every, 3)) + 1  # the boundary of the first fault: early
        self._lock = threading.Lock()
        self._local = threading.local()
        self.boundaries = 0  # eligible boundaries seen (inside an operation with budget and kinds left)
        self.injected: Counter[str] = Counter()
        self.log: list[str] = []  # "operation: kind at <statement>", in order

    @classmethod
    def from_env(cls, label: str, spared: Mapping[str, tuple[str, ...]] | None = None) -> FaultPlan:
        """The plan of one test: seed and density from KIT_TEST_FAULT_SEED / KIT_TEST_FAULT_EVERY."""
        return cls(seed=int(os.environ.get("KIT_TEST_FAULT_SEED", "1")), label=label,
                   every=int(os.environ.get("KIT_TEST_FAULT_EVERY", "10")), spared=spared)

    def __repr__(self) -> str:
        return (f"FaultPlan(seed={self.seed}, every={self.every}, first={self.first}, "
                f"per_operation={self.per_operation}, injected={dict(self.injected)})")

    @property
    def total(self) -> int:
        return sum(self.injected.values())

    @contextmanager
    def operation(self, name: str) -> Iterator[None]:
        """Faults may be injected while this runs (on this thread); nested calls share the outer budget."""
        local = self._local
        depth = getattr(local, "depth", 0)
        if depth == 0:
            local.name = name
            local.budget = self.per_operation
            local.kinds = tuple(k for k in self.kinds if k not in self.spared.get(name, ()))
        local.depth = depth + 1
        try:
            yield
        finally:
            local.depth = depth

    @contextmanager
    def quiet(self) -> Iterator[None]:
        """No faults on this thread inside the block (the factory's own setup of a test's backends)."""
        local = self._local
        saved = getattr(local, "depth", 0), getattr(local, "budget", 0), getattr(local, "name", None)
        local.depth, local.budget, local.name = 1, 0, None
        try:
            yield
        finally:
            local.depth, local.budget, local.name = saved

    def decide(self, where: str, kinds: tuple[str, ...]) -> str | None:
        """Called at a boundary: the fault to inject there (one of ``kinds``), or None."""
        local = self._local
        if getattr(local, "depth", 0) == 0 or local.budget <= 0:
            return None
        usable = [k for k in local.kinds if k in kinds]
        if not usable:
            return None
        with self._lock:
            self.boundaries += 1
            n = self.boundaries
            if not (n == self.first or (n > self.first and self._rng.random() * self.every < 1)):
                return None
            kind = self._rng.choice(usable)
            self.injected[kind] += 1
            self.log.append(f"{local.name}: {kind} at {where[:70]}")
        local.budget -= 1
        return kind


class OneFault(FaultPlan):
    """Exactly one fault of ``kind``, at the first boundary of ``operation`` whose statement starts with
    ``at`` (e.g. ``"COMMIT"``; None: its first boundary that can take ``kind``)."""

    def __init__(self, operation: str, kind: str = "ambiguous", at: str | None = None) -> None:
        super().__init__(kinds=(kind,), spared={}, label=f"{operation}:{kind}:{at}")
        self.target = operation
        self.kind = kind
        self.at = at

    def __repr__(self) -> str:
        return f"OneFault({self.target!r}, {self.kind!r}, at={self.at!r}, injected={dict(self.injected)})"

    def decide(self, where: str, kinds: tuple[str, ...]) -> str | None:
        local = self._local
        if (getattr(local, "depth", 0) == 0 or local.budget <= 0 or local.name != self.target or self.kind not in kinds
                or self.total or (self.at is not None and not where.upper().startswith(self.at.upper()))):
            return None
        with self._lock:
            self.boundaries += 1
            self.injected[self.kind] += 1
            self.log.append(f"{local.name}: {self.kind} at {where[:70]}")
        return self.kind


def _text(query: Any, conn: psycopg.Connection) -> str:
    if isinstance(query, sql.Composable):
        try:
            query = query.as_string(conn)
        except Exception:  # noqa: BLE001 - only for the log line
            return repr(query)[:60]
    if isinstance(query, bytes):
        query = query.decode(errors="replace")
    return " ".join(str(query).split())


class FaultyConnectionMixin:
    """Mixed into the backend's ``psycopg.Connection`` class (see :func:`fault_injecting`)."""

    fault_plan: FaultPlan | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cursor_factory = _faulty_cursor(self.cursor_factory)  # type: ignore[attr-defined]

    # -- the two faults ----------------------------------------------------------------------------
    def _serialization_failure(self, where: str) -> psycopg.errors.SerializationFailure:
        conn: psycopg.Connection = self  # type: ignore[assignment]
        if conn.info.transaction_status == TransactionStatus.INTRANS:
            # Abort the server-side transaction like a real 40001 does (later statements would fail).
            try:
                psycopg.Cursor(conn).execute("SELECT 1/0")
            except psycopg.errors.DivisionByZero:
                pass
        return psycopg.errors.SerializationFailure(
            f"could not serialize access due to concurrent update (injected at {where[:80]})")

    def _lose_connection(self, what: str) -> psycopg.OperationalError:
        """Break the socket after ``what`` committed; return the driver's genuine connection error."""
        conn: psycopg.Connection = self  # type: ignore[assignment]
        try:
            dup = socket.socket(fileno=os.dup(conn.pgconn.socket))
            try:
                dup.shutdown(socket.SHUT_RDWR)
            finally:
                dup.close()
            psycopg.Cursor(conn).execute("SELECT 1")
        except psycopg.OperationalError as exc:
            exc.add_note(f"(injected: connection lost after {what[:80]} committed)")
            return exc
        except (OSError, psycopg.Error):
            pass
        conn.close()
        return psycopg.OperationalError(f"connection lost after {what[:80]} committed (injected)")

    # -- boundaries --------------------------------------------------------------------------------
    @contextmanager
    def transaction(self, savepoint_name: str | None = None, force_rollback: bool = False) -> Iterator[Any]:
        conn: psycopg.Connection = self  # type: ignore[assignment]
        plan = self.fault_plan
        outer = conn.info.transaction_status == TransactionStatus.IDLE  # a real COMMIT at the end
        kind = None
        with super().transaction(savepoint_name, force_rollback) as tx:  # type: ignore[misc]
            yield tx
            if plan is not None and outer and not force_rollback:
                kind = plan.decide("COMMIT", KINDS)
                if kind == "serialization":
                    raise self._serialization_failure("COMMIT")
        if kind == "ambiguous":
            raise self._lose_connection("COMMIT")

    @contextmanager
    def pipeline(self) -> Iterator[Any]:
        conn: psycopg.Connection = self  # type: ignore[assignment]
        plan = self.fault_plan
        nested = conn._pipeline is not None
        idle = conn.autocommit and conn.info.transaction_status == TransactionStatus.IDLE
        kind = None if (plan is None or nested) else plan.decide("pipeline", KINDS if idle else ("serialization",))
        if kind == "serialization":
            raise self._serialization_failure("pipeline")
        with super().pipeline() as p:  # type: ignore[misc]
            yield p
        if kind == "ambiguous":
            raise self._lose_connection("pipeline")


@functools.cache
def _faulty_cursor(base: type[psycopg.Cursor]) -> type[psycopg.Cursor]:
    class FaultyCursor(base):  # type: ignore[valid-type,misc]
        def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
            conn = self.connection
            plan = getattr(conn, "fault_plan", None)
            if plan is None or conn._pipeline is not None:
                return super().execute(query, params, **kwargs)
            text = _text(query, conn)
            if _NOT_FAULTED.match(text):
                return super().execute(query, params, **kwargs)
            idle = conn.autocommit and conn.info.transaction_status == TransactionStatus.IDLE
            kind = plan.decide(text, KINDS if idle else ("serialization",))
            if kind == "serialization":
                raise conn._serialization_failure(text)
            result = super().execute(query, params, **kwargs)
            if kind == "ambiguous":
                raise conn._lose_connection(text)
            return result

    FaultyCursor.__name__ = FaultyCursor.__qualname__ = f"Faulty{base.__name__}"
    return FaultyCursor


class _OperationContext:
    """Wraps a context manager returned by an operation (step_transaction): faults may hit its enter and
    exit (and the checkpoint inside), not the caller's own statements in the block."""

    def __init__(self, cm: Any, plan: FaultPlan, name: str) -> None:
        self._cm = cm
        self._plan = plan
        self._name = name

    def __enter__(self) -> Any:
        with self._plan.operation(self._name):
            tx = self._cm.__enter__()
        checkpoint = getattr(tx, "checkpoint", None)
        if callable(checkpoint):
            plan, name = self._plan, f"{self._name}.checkpoint"

            @functools.wraps(checkpoint)
            def faulty_checkpoint(*args: Any, **kwargs: Any) -> Any:
                with plan.operation(name):
                    return checkpoint(*args, **kwargs)

            tx.checkpoint = faulty_checkpoint
        return tx

    def __exit__(self, *exc: Any) -> Any:
        with self._plan.operation(self._name):
            return self._cm.__exit__(*exc)


def _operation(fn: Callable[..., Any], name: str, plan: FaultPlan) -> Callable[..., Any]:
    if name == "step_transaction":
        @functools.wraps(fn)
        def step_transaction(self: Any, *args: Any, **kwargs: Any) -> Any:
            return _OperationContext(fn(self, *args, **kwargs), plan, name)

        return step_transaction

    @functools.wraps(fn)
    def operation(self: Any, *args: Any, **kwargs: Any) -> Any:
        with plan.operation(name):
            return fn(self, *args, **kwargs)

    return operation


def interface_operations() -> list[str]:
    """The storage interface's operations (its abstract methods that are not properties)."""
    return sorted(name for name in Backend.__abstractmethods__
                  if not isinstance(inspect.getattr_static(Backend, name), property))


def fault_injecting(backend_cls: type[Backend], plan: FaultPlan) -> type[Backend]:
    """A subclass of ``backend_cls`` whose every connection injects ``plan``'s faults."""
    base_conn = getattr(backend_cls, "connection_class", None)
    if not (isinstance(base_conn, type) and issubclass(base_conn, psycopg.Connection)):
        raise TypeError(f"{backend_cls.__name__} has no psycopg connection_class hook: the fault pass needs one")
    conn_cls = type(f"Faulty{base_conn.__name__}", (FaultyConnectionMixin, base_conn), {"fault_plan": plan})
    namespace: dict[str, Any] = {"connection_class": conn_cls, "fault_plan": plan,
                                 "__module__": __name__, "__doc__": f"{backend_cls.__name__} under {plan!r}"}
    for name in interface_operations():
        namespace[name] = _operation(getattr(backend_cls, name), name, plan)
    return type(f"FaultInjecting{backend_cls.__name__}", (backend_cls,), namespace)


def faulty_connection_class(base: type[psycopg.Connection], plan: FaultPlan) -> type[psycopg.Connection]:
    """``base`` with ``plan``'s faults (for a caller's own connection, e.g. ``workflow_enqueue_in``)."""
    return type(f"Faulty{base.__name__}", (FaultyConnectionMixin, base), {"fault_plan": plan})
