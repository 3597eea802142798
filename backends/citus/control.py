"""Cancel, resume, fork and retention on Citus.

Trees are walked level by level from the client (a recursive CTE over distributed tables is refused): the
children of a level are read from ``children`` (each link on its parent's shard), then every child row is
locked by id (router ``FOR UPDATE``). A child is created in the transaction that holds its parent's row
under the parent's epoch and writes the link on the parent's shard, so once a cancel holds the parent's row
every child created before it has its link visible there; the child's own row may still be in flight on
another node (that node's part of the two-phase commit not yet committed), so a linked child that is not
visible yet is waited for. Each operation is one transaction that also records its answer under a per-call
token (``_run_recorded``; call_outcomes is distributed by token): over several nodes, a two-phase commit, so
after a lost COMMIT acknowledgement the retry returns the committed attempt's answer.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from datetime import datetime

import psycopg
from kit.backends.postgres.control import ControlPart

from kit.errors import (
    StorageError,
    UsageError,
    WorkflowConflictError,
    WorkflowNotFoundError,
    WorkflowStateError,
)
from kit.storage import Created, ForkRequest, Status

from .lanes import LanesPart, dedup_key
from .workflows import CitusWorkflowsPart

LIVE = (Status.PENDING.value, Status.RUNNING.value)
_TASK_SUFFIX = re.compile(r"@t:[0-9.]+$")


def _cancelled_by(row: tuple, root: str) -> bool:
    """A descendant that ``root``'s cancel cancelled (its error names the cancel)."""
    error = row[5]
    if row[1] != Status.CANCELLED.value or not error or not error.startswith("{"):
        return False
    try:
        return json.loads(error).get("cancelled_with") == root
    except ValueError:
        return False


