"""One listener per process, many waiters: database notifications dispatched to whoever waits.

The claim loop waits for ``q:`` (work was enqueued or released), ``recv`` for ``m:<workflow id>``,
``get_event`` for ``e:<workflow id>``, ``read_stream`` for ``s:<workflow id>``. A waiter takes a :class:`Watch` *before* it checks the database and
waits on it after, so a notification sent between the check and the wait is never missed. Without
notifications (or while the listener reconnects) a wait simply ends after ``poll`` seconds and the
caller checks again: notifications only make things faster, never correct.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kit.storage import Backend

log = logging.getLogger("kit.notifier")

ANY_QUEUE = "q:*"


class Watch:
    """Interest in one key; :meth:`wait` returns True when a notification for it arrived since the
    watch was taken (or since the previous wait)."""

    def __init__(self, notifier: Notifier, key: str) -> None:
        self._n = notifier
        self.key = key
        with notifier._cond:
            notifier._watchers[key] += 1
            self._seen = notifier._gen[key]

    def wait(self, timeout: float) -> bool:
        n = self._n
        with n._cond:
            got = n._cond.wait_for(lambda: n._gen[self.key] != self._seen, timeout=max(0.0, min(timeout, n.poll)))
            self._seen = n._gen[self.key]
            return got

    def fired(self) -> bool:
        """Non-blocking: did a notification for the key arrive since the last wait/fired call?"""
        n = self._n
        with n._cond:
            changed = n._gen[self.key] != self._seen
            self._seen = n._gen[self.key]
            return changed

    def close(self) -> None:
        n = self._n
        with n._cond:
            n._watchers[self.key] -= 1
            if n._watchers[self.key] <= 0:
                n._watchers.pop(self.key, None)
                n._gen.pop(self.key, None)

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Notifier:
    """Listens on the backend's wake channel in one thread and wakes the matching watches."""

    def __init__(self, backend: Backend, *, poll: float, enabled: bool = True) -> None:
        self.backend = backend
        self.poll = poll
        self.enabled = enabled and backend.capabilities.listen_notify
        self._cond = threading.Condition()
        self._gen: dict[str, int] = defaultdict(int)
        self._watchers: dict[str, int] = defaultdict(int)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._listening = threading.Event()

    def start(self) -> None:
        """Start listening; returns once the LISTEN is in place (or after a short bound)."""
        if not self.enabled or (self._thread is not None and self._thread.is_alive()):
            return
        self._thread = threading.Thread(target=self._loop, name="kit-notifier", daemon=True)
        self._thread.start()
        self._listening.wait(timeout=5)

    def watch(self, key: str) -> Watch:
        self.start()
        return Watch(self, key)

    def poke(self, key: str) -> None:
        """Wake the watchers of ``key`` from inside this process (e.g. a slot was freed)."""
        with self._cond:
            if key in self._watchers:
                self._gen[key] += 1
                self._cond.notify_all()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        channel = self.backend.wake_channel
        while not self._stop.is_set():
            try:
                payloads = self.backend.notify_wait([channel], 0.0 if not self._listening.is_set() else 1.0)
            except Exception as exc:  # noqa: BLE001 - the listener must survive anything; waiters poll
                log.debug("listener error: %s", exc)
                payloads = []
                self._stop.wait(0.5)
            self._listening.set()
            if not payloads:
                continue
            with self._cond:
                for payload in payloads:
                    keys = [payload, ANY_QUEUE] if payload.startswith("q:") else [payload]
                    for key in keys:
                        if key in self._watchers:
                            self._gen[key] += 1
                self._cond.notify_all()
