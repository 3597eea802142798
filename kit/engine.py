"""Running workflows and steps: the execution context, replay, retries and checkpoints.

The engine never touches SQL: every durable effect goes through a :class:`kit.storage.Backend` call.
It sees only :class:`EngineServices` (the backend, the workflow clock and the configured limits), never
the application object.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import math
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol

from kit import serialization as ser
from kit import telemetry
from kit.clock import Clock, tag_waits, untag_waits
from kit.config import Config
from kit.errors import (
    DatabaseUnavailableError,
    DeadlineExceededError,
    LeaseLostError,
    NonDeterminismError,
    SerializationError,
    StorageError,
    TransientStorageError,
    UsageError,
)
from kit.storage import Backend, Finish, Status, StepRecord, StepResult
from kit.validation import check_size

log = logging.getLogger("kit.engine")


class EngineServices(Protocol):
    """What running a workflow and its steps uses: the opened backend (``backend`` is read once per step:
    keep it an attribute or a cheap property), the workflow clock and the configuration (size limits)."""

    @property
    def backend(self) -> Backend: ...

    @property
    def clock(self) -> Clock: ...

    @property
    def config(self) -> Config: ...


@dataclass(frozen=True)
class StepInfo:
    """What a running step may know about itself (``kit.step_info()``).

    ``idempotency_key`` is the same across retries and recoveries of this step and differs for every
    step, so calls to external services can be deduplicated on the provider's side.
    """

    workflow_id: str
    step_id: int
    name: str
    attempt: int

    @property
    def idempotency_key(self) -> str:
        return f"{self.workflow_id}:{self.step_id}"


class _StepState:
    """The running step attempt of one thread or asyncio task (steps of an async workflow may overlap)."""

    __slots__ = ("info", "sends")

    def __init__(self, info: StepInfo) -> None:
        self.info = info
        self.sends = 0  # messages sent by this attempt (their idempotency keys)


_step_state: ContextVar[_StepState | None] = ContextVar("kit_step", default=None)
# The asyncio task of an async workflow that runs this code: "" for the workflow's main task (and all
# sync code), "0", "1", "0.2", ... for tasks it created, numbered in creation order per parent task.
# Steps of a task are replayed by (task, n-th step of that task), so concurrent branches that each take
# several steps replay to the same checkpoints whatever order they interleaved in.
_task_path: ContextVar[str] = ContextVar("kit_task", default="")
_TASK_SUFFIX = re.compile(r"@t:(\d+(?:\.\d+)*)$")


def stored_name(name: str) -> str:
    """The name a step is recorded under: its own, plus the task it ran in when not the main task."""
    path = _task_path.get()
    return f"{name}@t:{path}" if path else name


@dataclass(eq=False)
class WorkflowContext:
    """State of one workflow execution in this process: its lease epoch and recorded checkpoints."""

    workflow_id: str
    name: str
    epoch: int
    steps: dict[int, StepRecord] = field(default_factory=dict)
    next_step: int = 0
    lost: threading.Event = field(default_factory=threading.Event)
    confirmed_at: float = 0.0  # monotonic time the lease was confirmed (0: not yet)
    # Monotonic time after which the lease may have expired as far as this process knows (no renewal
    # confirmed since): the run stops at its next step boundary, before anyone else may take it over.
    lease_until: float = math.inf
    handover: bool = False  # this process is stopping: stop at the next step boundary, then release it
    running: dict[int, str] = field(default_factory=dict)  # step id -> name of the step bodies running now
    finishing: bool = False  # the terminal write is under way: the lease ends with it, not lost
    queue: str | None = None  # the limited queue it was claimed from (its finish frees capacity)
    deadline: float | None = None  # UNIX time (app clock) after which it is cancelled at a step boundary
    deadline_hit: bool = False  # the deadline passed: the workflow ends CANCELLED whatever its code does
    ended: threading.Event = field(default_factory=threading.Event)  # this run is over (waits of it stop)
    path_next: dict[str, int] = field(default_factory=dict)  # next step number of each task path
    task_children: dict[str, int] = field(default_factory=dict)  # tasks created so far by each task path
    recovered: bool = False  # claimed from an expired lease: the run before it died or was cut off
    trace: dict[str, str] | None = None  # trace context stored by whoever submitted it (kit.telemetry)
    _index: dict[tuple[str, int], StepRecord] | None = None

    def replay_at(self, path: str, n: int) -> StepRecord | None:
        """The checkpoint of the ``n``-th step taken by task ``path`` in an earlier run, if any."""
        if self._index is None:
            index: dict[tuple[str, int], StepRecord] = {}
            counts: dict[str, int] = {}
            for step_id in sorted(self.steps):
                rec = self.steps[step_id]
                m = _TASK_SUFFIX.search(rec.name)
                p = m.group(1) if m else ""
                index[(p, counts.get(p, 0))] = rec
                counts[p] = counts.get(p, 0) + 1
            self._index = index
        return self._index.get((path, n))

    def peek_position(self) -> int:
        """The step id the next new step will get (recorded positions are skipped)."""
        n = self.next_step
        while n in self.steps:
            n += 1
        return n

    @property
    def step(self) -> StepInfo | None:
        """The step whose body is running in this thread or task (None in workflow code)."""
        state = _step_state.get()
        return state.info if state is not None else None

    @step.setter
    def step(self, info: StepInfo | None) -> None:
        _step_state.set(_StepState(info) if info is not None else None)

    @property
    def sends_in_step(self) -> int:
        state = _step_state.get()
        return state.sends if state is not None else 0

    @sends_in_step.setter
    def sends_in_step(self, value: int) -> None:
        state = _step_state.get()
        if state is not None:
            state.sends = value

    def check_lease(self) -> None:
        """Raise at a step boundary when this run must stop: its lease was lost or may have expired (no
        renewal confirmed in time), or this process is handing it over (:class:`HandedOver`)."""
        expired = time.monotonic() >= self.lease_until
        if expired:
            self.lost.set()
        if self.lost.is_set():
            if self.handover:
                raise HandedOver(f"workflow {self.workflow_id}: handed over at a step boundary (worker stopping)")
            if expired:
                raise LeaseLostError(f"workflow {self.workflow_id}: lease may have expired (no renewal confirmed "
                                     "in time): stopping before another worker may take it over")
            raise LeaseLostError(f"workflow {self.workflow_id}: lease lost (epoch {self.epoch} superseded)")

    def check_deadline(self, now: float) -> None:
        """Raise DeadlineExceededError once ``now`` is at or past the deadline (and remember it)."""
        if self.deadline is not None and now >= self.deadline:
            self.deadline_hit = True
            raise DeadlineExceededError(f"workflow {self.workflow_id}: deadline passed; cancelling it")


_current: ContextVar[WorkflowContext | None] = ContextVar("kit_workflow", default=None)


class HandedOver(LeaseLostError):
    """Raised at a step boundary of a run whose process is stopping: the workflow is released to others."""


class SimulatedCrash(LeaseLostError):
    """Raised by a kit.testing crash point: the run stops as if its process died (nothing more is recorded)."""


# kit.testing installs this: called before a new step runs ("before") and after its body returned but
# before its checkpoint ("after"); raising SimulatedCrash abandons the run there.
crash_hook: Callable[[WorkflowContext, int, str, str], None] | None = None


def _crash_point(ctx: WorkflowContext, step_id: int, name: str, phase: str) -> None:
    hook = crash_hook
    if hook is not None:
        hook(ctx, step_id, name, phase)


def current_context() -> WorkflowContext | None:
    """The workflow running in this thread, if any."""
    return _current.get()


def step_info() -> StepInfo | None:
    """The running step's identity, or None outside a step."""
    ctx = _current.get()
    return ctx.step if ctx is not None else None


