"""Durable timers, messages and events: workflow operations recorded as steps.

Each operation takes step positions like any step, so replay returns what the first run saw:
``sleep`` records its wake time before sleeping (a recovered workflow sleeps only the remainder);
``recv`` records its deadline, then consumes a message and records it in one fenced transaction
(exactly once, even across crashes); ``set_event`` writes the event and its checkpoint together.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from typing import Any

from kit import serialization as ser
from kit.engine import (
    StepOptions,
    WorkflowContext,
    current_context,
    replay_or_reserve,
    run_step,
    stored_name,
    utc_now,
)
from kit.errors import LeaseLostError, UsageError, WorkflowNotFoundError
from kit.services import Services
from kit.storage import StepResult
from kit.validation import check_size, validate_key, validate_topic, validate_workflow_id

_MAX_WAIT = 366 * 24 * 3600.0  # a year: longer waits are almost certainly a unit mistake


def _check_timeout(name: str, value: float | None) -> float:
    if (value is None or isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
            or not 0 <= value <= _MAX_WAIT):
        raise UsageError(f"{name} must be a finite number of seconds between 0 and {_MAX_WAIT:g}, got {value!r}")
    return float(value)


_check_key = validate_key
_check_topic = validate_topic


def _workflow_ctx(operation: str) -> WorkflowContext:
    ctx = current_context()
    if ctx is None or ctx.step is not None:
        raise UsageError(f"{operation} can only be called in workflow code (not outside a workflow, not in a step)")
    return ctx


def _recorded_deadline(services: Services, ctx: WorkflowContext, name: str, seconds: float) -> float:
    """Record (or replay) an absolute deadline as a step; returns it as a UNIX time."""
    return run_step(services, name, lambda: services.clock.time() + seconds, StepOptions(), (), {})


def _pause(services: Services, ctx: WorkflowContext, until: float) -> None:
    """Wait until the UNIX time ``until`` on the app's clock, abandoning at once if the lease is lost
    and ending the workflow (DeadlineExceededError) if its deadline comes first."""
    end = until if ctx.deadline is None else min(until, ctx.deadline)
    if services.clock.wait_until(ctx.lost, end):
        ctx.check_lease()
    ctx.check_deadline(services.clock.time())  # also when both passed (e.g. recovered after a long outage)


def sleep(services: Services, seconds: float) -> None:
    """Durable sleep: in a workflow the wake time is checkpointed first, so after a crash and recovery the
    workflow sleeps only what remains. Outside a workflow it is ``time.sleep``."""
    seconds = _check_timeout("sleep seconds", seconds)
    ctx = current_context()
    if ctx is None or ctx.step is not None:
        services.clock.wait(None, seconds)
        return
    wake_at = _recorded_deadline(services, ctx, "sleep", seconds)
    _pause(services, ctx, wake_at)


def send(services: Services, workflow_id: str, message: Any, topic: str | None = None) -> None:
    """Send ``message`` (JSON-serializable, not None) to a workflow. From workflow code the send is a
    step with an idempotency key, so a replay or a re-run after a crash never sends twice."""
    validate_workflow_id(workflow_id)
    topic_ = _check_topic(topic)
    if message is None:
        raise UsageError("a message must not be None (recv returns None for 'no message')")
    body = check_size(ser.dumps(message, what=f"message to workflow {workflow_id}"), services.config,
                      "max_message_bytes", f"message to workflow {workflow_id}")
    ctx = current_context()

    def deliver(sender_key: str | None) -> None:
        sender = (ctx.workflow_id, ctx.epoch) if ctx is not None else None
        try:
            delivered = services.backend.message_send(workflow_id, topic_, body, sender_key, sender)
        except LeaseLostError:
            if ctx is not None:
                ctx.lost.set()
            raise
        if not delivered:
            raise WorkflowNotFoundError(f"cannot send to workflow {workflow_id!r}: no such workflow")

    if ctx is None:
        deliver(uuid.uuid4().hex)  # one key per call: a retried statement cannot deliver twice
        return
    if ctx.step is not None:
        # In a step body: the n-th send of this step has the same key in every attempt and re-run.
        ctx.sends_in_step += 1
        deliver(f"{ctx.step.idempotency_key}:{ctx.sends_in_step}")
        return

    def step() -> None:
        info = ctx.step
        deliver(info.idempotency_key if info else uuid.uuid4().hex)

    run_step(services, f"send:{workflow_id}", step, StepOptions(), (), {})


def recv(services: Services, topic: str | None = None, timeout: float = 60.0) -> Any:
    """Receive the next message of ``topic`` sent to this workflow, waiting up to ``timeout`` seconds;
    None when none came. Each message is received at most once; the timeout itself is durable."""
    begun = _recv_begin(services, topic, timeout)
    return begun[0] if len(begun) == 1 else _recv_wait(services, *begun)


async def recv_async(services: Services, topic: str | None = None, timeout: float = 60.0) -> Any:
    """``recv`` for async workflows: positions are taken at once, the wait runs on a thread."""
    begun = _recv_begin(services, topic, timeout)
    if len(begun) == 1:
        return begun[0]
    return await asyncio.to_thread(_recv_wait, services, *begun)


async def sleep_async(services: Services, seconds: float) -> None:
    """``sleep`` for async workflows: the wake time is recorded at once, the wait runs on a thread."""
    seconds = _check_timeout("sleep seconds", seconds)
    ctx = current_context()
    if ctx is None or ctx.step is not None:
        await asyncio.to_thread(services.clock.wait, None, seconds)
        return
    wake_at = _recorded_deadline(services, ctx, "sleep", seconds)
    await asyncio.to_thread(_pause, services, ctx, wake_at)


def _recv_begin(services: Services, topic: str | None, timeout: float) -> tuple:
    """Validate, record the deadline and take recv's step position: (replayed value,) or wait args."""
    timeout = _check_timeout("recv timeout", timeout)
    topic_ = _check_topic(topic)
    ctx = _workflow_ctx("recv()")
    name = f"recv:{topic_}"
    deadline = _recorded_deadline(services, ctx, "recv.deadline", timeout)
    step_id, rec = replay_or_reserve(ctx, name)
    if rec is not None:
        return (ser.loads(rec.output, what="received message"),)
    return ctx, name, topic_, deadline, step_id


