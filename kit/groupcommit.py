"""Group commit for backends: concurrent callers share one round trip without waiting for a timer.

Leader/follower: a caller that finds no batch in flight becomes the leader and flushes at once with
whatever is queued (so a lone caller pays nothing extra). Callers arriving while a flush is in flight
queue up; when it returns, the leader hands leadership to the oldest of them, which flushes them all
together. Each caller gets its own result or exception.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

_allocate_lock = threading.Lock
T = TypeVar("T")
R = TypeVar("R")


class _Pending(Generic[T, R]):
    __slots__ = ("item", "event", "result", "error", "done", "lead")

    def __init__(self, item: T) -> None:
        self.item = item
        # Only followers wait: on a bare lock created held, released once per wake-up (a threading.Event
        # is a Condition, a lock and a waiter list, several times the cost of this, per checkpoint).
        self.event: Any = None
        self.result: R | None = None
        self.error: BaseException | None = None
        self.done = False
        self.lead = False


class GroupCommitter(Generic[T, R]):
    """Batches ``submit(item)`` calls into ``flush(items) -> results`` (one result or exception each).

    ``flush`` returns a list aligned with ``items`` whose entries are results or exception instances;
    if ``flush`` itself raises, every item of that batch gets the exception.
    """

    def __init__(self, flush: Callable[[Sequence[T]], list[R | BaseException]], max_batch: int = 256) -> None:
        self._flush = flush
        self._max = max_batch
        self._lock = threading.Lock()
        self._queue: list[_Pending[T, R]] = []
        self._busy = False
        self.batches = 0
        self.items = 0

    def submit(self, item: T) -> R:
        pending: _Pending[T, R] = _Pending(item)
        with self._lock:
            self._queue.append(pending)
            if not self._busy:
                self._busy = True
                pending.lead = True
            else:
                pending.event = gate = _allocate_lock()
                gate.acquire()
        while not pending.lead:
            pending.event.acquire()
            if pending.done:
                return self._outcome(pending)
        self._lead()
        return self._outcome(pending)

    def _lead(self) -> None:
        with self._lock:
            batch, self._queue = self._queue[: self._max], self._queue[self._max :]
        try:
            results = self._flush([p.item for p in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"group flush returned {len(results)} results for {len(batch)} items")
        except BaseException as exc:  # noqa: BLE001 - delivered to every caller of the batch
            results = [exc] * len(batch)
        self.batches += 1
        self.items += len(batch)
        for p, r in zip(batch, results, strict=True):
            if isinstance(r, BaseException):
                p.error = r
            else:
                p.result = r
            p.done = True
        with self._lock:
            if self._queue:
                successor = self._queue[0]
                successor.lead = True
            else:
                successor = None
                self._busy = False
        for p in batch:
            if p.event is not None and p.event.locked():  # (a follower that led this batch is awake)
                p.event.release()
        if successor is not None:
            successor.event.release()  # a queued caller is always a follower, waiting

    @staticmethod
    def _outcome(pending: _Pending[T, R]) -> R:
        if pending.error is not None:
            raise pending.error
        return pending.result  # type: ignore[return-value]
