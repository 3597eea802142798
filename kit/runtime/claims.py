"""The claim loop of a worker process: claim ready and orphaned workflows, run them from their checkpoints.

One thread claims as many workflows as there are free slots in one round trip (limited queues first, each
only when it may have work), holds their leases (:mod:`kit.runtime.leases`) and hands them to the worker
pool; it then waits for a wake-up (an enqueue, a release, a freed slot) or the poll period, which also
finds expired leases.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kit import serialization as ser
from kit import telemetry
from kit.engine import Outcome, WorkflowContext, execute
from kit.errors import KitError, SerializationError, StorageError
from kit.notifier import ANY_QUEUE, Notifier, Watch
from kit.runtime.leases import Leases
from kit.runtime.versions import accepted_versions
from kit.storage import Claim, ClaimRequest, Finish, Status

log = logging.getLogger("kit.worker")


class ClaimLoop(Leases):
    """Claiming and running claimed workflows, under leases (a part of :class:`kit.runtime.Runtime`, which
    creates the state declared here and starts :meth:`_claim_loop` on a thread of its own)."""

    claimed_count: int
    notifier: Notifier  # the process's notification dispatcher (started on first use)
    _notifier: Notifier | None
    _claiming: threading.Event  # set while the loop should claim
    _claimed_pool: ThreadPoolExecutor | None
    _running: int  # claimed workflows running now (guarded by _idle)
    _idle: threading.Condition  # notified when a claimed workflow ends
    _limited_dirty: set[str]  # limited queues that may have work (claim from them next round)
    _stop_counts: collections.Counter[str]  # what a graceful stop did: finished, handed_over, mid_step

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
            released = self.services.backend.workflow_release(ctx.workflow_id, ctx.epoch)
        except StorageError as exc:
            log.warning("could not release %s (it will be recovered after its lease): %s", ctx.workflow_id, exc)
            return
        if released:
            with self._lock:
                self._stop_counts["handed_over"] += 1

    def _execute(self, ctx: WorkflowContext, fn: Callable[..., Any], args: tuple, kwargs: dict) -> Outcome:
        """Run a workflow here (:func:`kit.engine.execute`), inside an installed instrumentation hook."""
        hook = telemetry.hook
        if hook is None:
            return execute(self.services, ctx, fn, args, kwargs)
        return hook.workflow(ctx, lambda: execute(self.services, ctx, fn, args, kwargs))

    def _free_slots(self) -> int:
        with self._idle:
            return self.cfg.worker_concurrency - self._running

    def _claim_loop(self) -> None:
        backend = self.services.backend
        definitions = self.services.definitions
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
                names = definitions.names()
                versions = accepted_versions(self.cfg.app_version, self.cfg.compatible_versions)
                mine = definitions.queue_names()
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
                                            lease_until=self.lease_valid_until(sent), recovered=c.recovery)
                            for c in claims]
                    hook = telemetry.hook  # an installed integration measures the claim, reads trace contexts
                    if hook is not None:
                        hook.claimed(claims, ctxs, now - sent)
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
        services = self.services
        try:
            if claim.recovery:
                log.info("recovering workflow %s (%s) at epoch %d", claim.workflow_id, claim.name, claim.epoch)
            wf = services.definitions.get(claim.name)
            if claim.epoch > 1:  # it ran (or was released) before: load its checkpoints
                ctx.steps = {s.step_id: s for s in services.backend.step_list(claim.workflow_id)}
            try:
                args, kwargs = ser.decode_args(claim.inputs)
            except SerializationError as exc:
                err = ser.dumps(ser.exception_to_record(exc))
                services.backend.workflow_finish(Finish(claim.workflow_id, claim.epoch, Status.ERROR, error=err))
                return
            self._ended(ctx, self._execute(ctx, wf.fn, tuple(args), kwargs))
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
