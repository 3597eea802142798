"""Retention (``workflow_gc``) on CockroachDB: a batch picked by one statement and deleted by a second.

The PostgreSQL backend deletes a batch with one statement whose CTE locks a pick of ``workflows`` and
deletes from it; here the batch's ids are read first and exactly those are deleted, in one transaction,
retried whole on 40001. The answer (how many were deleted) is recorded with the deletes through the
PostgreSQL backend's ``_run_recorded``, so a retry after a lost acknowledgement returns the count of the
attempt that committed instead of deleting the next batch. Every other control operation (cancel, resume,
fork, schedule definitions) is the PostgreSQL backend's, recorded the same way, over this backend's
statements.
"""

from __future__ import annotations

from typing import Any

import psycopg
from kit.backends.postgres import PostgresBackend


class RetentionPart(PostgresBackend):
    """workflow_gc with a pick, then a delete of exactly the picked ids."""

    def workflow_gc(self, older_than_seconds: float, batch_size: int, dry_run: bool = False) -> int:
        params: dict[str, Any] = {"age": float(older_than_seconds), "batch": max(1, int(batch_size))}
        if dry_run:
            return int(self._run(lambda c: c.execute(self._q["workflow_gc_count"], params).fetchone()[0]))

        def gc(conn: psycopg.Connection) -> int:
            ids = [r[0] for r in conn.execute(self._q["workflow_gc_pick"], params).fetchall()]
            n = len(conn.execute(self._q["workflow_gc_delete"], {**params, "workflow_ids": ids}).fetchall()) \
                if ids else 0
            conn.execute(self._q["workers_gc"], params)
            return n

        return self._run_recorded("workflow_gc", gc)
