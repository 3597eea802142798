"""Workflows: create (start / enqueue), get, finish (group commit), release, list, wait."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import psycopg
import psycopg.errors
from psycopg import sql

from kit.errors import LeaseLostError, WorkflowDuplicateError
from kit.groupcommit import GroupCommitter
from kit.storage import Created, Finish, NewWorkflow, Status, WorkflowQuery, WorkflowRecord

from . import rows
from .notifications import NotificationsPart

_ORDERS = {  # WorkflowQuery.order -> ORDER BY (the id breaks ties so pages are stable)
    "created_desc": "created_at DESC, workflow_id",
    "created_asc": "created_at ASC, workflow_id",
    "finished_desc": "finished_at DESC NULLS LAST, workflow_id",
    "duration_desc": "finished_at - started_at DESC NULLS LAST, workflow_id",
}


class WorkflowsPart(NotificationsPart):
    """workflow_create / get / finish / release / list / wait."""

    def __init__(self, url: str, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        # Finishes of concurrently running workflows share round trips (group commit).
        self._finish_gc: GroupCommitter[Finish, bool] = GroupCommitter(self._flush_finishes)

    def workflow_create(self, wf: NewWorkflow) -> Created:
        params = {
            "workflow_id": wf.workflow_id, "name": wf.name, "inputs": wf.inputs, "queue": wf.queue,
            "priority": wf.priority, "app_version": wf.app_version, "parent_id": wf.parent_id,
            "owner": wf.owner, "lease": wf.lease_seconds, "dedup_id": wf.dedup_id,
            "delay": float(wf.delay_seconds), "partition_key": wf.partition_key,
            "channel": self._statement_channel, "deadline": wf.deadline, "parent_epoch": wf.parent_epoch,
        }

        maybe_ours = False  # an earlier attempt lost its connection: its insert may have committed
        # Submitted work (no owner) goes through workflow_enqueue, which also wakes idle workers.
        stmt = self._q["workflow_create" if wf.owner is not None else "workflow_enqueue"]

        def create(conn: psycopg.Connection) -> Created:
            nonlocal maybe_ours
            try:
                row = conn.execute(stmt, params).fetchone()
            except psycopg.OperationalError:
                maybe_ours = maybe_ours or conn.broken or conn.closed
                raise
            except psycopg.errors.UniqueViolation as exc:
                if wf.dedup_id is None:
                    raise
                live = conn.execute(self._q["workflow_by_dedup"], {"queue": wf.queue,
                                                                    "dedup_id": wf.dedup_id}).fetchone()
                if live is None:  # the holder finished in between: try again
                    raise psycopg.errors.SerializationFailure("dedup holder finished during enqueue") from exc
                raise WorkflowDuplicateError(
                    f"queue {wf.queue or 'default'!r} already has a live workflow {live[0]!r} with dedup id "
                    f"{wf.dedup_id!r}", live[0]) from None
            if row is not None:
                if wf.owner is None:
                    self._wake_in_tx(conn, "q:" + (wf.queue or ""), sent_by_statement=True)
                status = Status.RUNNING if wf.owner else Status.PENDING
                return Created(True, row[0], wf.name, status)
            existing = conn.execute(self._q["workflow_get"], {"workflow_id": wf.workflow_id}).fetchone()
            if existing is None and wf.parent_epoch is not None:
                parent = conn.execute(self._q["workflow_epoch"], {"workflow_id": wf.parent_id}).fetchone()
                if parent is None or parent[0] != wf.parent_epoch or parent[1] != Status.RUNNING.value:
                    raise LeaseLostError(f"workflow {wf.parent_id}: lease lost (epoch {wf.parent_epoch} superseded, "
                                         "cancelled or taken over) before it could start a child")
            if existing is None:  # deleted between the two statements: try again
                raise psycopg.errors.SerializationFailure("workflow vanished during create")
            rec = rows.wf(existing)
            # Our own insert whose acknowledgement was lost (only possible when an earlier attempt of this
            # call lost its connection): same owner, epoch 1, same inputs. Otherwise an existing row is never
            # ours, even with the same owner (one process starting the same id twice must not run it twice, G1).
            mine = (maybe_ours and wf.owner is not None and rec.owner == wf.owner and rec.epoch == 1
                    and rec.inputs == wf.inputs)
            # Submitted work is never run on the strength of `created`: an identical row after a lost
            # acknowledgement is our insert (a worker may have claimed it since).
            mine = mine or (maybe_ours and wf.owner is None and rec.name == wf.name and rec.inputs == wf.inputs
                            and rec.queue == wf.queue and rec.parent_id == wf.parent_id)
            return Created(mine, rec.epoch, rec.name, rec.status)

        return self._run(create)

    def workflow_get(self, workflow_id: str) -> WorkflowRecord | None:
        row = self._run(lambda c: c.execute(self._q["workflow_get"], {"workflow_id": workflow_id}).fetchone())
        return rows.wf(row) if row else None

    # -- finishing (group commit) ---------------------------------------------------------------------
    def workflow_finish(self, fin: Finish) -> bool:
        return self._finish_gc.submit(fin)

    def _finish_resolved(self, conn: psycopg.Connection, fin: Finish) -> bool:
        """The finish changed nothing: fenced, or our earlier attempt committed and its ack was lost."""
        row = conn.execute(self._q["workflow_epoch"], {"workflow_id": fin.workflow_id}).fetchone()
        return row is not None and row[0] == fin.epoch and row[1] == fin.status.value

    def _flush_finishes(self, batch: Sequence[Finish]) -> list[bool | BaseException]:
        if len(batch) == 1 or not self._caps.multi_row_locking_claims:
            # One statement per finish (a server whose row locks must stay single-row runs them in turn).
            def each(conn: psycopg.Connection) -> list[bool | BaseException]:
                out: list[bool | BaseException] = []
                for fin in batch:
                    params = {"workflow_id": fin.workflow_id, "epoch": fin.epoch, "status": fin.status.value,
                              "output": fin.output, "error": fin.error, "error_type": rows.error_type(fin.error)}
                    if conn.execute(self._q["workflow_finish"], params).rowcount == 1:
                        out.append(True)
                    else:
                        out.append(self._finish_resolved(conn, fin))
                return out

            return self._run(each)
        params = {
            "workflow_ids": [f.workflow_id for f in batch], "epochs": [f.epoch for f in batch],
            "statuses": [f.status.value for f in batch], "outputs": [f.output for f in batch],
            "errors": [f.error for f in batch], "error_types": [rows.error_type(f.error) for f in batch],
        }

        def many(conn: psycopg.Connection) -> list[bool | BaseException]:
            done = {r[0] for r in conn.execute(self._q["workflow_finish_many"], params)}
            return [True if f.workflow_id in done else self._finish_resolved(conn, f) for f in batch]

        return self._run(many)

    def workflow_release(self, workflow_id: str, epoch: int) -> bool:
        params = {"workflow_id": workflow_id, "epoch": epoch, "channel": self._statement_channel}

        maybe_done = False  # an earlier attempt lost its connection: its update may have committed

        def release(conn: psycopg.Connection) -> bool:
            nonlocal maybe_done
            try:
                row = conn.execute(self._q["workflow_release"], params).fetchone()
            except psycopg.OperationalError:
                maybe_done = maybe_done or conn.broken or conn.closed
                raise
            if row is not None:
                self._wake_in_tx(conn, "q:" + (row[0] or ""), sent_by_statement=True)
                return True
            if not maybe_done:
                return False
            # Our earlier attempt committed if the workflow is PENDING at our epoch (a claim bumps it).
            got = conn.execute(self._q["workflow_get"], {"workflow_id": workflow_id}).fetchone()
            done = got is not None and got[2] == Status.PENDING.value and got[9] == epoch
            if done:  # its wake-up may have been lost with the acknowledgement
                self._wake_in_tx(conn, "q:" + (got[6] or ""))
            return done

        return self._run(release)

    # -- observing ------------------------------------------------------------------------------------
    def workflow_list(self, query: WorkflowQuery) -> list[WorkflowRecord]:
        where: list[sql.Composable] = []
        params: list[Any] = []
        if query.statuses:
            where.append(sql.SQL("status = ANY(%s)"))
            params.append([s.value for s in query.statuses])
        for column, value in (("name", query.name), ("queue", query.queue), ("app_version", query.app_version)):
            if value is not None:
                where.append(sql.SQL("{} = %s").format(sql.Identifier(column)))
                params.append(value)
        if query.since is not None:
            where.append(sql.SQL("created_at >= %s"))
            params.append(query.since)
        if query.until is not None:
            where.append(sql.SQL("created_at < %s"))
            params.append(query.until)
        if query.error_contains:
            where.append(sql.SQL("error ILIKE %s"))
            params.append("%" + query.error_contains.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%")
        order = sql.SQL(_ORDERS.get(query.order, _ORDERS["created_desc"]))
        stmt = sql.SQL("SELECT {} FROM {}.workflows {} ORDER BY {} LIMIT %s").format(
            sql.SQL(rows.WORKFLOW_COLUMNS),
            sql.Identifier(self.schema),
            sql.SQL("WHERE ") + sql.SQL(" AND ").join(where) if where else sql.SQL(""),
            order,
        )
        params.append(max(1, min(int(query.limit), 100_000)))
        return [rows.wf(r) for r in self._observe(lambda c: c.execute(stmt, params).fetchall())]

    def workflow_wait(self, workflow_ids: Sequence[str], timeout: float) -> list[WorkflowRecord]:
        ids = list(workflow_ids)
        deadline = time.monotonic() + max(0.0, timeout)
        delay = 0.01
        while True:
            found = self._run(lambda c: c.execute(self._q["workflow_get_many_terminal"],
                                                  {"workflow_ids": ids}).fetchall())
            if found or time.monotonic() >= deadline:
                return [rows.wf(r) for r in found]
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 1.5, 0.5)
