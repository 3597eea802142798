"""Shared helpers of the backend conformance suite (no test functions here).

The suite talks to a backend only through :class:`kit.storage.Backend`. A backend adapter module
provides one fixture, ``backend_factory``: a callable ``backend_factory(migrate=True)`` returning a
new, opened (and by default migrated) backend on the test's own, initially empty storage namespace
(for SQL backends: a fresh schema). Every call returns a new instance on the same namespace, so two
instances behave like two worker processes. The factory also carries:

``name``              the backend's name (``Backend.name``): the key of the register of known differences
``faults``            the :class:`~conformance.faults.FaultPlan` of the fault-injected pass, or None
``secret``            a password present in the URL the backends connect with (``describe()`` must hide it)
``sql(q, p)``         run one SQL statement on the test namespace (search_path set) and return its rows;
                      used only to set up states the interface cannot reach (a user table for transactional
                      steps) and to call the SQL ``enqueue()`` function
``qualify(t)``        the fully qualified, quoted name of table (or function) ``t`` in the test namespace
``connect()``         a new driver connection of the caller's own (not autocommit), as an application
                      passes to ``workflow_enqueue_in``; closed by the factory at the end of the test
``server_version()``  the server's version text (for version ranges in the register)
``with_faults(plan)`` optional: a new backend on the namespace injecting ``plan``'s faults (the
                      :mod:`.ambiguity` area skips without it)

:class:`conformance.factory.SqlFactory` implements all of it for psycopg-based backends.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from kit import serialization as ser
from kit.errors import TransientStorageError
from kit.storage import Backend, Claim, ClaimRequest, Created, NewWorkflow, StepRecord, StepResult

T = TypeVar("T")

NAME = "conf.wf"


def uid(prefix: str = "wf") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def args_text(*args: Any, **kwargs: Any) -> str:
    return ser.encode_args(args, kwargs, what="conformance inputs")


def create(
    backend: Backend,
    workflow_id: str | None = None,
    *,
    name: str = NAME,
    owner: str | None = None,
    lease: float = 60.0,
    inputs: str | None = None,
    **kw: Any,
) -> tuple[str, Created]:
    wid = workflow_id or uid()
    created = backend.workflow_create(NewWorkflow(
        workflow_id=wid, name=name, inputs=inputs if inputs is not None else args_text(wid),
        owner=owner, lease_seconds=lease, **kw,
    ))
    return wid, created


def claim(
    backend: Backend,
    owner: str,
    *,
    names: Sequence[str] = (NAME,),
    limit: int = 10,
    lease: float = 60.0,
    queues: Sequence[str] | None = None,
) -> list[Claim]:
    return backend.workflow_claim(ClaimRequest(owner=owner, names=list(names), limit=limit,
                                               lease_seconds=lease, queues=queues))


def step(wid: str, step_id: int, epoch: int, *, name: str | None = None, output: str | None = None,
         error: str | None = None, attempts: int = 1) -> StepResult:
    return StepResult(workflow_id=wid, step_id=step_id, name=name or f"step{step_id}", epoch=epoch,
                      output=output, error=error, attempts=attempts)


def wait_for(predicate: Callable[[], T], *, timeout: float = 15.0, interval: float = 0.02,
             what: str = "condition") -> T:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def take_over(backend: Backend, wid: str, epoch: int, new_owner: str, *, name: str = NAME,
              lease: float = 60.0) -> Claim:
    """Make ``new_owner`` the owner of a RUNNING workflow at once: release it and claim it again."""
    assert backend.workflow_release(wid, epoch) is True
    claims = [c for c in claim(backend, new_owner, names=[name], limit=100, lease=lease) if c.workflow_id == wid]
    assert len(claims) == 1, f"{new_owner} could not claim {wid}"
    return claims[0]


def claim_when_expired(backend: Backend, wid: str, new_owner: str, *, name: str = NAME,
                       timeout: float = 15.0) -> Claim:
    """Poll claims by ``new_owner`` until ``wid`` (whose lease is running out) is reclaimed."""
    got: list[Claim] = []

    def attempt() -> bool:
        got.extend(c for c in claim(backend, new_owner, names=[name], limit=100) if c.workflow_id == wid)
        return bool(got)

    wait_for(attempt, timeout=timeout, interval=0.05, what=f"expired lease of {wid} to be reclaimed")
    assert len(got) == 1
    return got[0]


def run_threads(n: int, target: Callable[[int], T], *, timeout: float = 60.0) -> list[T]:
    """Run ``target(i)`` in ``n`` threads started together (a barrier); return results, re-raise errors."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait(timeout=timeout)
            results[i] = target(i)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
        assert not t.is_alive(), "a worker thread hung"
    if errors:
        raise errors[0]
    return results


def no_faults(reason: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Leave a test out of the fault-injected pass, saying why (it observes a single attempt by design)."""
    if not reason.strip():
        raise ValueError("no_faults needs a reason")

    def mark(fn: Callable[..., T]) -> Callable[..., T]:
        fn.__conformance_no_faults__ = reason  # type: ignore[attr-defined]
        return fn

    return mark


def qclaim(backend: Backend, owner: str, queue: str, *, limit: int = 10, lease: float = 60.0,
           names: Sequence[str] = (NAME,), running_here: int = 0,
           versions: Sequence[str] | None = None) -> list[Claim] | None:
    """One ``queue_claim`` (None: another claimer holds the queue right now)."""
    return backend.queue_claim(ClaimRequest(owner=owner, names=list(names), limit=limit, lease_seconds=lease,
                                            versions=versions, running_here=running_here), queue)


def qclaim_now(backend: Backend, owner: str, queue: str, *, timeout: float = 15.0, **kw: Any) -> list[Claim]:
    """``queue_claim``, asked again while another claimer holds the queue (as a worker does next round)."""
    deadline = time.monotonic() + timeout
    while True:
        got = qclaim(backend, owner, queue, **kw)
        if got is not None:
            return got
        if time.monotonic() >= deadline:
            raise AssertionError(f"queue {queue!r} stayed busy for {timeout}s")
        time.sleep(0.005)


def run_step_transaction(backend: Backend, step: StepResult, body: Callable[[Any], None]) -> StepRecord | None:
    """A transactional step as the engine runs it: ``body(tx)`` writes through ``tx.connection`` and calls
    ``tx.checkpoint(...)``; a TransientStorageError (nothing of it committed) runs it again. Returns
    ``tx.record``; whatever else the block raises propagates."""
    for _ in range(20):
        try:
            with backend.step_transaction(step) as tx:
                body(tx)
        except TransientStorageError:
            continue
        return tx.record
    raise AssertionError("a transactional step failed transiently 20 times in a row")


def is_transient(exc: BaseException) -> bool:
    """A failure after which the caller runs its whole transaction again (nothing of it committed)."""
    return isinstance(exc, TransientStorageError) or getattr(exc, "sqlstate", None) in ("40001", "40P01")


def caller_transaction(factory: Any, body: Callable[[Any], T], *, commit: bool = True) -> T:
    """Run ``body(connection)`` in a transaction of the caller's own connection, then commit (or roll
    back); a transient failure rolls back and runs it again, as an application does."""
    for _ in range(20):
        conn = factory.connect()
        try:
            result = body(conn)
            if commit:
                conn.commit()
            else:
                conn.rollback()
            return result
        except BaseException as exc:
            if not is_transient(exc):
                raise
        finally:
            conn.close()
    raise AssertionError("the caller's transaction failed transiently 20 times in a row")
