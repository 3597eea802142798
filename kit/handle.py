"""``WorkflowHandle``: a started workflow, by id: wait for its result, look at its status, cancel it."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeoutError  # not the builtin before Python 3.11
from typing import Any

from kit import lifecycle
from kit import serialization as ser
from kit.engine import Outcome, WorkflowContext, current_context
from kit.errors import (
    LeaseLostError,
    WorkflowCancelledError,
    WorkflowError,
    WorkflowNotFoundError,
    WorkflowTimeoutError,
)
from kit.services import Services
from kit.storage import Status, WorkflowRecord


class WorkflowHandle:
    """A started workflow: wait for its result or look at its status."""

    def __init__(self, services: Services, workflow_id: str, future: Future[Outcome] | None = None) -> None:
        self._services = services
        self.workflow_id = workflow_id
        self._future = future  # the run this process started, if it did

    def __repr__(self) -> str:
        return f"WorkflowHandle({self.workflow_id!r})"

    def status(self) -> Status:
        """The workflow's current status as recorded in the database."""
        return self.record().status

    async def result_async(self, timeout: float | None = None) -> Any:
        """``result`` for asyncio code: waits on a thread, never blocking the event loop."""
        return await asyncio.to_thread(self.result, timeout)

    def cancel(self) -> list[str]:
        """Cancel this workflow (and its unfinished children); see :meth:`kit.Kit.cancel`."""
        return lifecycle.cancel(self._services, self.workflow_id)

    def _check_waiter(self, waiter: WorkflowContext) -> None:
        if waiter.ended.is_set():
            raise LeaseLostError(f"workflow {waiter.workflow_id}: its run ended while waiting for {self.workflow_id}")
        waiter.check_lease()
        waiter.check_deadline(self._services.clock.time())

    def record(self) -> WorkflowRecord:
        rec = self._services.backend.workflow_get(self.workflow_id)
        if rec is None:
            raise WorkflowNotFoundError(f"no workflow with id {self.workflow_id!r}")
        return rec

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the workflow to end; return its result or raise :class:`WorkflowError`."""
        waiter = current_context()
        if waiter is None or waiter.step is not None:
            return self._result(timeout)
        runtime = self._services.runtime
        with runtime._lock:
            runtime.awaiting[waiter.workflow_id] += 1
        try:
            return self._result(timeout, waiter)
        finally:
            with runtime._lock:
                runtime.awaiting[waiter.workflow_id] -= 1
                if runtime.awaiting[waiter.workflow_id] <= 0:
                    del runtime.awaiting[waiter.workflow_id]

    def _result(self, timeout: float | None, waiter: WorkflowContext | None = None) -> Any:
        """Wait for the end; a waiting workflow (``waiter``) checks its lease, deadline and run between
        short slices, so a cancelled, expired or finished run stops waiting on its children."""
        deadline = None if timeout is None else time.monotonic() + timeout
        slice_ = 5.0 if waiter is None else 0.25
        if self._future is not None:
            while True:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                try:
                    outcome = self._future.result(timeout=slice_ if left is None else min(left, slice_))
                    break
                except (TimeoutError, FutureTimeoutError):
                    if deadline is not None and time.monotonic() >= deadline:
                        raise WorkflowTimeoutError(
                            f"workflow {self.workflow_id} did not finish within {timeout}s") from None
                    if waiter is not None:
                        self._check_waiter(waiter)
            if outcome.status is not None:
                return decode_outcome(self.workflow_id, outcome.status, outcome.output, outcome.error)
        # The database decides (not an outcome cached here: the workflow may have been resumed elsewhere).
        while True:
            if waiter is not None:
                self._check_waiter(waiter)
            left = slice_ if deadline is None else max(0.0, deadline - time.monotonic())
            done = self._services.backend.workflow_wait([self.workflow_id], min(left, slice_))
            if done:
                rec = done[0]
                return decode_outcome(self.workflow_id, rec.status, rec.output, rec.error)
            if self._services.backend.workflow_get(self.workflow_id) is None:
                raise WorkflowNotFoundError(f"no workflow with id {self.workflow_id!r}")
            if deadline is not None and time.monotonic() >= deadline:
                raise WorkflowTimeoutError(f"workflow {self.workflow_id} did not finish within {timeout}s")


def decode_outcome(workflow_id: str, status: Status, output: str | None, error: str | None) -> Any:
    """A finished workflow's result, or its recorded error raised as WorkflowError/WorkflowCancelledError."""
    if status == Status.SUCCESS:
        return ser.loads(output, what=f"result of workflow {workflow_id}")
    rec = ser.loads(error) if error else {}
    if not isinstance(rec, dict):
        rec = {}
    type_name = rec.get("type", status.value)
    module = rec.get("module")
    if module and module != "builtins":
        type_name = f"{module}.{type_name}"
    cls = WorkflowCancelledError if status == Status.CANCELLED else WorkflowError
    raise cls(workflow_id, type_name, rec.get("message", "workflow cancelled"), rec.get("traceback", ""))
