"""One listener per process, many waiters: database notifications dispatched to whoever waits.

The claim loop waits for ``q:`` (work was enqueued or released), ``recv`` for ``m:<workflow id>``,
``get_event`` for ``e:<workflow id>``, ``read_stream`` for ``s:<workflow id>``. A waiter takes a
:class:`Watch` *before* it checks the database and waits on it after, so a notification sent between the
check and the wait is never missed. Only the watches of the notified key are woken. When the listener
(re)connects, notifications may have been missed meanwhile, so every watch is woken once to re-check.

Without notifications (the backend has no ``listen_notify``, or ``notify=False``) the notifier polls for
the waiters instead, with adaptive backoff: a ticker wakes each watch ``quick`` seconds after it was taken
or after a wake-up from inside this process (activity), then after twice as long each time, up to the
poll period when nothing happens. Every waiter (claim loop, ``recv``, ``get_event``, streams, parent
waits) uses the same watches, so none of them changes. Notifications only make things faster, never
correct: a waiter always re-checks the database after a wake-up, whatever woke it.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import defaultdict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kit.storage import Backend

log = logging.getLogger("kit.notifier")

ANY_QUEUE = "q:*"
RECONNECTED = "*"  # payload a backend returns from notify_wait after (re)establishing its LISTEN
QUICK_POLL = 0.02  # polling without notifications: first re-check after activity, in seconds


class Watch:
    """Interest in one key; :meth:`wait` returns True when a notification for it arrived since the
    watch was taken (or since the previous wait). Without notifications, a poll tick counts as one."""

    def __init__(self, notifier: Notifier, key: str) -> None:
        self._n = notifier
        self.key = key
        self._event = threading.Event()
        self._interval = notifier.quick  # polling: delay of the next tick (grows while nothing happens)
        self._generation = 0  # polling: ticks scheduled before the last reset are stale
        self._closed = False
        with notifier._lock:
            notifier._watches[key].add(self)
            if notifier.polling:
                notifier._schedule(self, reset=True)

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` (at most the poll period) for a notification of this key."""
        got = self._event.wait(max(0.0, min(timeout, self._n.poll)))
        self._event.clear()
        return got

    @property
    def event(self) -> threading.Event:
        """Set when a notification for the key arrives (clear it after waking)."""
        return self._event

    def fired(self) -> bool:
        """Non-blocking: did a notification for the key arrive since the last wait/fired call?"""
        got = self._event.is_set()
        self._event.clear()
        return got

    def close(self) -> None:
        n = self._n
        with n._lock:
            self._closed = True
            watches = n._watches.get(self.key)
            if watches is not None:
                watches.discard(self)
                if not watches:
                    n._watches.pop(self.key, None)

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Notifier:
    """Listens on the backend's wake channel in one thread and wakes the matching watches; without
    notifications, a ticker thread wakes them with adaptive backoff (``quick`` .. ``poll`` seconds)."""

    def __init__(self, backend: Backend, *, poll: float, enabled: bool = True, quick: float = QUICK_POLL) -> None:
        self.backend = backend
        self.poll = poll
        self.quick = max(0.001, min(quick, poll))
        self.enabled = enabled and backend.capabilities.listen_notify
        self.polling = not self.enabled
        self._lock = threading.Lock()
        self._watches: dict[str, set[Watch]] = defaultdict(set)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._listening = threading.Event()
        # Polling: (due, seq, generation, watch), earliest first; the ticker sleeps on the condition.
        self._ticks: list[tuple[float, int, int, Watch]] = []
        self._seq = itertools.count()
        self._tick_cond = threading.Condition(self._lock)
        self._ticker: threading.Thread | None = None

    def start(self) -> None:
        """Start listening (once); returns when the LISTEN is in place (or after a short bound)."""
        if not self.enabled or self._stop.is_set():
            return
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._thread = threading.Thread(target=self._loop, name="kit-notifier", daemon=True)
            self._thread.start()
        self._listening.wait(timeout=5)

    def watch(self, key: str) -> Watch:
        self.start()
        return Watch(self, key)

    def poke(self, key: str) -> None:
        """Wake the watchers of ``key`` from inside this process (e.g. a slot was freed)."""
        self._wake([key])

    def stop(self) -> None:
        """Stop listening and release every waiter at once (a stopping worker's claim loop must not sit out
        its poll period)."""
        self._stop.set()
        with self._lock:
            self._tick_cond.notify_all()
            waiting = [w for ws in self._watches.values() for w in ws]
        for w in waiting:
            w._event.set()

    def _wake(self, keys: list[str]) -> None:
        with self._lock:
            if RECONNECTED in keys:
                targets = [w for ws in self._watches.values() for w in ws]
            else:
                targets = [w for key in keys for w in self._watches.get(key, ())]
            if self.polling:  # activity: the watched keys are polled quickly again
                for w in targets:
                    self._schedule(w, reset=True)
        for w in targets:
            w._event.set()

    # -- polling without notifications ------------------------------------------------------------------
    def _schedule(self, watch: Watch, *, reset: bool) -> None:
        """(Lock held.) Queue the watch's next tick; ``reset`` restarts its backoff at ``quick``."""
        if reset:
            watch._interval = self.quick
            watch._generation += 1
        heapq.heappush(self._ticks, (time.monotonic() + watch._interval, next(self._seq), watch._generation, watch))
        if self._ticker is None or not self._ticker.is_alive():
            self._ticker = threading.Thread(target=self._tick_loop, name="kit-poller", daemon=True)
            self._ticker.start()
        self._tick_cond.notify()

    def _tick_loop(self) -> None:
        with self._lock:
            while not self._stop.is_set():
                if not self._ticks:
                    self._tick_cond.wait()
                    continue
                due, _, generation, watch = self._ticks[0]
                now = time.monotonic()
                if due > now:
                    self._tick_cond.wait(due - now)
                    continue
                heapq.heappop(self._ticks)
                if watch._closed or generation != watch._generation:
                    continue
                watch._event.set()
                watch._interval = min(self.poll, watch._interval * 2)
                self._schedule(watch, reset=False)

    # -- listening --------------------------------------------------------------------------------------
    def _loop(self) -> None:
        channel = self.backend.wake_channel
        while not self._stop.is_set():
            try:
                payloads = self.backend.notify_wait([channel], 0.0 if not self._listening.is_set() else 1.0)
            except Exception as exc:  # noqa: BLE001 - the listener must survive anything; waiters poll
                log.debug("listener error: %s", exc)
                payloads = [RECONNECTED]
                self._stop.wait(0.5)
            self._listening.set()
            if not payloads:
                continue
            keys: list[str] = []
            for payload in payloads:
                keys.append(payload)
                if payload.startswith("q:"):
                    keys.append(ANY_QUEUE)
            self._wake(keys)
