"""One listener per process, many waiters: database notifications dispatched to whoever waits.

The claim loop waits for ``q:`` (work was enqueued or released), ``recv`` for ``m:<workflow id>``,
``get_event`` for ``e:<workflow id>``, ``read_stream`` for ``s:<workflow id>``. A waiter takes a
:class:`Watch` *before* it checks the database and waits on it after, so a notification sent between the
check and the wait is never missed. Only the watches of the notified key are woken. When the listener
(re)connects, notifications may have been missed meanwhile, so every watch is woken once to re-check.
Without notifications a wait simply ends after ``poll`` seconds and the caller checks again:
notifications only make things faster, never correct.
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
RECONNECTED = "*"  # payload a backend returns from notify_wait after (re)establishing its LISTEN


class Watch:
    """Interest in one key; :meth:`wait` returns True when a notification for it arrived since the
    watch was taken (or since the previous wait)."""

    def __init__(self, notifier: Notifier, key: str) -> None:
        self._n = notifier
        self.key = key
        self._event = threading.Event()
        with notifier._lock:
            notifier._watches[key].add(self)

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
    """Listens on the backend's wake channel in one thread and wakes the matching watches."""

    def __init__(self, backend: Backend, *, poll: float, enabled: bool = True) -> None:
        self.backend = backend
        self.poll = poll
        self.enabled = enabled and backend.capabilities.listen_notify
        self._lock = threading.Lock()
        self._watches: dict[str, set[Watch]] = defaultdict(set)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._listening = threading.Event()

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
        self._stop.set()

    def _wake(self, keys: list[str]) -> None:
        with self._lock:
            if RECONNECTED in keys:
                targets = [w for ws in self._watches.values() for w in ws]
            else:
                targets = [w for key in keys for w in self._watches.get(key, ())]
        for w in targets:
            w._event.set()

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
