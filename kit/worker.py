"""The worker: leases and heartbeats for every workflow this process runs, and the claim loop.

Every process running a kit app holds its workflows under leases renewed by one heartbeat thread. A
process launched as a worker also claims ready and orphaned workflows (expired leases) and runs them
from their last checkpoint. There is no orchestrator: the database decides who owns what.
"""

from __future__ import annotations

import collections
import logging
import math
import os
import socket
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kit import serialization as ser
from kit.engine import Outcome, WorkflowContext, execute
from kit.errors import KitError, SerializationError, StorageError
from kit.notifier import ANY_QUEUE, Notifier, Watch
from kit.storage import Claim, ClaimRequest, Finish, Status, WorkerInfo

if TYPE_CHECKING:
    from kit.app import Kit
    from kit.schedules import Scheduler

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


class Runtime:
    """Per-process execution state: the held leases, the heartbeat thread, the optional claim loop."""

    def __init__(self, app: Kit) -> None:
        self.app = app
        self.cfg = app.config
        self.worker_id = new_worker_id()
        self.info = WorkerInfo(self.worker_id, socket.gethostname(), os.getpid())
        self._held: dict[str, WorkflowContext] = {}
        self._lock = threading.Lock()  # guards _held, _claims_in_flight and the stop counters (never held
        # across a database call: the heartbeat must not wait for a claim that waits for the database)
        self._claims_in_flight = 0  # claim rounds whose claims are not in _held yet
        self._stopping = False
        self._stop_counts = collections.Counter()
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
        self._scheduler: Scheduler | None = None  # cron ticks (kit.schedules), worker processes only
        # Workflows here blocked on other workflows' results, with how many waits each (kit.testing).
        self.awaiting: collections.Counter[str] = collections.Counter()

    @property
    def notifier(self) -> Notifier:
        """The process's notification dispatcher (started on first use)."""
        if self._notifier is None:
            with self._lock:
                if self._notifier is None:
                    self._notifier = Notifier(self.app.backend, poll=self.cfg.poll_seconds, enabled=self.cfg.notify)
        return self._notifier

    # -- leases ------------------------------------------------------------------------------------
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
        leases = self.app.backend.lease_renew(self.worker_id, self.cfg.lease_seconds, self.info)
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
            self.app.backend.workflow_release(wid, epoch)

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
            outcome = execute(self.app, ctx, fn, args, kwargs)
            self._ended(ctx, outcome)
            return outcome
        finally:
            self.drop(ctx.workflow_id, ctx)

    def _ended(self, ctx: WorkflowContext, outcome: Outcome) -> None:
        """A run ended while this process is stopping: count it; one that stopped at a step boundary is
        released now, so another worker goes on with its next step at once (its wake-up is the release's
        notification). Released before the run is dropped, so ``stop`` never closes the database first."""
        if not ctx.handover or self._stop.is_set():  # (after the stop, late runs were released by it)
            return
        if outcome.status is not None:
            with self._lock:
                self._stop_counts["finished"] += 1
            return
        try:
            released = self.app.backend.workflow_release(ctx.workflow_id, ctx.epoch)
        except StorageError as exc:
            log.warning("could not release %s (it will be recovered after its lease): %s", ctx.workflow_id, exc)
            return
        if released:
            with self._lock:
                self._stop_counts["handed_over"] += 1

    # -- claim loop ----------------------------------------------------------------------------------
    def start_worker(self) -> None:
        """Start claiming ready and orphaned workflows in the background."""
        if self._claimer is not None and self._claimer.is_alive():
            return
        self.ensure_heartbeat()
        if self._scheduler is None:
            from kit import schedules

            self._scheduler = schedules.start(self.app)  # declares the app's schedules; errors surface here
        self._claimed_pool = ThreadPoolExecutor(max_workers=self.cfg.worker_concurrency,
                                                thread_name_prefix="kit-worker")
        self._claiming.set()
        self._claimer = threading.Thread(target=self._claim_loop, name="kit-claimer", daemon=True)
        self._claimer.start()
        from kit.lifecycle import warn_stranded

        try:
            warn_stranded(self.app)
        except KitError as exc:
            log.warning("could not check for work of other application versions: %s", exc)
        log.info("worker %s started (concurrency %d, lease %.1fs)", self.worker_id,
                 self.cfg.worker_concurrency, self.cfg.lease_seconds)

    def _free_slots(self) -> int:
        with self._idle:
            return self.cfg.worker_concurrency - self._running

    def _claim_loop(self) -> None:
        backend = self.app.backend
        poll = self.cfg.poll_seconds
        wake = self.notifier.watch(ANY_QUEUE)  # taken before the first claim: no wake-up is missed
        # Limited queues are claimed only when they may have work: a notification for the queue, a
        # workflow of it finished here, or a poll period passed (capacity freed on another worker).
        queue_watches: dict[str, Watch] = {}
        self._limited_dirty: set[str] = set()
        last_full = 0.0
        db_limited: set[str] = set()
        while self._claiming.is_set() and not self._stop.is_set():
            free = self._free_slots()
            if free <= 0:
                with self._idle:
                    self._idle.wait(timeout=poll)
                continue
            if free < self.cfg.worker_concurrency // 2:
                # Busy: let a few more slots free up so one claim round trip fetches several workflows.
                with self._idle:
                    self._idle.wait(timeout=0.005)
                free = self._free_slots()
            try:
                names = self.app.workflow_names()
                versions = self.app.accepted_versions
                mine = [q.name for q in self.app.queues()]
                if time.monotonic() - last_full >= poll:
                    # The database decides which queues are limited (another app may have declared limits).
                    last_full = time.monotonic()
                    db_limited = backend.queue_limited_names()
                    self._limited_dirty.update(n for n in mine if n in db_limited)
                limited = [n for n in mine if n in db_limited]
                open_queues = [""] + [n for n in mine if n not in db_limited]
                for name in limited:
                    if name not in queue_watches:
                        queue_watches[name] = self.notifier.watch("q:" + name)
                        self._limited_dirty.add(name)
                self._limited_dirty.update(n for n in limited if queue_watches[n].fired())
                due = [n for n in limited if n in self._limited_dirty]
                if due:  # start each round at a different limited queue
                    turn = self.claimed_count % len(due)
                    due = due[turn:] + due[:turn]
                with self._lock:  # the heartbeat leaves leases it does not know alone until they are held
                    self._claims_in_flight += 1
                try:
                    sent = time.monotonic()
                    # Limited queues first: a backlog on an unlimited queue must not starve them.
                    claims: list[Claim] = []
                    for queue in due:
                        room = free - len(claims)
                        if room <= 0:
                            break
                        self._limited_dirty.discard(queue)  # a finish or notification from now on re-marks it
                        with self._lock:
                            here = sum(1 for c in self._held.values() if c.queue == queue)
                        got = backend.queue_claim(ClaimRequest(self.worker_id, names, room, self.cfg.lease_seconds,
                                                               versions=versions, running_here=here), queue)
                        if got is None or len(got) >= room:
                            self._limited_dirty.add(queue)  # busy elsewhere, or maybe more: try again soon
                        claims += got or []
                    if free - len(claims) > 0:
                        claims += backend.workflow_claim(ClaimRequest(self.worker_id, names, free - len(claims),
                                                                      self.cfg.lease_seconds, queues=open_queues,
                                                                      versions=versions))
                    now = time.monotonic()
                    ctxs = [WorkflowContext(c.workflow_id, c.name, c.epoch, confirmed_at=now, queue=c.queue,
                                            deadline=c.deadline.timestamp() if c.deadline else None,
                                            lease_until=self.lease_valid_until(sent))
                            for c in claims]
                    with self._lock:
                        for ctx in ctxs:
                            old = self._held.get(ctx.workflow_id)
                            if old is not None:  # an earlier run here (e.g. cancelled, then resumed): stop it
                                old.lost.set()
                            self._held[ctx.workflow_id] = ctx
                finally:
                    with self._lock:
                        self._claims_in_flight -= 1
            except KitError as exc:
                log.warning("claim failed: %s", exc)
                self._stop.wait(poll)
                continue
            for claim, ctx in zip(claims, ctxs, strict=True):
                with self._idle:
                    self._running += 1
                self.claimed_count += 1
                assert self._claimed_pool is not None
                self._claimed_pool.submit(self._run_claimed, claim, ctx)
            if claims and len(claims) >= free:
                continue
            # Wait for a wake-up (enqueue, release) or the poll period, which also finds expired leases.
            wake.wait(poll)

    def _run_claimed(self, claim: Claim, ctx: WorkflowContext) -> None:
        try:
            if claim.recovery:
                log.info("recovering workflow %s (%s) at epoch %d", claim.workflow_id, claim.name, claim.epoch)
            wf = self.app.workflow_definition(claim.name)
            if claim.epoch > 1:  # it ran (or was released) before: load its checkpoints
                ctx.steps = {s.step_id: s for s in self.app.backend.step_list(claim.workflow_id)}
            try:
                args, kwargs = ser.decode_args(claim.inputs)
            except SerializationError as exc:
                err = ser.dumps(ser.exception_to_record(exc))
                self.app.backend.workflow_finish(Finish(claim.workflow_id, claim.epoch, Status.ERROR, error=err))
                return
            self._ended(ctx, execute(self.app, ctx, wf.fn, tuple(args), kwargs))
            if ctx.queue is not None and self._notifier is not None:
                # Capacity of a limited queue was freed here: claim from it again now.
                self._limited_dirty.add(ctx.queue)
                self._notifier.poke("q:" + ctx.queue)
                self._notifier.poke(ANY_QUEUE)
        except StorageError as exc:
            log.error("workflow %s: %s; leaving it to be recovered", claim.workflow_id, exc)
        except Exception:  # pragma: no cover - never let a worker thread die silently
            log.exception("workflow %s: unexpected engine failure", claim.workflow_id)
        finally:
            self.drop(claim.workflow_id, ctx)
            with self._idle:
                self._running -= 1
                self._idle.notify_all()

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
                released = self.app.backend.workflow_release(ctx.workflow_id, ctx.epoch)
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
