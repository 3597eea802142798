"""Workflows on Citus: create (with its ready row, dedup row and parent link), finish, release.

Every write of one workflow is a transaction on its shard; what a workflow's other rows depend on lives with
them: a ready row on the workflow's lane (or its limited queue's home lane), a dedup row on the dedup key's
shard, a child link on the parent's shard. A transaction that writes two nodes commits with Citus'
two-phase commit, atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
import psycopg.errors
from kit.backends.postgres import rows
from kit.backends.postgres.workflows import WorkflowsPart

from kit.errors import LeaseLostError, WorkflowDuplicateError
from kit.storage import Created, Finish, NewWorkflow, Status

from .lanes import LanesPart, dedup_key, run_each


class _Fenced(Exception):
    """The parent's epoch no longer owns it: nothing of the child is written."""


def new_workflow_params(wf: NewWorkflow) -> dict[str, Any]:
    return {"workflow_id": wf.workflow_id, "name": wf.name, "inputs": wf.inputs, "queue": wf.queue,
            "priority": wf.priority, "app_version": wf.app_version, "parent_id": wf.parent_id,
            "owner": wf.owner, "lease": wf.lease_seconds, "dedup_id": wf.dedup_id,
            "delay": float(wf.delay_seconds), "partition_key": wf.partition_key, "deadline": wf.deadline,
            "dkey": dedup_key(wf.queue, wf.dedup_id) if wf.dedup_id is not None else None}