def _recv_wait(services: Services, ctx: WorkflowContext, name: str, topic_: str, deadline: float, step_id: int) -> Any:
    started = utc_now()
    backend = services.backend
    with services.runtime.notifier.watch("m:" + ctx.workflow_id) as watch:
        while True:
            step = StepResult(ctx.workflow_id, step_id, stored_name(name), ctx.epoch, started_at=started)
            try:
                got = backend.message_receive(step, topic_)
            except LeaseLostError:
                ctx.lost.set()
                raise
            if got is not None:
                return ser.loads(got.output, what="received message")
            now = services.clock.time()
            ctx.check_deadline(now)
            if now >= deadline:
                break
            end = deadline if ctx.deadline is None else min(deadline, ctx.deadline)
            services.clock.wait_until(watch.event, end, max_real=services.runtime.notifier.poll)
            watch.event.clear()
            ctx.check_lease()
    try:
        record = backend.step_record(StepResult(ctx.workflow_id, step_id, stored_name(name), ctx.epoch, output="null",
                                                started_at=started))
    except LeaseLostError:
        ctx.lost.set()
        raise
    return ser.loads(record.output, what="received message")


def set_event(services: Services, key: str, value: Any) -> None:
    """Publish ``value`` under ``key`` for this workflow; readers see the latest value set by a
    committed step."""
    _check_key("event key", key)
    text = check_size(ser.dumps(value, what=f"event {key!r}"), services.config, "max_event_bytes", f"event {key!r}")
    ctx = _workflow_ctx("set_event()")
    step_id, rec = replay_or_reserve(ctx, f"set_event:{key}")
    if rec is not None:
        return
    try:
        services.backend.event_set(StepResult(ctx.workflow_id, step_id, stored_name(f"set_event:{key}"), ctx.epoch, output=text,
                                         started_at=utc_now()), key)
    except LeaseLostError:
        ctx.lost.set()
        raise


def get_event(services: Services, workflow_id: str, key: str, timeout: float = 60.0) -> Any:
    """The latest value of another workflow's event ``key``, waiting up to ``timeout`` seconds for it to
    be set; None if it is not set by then. In workflow code the value read is checkpointed."""
    validate_workflow_id(workflow_id)
    _check_key("event key", key)
    timeout = _check_timeout("get_event timeout", timeout)

    ctx = current_context()

    def read() -> Any:
        # On the app's clock (a virtual one skips the wait in tests); a waiting workflow stops when its
        # lease is lost (cancelled, taken over) or its deadline comes.
        end = services.clock.time() + timeout
        with services.runtime.notifier.watch("e:" + workflow_id) as watch:
            while True:
                text = services.backend.event_get(workflow_id, key)
                if text is not None:
                    return ser.loads(text, what=f"event {key!r} of workflow {workflow_id}")
                now = services.clock.time()
                if ctx is not None:
                    ctx.check_lease()
                    ctx.check_deadline(now)
                if now >= end:
                    return None
                until = end if ctx is None or ctx.deadline is None else min(end, ctx.deadline)
                services.clock.wait_until(watch.event, until, max_real=services.runtime.notifier.poll)
                watch.event.clear()

    if ctx is None or ctx.step is not None:
        return read()
    return run_step(services, f"get_event:{workflow_id}:{key}", read, StepOptions(), (), {})