@dataclass(frozen=True)
class StepOptions:
    retries: int = 0
    backoff: float = 2.0
    initial_delay: float = 1.0
    max_delay: float = 60.0
    transactional: bool = False

    def delay(self, attempt: int) -> float:
        """Delay after failed attempt number ``attempt`` (1-based): exponential, capped."""
        return min(self.max_delay, self.initial_delay * (self.backoff ** (attempt - 1)))


@dataclass(frozen=True)
class Outcome:
    """How a local execution ended: committed status and encoded output/error, or abandoned."""

    status: Status | None  # None: abandoned (lease lost, or shut down before finishing)
    output: str | None = None
    error: str | None = None


def utc_now() -> datetime:
    """The client clock in UTC: step start times."""
    return datetime.now(timezone.utc)


def replay_or_reserve(ctx: WorkflowContext, name: str) -> tuple[int, StepRecord | None]:
    """Take this task's next step: return the checkpoint an earlier run recorded for it (checking the name
    matches), or a new step id."""
    ctx.check_lease()
    path = _task_path.get()
    n = ctx.path_next.get(path, 0)
    ctx.path_next[path] = n + 1
    rec = ctx.replay_at(path, n)
    if rec is not None:
        expected = stored_name(name)
        if rec.name != expected:
            raise NonDeterminismError(
                f"workflow {ctx.workflow_id} ('{ctx.name}'): step {rec.step_id} was recorded as '{rec.name}' but "
                f"the code now calls '{expected}' at that position; the workflow code changed while this workflow "
                "was in flight (keep in-flight workflows on the code that started them, use app.patched(), or "
                "version the workflow name)"
            )
        ctx.next_step = max(ctx.next_step, rec.step_id + 1)
        return rec.step_id, rec
    step_id = ctx.peek_position()
    ctx.next_step = step_id + 1
    return step_id, None


