"""Cron schedules: definitions, cursors, and the tick (cursor compare-and-set plus enqueue, one transaction)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime

import psycopg

from kit.errors import TransientStorageError
from kit.storage import NewWorkflow, ScheduleSpec, ScheduleState

from . import rows
from .connection import retry_if_cut_off
from .queues import QueuesPart


class SchedulesPart(QueuesPart):
    """schedule_define / schedule_get / schedule_list / schedule_advance."""

    # A schedule transaction holds the schedule's row lock; if its process freezes mid-transaction (SIGSTOP,
    # a paused VM), the server ends the session after this long idle, so the other workers' ticks go on.
    schedule_idle_timeout_ms = 10_000

    def schedule_define(self, spec: ScheduleSpec, now: datetime) -> ScheduleSpec | None:
        params = {"name": spec.name, "workflow_name": spec.workflow_name, "cron": spec.cron,
                  "timezone": spec.timezone, "queue": spec.queue, "catch_up": spec.catch_up,
                  "max_catch_up": spec.max_catch_up, "now": now}

        def define(conn: psycopg.Connection) -> ScheduleSpec | None:
            conn.execute(self._q["schedule_tx_guard"], {"idle_ms": str(self.schedule_idle_timeout_ms)})
            before = conn.execute(self._q["schedule_get_locked"], {"name": spec.name}).fetchone()
            conn.execute(self._q["schedule_define"], params)
            return None if before is None else rows.schedule(before).spec

        # The answer (the definition stored before) is recorded with the write: after a lost COMMIT
        # acknowledgement the retry returns it instead of the definition this call stored itself.
        return self._run_recorded("schedule_define", define,
                                  encode=lambda s: None if s is None else dataclasses.asdict(s),
                                  decode=lambda v: None if v is None else ScheduleSpec(**v))

    def schedule_get(self, name: str) -> ScheduleState | None:
        row = self._run(lambda c: c.execute(self._q["schedule_get"], {"name": name}).fetchone())
        return None if row is None else rows.schedule(row)

    def schedule_list(self) -> list[ScheduleState]:
        return [rows.schedule(r) for r in self._run(lambda c: c.execute(self._q["schedule_list"]).fetchall())]

    def schedule_advance(self, name: str, expected_cursor: datetime, new_cursor: datetime,
                         workflows: Sequence[NewWorkflow]) -> bool:
        last = workflows[-1] if workflows else None
        params = {"name": name, "expected": expected_cursor, "new_cursor": new_cursor,
                  "last_tick": new_cursor if last is not None else None,
                  "last_workflow_id": last.workflow_id if last is not None else None}

        maybe_committed = False  # an earlier attempt moved the cursor, then lost its connection

        def advance(conn: psycopg.Connection) -> bool:
            nonlocal maybe_committed
            moved = False
            try:
                with conn.transaction():
                    conn.execute(self._q["schedule_tx_guard"], {"idle_ms": str(self.schedule_idle_timeout_ms)})
                    moved = conn.execute(self._q["schedule_advance"], params).fetchone() is not None
                    if not moved:
                        if maybe_committed:  # ours committed if the cursor is at or past ours and our ticks exist
                            row = conn.execute(self._q["schedule_get"], {"name": name}).fetchone()
                            return row is not None and row[7] >= new_cursor and (last is None or conn.execute(
                                self._q["workflow_epoch"], {"workflow_id": last.workflow_id}).fetchone() is not None)
                        return False  # another worker moved the cursor first: it enqueued these ticks
                    for wf in workflows:  # idempotent by workflow id, committed (and waking workers) with the cursor
                        try:
                            self.workflow_enqueue_in(conn, wf)
                        except TransientStorageError as exc:
                            raise exc.__cause__ from None  # a serialization failure: _run retries the advance
            except psycopg.OperationalError:
                maybe_committed = maybe_committed or (moved and (conn.broken or conn.closed))
                raise
            return True

        # Retried from the start after a lost connection: if an earlier attempt had moved the cursor, the
        # compare-and-set now fails and the outcome is read back; otherwise it simply runs again.
        return self._run(lambda conn: retry_if_cut_off(conn, advance))
