"""The leases of every workflow this process runs, renewed by one heartbeat thread.

A run is *held* here (:meth:`Leases.hold`) from just before its row is created or claimed until it ends.
The heartbeat extends every lease of this worker in one statement; a run whose lease was taken over is
flagged lost (it stops at its next step boundary), and a lease the database holds for this worker but no
run here uses is released so another worker takes it at once.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Protocol

from kit.config import Config
from kit.definitions import Definitions
from kit.engine import EngineServices, WorkflowContext
from kit.errors import StorageError
from kit.storage import WorkerInfo

log = logging.getLogger("kit.worker")


class RuntimeServices(EngineServices, Protocol):
    """What the worker runtime uses: the engine's parts plus the application's definitions."""

    @property
    def definitions(self) -> Definitions: ...


class Leases:
    """The held runs of this process and their heartbeat (a part of :class:`kit.runtime.Runtime`, which
    creates the state declared here)."""

    services: RuntimeServices
    cfg: Config
    worker_id: str
    info: WorkerInfo
    _held: dict[str, WorkflowContext]  # the runs of this process, by workflow id
    _lock: threading.Lock  # guards _held; held across claim and renew statements
    _stop: threading.Event  # the runtime is stopping: the heartbeat ends
    _heartbeat: threading.Thread | None

    def hold(self, workflow_id: str, ctx: WorkflowContext) -> WorkflowContext:
        """Track ``ctx``'s lease unless this process already runs ``workflow_id``; return the held one.

        A second start of an id this process is running must neither evict the running execution's
        lease nor insert again, so the caller compares the returned context with its own.
        """
        with self._lock:
            return self._held.setdefault(workflow_id, ctx)

    def abandon(self, workflow_ids: list[str]) -> None:
        """Stop the runs of these workflows held here (cancelled): waits end, no further step starts."""
        with self._lock:
            ctxs = [self._held[w] for w in workflow_ids if w in self._held]
        for ctx in ctxs:
            ctx.lost.set()

    def drop(self, workflow_id: str, ctx: WorkflowContext | None = None) -> None:
        with self._lock:
            if ctx is None or self._held.get(workflow_id) is ctx:
                self._held.pop(workflow_id, None)

    def ensure_heartbeat(self) -> None:
        if self._heartbeat is None or not self._heartbeat.is_alive():
            self._heartbeat = threading.Thread(target=self._heartbeat_loop, name="kit-heartbeat", daemon=True)
            self._heartbeat.start()

    def renew_once(self) -> None:
        """Extend our leases; flag workflows whose lease was taken; release leases we don't know."""
        with self._lock:
            started = time.monotonic()
            leases = self.services.backend.lease_renew(self.worker_id, self.cfg.lease_seconds, self.info)
            lost = [c for c in self._held.values()
                    if 0 < c.confirmed_at < started and not c.finishing and leases.get(c.workflow_id) != c.epoch]
            unknown = {wid: ep for wid, ep in leases.items() if wid not in self._held}
        for ctx in lost:
            if not ctx.lost.is_set():
                log.warning("lease of workflow %s (epoch %d) was taken over; abandoning it at the next step",
                            ctx.workflow_id, ctx.epoch)
                ctx.lost.set()
        for wid, epoch in unknown.items():
            # Held by this worker in the database but run by no thread here (a claim whose acknowledgement
            # was lost, or a run abandoned after a storage failure): give it back so someone runs it now.
            log.warning("releasing workflow %s: leased to this worker but not running here", wid)
            self.services.backend.workflow_release(wid, epoch)

    def _heartbeat_loop(self) -> None:
        while not self._stop.wait(self.cfg.heartbeat_seconds):
            try:
                self.renew_once()
            except StorageError as exc:
                log.warning("heartbeat failed: %s", exc)
            except Exception:  # pragma: no cover - keep the heartbeat alive whatever happens
                log.exception("heartbeat failed")