def recorded_value(rec: StepRecord) -> Any:
    """Replay a checkpoint: its output, or its recorded error raised again."""
    if rec.error is not None:
        raise ser.exception_from_record(ser.loads(rec.error, what=f"recorded error of step '{rec.name}'"))
    return ser.loads(rec.output, what=f"recorded output of step '{rec.name}'")


def run_step(services: EngineServices, name: str, fn: Callable[..., Any], opts: StepOptions, args: tuple,
             kwargs: dict) -> Any:
    """Call a step from workflow code: replay it if recorded, else run it with retries and checkpoint."""
    ctx = _current.get()
    if ctx is None or ctx.step is not None:
        # Outside a workflow, or nested in another step: a plain call (the outer step is the unit).
        if opts.transactional:
            raise UsageError(f"transactional step '{name}' can only be called inside a workflow")
        return fn(*args, **kwargs)
    step_id, rec = replay_or_reserve(ctx, name)
    if rec is not None:
        return recorded_value(rec)
    ctx.check_deadline(services.clock.time())
    ctx.running[step_id] = name
    try:
        _crash_point(ctx, step_id, name, "before")
        hook = telemetry.hook  # None unless an integration traces or measures steps
        if hook is not None:
            return hook.step(ctx, step_id, name, fn,
                             lambda f: _run_new_step(services, ctx, step_id, name, f, opts, args, kwargs))
        return _run_new_step(services, ctx, step_id, name, fn, opts, args, kwargs)
    except LeaseLostError:
        ctx.lost.set()  # even if workflow code swallows it, no later step of this run may start
        raise
    finally:
        ctx.running.pop(step_id, None)


async def run_step_async(services: EngineServices, name: str, fn: Callable[..., Any], opts: StepOptions,
                         args: tuple, kwargs: dict) -> Any:
    """``run_step`` for an ``async def`` step: the position is taken before the first ``await``, so
    steps gathered concurrently get the same positions on replay (their order of creation)."""
    ctx = _current.get()
    if ctx is None or ctx.step is not None:
        return await fn(*args, **kwargs)
    step_id, rec = replay_or_reserve(ctx, name)
    if rec is not None:
        return recorded_value(rec)
    ctx.check_deadline(services.clock.time())
    ctx.running[step_id] = name
    try:
        _crash_point(ctx, step_id, name, "before")
        hook = telemetry.hook
        if hook is not None:
            return await hook.step_async(ctx, step_id, name, fn, lambda f: _run_new_step_async(
                services, ctx, step_id, name, f, opts, args, kwargs))
        return await _run_new_step_async(services, ctx, step_id, name, fn, opts, args, kwargs)
    except LeaseLostError:
        ctx.lost.set()
        raise
    finally:
        ctx.running.pop(step_id, None)


