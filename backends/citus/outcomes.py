"""Recorded answers of control operations on Citus (``_run_recorded``; docs/backends.md "lost acknowledgements").

The answer must commit with the operation's writes or not at all, so it is recorded where those writes commit:

* ``call_outcomes`` is distributed by token (colocated with workflows) for the operations that write distributed
  tables (cancel, resume, fork, gc): the recording INSERT is a router statement of the operation's transaction,
  which Citus commits with two-phase commit whenever it spans nodes.
* ``coordinator_outcomes``, a plain coordinator table, for the operations that write only coordinator tables
  (``schedule_define``) or whose commit decision is the coordinator's (``migrate``: its DDL reaches the workers
  by two-phase commit, whose decision is the coordinator's local commit). A coordinator write next to a single
  worker write would commit without two-phase commit (the worker first, then the coordinator): the answer of a
  coordinator-only operation therefore never goes to a worker.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import psycopg
from kit.backends.postgres.connection import PostgresCore, call_token, retry_if_cut_off

T = TypeVar("T")


class CitusOutcomesPart(PostgresCore):
    """Where each operation's answer is recorded and read back."""

    coordinator_operations: ClassVar[frozenset[str]] = frozenset({"schedule_define", "migrate"})

    def _outcome_statements(self, operation: str) -> tuple[str, str]:
        if operation in self.coordinator_operations:
            return self._q["coordinator_outcome_record"], self._q["coordinator_outcome_get"]
        return self._q["call_outcome_record"], self._q["call_outcome_get"]

    def _run_recorded(self, operation: str, body: Callable[[psycopg.Connection], T], *,
                      encode: Callable[[T], Any] = lambda r: r, decode: Callable[[Any], T] = lambda v: v) -> T:
        """As on PostgreSQL (the retry reads the token back first), with the answer in the table that commits
        with the operation's writes."""
        token = call_token()
        _, get = self._outcome_statements(operation)
        attempts = 0

        def attempt(conn: psycopg.Connection) -> T:
            nonlocal attempts
            attempts += 1
            if attempts > 1:
                row = conn.execute(get, {"token": token}).fetchone()
                if row is not None:
                    return decode(json.loads(row[0]))
            with conn.transaction():
                result = body(conn)
                self._record_outcome(conn, token, operation, encode(result))
            return result

        return self._run(lambda conn: retry_if_cut_off(conn, attempt))

    def _record_outcome(self, conn: psycopg.Connection, token: str, operation: str, value: Any) -> None:
        record, _ = self._outcome_statements(operation)
        conn.execute(record, {"token": token, "operation": operation, "result": json.dumps(value),
                              "keep": max(self.outcome_keep_seconds, 2 * self.retry_seconds)})

    def _applied_by(self, conn: psycopg.Connection, token: str) -> list[int] | None:
        """The versions a migrate call's committed attempt applied, from coordinator_outcomes (None: no attempt
        committed, or the schema predates that table)."""
        exists = conn.execute("SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_tables "
                              "WHERE schemaname = %s AND tablename = 'coordinator_outcomes')",
                              (self.schema,)).fetchone()[0]
        if not exists:
            return None
        row = conn.execute(self._q["coordinator_outcome_get"], {"token": token}).fetchone()
        return None if row is None else [int(v) for v in json.loads(row[0])]
