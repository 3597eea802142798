"""Durable timers, messages and events: workflow operations recorded as steps.

Each operation takes step positions like any step, so replay returns what the first run saw:
``sleep`` records its wake time before sleeping (a recovered workflow sleeps only the remainder);
``recv`` records its deadline, then consumes a message and records it in one fenced transaction
(exactly once, even across crashes); ``set_event`` writes the event and its checkpoint together.
"""

from __future__ import annotations

import math
import time
import uuid
from typing import TYPE_CHECKING, Any

from kit import serialization as ser
from kit.engine import StepOptions, current_context, replay_or_reserve, run_step, utc_now
from kit.errors import LeaseLostError, UsageError, WorkflowNotFoundError
from kit.storage import StepResult

if TYPE_CHECKING:
    from kit.app import Kit
    from kit.engine import WorkflowContext

_MAX_TOPIC = 200
_MAX_WAIT = 366 * 24 * 3600.0  # a year: longer waits are almost certainly a unit mistake


def _check_timeout(name: str, value: float | None) -> float:
    if (value is None or isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
            or not 0 <= value <= _MAX_WAIT):
        raise UsageError(f"{name} must be a finite number of seconds between 0 and {_MAX_WAIT:g}, got {value!r}")
    return float(value)


def _check_key(what: str, key: object) -> str:
    if not isinstance(key, str) or not key or len(key) > _MAX_TOPIC:
        raise UsageError(f"{what} must be a non-empty string of at most {_MAX_TOPIC} characters, got {key!r}")
    return key


def _check_topic(topic: str | None) -> str:
    if topic is None:
        return ""
    if not isinstance(topic, str) or len(topic) > _MAX_TOPIC:
        raise UsageError(f"topic must be a string of at most {_MAX_TOPIC} characters, got {topic!r}")
    return topic


def _workflow_ctx(operation: str) -> WorkflowContext:
    ctx = current_context()
    if ctx is None or ctx.step is not None:
        raise UsageError(f"{operation} can only be called in workflow code (not outside a workflow, not in a step)")
    return ctx


def _recorded_deadline(app: Kit, ctx: WorkflowContext, name: str, seconds: float) -> float:
    """Record (or replay) an absolute deadline as a step; returns it as a UNIX time."""
    return run_step(app, name, lambda: app.clock.time() + seconds, StepOptions(), (), {})


def _pause(app: Kit, ctx: WorkflowContext, until: float) -> None:
    """Wait until the UNIX time ``until`` on the app's clock, abandoning at once if the lease is lost."""
    if app.clock.wait_until(ctx.lost, until):
        ctx.check_lease()


def sleep(app: Kit, seconds: float) -> None:
    """Durable sleep: in a workflow the wake time is checkpointed first, so after a crash and recovery the
    workflow sleeps only what remains. Outside a workflow it is ``time.sleep``."""
    seconds = _check_timeout("sleep seconds", seconds)
    ctx = current_context()
    if ctx is None or ctx.step is not None:
        app.clock.wait(None, seconds)
        return
    wake_at = _recorded_deadline(app, ctx, "sleep", seconds)
    _pause(app, ctx, wake_at)


def send(app: Kit, workflow_id: str, message: Any, topic: str | None = None) -> None:
    """Send ``message`` (JSON-serializable, not None) to a workflow. From workflow code the send is a
    step with an idempotency key, so a replay or a re-run after a crash never sends twice."""
    from kit.app import validate_workflow_id

    validate_workflow_id(workflow_id)
    topic_ = _check_topic(topic)
    if message is None:
        raise UsageError("a message must not be None (recv returns None for 'no message')")
    body = ser.dumps(message, what=f"message to workflow {workflow_id}")
    ctx = current_context()

    def deliver(sender_key: str | None) -> None:
        if not app.backend.message_send(workflow_id, topic_, body, sender_key):
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

    run_step(app, f"send:{workflow_id}", step, StepOptions(), (), {})


def recv(app: Kit, topic: str | None = None, timeout: float = 60.0) -> Any:
    """Receive the next message of ``topic`` sent to this workflow, waiting up to ``timeout`` seconds;
    None when none came. Each message is received at most once; the timeout itself is durable."""
    timeout = _check_timeout("recv timeout", timeout)
    topic_ = _check_topic(topic)
    ctx = _workflow_ctx("recv()")
    name = f"recv:{topic_}"
    deadline = _recorded_deadline(app, ctx, "recv.deadline", timeout)
    step_id, rec = replay_or_reserve(ctx, name)
    if rec is not None:
        return ser.loads(rec.output, what="received message")
    started = utc_now()
    backend = app.backend
    with app.runtime.notifier.watch("m:" + ctx.workflow_id) as watch:
        while True:
            step = StepResult(ctx.workflow_id, step_id, name, ctx.epoch, started_at=started)
            try:
                got = backend.message_receive(step, topic_)
            except LeaseLostError:
                ctx.lost.set()
                raise
            if got is not None:
                return ser.loads(got.output, what="received message")
            left = deadline - time.time()
            if left <= 0:
                break
            watch.wait(left)
            ctx.check_lease()
    try:
        record = backend.step_record(StepResult(ctx.workflow_id, step_id, name, ctx.epoch, output="null",
                                                started_at=started))
    except LeaseLostError:
        ctx.lost.set()
        raise
    return ser.loads(record.output, what="received message")


def set_event(app: Kit, key: str, value: Any) -> None:
    """Publish ``value`` under ``key`` for this workflow; readers see the latest value set by a
    committed step."""
    _check_key("event key", key)
    text = ser.dumps(value, what=f"event {key!r}")
    ctx = _workflow_ctx("set_event()")
    step_id, rec = replay_or_reserve(ctx, f"set_event:{key}")
    if rec is not None:
        return
    try:
        app.backend.event_set(StepResult(ctx.workflow_id, step_id, f"set_event:{key}", ctx.epoch, output=text,
                                         started_at=utc_now()), key)
    except LeaseLostError:
        ctx.lost.set()
        raise


def get_event(app: Kit, workflow_id: str, key: str, timeout: float = 60.0) -> Any:
    """The latest value of another workflow's event ``key``, waiting up to ``timeout`` seconds for it to
    be set; None if it is not set by then. In workflow code the value read is checkpointed."""
    from kit.app import validate_workflow_id

    validate_workflow_id(workflow_id)
    _check_key("event key", key)
    timeout = _check_timeout("get_event timeout", timeout)

    def read() -> Any:
        deadline = time.monotonic() + timeout
        with app.runtime.notifier.watch("e:" + workflow_id) as watch:
            while True:
                text = app.backend.event_get(workflow_id, key)
                if text is not None:
                    return ser.loads(text, what=f"event {key!r} of workflow {workflow_id}")
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                watch.wait(left)

    ctx = current_context()
    if ctx is None or ctx.step is not None:
        return read()
    return run_step(app, f"get_event:{workflow_id}:{key}", read, StepOptions(), (), {})