async def _run_new_step_async(services: EngineServices, ctx: WorkflowContext, step_id: int, name: str,
                              fn: Callable[..., Any], opts: StepOptions, args: tuple, kwargs: dict) -> Any:
    backend = services.backend
    started = utc_now()
    attempt = 0
    while True:
        attempt += 1
        ctx.step = StepInfo(ctx.workflow_id, step_id, name, attempt)
        try:
            value = await fn(*args, **kwargs)
            ctx.step = None
            text = check_size(ser.dumps(value, what=f"output of step '{name}'"), services.config, "max_output_bytes",
                              f"output of step '{name}'")
        except LeaseLostError:
            raise
        except Exception as exc:  # noqa: BLE001 - a user step may raise anything
            ctx.step = None
            delay = _after_failure(services, ctx, step_id, name, opts, attempt, started, exc)
            await asyncio.to_thread(retry_wait, services, ctx, delay)
            continue
        finally:
            ctx.step = None
        _crash_point(ctx, step_id, name, "after")
        record = backend.step_record(StepResult(ctx.workflow_id, step_id, stored_name(name), ctx.epoch, output=text,
                                                attempts=attempt, started_at=started))
        if record.epoch != ctx.epoch:
            return recorded_value(record)
        return value


def patched(services: EngineServices, patch: str) -> bool:
    """True when this workflow runs the code after patch ``patch``: new runs record a marker at this
    position; replays of runs that reached this position before the patch existed get False."""
    ctx = _current.get()
    if ctx is None or ctx.step is not None:
        return True
    marker = f"patch:{patch}"
    path = _task_path.get()
    n = ctx.path_next.get(path, 0)
    rec = ctx.replay_at(path, n)
    if rec is not None:
        if rec.name != stored_name(marker):
            return False  # recorded by the old code: keep replaying the old path
        ctx.path_next[path] = n + 1
        ctx.next_step = max(ctx.next_step, rec.step_id + 1)
        return True
    run_step(services, marker, lambda: True, StepOptions(), (), {})
    return True


def deprecate_patch(patch: str) -> None:
    """Once no workflow replays the pre-patch path: skip the marker that ``patched(patch)`` recorded, so
    workflows started while the check existed still replay after it is removed."""
    ctx = _current.get()
    if ctx is None or ctx.step is not None:
        return
    path = _task_path.get()
    n = ctx.path_next.get(path, 0)
    rec = ctx.replay_at(path, n)
    if rec is not None and rec.name == stored_name(f"patch:{patch}"):
        ctx.path_next[path] = n + 1
        ctx.next_step = max(ctx.next_step, rec.step_id + 1)