class CitusControlPart(CitusWorkflowsPart, LanesPart, ControlPart):
    """workflow_cancel / workflow_resume / workflow_fork / workflow_gc."""

    link_wait_seconds = 30.0  # longest wait for a linked child whose two-phase commit is still in flight

    def _lock_tree(self, conn: psycopg.Connection, root: str, root_row: tuple,
                   follow: Callable[[tuple], bool]) -> dict[str, tuple]:
        """Lock ``root``'s descendants level by level (``workflow_lock_row`` each), descending only through
        rows ``follow`` accepts; returns id -> locked row for the root and every followed descendant."""
        tree = {root: root_row}
        level = [root]
        while level:
            kids = [c for _, c in conn.execute(self._q["children_of"], {"ids": level}).fetchall() if c not in tree]
            level = []
            deadline = time.monotonic() + self.link_wait_seconds
            while kids:
                with conn.pipeline():
                    cursors = [conn.execute(self._q["workflow_lock_row"], {"workflow_id": c}) for c in kids]
                missing = []
                for child, cur in zip(kids, cursors, strict=True):
                    row = cur.fetchone()
                    if row is None:
                        missing.append(child)
                    elif follow(row):
                        tree[child] = row
                        level.append(child)
                if missing and time.monotonic() > deadline:
                    raise StorageError(f"children {', '.join(missing[:5])} of a workflow tree are linked but not "
                                       "visible: a two-phase commit is still in flight (see citus.recover_2pc_interval)")
                if missing:
                    time.sleep(0.01)
                kids = missing
        return tree

    def workflow_cancel(self, workflow_id: str, error: str) -> list[str]:
        def cancel(conn: psycopg.Connection) -> list[str]:
            root = conn.execute(self._q["workflow_lock_row"], {"workflow_id": workflow_id}).fetchone()
            if root is None:
                raise WorkflowNotFoundError(f"no workflow with id {workflow_id!r}")
            tree = self._lock_tree(conn, workflow_id, root, lambda row: True)
            doomed = [(wid, row) for wid, row in tree.items() if row[1] in LIVE]
            inherited = error
            if any(wid != workflow_id for wid, _ in doomed):
                inherited = conn.execute(self._q["cancel_error_of_descendants"], {
                    "error": error, "root": workflow_id}).fetchone()[0]
            with conn.pipeline():
                cursors = [conn.execute(self._q["workflow_cancel_one"], {
                    "workflow_id": wid, "error": error if wid == workflow_id else inherited})
                    for wid, _ in doomed]
                for wid, row in doomed:
                    self._free_holdings(conn, wid, row[2], row[3], row[4])
            return [r[0] for cur in cursors for r in cur.fetchall()]

        # One transaction (two-phase commit over the nodes of the tree and of the answer's token).
        return self._run_recorded("workflow_cancel", cancel)

    def workflow_resume(self, workflow_id: str, deadline: datetime | None = None) -> list[str]:
        def resume(conn: psycopg.Connection) -> list[str]:
            root = conn.execute(self._q["workflow_lock_row"], {"workflow_id": workflow_id}).fetchone()
            if root is None:
                raise WorkflowNotFoundError(f"no workflow with id {workflow_id!r}")
            status = root[1]
            if status not in (Status.CANCELLED.value, Status.ERROR.value):
                raise WorkflowStateError(
                    f"workflow {workflow_id!r} is {status}: only CANCELLED or ERROR workflows can be resumed"
                    + (" (a SUCCESS workflow never runs again; fork it to run it anew)"
                       if status == Status.SUCCESS.value else " (it has not finished)"))
            tree = self._lock_tree(conn, workflow_id, root, lambda row: _cancelled_by(row, workflow_id))
            with conn.pipeline():
                held = [(wid, conn.execute(self._q["dedup_acquire"], {
                    "dkey": dedup_key(row[3], row[4]), "workflow_id": wid}))
                    for wid, row in tree.items() if row[4] is not None]
            if any(cur.fetchone() is None for _, cur in held):
                raise WorkflowStateError(
                    f"cannot resume {workflow_id!r}: a live workflow now holds its queue's deduplication id")
            with conn.pipeline():
                for wid in tree:
                    conn.execute(self._q["steps_drop_final_error_one"], {"workflow_id": wid})
                cursors = [conn.execute(self._q["workflow_resume_one"], {"workflow_id": wid, "deadline": deadline})
                           for wid in tree]
            done = [row for cur in cursors for row in cur.fetchall()]
            with conn.pipeline():
                for wid, name, queue, priority, app_version, partition_key, created_at in done:
                    conn.execute(self._q["ready_put"], {
                        "workflow_id": wid, "name": name, "queue": queue, "priority": priority,
                        "app_version": app_version, "partition_key": partition_key, "run_at": None,
                        "created_at": created_at})
                self._wake_in_tx(conn, *sorted({"q:" + (r[2] or "") for r in done}))
            return [r[0] for r in done]

        return self._run_recorded("workflow_resume", resume)

    def workflow_fork(self, req: ForkRequest) -> Created:
        params = {"source_id": req.source_id, "new_id": req.new_id, "from_step": req.from_step,
                  "app_version": req.app_version, "deadline": req.deadline}

        def fork(conn: psycopg.Connection) -> Created:
            src = conn.execute(self._q["fork_source"], params).fetchone()
            if src is None:
                raise WorkflowNotFoundError(f"cannot fork {req.source_id!r}: no such workflow")
            name, inputs, queue, priority, last, partition_key = src
            last = -1 if last is None else last
            if not 0 <= req.from_step <= last + 1:
                raise UsageError(
                    f"cannot fork {req.source_id!r} from step {req.from_step}: it has "
                    + (f"steps 0..{last}, so from_step must be between 0 and {last + 1}" if last >= 0
                       else "no recorded steps, so from_step must be 0"))
            row = conn.execute(self._q["fork_insert"], {
                **params, "name": name, "inputs": inputs, "queue": queue, "priority": priority,
                "partition_key": partition_key}).fetchone()
            if row is None:
                raise WorkflowConflictError(f"cannot fork into {req.new_id!r}: a workflow with that id exists")
            with conn.pipeline():
                steps_cur = conn.execute(self._q["fork_read_steps"], params)
                streams_cur = conn.execute(self._q["fork_read_streams"], params)
            steps, streams = steps_cur.fetchall(), streams_cur.fetchall()
            events: dict[str, tuple] = {}  # each event's latest value as of the copied steps
            for step_id, step_name, output, _e, _a, _s, finished_at in steps:
                if step_name.startswith("set_event:"):
                    events[_TASK_SUFFIX.sub("", step_name[10:])] = (output, step_id, finished_at)
            with conn.pipeline():
                for step_id, step_name, output, err, attempts, started_at, finished_at in steps:
                    conn.execute(self._q["fork_copy_step"], {
                        "new_id": req.new_id, "step_id": step_id, "name": step_name, "output": output,
                        "error": err, "attempts": attempts, "started_at": started_at, "finished_at": finished_at})
                for key, seq, value, closed, step_id, created_at in streams:
                    conn.execute(self._q["fork_copy_stream"], {
                        "new_id": req.new_id, "key": key, "seq": seq, "value": value, "closed": closed,
                        "step_id": step_id, "created_at": created_at})
                for key, (value, step_id, updated_at) in events.items():
                    conn.execute(self._q["fork_copy_event"], {
                        "new_id": req.new_id, "key": key, "value": value, "step_id": step_id,
                        "updated_at": updated_at})
                conn.execute(self._q["ready_put"], {
                    "workflow_id": req.new_id, "name": name, "queue": queue, "priority": priority,
                    "app_version": req.app_version, "partition_key": partition_key, "run_at": None,
                    "created_at": row[1]})
                self._wake_in_tx(conn, "q:" + (queue or ""))
            return Created(True, row[0], name, Status.PENDING)

        return self._run_recorded("workflow_fork", fork, encode=lambda c: [c.epoch, c.name],
                                  decode=lambda v: Created(True, v[0], v[1], Status.PENDING))

    def _gc_victims(self, conn: psycopg.Connection, age: float, batch: int) -> list[str]:
        """Up to ``batch`` finished workflows old enough that no other workflow's steps refer to."""
        found = [r[0] for r in conn.execute(self._q["gc_candidates"], {"age": age, "limit": 2 * batch + 10})]
        if not found:
            return []
        texts = {json.dumps(wid, ensure_ascii=False): wid for wid in found}
        refs = conn.execute(self._q["gc_references"], {"outputs": list(texts)}).fetchall()
        kept = {texts[out] for holder, out in refs if holder != texts[out]}
        return [wid for wid in found if wid not in kept][:batch]

    def workflow_gc(self, older_than_seconds: float, batch_size: int, dry_run: bool = False) -> int:
        age, batch = float(older_than_seconds), max(1, int(batch_size))
        if dry_run:
            return len(self._run(lambda c: self._gc_victims(c, age, batch)))

        def gc(conn: psycopg.Connection) -> int:
            victims = self._gc_victims(conn, age, batch)
            with conn.pipeline():
                cursors = [(wid, conn.execute(self._q["gc_delete_workflow"], {"workflow_id": wid, "age": age}))
                           for wid in victims]
            deleted = [(wid, row[0]) for wid, cur in cursors for row in cur.fetchall()]
            with conn.pipeline():
                for wid, parent in deleted:
                    for name in ("gc_delete_steps", "gc_delete_messages", "gc_delete_events",
                                 "gc_delete_streams", "gc_delete_children"):
                        conn.execute(self._q[name], {"workflow_id": wid})
                    if parent is not None:
                        conn.execute(self._q["gc_unlink"], {"workflow_id": wid, "parent_id": parent})
                conn.execute(self._q["workers_gc"], {"age": age})
            return len(deleted)

        n = self._run_recorded("workflow_gc", gc)
        # Old recorded answers go in a statement of their own (multi-shard: not inside any control transaction).
        keep = max(self.outcome_keep_seconds, 2 * self.retry_seconds)
        self._run(lambda c: c.execute(self._q["call_outcomes_gc"], {"keep": keep}))
        return n
