"""The leases of every workflow this process runs, renewed by one heartbeat thread.

A run is *held* here (:meth:`Leases.hold`) from just before its row is created or claimed until it ends.
The heartbeat extends every lease of this worker in one statement; a run whose lease was taken over is
flagged lost (it stops at its next step boundary), and a lease the database holds for this worker but no
run here uses is released so another worker takes it at once.
"""

from __future__ import annotations

import logging
import math
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
    # Guards _held, _claims_in_flight and the stop counters; never held across a database call (the
    # heartbeat must not wait for a claim that waits for the database).
    _lock: threading.Lock
    _claims_in_flight: int  # claim rounds whose claims are not in _held yet
    _stopping: bool  # the graceful stop began: no lease is released as a stray one any more
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

    def lease_valid_until(self, sent_at: float) -> float:
        """Until when (monotonic) a lease the database set or extended no earlier than ``sent_at`` is
        certainly still ours: its expiry counts from the server's time of the statement, which is later.
        A small margin stays in hand."""
        lease = self.cfg.lease_seconds
        return sent_at + lease - min(1.0, 0.1 * lease)

    def renew_once(self) -> None:
        """Extend our leases; flag workflows whose lease was taken; release leases we don't know.

        Runs without the runtime's lock (a claim waiting for the database must not hold the heartbeat
        up); a lease returned by the renewal that no run here knows is released only when no claim was
        in flight, so a claim committed but not yet registered is never mistaken for a stray one."""
        with self._lock:
            known = set(self._held)  # a run that ends during the renewal is not a stray lease
        started = time.monotonic()
        leases = self.services.backend.lease_renew(self.worker_id, self.cfg.lease_seconds, self.info)
        until = self.lease_valid_until(started)
        with self._lock:
            held = list(self._held.values())
            settled = self._claims_in_flight == 0 and not self._stopping
            unknown = ({wid: ep for wid, ep in leases.items() if wid not in self._held and wid not in known}
                       if settled else {})
        lost = []
        for c in held:
            if leases.get(c.workflow_id) == c.epoch:
                c.lease_until = until if c.lease_until == math.inf else max(c.lease_until, until)
            elif 0 < c.confirmed_at < started and not c.finishing and not c.handover:
                lost.append(c)
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
        wait = self.cfg.heartbeat_seconds
        failing_since: float | None = None
        warned = 0.0
        while not self._stop.wait(wait):
            wait = self.cfg.heartbeat_seconds
            try:
                self.renew_once()
                if failing_since is not None:
                    log.warning("heartbeat: leases renewed again after %.1fs", time.monotonic() - failing_since)
                    failing_since = None
            except StorageError as exc:
                # The renewal retried within its own budget (well under the lease): try again at once, so
                # the leases are renewed as soon as the database is back (a warning per lease period).
                now = time.monotonic()
                failing_since = failing_since if failing_since is not None else now
                if now - warned >= self.cfg.lease_seconds:
                    warned = now
                    log.warning("heartbeat failed: %s", exc)
                wait = 0.05
            except Exception:  # pragma: no cover - keep the heartbeat alive whatever happens
                log.exception("heartbeat failed")
            self._expire_local_views()

    def _expire_local_views(self) -> None:
        """Stop the runs whose lease may have expired: no renewal confirmed within the lease, so another
        worker may take them over soon. Each stops at its next step boundary (also checked by the engine);
        the database still fences whatever it writes."""
        now = time.monotonic()
        with self._lock:
            expired = [c for c in self._held.values()
                       if now >= c.lease_until and not c.lost.is_set() and not c.finishing]
        for ctx in expired:
            log.warning("workflow %s: no lease renewal confirmed within the lease (%.1fs), it may have expired: "
                        "stopping the run at its next step boundary", ctx.workflow_id, self.cfg.lease_seconds)
            ctx.lost.set()
