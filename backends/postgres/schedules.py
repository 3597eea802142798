"""Cron schedules: definitions, cursors, and the tick (cursor compare-and-set plus enqueue, one transaction)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import psycopg

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
            with conn.transaction():
                conn.execute(self._q["schedule_tx_guard"], {"idle_ms": str(self.schedule_idle_timeout_ms)})
                before = conn.execute(self._q["schedule_get_locked"], {"name": spec.name}).fetchone()
                conn.execute(self._q["schedule_define"], params)
            return None if before is None else rows.schedule(before).spec

        return self._run(lambda conn: retry_if_cut_off(conn, define))

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

        def advance(conn: psycopg.Connection) -> bool:
            with conn.transaction():
                conn.execute(self._q["schedule_tx_guard"], {"idle_ms": str(self.schedule_idle_timeout_ms)})
                if conn.execute(self._q["schedule_advance"], params).fetchone() is None:
                    return False  # another worker moved the cursor first: it enqueued these ticks
                for wf in workflows:  # idempotent by workflow id, committed (and waking workers) with the cursor
                    self.workflow_enqueue_in(conn, wf)
            return True

        # Retried from the start after a lost connection: the compare-and-set then finds out whether the
        # first attempt committed (cursor moved: False) or not (it runs again).
        return self._run(lambda conn: retry_if_cut_off(conn, advance))
