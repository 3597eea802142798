"""Testing durable code without Docker or wall-clock waits.

``with kit.testing.harness(app) as h:`` runs the app's workflows in this process against a real
database (the embedded PostgreSQL by default, in a schema of its own that is dropped afterwards) with a
:class:`~kit.clock.VirtualClock`: ``h.result(handle)`` jumps the clock to the next timer whenever every
workflow running here is waiting on it, so a workflow that sleeps a day finishes in milliseconds.
``h.crash_at(...)`` makes a run stop as if its process died at a given step; the worker then recovers
it from its checkpoints, exactly as in production.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

from kit import engine
from kit.app import Kit, load_backend
from kit.clock import VirtualClock
from kit.errors import UsageError, WorkflowTimeoutError
from kit.handle import WorkflowHandle
from kit.schedules import wait_for_tick
from kit.storage import Status

__all__ = ["Harness", "harness", "VirtualClock"]


@dataclasses.dataclass
class _CrashPoint:
    workflow: str
    step: int
    phase: str
    times: int
    hits: int = 0


class Harness:
    """A running test app: virtual time control, crash points, and result waits that skip idle time."""

    def __init__(self, app: Kit, clock: VirtualClock) -> None:
        self.app = app
        self.clock = clock
        self._crashes: list[_CrashPoint] = []
        self._lock = threading.Lock()
        self.crashes = 0  # how many simulated crashes happened

    # -- time -----------------------------------------------------------------------------------------
    def advance(self, seconds: float = 0.0, *, minutes: float = 0.0, hours: float = 0.0, days: float = 0.0) -> None:
        """Move virtual time forward, waking every timer that falls due."""
        self.clock.advance(seconds, minutes=minutes, hours=hours, days=days)

    def now(self) -> datetime:
        return self.clock.now()

    def idle(self) -> bool:
        """True when every workflow running here waits on the virtual clock (so time may jump)."""
        runtime = self.app.services.running
        if runtime is None:
            return False
        with runtime._lock:
            active = {w for w, c in runtime._held.items() if c.confirmed_at > 0 and not c.finishing}
        on_clock = self.clock.waiting_workflows()
        with runtime._lock:
            awaiting = set(runtime.awaiting)  # parents blocked on children's results
        if not active or not active & on_clock or not active <= on_clock | awaiting:
            return False
        # A message sent to a waiting workflow is on its way (its notification may not have landed yet):
        # jumping the clock now could time its recv out, so wait for the workflow to take it.
        backend = self.app.backend
        return not any(m.consumed_at is None for w in active for m in backend.message_list(w))

    def result(self, handle: WorkflowHandle, timeout: float = 30.0) -> Any:
        """Wait for ``handle``'s result, advancing the virtual clock to the next timer whenever every
        workflow running here is blocked on it. ``timeout`` is in real seconds."""
        end = time.monotonic() + timeout
        idle_since: float | None = None
        while True:
            rec = self.app.backend.workflow_get(handle.workflow_id)
            if rec is not None and rec.status.terminal:
                return handle.result(timeout=max(0.1, end - time.monotonic()))
            if self.idle():
                # Debounce: a workflow between two waits looks idle for an instant; make sure it stays so.
                now = time.monotonic()
                if idle_since is None:
                    idle_since = now
                elif now - idle_since >= 0.02:
                    self.clock.advance_to_next()
                    idle_since = None
            else:
                idle_since = None
            if time.monotonic() >= end:
                status = rec.status.value if rec is not None else "missing"
                raise WorkflowTimeoutError(f"workflow {handle.workflow_id} did not finish within {timeout}s of "
                                           f"real time (status {status})")
            time.sleep(0.005)

    def run(self, fn: Callable[..., Any] | str, *args: Any, timeout: float = 30.0, **kwargs: Any) -> Any:
        """Start a workflow and return its result, skipping idle virtual time."""
        return self.result(self.app.start(fn, *args, **kwargs), timeout=timeout)

    def next_tick(self, schedule: Callable[..., Any] | str, timeout: float = 10.0) -> WorkflowHandle:
        """Jump the virtual clock to the next tick of an ``@app.scheduled`` schedule and return the handle of
        the workflow a worker enqueued for it (exactly one per tick)."""
        schedules = self.app._schedules
        name = schedule if isinstance(schedule, str) else getattr(schedule, "__kit_workflow__", None)
        found = schedules.get(name) if name is not None else None
        if found is None:
            known = ", ".join(sorted(schedules)) or "none"
            raise UsageError(f"{schedule!r} is not a schedule of this app (schedules: {known})")
        tick = found.cron.next_after(self.clock.now())
        self.clock.set(tick)
        return wait_for_tick(self.app.services, found.name, tick, timeout=timeout)

    # -- crashes --------------------------------------------------------------------------------------
    def crash_at(self, workflow: Callable[..., Any] | str, step: int, *, after_body: bool = False,
                 times: int = 1) -> None:
        """Make runs of ``workflow`` stop as if their process died, just before step ``step`` (counted
        from 0) runs, or with ``after_body=True`` after its body ran but before its checkpoint committed
        (the window in which a step may run twice). The worker recovers the run from its checkpoints."""
        name = workflow if isinstance(workflow, str) else getattr(workflow, "__kit_workflow__", None)
        if name is None:
            raise UsageError(f"{workflow!r} is not a workflow: pass a decorated workflow or its name")
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise UsageError(f"step must be a step number >= 0, got {step!r}")
        with self._lock:
            self._crashes.append(_CrashPoint(name, step, "after" if after_body else "before", times))

    def _hook(self, ctx: engine.WorkflowContext, step_id: int, name: str, phase: str) -> None:
        with self._lock:
            for point in self._crashes:
                if (point.workflow == ctx.name and point.step == step_id and point.phase == phase
                        and point.hits < point.times):
                    point.hits += 1
                    self.crashes += 1
                    break
            else:
                return
        raise engine.SimulatedCrash(f"simulated crash of workflow {ctx.workflow_id} at step {step_id} ({name}, "
                                    f"{'after its body' if phase == 'after' else 'before it ran'})")

    def status(self, handle: WorkflowHandle) -> Status:
        return handle.status()


@contextmanager
def harness(app: Kit, *, start: datetime | None = None, isolate: bool = True) -> Iterator[Harness]:
    """Run ``app`` for a test: a virtual clock starting at ``start`` (default: now), a worker in this
    process (short lease, so simulated crashes recover quickly), and with ``isolate`` a fresh schema
    that is dropped afterwards. The app must not have opened its database yet."""
    if app.services.opened_backend is not None:
        raise UsageError("harness(app) must wrap an app that has not opened its database yet (it sets the "
                         "clock and schema first)")
    if engine.crash_hook is not None:
        raise UsageError("only one kit.testing harness may run at a time in a process")
    clock = VirtualClock(start if start is not None else datetime.now(timezone.utc))
    saved_config, saved_clock = app.config, app.clock
    changes: dict[str, Any] = {"lease_seconds": 2.0, "heartbeat_seconds": 0.25, "poll_seconds": 0.1}
    if isolate:
        changes["schema"] = f"kit_test_{uuid.uuid4().hex[:12]}"
        changes["migrate"] = True
    app.config = dataclasses.replace(app.config, **changes)
    app.clock = clock
    _reset_app_state(app)
    h = Harness(app, clock)
    engine.crash_hook = h._hook
    try:
        app.launch()
        yield h
    finally:
        engine.crash_hook = None
        try:
            opened = app.services.opened_backend is not None
            app.close(grace=1.0)
            if isolate and opened:
                backend = load_backend(app.config)
                backend.open()
                try:
                    backend.drop_schema()
                finally:
                    backend.close()
        finally:
            app.config, app.clock = saved_config, saved_clock
            _reset_app_state(app)


def _reset_app_state(app: Kit) -> None:
    """Forget what the app learned about its database (the queue declarations it stored): each harness
    runs on a schema of its own."""
    app.services.definitions.queues_stored = False
