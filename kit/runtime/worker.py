"""The per-process runtime: local runs, the worker's start and its graceful stop.

Every process running a kit app holds its workflows under leases renewed by one heartbeat thread. A
process launched as a worker also claims ready and orphaned workflows (expired leases) and runs them
from their last checkpoint. There is no orchestrator: the database decides who owns what.
"""

from __future__ import annotations

import collections
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from kit.engine import Outcome, WorkflowContext
from kit.errors import KitError, StorageError
from kit.notifier import Notifier
from kit.runtime.claims import ClaimLoop
from kit.runtime.leases import RuntimeServices
from kit.runtime.versions import warn_stranded
from kit.storage import WorkerInfo

log = logging.getLogger("kit.worker")


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class StopSummary:
    """What a graceful stop did with the workflows this process was running when it began."""

    finished: int = 0  # ended here (their end recorded) while stopping
    handed_over: int = 0  # released to other workers: at a step boundary, or mid-step after the grace period
    mid_step: int = 0  # of those, released with a step still running when the grace period ended

    def __str__(self) -> str:
        return f"{self.finished} finished, {self.handed_over} handed over ({self.mid_step} of them mid-step)"


class Stoppable(Protocol):
    """A background service started with the worker and stopped with it (the cron scheduler)."""

    def stop(self) -> None: ...


