"""The parts of an application that the engine, the worker runtime and the features work with.

``Kit`` builds one :class:`Services` and hands it down: the features (queues, messaging, streams,
lifecycle, schedules, starting workflows) take it as their first argument, the runtime keeps it, and the
engine reads three of its attributes (``backend``, ``clock``, ``config``: :class:`kit.engine.EngineServices`).
None of them ever sees the ``Kit`` object.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from kit.clock import Clock
from kit.config import Config
from kit.definitions import Definitions
from kit.runtime import Runtime, StopSummary
from kit.storage import Backend


class Services:
    """Configuration, workflow clock, definitions, and the backend and runtime (both opened on first use).

    ``config`` and ``clock`` may be replaced while nothing is open (``kit.testing`` does); ``close`` stops
    the runtime and closes the backend, and the next use opens them again.
    """

    def __init__(self, config: Config, clock: Clock, definitions: Definitions,
                 load_backend: Callable[[Config], Backend]) -> None:
        self.config = config
        self.clock = clock  # workflow time: sleeps, timeouts, deadlines, cron ticks
        self.definitions = definitions
        self._load_backend = load_backend  # builds (does not open) the configured backend
        self._backend: Backend | None = None
        self._runtime: Runtime | None = None
        self._open_lock = threading.Lock()

    @property
    def backend(self) -> Backend:
        """The opened storage backend (opened, and migrated if enabled, on first use)."""
        backend = self._backend
        if backend is None:
            with self._open_lock:
                if self._backend is None:
                    backend = self._load_backend(self.config)
                    backend.open()
                    try:
                        if self.config.migrate:
                            backend.migrate()
                    except BaseException:
                        backend.close()
                        raise
                    self._backend = backend
                backend = self._backend
        return backend

    @property
    def opened_backend(self) -> Backend | None:
        """The backend if it is open, without opening it."""
        return self._backend

    @property
    def runtime(self) -> Runtime:
        """This process's runtime: leases, heartbeat, notifications, the worker (created on first use)."""
        runtime = self._runtime
        if runtime is None:
            with self._open_lock:
                if self._runtime is None:
                    self._runtime = Runtime(self)
                runtime = self._runtime
        return runtime

    @property
    def running(self) -> Runtime | None:
        """The runtime if one exists, without creating it."""
        return self._runtime

    def close(self, grace: float = 5.0) -> StopSummary | None:
        """Stop the runtime (see :meth:`Runtime.stop`: running workflows are handed over at step boundaries),
        then close the backend's connections. Returns what the stop did (None: no runtime ran here)."""
        summary = None
        if self._runtime is not None:
            summary = self._runtime.stop(grace)
            self._runtime = None
        if self._backend is not None:
            self._backend.close()
            self._backend = None
        return summary
