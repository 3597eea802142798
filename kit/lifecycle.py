"""Workflow lifecycle: deadlines, cancel, resume, fork and retention, by workflow id.

Every operation is one backend call (one transaction): a cancel fences the running owner off by bumping
the lease epoch, so no checkpoint commits after it; resume and fork only ever make work PENDING for a
worker to claim; retention deletes finished workflows in bounded batches and never touches live ones.
Which application versions a worker replays is :mod:`kit.runtime.versions`.
"""

from __future__ import annotations

import logging
import math
import re
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

from kit import serialization as ser
from kit.clock import Clock
from kit.engine import WorkflowContext
from kit.errors import UsageError, WorkflowCancelledError
from kit.services import Services
from kit.storage import ForkRequest
from kit.validation import validate_workflow_id

log = logging.getLogger("kit.lifecycle")

MAX_TIMEOUT = 10 * 366 * 24 * 3600.0  # ten years: longer is almost certainly a unit mistake
MAX_AGE = 100 * 366 * 24 * 3600.0  # retention ages beyond a century are a unit mistake


def check_timeout(value: object, what: str = "workflow_timeout") -> float | None:
    """A timeout in seconds: None (no deadline) or a finite number > 0; UsageError otherwise."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
            or not 0 < value <= MAX_TIMEOUT):
        raise UsageError(f"{what} must be a number of seconds greater than 0 (at most ten years) or a "
                         f"timedelta, got {value!r}")
    return float(value)


def deadline_for(clock: Clock, timeout: float | None, parent: WorkflowContext | None) -> float | None:
    """The absolute deadline (UNIX time, app clock) of a new workflow: its own timeout from now, capped
    by its parent's deadline (deadlines propagate to children)."""
    own = None if timeout is None else clock.time() + timeout
    inherited = parent.deadline if parent is not None else None
    if own is None:
        return inherited
    return own if inherited is None else min(own, inherited)


def as_datetime(deadline: float | None) -> datetime | None:
    return None if deadline is None else datetime.fromtimestamp(deadline, timezone.utc)


def cancel(services: Services, workflow_id: str) -> list[str]:
    """Cancel a workflow and its unfinished children; returns the ids cancelled (empty when it had
    already finished). Running ones stop at their next step boundary, waits end at once here."""
    validate_workflow_id(workflow_id)
    record = ser.exception_to_record(WorkflowCancelledError(workflow_id, "WorkflowCancelledError",
                                                            "cancelled by request"))
    record["message"] = "cancelled by request"
    ids = services.backend.workflow_cancel(workflow_id, ser.dumps(record))
    # Workflows of ours stop now rather than at the next heartbeat; others' at their next checkpoint.
    runtime = services.running
    if runtime is not None:
        runtime.abandon(ids)
    if ids:
        log.info("cancelled %s", ", ".join(ids))
    return ids


def resume(services: Services, workflow_id: str, timeout: float | None = None) -> None:
    """Make a CANCELLED or ERROR workflow run again from its last checkpoint (a final step error is
    dropped so that step runs again); its cancelled children resume with it."""
    validate_workflow_id(workflow_id)
    timeout = check_timeout(timeout, "timeout")
    deadline = as_datetime(deadline_for(services.clock, timeout, None))
    services.backend.workflow_resume(workflow_id, deadline)


def fork(services: Services, workflow_id: str, from_step: int, new_id: str | None = None,
         timeout: float | None = None) -> str:
    """Start a new workflow with ``workflow_id``'s name and inputs that reuses its checkpoints of steps
    before ``from_step`` and runs the rest anew (with this application's code and version); returns the
    new workflow's id."""
    validate_workflow_id(workflow_id)
    if isinstance(from_step, bool) or not isinstance(from_step, int) or from_step < 0:
        raise UsageError(f"from_step must be a step number >= 0, got {from_step!r}")
    target = validate_workflow_id(new_id) if new_id is not None else str(uuid.uuid4())
    if target == workflow_id:
        raise UsageError("a fork needs a new workflow id, not the id of the workflow it copies")
    timeout = check_timeout(timeout, "timeout")
    services.backend.workflow_fork(ForkRequest(workflow_id, target, from_step, services.config.app_version,
                                               as_datetime(deadline_for(services.clock, timeout, None))))
    return target


_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_age(value: Any) -> float:
    """Seconds from a timedelta, a number of seconds, or text like ``30d``, ``12h``, ``90m``."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            seconds = float(value)
        except OverflowError:
            seconds = math.inf
    elif isinstance(value, str) and (m := _AGE.match(value)):
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
    else:
        raise UsageError(f"invalid age {value!r}: use a timedelta, seconds, or text like 30d, 12h, 90m, 45s, 2w")
    if not math.isfinite(seconds) or not 0 <= seconds <= MAX_AGE:
        raise UsageError(f"age must be between 0 and 100 years, got {value!r}")
    return seconds


def gc(services: Services, older_than: Any, *, batch_size: int = 1000, dry_run: bool = False) -> int:
    """Delete workflows finished more than ``older_than`` ago, in batches of ``batch_size`` (each its
    own short transaction); never one that is pending or running. Returns how many were deleted."""
    age = parse_age(older_than)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= 100_000:
        raise UsageError(f"batch_size must be an integer between 1 and 100000, got {batch_size!r}")
    if dry_run:
        return services.backend.workflow_gc(age, 10_000_000, dry_run=True)
    total = 0
    while True:  # until a batch finds nothing: deleting parents frees their children for the next batch
        n = services.backend.workflow_gc(age, batch_size)
        total += n
        if n == 0:
            return total
