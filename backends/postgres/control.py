"""Control: cancel and resume a workflow tree, fork, retention (gc), unfinished work per version.

Each of these touches several workflows and runs as one transaction (see the [multi-workflow] notes of
kit.storage.Backend) that also records its answer under a per-call token (``_run_recorded``): after a lost
COMMIT acknowledgement the retry returns the answer of the attempt that committed instead of redoing it
(a cancel would find nothing left to cancel, a resume a PENDING workflow, a fork its own new id, a gc
batch nothing to delete).
"""

from __future__ import annotations

from datetime import datetime

import psycopg
import psycopg.errors

from kit.errors import UsageError, WorkflowConflictError, WorkflowNotFoundError, WorkflowStateError
from kit.storage import Created, ForkRequest, Status

from .notifications import NotificationsPart


class ControlPart(NotificationsPart):
    """workflow_cancel / workflow_resume / workflow_fork / workflow_gc / workflow_version_counts."""

    def workflow_cancel(self, workflow_id: str, error: str) -> list[str]:
        def cancel(conn: psycopg.Connection) -> list[str]:
            found = conn.execute(self._q["workflow_cancel"], {"workflow_id": workflow_id, "error": error}).fetchall()
            if not found and conn.execute(self._q["workflow_epoch"], {"workflow_id": workflow_id}).fetchone() is None:
                raise WorkflowNotFoundError(f"no workflow with id {workflow_id!r}")
            return [r[0] for r in found]

        return self._run_recorded("workflow_cancel", cancel)

    def workflow_resume(self, workflow_id: str, deadline: datetime | None = None) -> list[str]:
        def resume(conn: psycopg.Connection) -> list[str]:
            row = conn.execute(self._q["workflow_lock_status"], {"workflow_id": workflow_id}).fetchone()
            if row is None:
                raise WorkflowNotFoundError(f"no workflow with id {workflow_id!r}")
            if row[0] not in (Status.CANCELLED.value, Status.ERROR.value):
                raise WorkflowStateError(
                    f"workflow {workflow_id!r} is {row[0]}: only CANCELLED or ERROR workflows can be resumed"
                    + (" (a SUCCESS workflow never runs again; fork it to run it anew)"
                       if row[0] == Status.SUCCESS.value else " (it has not finished)"))
            ids = [r[0] for r in conn.execute(self._q["workflow_resume_tree"],
                                              {"workflow_id": workflow_id}).fetchall()]
            conn.execute(self._q["steps_drop_final_error"], {"workflow_ids": ids})
            try:
                done = conn.execute(self._q["workflow_resume"], {
                    "workflow_ids": ids, "deadline": deadline, "channel": self._statement_channel}).fetchall()
            except psycopg.errors.UniqueViolation:
                raise WorkflowStateError(
                    f"cannot resume {workflow_id!r}: a live workflow now holds its queue's deduplication id"
                ) from None
            self._wake_in_tx(conn, *sorted({"q:" + (r[1] or "") for r in done}), sent_by_statement=True)
            return [r[0] for r in done]

        return self._run_recorded("workflow_resume", resume)

    def workflow_fork(self, req: ForkRequest) -> Created:
        params = {"source_id": req.source_id, "new_id": req.new_id, "from_step": req.from_step,
                  "app_version": req.app_version, "deadline": req.deadline, "channel": self._statement_channel}

        def fork(conn: psycopg.Connection) -> Created:
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
            self._wake_in_tx(conn, "q:" + (row[1] or ""), sent_by_statement=True)
            return Created(True, row[0], src[0], Status.PENDING)

        return self._run_recorded("workflow_fork", fork, encode=lambda c: [c.epoch, c.name],
                                  decode=lambda v: Created(True, v[0], v[1], Status.PENDING))

    def workflow_gc(self, older_than_seconds: float, batch_size: int, dry_run: bool = False) -> int:
        params = {"age": float(older_than_seconds), "batch": max(1, int(batch_size))}
        if dry_run:
            return int(self._run(lambda c: c.execute(self._q["workflow_gc_count"], params).fetchone()[0]))

        def gc(conn: psycopg.Connection) -> int:
            n = len(conn.execute(self._q["workflow_gc"], params).fetchall())
            conn.execute(self._q["workers_gc"], params)
            return n

        return self._run_recorded("workflow_gc", gc)

    def workflow_version_counts(self) -> dict[str | None, int]:
        found = self._run(lambda c: c.execute(self._q["workflow_version_counts"]).fetchall())
        return {r[0]: int(r[1]) for r in found}