def _run_new_step(services: EngineServices, ctx: WorkflowContext, step_id: int, name: str, fn: Callable[..., Any],
                  opts: StepOptions, args: tuple, kwargs: dict) -> Any:
    """Run a step that has no checkpoint yet: attempts with backoff, then record output or error."""
    backend = services.backend
    started = utc_now()
    attempt = 0
    storage_retries = 0
    while True:
        attempt += 1
        ctx.step = StepInfo(ctx.workflow_id, step_id, name, attempt)
        ctx.sends_in_step = 0
        try:
            if opts.transactional:
                base = StepResult(ctx.workflow_id, step_id, stored_name(name), ctx.epoch, attempts=attempt, started_at=started)
                with backend.step_transaction(base) as tx:
                    value = fn(tx.connection, *args, **kwargs)
                    text = check_size(ser.dumps(value, what=f"output of step '{name}'"), services.config,
                                      "max_output_bytes", f"output of step '{name}'")
                    ctx.step = None
                    _crash_point(ctx, step_id, name, "after")  # a simulated crash rolls the step back
                    tx.checkpoint(text)
                record = tx.record
            else:
                value = fn(*args, **kwargs)
                ctx.step = None
                text = check_size(ser.dumps(value, what=f"output of step '{name}'"), services.config, "max_output_bytes",
                                  f"output of step '{name}'")
                record = None
        except LeaseLostError:
            raise
        except TransientStorageError as exc:
            # A transactional step whose commit was lost: nothing of it committed, so run it again.
            storage_retries += 1
            attempt -= 1
            if storage_retries > 20:
                raise
            log.warning("step %s of %s: %s", name, ctx.workflow_id, exc)
            _pause(ctx, min(5.0, 0.1 * 2**storage_retries))
            continue
        except Exception as exc:  # noqa: BLE001 - a user step may raise anything
            ctx.step = None
            retry_wait(services, ctx, _after_failure(services, ctx, step_id, name, opts, attempt, started, exc))
            continue
        finally:
            ctx.step = None
        if record is None:
            _crash_point(ctx, step_id, name, "after")
            record = backend.step_record(StepResult(ctx.workflow_id, step_id, stored_name(name), ctx.epoch, output=text,
                                                    attempts=attempt, started_at=started))
        if record.epoch != ctx.epoch:
            # Another run of this workflow recorded the step first: keep the recorded outcome (G2).
            return recorded_value(record)
        return value


def _after_failure(services: EngineServices, ctx: WorkflowContext, step_id: int, name: str, opts: StepOptions,
                   attempt: int, started: datetime, exc: Exception) -> float:
    """A step attempt raised ``exc``: return the delay before the next attempt, or record the error as the
    step's checkpoint and re-raise (the database being away records nothing: recovery runs it again)."""
    retryable = not isinstance(exc, (SerializationError, StorageError, NonDeterminismError))
    if retryable and attempt <= opts.retries:
        delay = opts.delay(attempt)
        log.info("step %s of %s failed (attempt %d/%d: %s: %s); retrying in %.2fs", name,
                 ctx.workflow_id, attempt, opts.retries + 1, type(exc).__name__, exc, delay)
        return delay
    if isinstance(exc, (DatabaseUnavailableError, TransientStorageError)):
        raise exc
    error = ser.dumps(ser.exception_to_record(exc), what="step error")
    services.backend.step_record(StepResult(ctx.workflow_id, step_id, stored_name(name), ctx.epoch, error=error,
                                       attempts=attempt, started_at=started))
    raise exc


def retry_wait(services: EngineServices, ctx: WorkflowContext, delay: float) -> None:
    """Back off before a step's next attempt: on the app clock, ending early (and raising) when the lease
    is lost or the workflow's deadline comes first."""
    until = services.clock.time() + delay
    end = until if ctx.deadline is None else min(until, ctx.deadline)
    if services.clock.wait_until(ctx.lost, end):
        ctx.check_lease()
    ctx.check_deadline(services.clock.time())


def _pause(ctx: WorkflowContext, seconds: float) -> None:
    """Sleep between attempts, waking early (and abandoning) if the lease is lost."""
    if ctx.lost.wait(seconds):
        ctx.check_lease()


def execute(services: EngineServices, ctx: WorkflowContext, fn: Callable[..., Any], args: tuple,
            kwargs: dict) -> Outcome:
    """Run a workflow function under ``ctx`` to its end and record the terminal status (fenced)."""
    try:
        return _execute(services, ctx, fn, args, kwargs)
    finally:
        ctx.ended.set()
        if ctx.task_children:  # an async run that created tasks: wake any of their waits still pending
            ctx.lost.set()


