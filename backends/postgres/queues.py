"""Queues: enqueue inside the caller's transaction, queue definitions, limited-queue claims, listings."""

from __future__ import annotations

from typing import Any

import psycopg
import psycopg.errors

from kit.errors import StorageError, TransientStorageError, UsageError, WorkflowDuplicateError
from kit.storage import Claim, ClaimRequest, Created, NewWorkflow, QueueSpec, QueueStats, Status

from . import rows
from .connection import call_token, scrub
from .notifications import NotificationsPart


class QueuesPart(NotificationsPart):
    """workflow_enqueue_in / queue_define / queue_get / queue_claim / queue_limited_names / queue_list."""

    def workflow_enqueue_in(self, connection: Any, wf: NewWorkflow) -> Created:
        if not isinstance(connection, psycopg.Connection):
            raise UsageError(f"connection= must be a psycopg Connection for the PostgreSQL backend, got "
                             f"{type(connection).__name__}")
        params = {
            "workflow_id": wf.workflow_id, "name": wf.name, "inputs": wf.inputs, "queue": wf.queue,
            "priority": wf.priority, "app_version": wf.app_version, "parent_id": wf.parent_id,
            "dedup_id": wf.dedup_id, "delay": float(wf.delay_seconds), "partition_key": wf.partition_key,
            "channel": self._statement_channel, "deadline": wf.deadline, "parent_epoch": None,
        }
        if not connection.autocommit and connection.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
            # No transaction open yet: open the caller's, so their commit or rollback decides (a bare
            # connection.transaction() here would commit the insert on its own).
            connection.execute("BEGIN")
        try:
            with connection.transaction():  # a savepoint inside the caller's transaction
                row = connection.execute(self._q["workflow_enqueue"], params).fetchone()
                if row is not None:  # the wake-up joins the caller's transaction: delivered at its commit
                    self._wake_in_tx(connection, "q:" + (wf.queue or ""), sent_by_statement=True)
        except psycopg.errors.UniqueViolation:
            live = connection.execute(self._q["workflow_by_dedup"], {"queue": wf.queue, "dedup_id": wf.dedup_id}
                                      ).fetchone() if wf.dedup_id else None
            if live is None:
                raise
            raise WorkflowDuplicateError(f"queue {wf.queue or 'default'!r} already has a live workflow {live[0]!r} "
                                         f"with dedup id {wf.dedup_id!r}", live[0]) from None
        except psycopg.Error as exc:
            # A serialization failure or deadlock: the caller's transaction must run again.
            kind = TransientStorageError if getattr(exc, "sqlstate", None) in ("40001", "40P01") else StorageError
            raise kind(scrub(f"{type(exc).__name__}: {exc}", self.url)) from exc
        if row is not None:
            return Created(True, row[0], wf.name, Status.PENDING)
        existing = connection.execute(self._q["workflow_get"], {"workflow_id": wf.workflow_id}).fetchone()
        rec = rows.wf(existing)
        return Created(False, rec.epoch, rec.name, rec.status)

    def queue_define(self, spec: QueueSpec) -> None:
        params = {"name": spec.name, "concurrency": spec.concurrency, "worker_concurrency": spec.worker_concurrency,
                  "partition_concurrency": spec.partition_concurrency, "rate_count": spec.rate_count,
                  "rate_period": spec.rate_period, "priority": spec.priority, "partitioned": spec.partitioned}
        self._run(lambda c: c.execute(self._q["queue_define"], params))

    def queue_get(self, name: str) -> QueueSpec | None:
        row = self._run(lambda c: c.execute(self._q["queue_get"], {"name": name}).fetchone())
        if row is None:
            return None
        return QueueSpec(name=row[0], concurrency=row[1], worker_concurrency=row[2], partition_concurrency=row[3],
                         rate_count=row[4], rate_period=row[5], priority=row[6], partitioned=row[7])

    def queue_claim(self, req: ClaimRequest, queue: str) -> list[Claim] | None:
        """Lock the queue's row (one claimer per queue at a time; others skip it this round), count its
        room in a fresh snapshot, then claim within it: takeovers of expired leases first, then new starts
        (the head of each tenant's backlog in turn for partitioned queues).

        Claimed rows carry this call's token; a retry (an earlier attempt may have committed, its
        acknowledgement lost) first reads them back and returns them, and they count within the room: they
        are RUNNING here already, so they use up the queue's and this worker's room and ``limit``."""
        if not req.names or req.limit <= 0:
            return []
        token = call_token()
        attempts = 0

        def claim(conn: psycopg.Connection) -> list[Claim] | None:
            nonlocal attempts
            attempts += 1
            with conn.transaction():
                mine = self._claims_read_back(conn, {"owner": req.owner, "token": token}) if attempts > 1 else []
                limit = req.limit - len(mine)
                lock = conn.execute(self._q["queue_lock"], {"queue": queue}).fetchone() if limit > 0 else None
                if lock is None:  # another worker is claiming from this queue right now (or no such queue)
                    return self._claims(mine, queue) if mine else None
                concurrency, worker_conc, partition_conc, rate_count, rate_period, partitioned, cursor = lock
                base = {"queue": queue, "owner": req.owner, "names": list(req.names), "limit": limit,
                        "lease": req.lease_seconds, "token": token,
                        "versions": None if req.versions is None else list(req.versions)}
                n_new, n_reclaim = conn.execute(self._q["queue_room"], {
                    **base, "running_here": req.running_here + len(mine), "concurrency": concurrency,
                    "worker_concurrency": worker_conc, "rate_count": rate_count,
                    "rate_period": rate_period if rate_period is not None else 1.0}).fetchone()
                found = conn.execute(self._q["queue_reclaim"], {**base, "n": n_reclaim}).fetchall() if n_reclaim else []
                # n_reclaim is this worker's whole room: takeovers use it up before new starts do.
                n_new = max(0, min(n_new, n_reclaim - len(found), limit - len(found)))
                if n_new > 0 and partitioned:
                    got = conn.execute(self._q["queue_claim_partitioned"], {
                        **base, "n": n_new, "partition_concurrency": partition_conc, "cursor": cursor,
                        "max_partitions": 1000}).fetchall()
                    if got:  # continue after the last tenant served, next time
                        conn.execute(self._q["queue_cursor"], {"queue": queue, "cursor": max(r[6] for r in got)})
                    found += [r[:6] for r in got]
                elif n_new > 0:
                    found += conn.execute(self._q["queue_claim"], {**base, "n": n_new}).fetchall()
            return self._claims(mine + found, queue)

        return self._run(claim)

    @staticmethod
    def _claims(found: list[tuple], queue: str) -> list[Claim]:
        return [Claim(workflow_id=r[0], name=r[1], inputs=r[2], epoch=r[3], recovery=r[4], queue=queue,
                      deadline=r[5]) for r in found]

    def queue_limited_names(self) -> set[str]:
        return {r[0] for r in self._run(lambda c: c.execute(self._q["queue_limited_names"]).fetchall())}

    def queue_list(self) -> list[QueueStats]:
        found = self._observe(lambda c: c.execute(self._q["queue_list"]).fetchall())
        return [QueueStats(queue=r[0] or "default", depth=int(r[1]), in_flight=int(r[2]), concurrency_limit=r[3],
                           worker_concurrency_limit=r[4], partition_concurrency_limit=r[5],
                           rate_limit_per_second=(r[6] / r[7]) if r[6] is not None and r[7] else None,
                           partitioned=bool(r[8]))
                for r in found]
