"""Time as workflows see it: durable sleeps, receive timeouts, deadlines and cron ticks.

Workflow-level time goes through ``app.clock`` so tests can swap the wall clock for a
:class:`VirtualClock` that jumps forward instantly. Leases and heartbeats stay on the database's
clock and real time: they protect against real crashes, which a virtual clock must not hide.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from contextvars import ContextVar, Token
from datetime import datetime, timezone


class Clock:
    """Wall-clock time plus interruptible waits."""

    virtual = False

    def time(self) -> float:
        """Seconds since the UNIX epoch."""
        return time.time()

    def now(self) -> datetime:
        """The current time as an aware UTC datetime."""
        return datetime.fromtimestamp(self.time(), timezone.utc)

    def wait(self, event: threading.Event | None, seconds: float) -> bool:
        """Wait up to ``seconds``; return True as soon as ``event`` is set (False on timeout)."""
        if event is None:
            if seconds > 0:
                time.sleep(seconds)
            return False
        return event.wait(max(0.0, seconds))

    def wait_until(self, event: threading.Event | None, when: float, max_real: float | None = None) -> bool:
        """Wait until the UNIX time ``when`` (or ``event``, or ``max_real`` real seconds); True if the
        event was set."""
        left = when - self.time()
        return self.wait(event, left if max_real is None else min(left, max_real))


SYSTEM_CLOCK = Clock()

# The workflow whose code runs in this thread or task (set by the engine around each run): a virtual
# clock records it with every wait, so kit.testing can tell which workflows are blocked on the clock.
_waiting_workflow: ContextVar[str | None] = ContextVar("kit_clock_workflow", default=None)


def tag_waits(workflow_id: str) -> Token[str | None]:
    """Attribute the clock waits of this thread or task (and tasks it creates) to ``workflow_id``."""
    return _waiting_workflow.set(workflow_id)


def untag_waits(token: Token[str | None]) -> None:
    _waiting_workflow.reset(token)


class _Waiter:
    __slots__ = ("deadline", "done", "workflow_id")

    def __init__(self, deadline: float, workflow_id: str | None) -> None:
        self.deadline = deadline
        self.done = False
        self.workflow_id = workflow_id


class VirtualClock(Clock):
    """A clock that only moves when told: ``advance``, ``set`` or ``advance_to_next``.

    Waits block (in real time) until virtual time reaches their deadline or their event is set, so a
    workflow that sleeps a day finishes as soon as the test advances the clock by a day.
    """

    virtual = True

    def __init__(self, start: datetime | float | None = None) -> None:
        if start is None:
            start = time.time()
        elif isinstance(start, datetime):
            if start.tzinfo is None:
                raise ValueError("VirtualClock start must be timezone-aware (e.g. tzinfo=timezone.utc)")
            start = start.timestamp()
        self._now = float(start)
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, _Waiter]] = []
        self._seq = itertools.count()
        self._waiting = 0

    def time(self) -> float:
        with self._cond:
            return self._now

    def wait(self, event: threading.Event | None, seconds: float) -> bool:
        with self._cond:
            deadline = self._now + max(0.0, seconds)
        return self.wait_until(event, deadline)

    def wait_until(self, event: threading.Event | None, when: float, max_real: float | None = None) -> bool:
        waiter = _Waiter(when, _waiting_workflow.get())  # the workflow (if any) this wait belongs to
        give_up = None if max_real is None else time.monotonic() + max_real
        with self._cond:
            if self._now >= when:
                return bool(event is not None and event.is_set())
            heapq.heappush(self._heap, (when, next(self._seq), waiter))
            self._waiting += 1
            self._cond.notify_all()
            try:
                while True:
                    if event is not None and event.is_set():
                        return True
                    if self._now >= when:
                        return False
                    slice_ = 0.05 if event is not None else None  # Events cannot share our condition: poll
                    if give_up is not None:
                        left = give_up - time.monotonic()
                        if left <= 0:
                            return False
                        slice_ = left if slice_ is None else min(slice_, left)
                    self._cond.wait(slice_)
            finally:
                waiter.done = True
                self._waiting -= 1
                self._cond.notify_all()

    # -- moving time --------------------------------------------------------------------------------
    def advance(self, seconds: float = 0.0, *, minutes: float = 0.0, hours: float = 0.0,
                days: float = 0.0) -> float:
        """Move time forward, waking every wait whose deadline has passed; returns the new time."""
        total = seconds + 60 * minutes + 3600 * hours + 86400 * days
        if total < 0:
            raise ValueError("a clock cannot go back: advance by a non-negative amount")
        with self._cond:
            self._now += total
            self._cond.notify_all()
            return self._now

    def set(self, when: datetime | float) -> float:
        """Jump to ``when`` (not earlier than now)."""
        target = when.timestamp() if isinstance(when, datetime) else float(when)
        with self._cond:
            if target < self._now:
                raise ValueError("a clock cannot go back: set a time at or after the current one")
            self._now = target
            self._cond.notify_all()
            return self._now

    @property
    def waiting(self) -> int:
        """How many threads are blocked in a wait on this clock right now."""
        with self._cond:
            return self._waiting

    def waiting_workflows(self) -> set[str]:
        """Ids of the workflows with a thread blocked in a wait on this clock right now."""
        with self._cond:
            return {w.workflow_id for _, _, w in self._heap if not w.done and w.workflow_id is not None}

    def next_deadline(self) -> float | None:
        """The earliest deadline among current waits (None when nothing waits)."""
        with self._cond:
            while self._heap and self._heap[0][2].done:
                heapq.heappop(self._heap)
            return self._heap[0][0] if self._heap else None

    def advance_to_next(self) -> float | None:
        """Jump to the earliest pending deadline (waking its waiters); None when nothing waits."""
        with self._cond:
            while self._heap and self._heap[0][2].done:
                heapq.heappop(self._heap)
            if not self._heap:
                return None
            self._now = max(self._now, self._heap[0][0])
            self._cond.notify_all()
            return self._now

    def wait_for_waiters(self, count: int = 1, timeout: float = 10.0) -> bool:
        """Block (real time) until at least ``count`` threads wait on this clock; False on timeout."""
        end = time.monotonic() + timeout
        with self._cond:
            while self._waiting < count:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True
