"""Answers after an ambiguous result: the operations whose retry alone would answer wrongly.

On CockroachDB an ambiguous result (40003, or a connection lost during COMMIT) is an ordinary event of a
node restart or a lease transfer, not a rare accident, so every write must give the answer of a call that
saw its acknowledgement. The PostgreSQL backend's checkpoints, finishes, creates, releases and claims read
back already (claims here by their token); these do too:

* a message without a sender key gets one generated for the call (``kit:auto:<uuid>``), so a retry after a
  lost acknowledgement finds the first send instead of delivering twice (listings show it as no key);
* a cancel whose retry finds nothing left to cancel returns the tree's workflows that this cancel ended
  (the root with this call's error, descendants that name the root in ``cancelled_with``);
* a resume whose retry finds the workflow PENDING returns the workflows of its tree that moved past the
  epochs the first attempt saw;
* a fork whose retry finds the new id taken returns it as created when that row is the fork of the source;
* a retention batch first reads the ids it will delete, then deletes exactly those; after a lost
  acknowledgement it counts how many of them are gone;
* a schedule definition whose retry reads back its own definition returns what the first attempt found.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import psycopg
import psycopg.errors
from kit.backends.postgres import PostgresBackend
from kit.backends.postgres import rows as pgrows
from kit.backends.postgres.connection import retry_if_cut_off

from kit.errors import UsageError, WorkflowConflictError, WorkflowNotFoundError, WorkflowStateError
from kit.storage import Created, ForkRequest, MessageInfo, ScheduleSpec, Status

AUTO_KEY = "kit:auto:"


def _lost(conn: psycopg.Connection) -> bool:
    return bool(conn.broken or conn.closed)


class ReadBackPart(PostgresBackend):
    """message_send / message_list / workflow_cancel / workflow_resume / workflow_fork / workflow_gc /
    schedule_define, each resolving a lost acknowledgement by reading back."""

    def message_send(self, workflow_id: str, topic: str, body: str, sender_key: str | None = None,
                     sender: tuple[str, int] | None = None) -> bool:
        return super().message_send(workflow_id, topic, body, sender_key or f"{AUTO_KEY}{uuid.uuid4().hex}", sender)

    def message_list(self, workflow_id: str, limit: int = 1000) -> list[MessageInfo]:
        return [m if not (m.sender_key or "").startswith(AUTO_KEY) else
                MessageInfo(m.message_id, m.topic, m.body, None, m.created_at, m.consumed_at, m.consumed_step)
                for m in super().message_list(workflow_id, limit)]

    def workflow_cancel(self, workflow_id: str, error: str) -> list[str]:
        params = {"workflow_id": workflow_id, "error": error}
        maybe_done = False

        def cancel(conn: psycopg.Connection) -> list[str]:
            nonlocal maybe_done
            try:
                with conn.transaction():
                    found = conn.execute(self._q["workflow_cancel"], params).fetchall()
                    if not found and maybe_done:
                        found = conn.execute(self._q["workflow_cancelled_by"], params).fetchall()
                    if not found and conn.execute(self._q["workflow_epoch"], params).fetchone() is None:
                        raise WorkflowNotFoundError(f"no workflow with id {workflow_id!r}")
            except psycopg.OperationalError:
                maybe_done = maybe_done or _lost(conn)
                raise
            return [r[0] for r in found]

        return self._run(cancel)

    def workflow_resume(self, workflow_id: str, deadline: datetime | None = None) -> list[str]:
        seen: dict[str, int] = {}  # the tree and its epochs, as an attempt that may have committed saw them
        maybe_done = False

        def resume(conn: psycopg.Connection) -> list[str]:
            nonlocal maybe_done
            try:
                with conn.transaction():
                    row = conn.execute(self._q["workflow_lock_status"], {"workflow_id": workflow_id}).fetchone()
                    if row is None:
                        raise WorkflowNotFoundError(f"no workflow with id {workflow_id!r}")
                    if row[0] not in (Status.CANCELLED.value, Status.ERROR.value):
                        if maybe_done and seen:
                            now = conn.execute(self._q["workflow_epochs"], {"workflow_ids": list(seen)}).fetchall()
                            ours = [w for w, epoch, status in now if epoch > seen[w]
                                    and status not in (Status.CANCELLED.value, Status.ERROR.value)]
                            if workflow_id in ours:
                                return sorted(ours)
                        raise WorkflowStateError(
                            f"workflow {workflow_id!r} is {row[0]}: only CANCELLED or ERROR workflows can be resumed"
                            + (" (a SUCCESS workflow never runs again; fork it to run it anew)"
                               if row[0] == Status.SUCCESS.value else " (it has not finished)"))
                    tree = conn.execute(self._q["workflow_resume_tree"], {"workflow_id": workflow_id}).fetchall()
                    ids = [r[0] for r in tree]
                    epochs = {w: e for w, e, _ in conn.execute(self._q["workflow_epochs"],
                                                                  {"workflow_ids": ids}).fetchall()}
                    conn.execute(self._q["steps_drop_final_error"], {"workflow_ids": ids})
                    try:
                        done = conn.execute(self._q["workflow_resume"], {
                            "workflow_ids": ids, "deadline": deadline, "channel": None}).fetchall()
                    except psycopg.errors.UniqueViolation:
                        raise WorkflowStateError(f"cannot resume {workflow_id!r}: a live workflow now holds its "
                                                 "queue's deduplication id") from None
                    seen.clear()
                    seen.update(epochs)
            except psycopg.OperationalError:
                maybe_done = maybe_done or (bool(seen) and _lost(conn))
                raise
            return [r[0] for r in done]

        return self._run(resume)

    def workflow_fork(self, req: ForkRequest) -> Created:
        maybe_done = False

        def fork_once(conn: psycopg.Connection) -> Created:
            nonlocal maybe_done
            try:
                return self._fork(conn, req)
            except WorkflowConflictError:
                if maybe_done:
                    row = conn.execute(self._q["workflow_fork_of"], {"new_id": req.new_id}).fetchone()
                    if row is not None and row[0] == req.source_id:
                        return Created(True, 1, row[1], Status.PENDING)
                raise
            except psycopg.OperationalError:
                maybe_done = maybe_done or _lost(conn)
                raise

        return self._run(fork_once)

    def _fork(self, conn: psycopg.Connection, req: ForkRequest) -> Created:
        params = {"source_id": req.source_id, "new_id": req.new_id, "from_step": req.from_step,
                  "app_version": req.app_version, "deadline": req.deadline, "channel": None}
        with conn.transaction():
            src = conn.execute(self._q["workflow_fork_source"], params).fetchone()
            if src is None:
                raise WorkflowNotFoundError(f"cannot fork {req.source_id!r}: no such workflow")
            last = -1 if src[4] is None else src[4]
            if not 0 <= req.from_step <= last + 1:
                raise UsageError(
                    f"cannot fork {req.source_id!r} from step {req.from_step}: it has "
                    + (f"steps 0..{last}, so from_step must be between 0 and {last + 1}" if last >= 0
                       else "no recorded steps, so from_step must be 0"))
            row = conn.execute(self._q["workflow_fork_insert"], params).fetchone()
            if row is None:
                raise WorkflowConflictError(f"cannot fork into {req.new_id!r}: a workflow with that id exists")
            for name in ("workflow_fork_steps", "workflow_fork_events", "workflow_fork_streams"):
                conn.execute(self._q[name], params)
        return Created(True, row[0], src[0], Status.PENDING)

    def workflow_gc(self, older_than_seconds: float, batch_size: int, dry_run: bool = False) -> int:
        params: dict[str, Any] = {"age": float(older_than_seconds), "batch": max(1, int(batch_size))}
        if dry_run:
            return int(self._run(lambda c: c.execute(self._q["workflow_gc_count"], params).fetchone()[0]))
        picked: list[str] = []
        maybe_done = False

        def gc(conn: psycopg.Connection) -> int:
            nonlocal maybe_done
            if maybe_done and picked:
                gone = conn.execute(self._q["workflow_epochs"], {"workflow_ids": picked}).fetchall()
                return len(picked) - len(gone)
            try:
                with conn.transaction():
                    ids = [r[0] for r in conn.execute(self._q["workflow_gc_pick"], params).fetchall()]
                    n = len(conn.execute(self._q["workflow_gc_delete"], {**params, "workflow_ids": ids}).fetchall()) \
                        if ids else 0
                    conn.execute(self._q["workers_gc"], params)
                    picked[:] = ids
            except psycopg.OperationalError:
                maybe_done = maybe_done or (bool(picked) and _lost(conn))
                raise
            return n

        return self._run(gc)

    def schedule_define(self, spec: ScheduleSpec, now: datetime) -> ScheduleSpec | None:
        params = {"name": spec.name, "workflow_name": spec.workflow_name, "cron": spec.cron,
                  "timezone": spec.timezone, "queue": spec.queue, "catch_up": spec.catch_up,
                  "max_catch_up": spec.max_catch_up, "now": now}
        wrote: list[ScheduleSpec | None] = []  # what an attempt that may have committed had found

        def define(conn: psycopg.Connection) -> ScheduleSpec | None:
            found: list[ScheduleSpec | None] = []
            try:
                with conn.transaction():
                    conn.execute(self._q["schedule_tx_guard"], {"idle_ms": str(self.schedule_idle_timeout_ms)})
                    row = conn.execute(self._q["schedule_get_locked"], {"name": spec.name}).fetchone()
                    before = None if row is None else pgrows.schedule(row).spec
                    if wrote and before == spec:  # our earlier attempt committed: answer as it would have
                        return wrote[0]
                    conn.execute(self._q["schedule_define"], params)
                    found.append(before)
            except psycopg.OperationalError:
                if found and not wrote and _lost(conn):
                    wrote.append(found[0])
                raise
            return found[0]

        return self._run(lambda conn: retry_if_cut_off(conn, define))