class Runtime(ClaimLoop):
    """Per-process execution state: the held leases, the heartbeat thread, the optional claim loop."""

    def __init__(self, services: RuntimeServices) -> None:
        self.services = services
        self.cfg = services.config
        self.worker_id = new_worker_id()
        self.info = WorkerInfo(self.worker_id, socket.gethostname(), os.getpid())
        self._held: dict[str, WorkflowContext] = {}
        self._lock = threading.Lock()  # guards _held, _claims_in_flight, the stop counters (no database call)
        self._claims_in_flight = 0
        self._stopping = False
        self._stop_counts: collections.Counter[str] = collections.Counter()
        self._stop = threading.Event()
        self._claiming = threading.Event()
        self._heartbeat: threading.Thread | None = None
        self._claimer: threading.Thread | None = None
        self._local = ThreadPoolExecutor(max_workers=64, thread_name_prefix="kit-wf")
        self._claimed_pool: ThreadPoolExecutor | None = None
        self._slots = threading.Semaphore(self.cfg.worker_concurrency)
        self._running = 0
        self._idle = threading.Condition()
        self.claimed_count = 0
        self._notifier: Notifier | None = None
        self._limited_dirty: set[str] = set()
        self._scheduler: Stoppable | None = None  # cron ticks (kit.schedules), worker processes only
        # Workflows here blocked on other workflows' results, with how many waits each (kit.testing).
        self.awaiting: collections.Counter[str] = collections.Counter()

    @property
    def notifier(self) -> Notifier:
        """The process's notification dispatcher (started on first use)."""
        if self._notifier is None:
            with self._lock:
                if self._notifier is None:
                    self._notifier = Notifier(self.services.backend, poll=self.cfg.poll_seconds,
                                              enabled=self.cfg.notify)
        return self._notifier

    # -- running -----------------------------------------------------------------------------------
    def submit_local(self, ctx: WorkflowContext, fn, args: tuple, kwargs: dict, *,
                     dedicated: bool = False) -> Future[Outcome]:
        """Run a workflow created by this process (app.start) in the local thread pool.

        ``dedicated`` runs it on a thread of its own: child workflows use it, because their parents
        block in the pool waiting for them and a bounded pool would deadlock.
        """
        self.ensure_heartbeat()
        if not dedicated:
            return self._local.submit(self._run, ctx, fn, args, kwargs)
        future: Future[Outcome] = Future()

        def body() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(self._run(ctx, fn, args, kwargs))
            except BaseException as exc:  # noqa: BLE001 - delivered to the waiter
                future.set_exception(exc)

        threading.Thread(target=body, name=f"kit-child-{ctx.workflow_id}", daemon=True).start()
        return future

    def run_inline(self, ctx: WorkflowContext, fn, args: tuple, kwargs: dict) -> Outcome:
        self.ensure_heartbeat()
        return self._run(ctx, fn, args, kwargs)

    def _run(self, ctx: WorkflowContext, fn, args: tuple, kwargs: dict) -> Outcome:
        try:
            outcome = self._execute(ctx, fn, args, kwargs)
            self._ended(ctx, outcome)
            return outcome
        finally:
            self.drop(ctx.workflow_id, ctx)

    # -- the worker ----------------------------------------------------------------------------------
    def start_worker(self, start_scheduler: Callable[[], Stoppable | None] | None = None) -> None:
        """Start claiming ready and orphaned workflows in the background; ``start_scheduler`` starts the
        background services stopped with the worker (the cron scheduler) and may raise to refuse the start."""
        if self._claimer is not None and self._claimer.is_alive():
            return
        self.ensure_heartbeat()
        if self._scheduler is None and start_scheduler is not None:
            self._scheduler = start_scheduler()  # declares the app's schedules; errors surface here
        self._claimed_pool = ThreadPoolExecutor(max_workers=self.cfg.worker_concurrency,
                                                thread_name_prefix="kit-worker")
        self._claiming.set()
        self._claimer = threading.Thread(target=self._claim_loop, name="kit-claimer", daemon=True)
        self._claimer.start()
        try:
            warn_stranded(self.services.backend, self.cfg)
        except KitError as exc:
            log.warning("could not check for work of other application versions: %s", exc)
        log.info("worker %s started (concurrency %d, lease %.1fs)", self.worker_id,
                 self.cfg.worker_concurrency, self.cfg.lease_seconds)

    # -- shutdown -----------------------------------------------------------------------------------
    def stop(self, grace: float = 5.0) -> StopSummary:
        """Stop claiming and hand the running workflows over at step boundaries: each finishes the step it
        is in, records it, and is released at once for another worker to go on (one that reaches its end
        first finishes here). A step still running after ``grace`` seconds is released mid-step: it will
        run again elsewhere (G3)."""
        self._claiming.clear()
        if self._scheduler is not None:
            self._scheduler.stop()
            self._scheduler = None
        with self._lock:
            self._stopping = True
            running = list(self._held.values())
        for ctx in running:  # claimed and locally started workflows alike
            ctx.handover = True
            ctx.lost.set()  # waits end now; a step body in flight runs on and is recorded
        if running:
            log.info("stopping: handing %d workflow(s) over at their next step boundary (grace %.1fs)",
                     len(running), grace)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            with self._lock:
                busy = any(c.confirmed_at > 0 for c in self._held.values())
            if not busy:
                break
            time.sleep(0.05)
        with self._lock:
            remaining = list(self._held.values())
        for ctx in remaining:
            ctx.handover = True
            ctx.lost.set()
            if ctx.confirmed_at <= 0:
                continue
            in_flight = ", ".join(f"{i} '{name}'" for i, name in sorted(dict(ctx.running).items()))
            if in_flight:
                log.warning("workflow %s: step %s still running after the %.1fs grace period: released mid-step "
                            "(it will run again elsewhere)", ctx.workflow_id, in_flight, grace)
            else:
                log.warning("workflow %s did not reach a step boundary within the %.1fs grace period: released",
                            ctx.workflow_id, grace)
            try:
                released = self.services.backend.workflow_release(ctx.workflow_id, ctx.epoch)
            except StorageError as exc:
                log.warning("could not release %s (it will be recovered after its lease): %s", ctx.workflow_id, exc)
                continue
            if released:
                with self._lock:
                    self._stop_counts["handed_over"] += 1
                    self._stop_counts["mid_step"] += 1 if in_flight else 0
        with self._lock:
            summary = StopSummary(**self._stop_counts)
        if running:
            log.info("stopped: %s", summary)
        self._stop.set()
        if self._notifier is not None:
            self._notifier.stop()
        if self._claimer is not None:
            self._claimer.join(timeout=self.cfg.poll_seconds + 2)
        if self._heartbeat is not None:
            self._heartbeat.join(timeout=2)
        self._local.shutdown(wait=False, cancel_futures=True)
        if self._claimed_pool is not None:
            self._claimed_pool.shutdown(wait=False, cancel_futures=True)
        return summary