class CitusWorkflowsPart(LanesPart, WorkflowsPart):
    """workflow_create / finish / release for the distributed layout."""

    def _create_statements(self, wf: NewWorkflow, params: dict[str, Any]) -> tuple[list[tuple[str, dict]], int]:
        """The inserts creating ``wf`` (and the index of the one returning its epoch)."""
        stmts: list[tuple[str, dict]] = []
        if wf.owner is None and wf.dedup_id is not None:
            stmts.append((self._q["dedup_insert"], params))
        at = len(stmts)
        if wf.owner is None:
            stmts += [(self._q["workflow_insert"], params), (self._q["ready_enqueue"], params)]
        else:
            stmts.append((self._q["workflow_insert_owned"], params))
            if wf.queue is not None:
                stmts.append((self._q["slot_hold"], params))
        if wf.parent_id is not None:
            stmts.append((self._q["child_link"], params))
        return stmts, at

    def _insert_workflow(self, conn: psycopg.Connection, wf: NewWorkflow, params: dict[str, Any]) -> int:
        """Insert ``wf`` with its other rows in one transaction (pipelined: one round trip, two with a parent
        fence); raises UniqueViolation (nothing written) for a taken id or dedup id, _Fenced for a parent
        no longer owned by ``wf.parent_epoch``."""
        stmts, at = self._create_statements(wf, params)
        if len(stmts) == 1 and wf.parent_epoch is None:  # a started workflow without parent: one statement
            return conn.execute(stmts[0][0], stmts[0][1]).fetchone()[0]
        with conn.pipeline(), conn.transaction():
            if wf.parent_epoch is not None:
                held = conn.execute(self._q["workflow_fence"], {"workflow_id": wf.parent_id,
                                                                "epoch": wf.parent_epoch}).fetchone()
                if held is None:
                    raise _Fenced
            cursors = [conn.execute(stmt, p) for stmt, p in stmts]
            if wf.owner is None:  # inside the transaction: delivered at its commit
                self._wake_in_tx(conn, "q:" + (wf.queue or ""))
        return cursors[at].fetchone()[0]

    def workflow_create(self, wf: NewWorkflow) -> Created:
        params = new_workflow_params(wf)
        maybe_ours = False  # an earlier attempt lost its connection: its insert may have committed

        def create(conn: psycopg.Connection) -> Created:
            nonlocal maybe_ours
            try:
                epoch = self._insert_workflow(conn, wf, params)
                return Created(True, epoch, wf.name, Status.RUNNING if wf.owner else Status.PENDING)
            except psycopg.OperationalError:
                maybe_ours = maybe_ours or conn.broken or conn.closed
                raise
            except _Fenced:
                fenced = True
            except psycopg.errors.UniqueViolation:
                # A taken id or dedup id (Citus does not report which constraint): the existing workflow
                # answers for a taken id, else the dedup row names the live holder.
                fenced = False
                if conn.execute(self._q["workflow_get"], {"workflow_id": wf.workflow_id}).fetchone() is None:
                    self._raise_duplicate(conn, wf, params)
            existing = conn.execute(self._q["workflow_get"], {"workflow_id": wf.workflow_id}).fetchone()
            if existing is None and fenced:
                raise LeaseLostError(f"workflow {wf.parent_id}: lease lost (epoch {wf.parent_epoch} superseded, "
                                     "cancelled or taken over) before it could start a child")
            if existing is None:  # deleted between the two statements: try again
                raise psycopg.errors.SerializationFailure("workflow vanished during create")
            rec = rows.wf(existing)
            # As on PostgreSQL: only an attempt after a lost connection may find its own insert (same owner,
            # epoch 1, same inputs; for submitted work the same name, inputs, queue and parent).
            mine = maybe_ours and rec.inputs == wf.inputs and (
                (wf.owner is not None and rec.owner == wf.owner and rec.epoch == 1)
                or (wf.owner is None and rec.name == wf.name and rec.queue == wf.queue and rec.parent_id == wf.parent_id))
            return Created(mine, rec.epoch, rec.name, rec.status)

        return self._run(create)

    def _raise_duplicate(self, conn: psycopg.Connection, wf: NewWorkflow, params: dict[str, Any]) -> None:
        """After a unique violation that was not the workflow id: a live holder of the dedup id is a
        WorkflowDuplicateError; a holder that ended in between means: try again."""
        holder = conn.execute(self._q["dedup_holder"], params).fetchone() if wf.dedup_id is not None else None
        if holder is not None and holder[0] != wf.workflow_id:
            raise WorkflowDuplicateError(
                f"queue {wf.queue or 'default'!r} already has a live workflow {holder[0]!r} with dedup id "
                f"{wf.dedup_id!r}", holder[0]) from None
        raise psycopg.errors.SerializationFailure("conflicting create ended in between: try again")

    # -- finishing: each on its caller's connection (see CitusStepsPart.step_record) -------------------
    def workflow_finish(self, fin: Finish) -> bool:
        got = self._flush_finishes([fin])[0]
        if isinstance(got, BaseException):
            raise got
        return got

    def _flush_finishes(self, batch: Sequence[Finish]) -> list[bool | BaseException]:
        """Each finish is its own router statement (no multi-shard locking statement), sent pipelined; a
        workflow holding a limited-queue slot or a dedup id finishes in a transaction that frees them."""

        def flush(conn: psycopg.Connection) -> list[bool | BaseException]:
            found = run_each(conn, [(self._q["workflow_finish_plain"], self._finish_params(f)) for f in batch])
            return [True if done else self._finish_slow(conn, fin) for fin, done in zip(batch, found, strict=True)]

        return self._run(flush)

    @staticmethod
    def _finish_params(fin: Finish) -> dict[str, Any]:
        return {"workflow_id": fin.workflow_id, "epoch": fin.epoch, "status": fin.status.value,
                "output": fin.output, "error": fin.error, "error_type": rows.error_type(fin.error)}

    def _finish_slow(self, conn: psycopg.Connection, fin: Finish) -> bool:
        """The plain finish changed nothing: fenced, already finished by us (lost acknowledgement), or the
        workflow holds a slot or a dedup id to free in the same transaction."""
        with conn.transaction():
            row = conn.execute(self._q["workflow_lock_row"], {"workflow_id": fin.workflow_id}).fetchone()
            if row is None or row[0] != fin.epoch or row[1] != Status.RUNNING.value:
                return row is not None and row[0] == fin.epoch and row[1] == fin.status.value
            epoch, _status, held_lane, queue, dedup_id = row[:5]
            with conn.pipeline():
                conn.execute(self._q["workflow_finish"], self._finish_params(fin))
                self._free_holdings(conn, fin.workflow_id, held_lane, queue, dedup_id)
        return True

    def _free_holdings(self, conn: psycopg.Connection, workflow_id: str, held_lane: str | None, queue: str | None,
                       dedup_id: str | None) -> None:
        """A workflow that stops running frees its limited-queue slot; one that ends frees its dedup id."""
        if held_lane is not None:
            conn.execute(self._q["slot_release"], {"lane": held_lane, "workflow_id": workflow_id})
        if dedup_id is not None:
            conn.execute(self._q["dedup_release"], {"dkey": dedup_key(queue, dedup_id), "workflow_id": workflow_id})

    def workflow_release(self, workflow_id: str, epoch: int) -> bool:
        maybe_done = False  # an earlier attempt lost its connection: its release may have committed

        def release(conn: psycopg.Connection) -> bool:
            nonlocal maybe_done
            try:
                return give_back(conn)
            except psycopg.OperationalError:
                maybe_done = maybe_done or conn.broken or conn.closed
                raise

        def give_back(conn: psycopg.Connection) -> bool:
            with conn.transaction():
                row = conn.execute(self._q["workflow_lock_row"], {"workflow_id": workflow_id}).fetchone()
                if row is not None and maybe_done and row[0] == epoch and row[1] == Status.PENDING.value:
                    # Our earlier attempt committed (a claim would have bumped the epoch); its wake-up may
                    # have been lost with the acknowledgement.
                    self._wake_in_tx(conn, "q:" + (row[3] or ""))
                    return True
                if row is None or row[0] != epoch or row[1] != Status.RUNNING.value:
                    return False
                back = conn.execute(self._q["workflow_release_row"], {"workflow_id": workflow_id,
                                                                      "epoch": epoch}).fetchone()
                name, queue, priority, app_version, partition_key, run_at, created_at = back
                with conn.pipeline():
                    conn.execute(self._q["ready_put"], {
                        "workflow_id": workflow_id, "name": name, "queue": queue, "priority": priority,
                        "app_version": app_version, "partition_key": partition_key, "run_at": run_at,
                        "created_at": created_at})
                    self._free_holdings(conn, workflow_id, row[2], queue, None)
                    self._wake_in_tx(conn, "q:" + (queue or ""))
            return True

        return self._run(release)
