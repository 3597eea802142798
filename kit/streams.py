"""Durable streams: a workflow appends values under a key; anyone iterates them in order until the close.

``write_stream`` / ``close_stream`` are workflow operations recorded as steps: the element row and its
checkpoint commit in one transaction fenced by the lease epoch, so a replay skips them and a re-run after a
crash never writes an element twice (nor one from a superseded owner). ``read_stream`` works anywhere: it
takes a :class:`~kit.notifier.Watch` on ``s:<workflow id>`` *before* each database read, reads the
elements after the last one it yielded, and waits for the next notification (or ``poll_seconds``) only
when nothing new came, so no element is ever missed or repeated. It ends at the close marker, or when the
writing workflow is finished (SUCCESS, ERROR, CANCELLED) without closing the stream: the status and the
elements are read in one snapshot, so every element the workflow wrote has been yielded by then.

In workflow code, ``read_stream`` reads the whole stream (until it ends) as one step and checkpoints the
list: replay returns the same list. Elements are not checkpointed one by one.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
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
from kit.errors import LeaseLostError, UsageError, WorkflowNotFoundError, WorkflowTimeoutError
from kit.messaging import _workflow_ctx
from kit.services import Services
from kit.storage import StepResult
from kit.validation import check_size, validate_key, validate_workflow_id

READ_BATCH = 1000  # elements fetched per database read


def _check_key(key: object) -> str:
    return validate_key("stream key", key)


def _check_timeout(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise UsageError(f"read_stream timeout must be None or a number of seconds >= 0, got {value!r}")
    return float(value)




def _append(services: Services, ctx: WorkflowContext, name: str, write: Any) -> None:
    step_id, rec = replay_or_reserve(ctx, name)
    if rec is not None:
        return  # written (and recorded) by an earlier run: never again
    try:
        write(StepResult(ctx.workflow_id, step_id, stored_name(name), ctx.epoch, started_at=utc_now()))
    except LeaseLostError:
        ctx.lost.set()
        raise


def write_stream(services: Services, key: str, value: Any) -> None:
    """Append ``value`` (JSON-serializable) to this workflow's stream ``key``: step ``write_stream:<key>``."""
    key = _check_key(key)
    text = check_size(ser.dumps(value, what=f"element of stream {key!r}"), services.config, "max_event_bytes",
                      f"element of stream {key!r}")
    ctx = _workflow_ctx("write_stream()")
    _append(services, ctx, f"write_stream:{key}", lambda step: services.backend.stream_write(step, key, text))


def close_stream(services: Services, key: str) -> None:
    """Close this workflow's stream ``key`` (readers end after its last element): step ``close_stream:<key>``.
    Closing a closed stream is a no-op; writing to a closed stream raises UsageError."""
    key = _check_key(key)
    ctx = _workflow_ctx("close_stream()")
    _append(services, ctx, f"close_stream:{key}", lambda step: services.backend.stream_close(step, key))


def read_stream(services: Services, workflow_id: str, key: str, timeout: float | None = 60.0) -> Iterator[Any]:
    """Iterate the values of ``workflow_id``'s stream ``key`` in order, waiting for new ones, until the
    stream is closed or the workflow finished without closing it. Raises WorkflowTimeoutError when no
    element (nor the end) arrives within ``timeout`` seconds of the previous one (None: wait forever), and
    WorkflowNotFoundError (on first iteration) when no such workflow exists. In workflow code the whole
    stream is read at once and recorded as step ``read_stream:<key>``."""
    validate_workflow_id(workflow_id)
    key = _check_key(key)
    timeout = _check_timeout(timeout)
    ctx = current_context()
    if ctx is None or ctx.step is not None:
        return _iterate(services, workflow_id, key, timeout)
    if workflow_id == ctx.workflow_id:
        raise UsageError("a workflow cannot read its own stream (it would wait for a close it has not written)")
    values = run_step(services, f"read_stream:{key}", lambda: list(_iterate(services, workflow_id, key, timeout)),
                      StepOptions(), (), {})
    return iter(values)


def _iterate(services: Services, workflow_id: str, key: str, timeout: float | None) -> Iterator[Any]:
    backend = services.backend
    after = -1
    what = f"element of stream {key!r} of workflow {workflow_id}"
    # The watch is taken before the first read: a write committed after any read wakes the next wait.
    with services.runtime.notifier.watch("s:" + workflow_id) as watch:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            chunk = backend.stream_read(workflow_id, key, after, READ_BATCH)
            if chunk.workflow_status is None:
                raise WorkflowNotFoundError(f"cannot read stream {key!r}: no workflow {workflow_id!r}")
            for seq, text in chunk.elements:
                after = seq
                yield ser.loads(text, what=what)
            if chunk.closed:
                return
            if len(chunk.elements) >= READ_BATCH:
                continue  # more may be waiting already: read on without waiting
            if chunk.workflow_status.terminal:
                return  # finished without closing: the same snapshot held every element it wrote
            if chunk.elements and timeout is not None:
                deadline = time.monotonic() + timeout
            if deadline is None:
                watch.wait(3600.0)  # bounded by the notifier's poll period; then the database is read again
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                raise WorkflowTimeoutError(
                    f"no element of stream {key!r} of workflow {workflow_id} within {timeout} s")
            watch.wait(left)