def _execute(services: EngineServices, ctx: WorkflowContext, fn: Callable[..., Any], args: tuple,
             kwargs: dict) -> Outcome:
    token = _current.set(ctx)
    waits = tag_waits(ctx.workflow_id)  # a virtual clock tells which workflows wait on it (kit.testing)
    status = Status.SUCCESS
    output: str | None = None
    error: str | None = None
    try:
        if ctx.deadline is not None and not ctx.steps:
            ctx.check_deadline(services.clock.time())  # queued past its deadline: never start it
        result = fn(*args, **kwargs)
        if inspect.isawaitable(result):
            result = _run_async(ctx, result)  # an async workflow: its own event loop on this thread
        if ctx.deadline_hit:
            raise DeadlineExceededError(f"workflow {ctx.workflow_id}: deadline passed")
        try:
            output = check_size(ser.dumps(result, what=f"result of workflow '{ctx.name}'"), services.config,
                                "max_output_bytes", f"result of workflow '{ctx.name}'")
        except SerializationError as exc:
            status, error = Status.ERROR, ser.dumps(ser.exception_to_record(exc))
    except DeadlineExceededError as exc:
        status, error = Status.CANCELLED, ser.dumps(ser.exception_to_record(exc))
    except LeaseLostError as exc:
        if isinstance(exc, HandedOver):
            log.info("%s", exc)
        else:
            log.warning("abandoning workflow %s: %s", ctx.workflow_id, exc)
        return Outcome(None)
    except StorageError as exc:
        # The database stayed unreachable past the retry budget: leave the workflow to be recovered.
        log.error("abandoning workflow %s after a storage failure: %s", ctx.workflow_id, exc)
        return Outcome(None)
    except BaseException as exc:  # noqa: BLE001 - anything the workflow raises ends it in ERROR
        if not isinstance(exc, Exception):
            raise
        if ctx.deadline_hit or (ctx.deadline is not None and services.clock.time() >= ctx.deadline):
            # Its deadline passed: whatever failed meanwhile (a child cancelled by the same deadline, a
            # cleanup after DeadlineExceededError), the workflow ends as cancelled by its deadline.
            status, error = Status.CANCELLED, ser.dumps(ser.exception_to_record(
                DeadlineExceededError(f"workflow {ctx.workflow_id}: deadline passed")))
        else:
            status, error = Status.ERROR, ser.dumps(ser.exception_to_record(exc))
    finally:
        untag_waits(waits)
        _current.reset(token)
    if ctx.lost.is_set() and not ctx.handover:  # handed over at its end: finish it (a fenced write)
        log.warning("abandoning workflow %s: lease lost before it finished", ctx.workflow_id)
        return Outcome(None)
    ctx.finishing = True
    try:
        done = services.backend.workflow_finish(Finish(ctx.workflow_id, ctx.epoch, status, output, error))
    except StorageError as exc:
        log.error("could not record the end of workflow %s: %s", ctx.workflow_id, exc)
        return Outcome(None)
    if not done:
        log.warning("workflow %s finished here but its lease was taken over; result discarded", ctx.workflow_id)
        return Outcome(None)
    return Outcome(status, output, error)



async def _await(awaitable: Any) -> Any:
    return await awaitable


def _run_async(ctx: WorkflowContext, awaitable: Any) -> Any:
    """Run an async workflow on a fresh event loop whose tasks get deterministic task paths. Threads its
    waits run on are never joined: when the workflow ends, waits still pending (a gathered branch blocked
    on a child, a sleep) stop within a fraction of a second instead of holding the run open."""
    loop = asyncio.new_event_loop()
    executor = ThreadPoolExecutor(max_workers=64, thread_name_prefix=f"kit-async-{ctx.workflow_id}"[:60])
    loop.set_default_executor(executor)

    def task_factory(loop: asyncio.AbstractEventLoop, coro: Any, context: contextvars.Context | None = None,
                     **kw: Any) -> asyncio.Task:
        base = context if context is not None else contextvars.copy_context()
        if asyncio.current_task(loop) is not None and _step_state.get() is None and _current.get() is ctx:
            parent = _task_path.get()
            i = ctx.task_children.get(parent, 0)
            ctx.task_children[parent] = i + 1
            base.run(_task_path.set, f"{parent}.{i}" if parent else str(i))
        return asyncio.Task(coro, loop=loop, context=base, **kw)

    loop.set_task_factory(task_factory)
    try:
        return loop.run_until_complete(_await(awaitable))
    finally:
        ctx.ended.set()
        try:
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()  # shuts the executor down without waiting for its threads
