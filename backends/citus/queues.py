"""Queues on Citus: limited queues admitted on their home lane, enqueue in the caller's transaction.

A limited queue keeps all of its admission state on one shard, its *home lane* (the lane of the queue
name's shard): its ready rows, its ``queue_state`` row (the claim lock and partition cursor) and one
``slots`` row per workflow it admitted (running, or a recent start for the rate window). A claim locks the
queue_state row (``FOR UPDATE SKIP LOCKED``: one claimer per queue, the others skip it), counts the slots
and takes ready rows there, all router statements on the home shard, then starts the taken workflows by
id wherever they live; the transaction commits with two-phase commit when it spans nodes. The counts are
exact because they are read under a lock on the node that holds every slot: a previous claim's slots are
visible there as soon as that node has committed it, which is when its lock is released. A limited queue
is therefore served by one shard (its admission is serialised on PostgreSQL too).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any

import psycopg
import psycopg.errors
from kit.backends.postgres import rows
from kit.backends.postgres.connection import call_token, scrub
from kit.backends.postgres.queues import QueuesPart

from kit.errors import StorageError, TransientStorageError, UsageError
from kit.storage import Claim, ClaimRequest, Created, NewWorkflow, QueueSpec, Status

from .lanes import LanesPart
from .workflows import CitusWorkflowsPart, new_workflow_params

STRAYS_SECONDS = 5.0  # how often a process looks for a limited queue's ready rows outside its home lane


class CitusQueuesPart(CitusWorkflowsPart, LanesPart, QueuesPart):
    """queue_define / queue_claim / workflow_enqueue_in."""

    def __init__(self, url: str, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self._queue_lock = threading.Lock()
        self._state_ready: set[str] = set()
        self._strays_at: dict[str, float] = {}

    # -- enqueue inside the caller's transaction ----------------------------------------------------------
    def workflow_enqueue_in(self, connection: Any, wf: NewWorkflow) -> Created:
        if not isinstance(connection, psycopg.Connection):
            raise UsageError(f"connection= must be a psycopg Connection for the Citus backend, got "
                             f"{type(connection).__name__}")
        wf = dataclasses.replace(wf, owner=None, parent_epoch=None)
        params = new_workflow_params(wf)
        stmts, at = self._create_statements(wf, params)
        if not connection.autocommit and connection.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
            connection.execute("BEGIN")  # open the caller's transaction: their commit or rollback decides
        try:
            with connection.transaction():  # a savepoint: a duplicate leaves the caller's transaction usable
                cursors = [connection.execute(stmt, p) for stmt, p in stmts]
                epoch = cursors[at].fetchone()[0]
                self._wake_in_tx(connection, "q:" + (wf.queue or ""))  # delivered at the caller's commit
            return Created(True, epoch, wf.name, Status.PENDING)
        except psycopg.errors.UniqueViolation:
            if connection.execute(self._q["workflow_get"], {"workflow_id": wf.workflow_id}).fetchone() is None:
                try:
                    self._raise_duplicate(connection, wf, params)
                except psycopg.Error as exc:
                    raise TransientStorageError(f"enqueue of {wf.workflow_id!r} conflicted with a workflow that "
                                                "ended meanwhile: the transaction must run again") from exc
        except psycopg.Error as exc:
            # A serialization failure or deadlock: the caller's transaction must run again.
            kind = TransientStorageError if getattr(exc, "sqlstate", None) in ("40001", "40P01") else StorageError
            raise kind(scrub(f"{type(exc).__name__}: {exc}", self.url)) from exc
        existing = connection.execute(self._q["workflow_get"], {"workflow_id": wf.workflow_id}).fetchone()
        if existing is None:
            raise StorageError(f"enqueue of {wf.workflow_id!r} conflicted with a workflow that is gone: try again")
        rec = rows.wf(existing)
        return Created(False, rec.epoch, rec.name, rec.status)

    # -- definitions --------------------------------------------------------------------------------------
    def queue_define(self, spec: QueueSpec) -> None:
        super().queue_define(spec)
        if spec.limited:
            self._adopt_strays(spec.name)

    def _ensure_state(self, queue: str, home: str) -> None:
        if queue in self._state_ready:
            return
        self._run(lambda c: c.execute(self._q["queue_state_ensure"], {"lane": home, "queue": queue}))
        self._state_ready.add(queue)

    def _adopt_strays(self, queue: str) -> None:
        """Move ready rows of a limited queue that live outside its home lane (enqueued before the queue was
        declared limited, or while that declaration committed) to the home lane, each in one transaction."""
        home = self._home_lane(queue)
        self._strays_at[queue] = time.monotonic()

        def adopt(conn: psycopg.Connection) -> None:
            strays = conn.execute(self._q["ready_strays"], {"queue": queue, "lane": home}).fetchall()
            for lane, workflow_id in strays:
                with conn.transaction():
                    row = conn.execute(self._q["ready_remove"], {"lane": lane, "workflow_id": workflow_id}).fetchone()
                    if row is not None:
                        name, q, priority, app_version, partition_key, run_at, created_at = row
                        conn.execute(self._q["ready_put"], {
                            "workflow_id": workflow_id, "name": name, "queue": q, "priority": priority,
                            "app_version": app_version, "partition_key": partition_key, "run_at": run_at,
                            "created_at": created_at})

        self._run(adopt)

    # -- limited claims -----------------------------------------------------------------------------------
    def queue_claim(self, req: ClaimRequest, queue: str) -> list[Claim] | None:
        if not req.names or req.limit <= 0:
            return []
        spec = self.queue_get(queue)
        if spec is None:
            return None
        if not spec.limited:  # an ordinary queue: its ready rows are on every lane
            got = self.workflow_claim(dataclasses.replace(req, queues=[queue]))
            return [dataclasses.replace(c, queue=queue) for c in got]
        home = self._home_lane(queue)
        self._ensure_state(queue, home)
        if time.monotonic() - self._strays_at.get(queue, 0.0) >= STRAYS_SECONDS:
            self._adopt_strays(queue)
        base = {"queue": queue, "lane": home, "owner": req.owner, "names": list(req.names), "lease": req.lease_seconds,
                "versions": None if req.versions is None else list(req.versions), "token": call_token()}
        attempts = 0

        def claim(conn: psycopg.Connection) -> list[tuple] | None:
            # A retry (an earlier attempt may have committed, its acknowledgement lost) first reads back the rows
            # this owner holds under the call's token; they count within this worker's room and the limit.
            nonlocal attempts
            attempts += 1
            mine = self._claims_read_back(conn, base) if attempts > 1 else []
            if len(mine) >= req.limit:
                return mine
            more = self._claim_home(conn, dataclasses.replace(req, limit=req.limit - len(mine),
                                                              running_here=req.running_here + len(mine)), spec, base)
            return mine + more if more is not None else (mine or None)

        found = self._run(claim)
        if found is None:
            return None
        return [Claim(workflow_id=r[0], name=r[1], inputs=r[2], epoch=r[3], recovery=r[4], queue=queue, deadline=r[5])
                for r in found]

    def _claim_home(self, conn: psycopg.Connection, req: ClaimRequest, spec: QueueSpec,
                    base: dict[str, Any]) -> list[tuple] | None:
        rate_period = spec.rate_period if spec.rate_period is not None else 1.0
        with conn.transaction():
            with conn.pipeline():
                lock_cur = conn.execute(self._q["queue_state_lock"], base)
                conn.execute(self._q["slots_purge"], {**base, "keep": rate_period if spec.rate_count else 0.0})
                count_cur = conn.execute(self._q["slots_count"], {**base, "rate_period": rate_period})
            lock = lock_cur.fetchone()
            if lock is None:  # another worker is claiming from this queue right now
                return None
            cursor = lock[0]
            running, mine, started = count_cur.fetchone()
            worker_room = (spec.worker_concurrency - max(mine, req.running_here)
                           if spec.worker_concurrency is not None else req.limit)
            n_reclaim = max(0, min(req.limit, worker_room))
            n_new = max(0, min(req.limit, worker_room,
                               spec.concurrency - running if spec.concurrency is not None else req.limit,
                               spec.rate_count - started if spec.rate_count is not None else req.limit))
            found = self._reclaim(conn, base, n_reclaim) if n_reclaim and running > mine else []
            # n_reclaim is this worker's whole room: takeovers use it up before new starts do.
            n_new = max(0, min(n_new, n_reclaim - len(found), req.limit - len(found)))
            if n_new > 0:
                found += self._start_new(conn, base, spec, n_new, cursor)
        return found

    def _reclaim(self, conn: psycopg.Connection, base: dict[str, Any], n: int) -> list[tuple]:
        """Take over expired leases of the queue (each a compare-and-set of its epoch); the slot stays, its
        owner changes."""
        expired = conn.execute(self._q["limited_expired"], {**base, "n": n}).fetchall()
        if not expired:
            return []
        with conn.pipeline():
            cursors = [conn.execute(self._q["expired_claim"], {**base, "workflow_id": wid, "epoch": epoch,
                                                               "keep_slot": True}) for wid, epoch in expired]
        got = [row for cur in cursors for row in cur.fetchall()]
        with conn.pipeline():
            for row in got:
                conn.execute(self._q["slot_owner"], {**base, "workflow_id": row[0]})
        return got

    def _start_new(self, conn: psycopg.Connection, base: dict[str, Any], spec: QueueSpec, n: int,
                   cursor: str | None) -> list[tuple]:
        if spec.partitioned:
            taken = conn.execute(self._q["limited_take_partitioned"], {
                **base, "n": n, "partition_concurrency": spec.partition_concurrency, "cursor": cursor,
                "max_partitions": 1000}).fetchall()
        else:
            taken = conn.execute(self._q["limited_take"], {**base, "n": n}).fetchall()
        if not taken:
            return []
        with conn.pipeline():
            cursors = [conn.execute(self._q["limited_claim"], {**base, "workflow_id": wid}) for wid, _ in taken]
        partition = dict(taken)
        got = [row for cur in cursors for row in cur.fetchall()]
        with conn.pipeline():
            for row in got:
                conn.execute(self._q["slot_take"], {**base, "workflow_id": row[0], "partition_key": partition[row[0]]})
            keys = [partition[row[0]] for row in got if partition[row[0]] is not None]
            if spec.partitioned and keys:  # continue after the last tenant served, next time
                conn.execute(self._q["queue_state_cursor"], {**base, "cursor": max(keys)})
        return got
