"""Steps: fenced checkpoints (one round trip, group commit), replay reads, transactional steps, and the
fenced transaction that messaging and streams record their steps in."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import psycopg
import psycopg.errors
from psycopg_pool import PoolTimeout

from kit.errors import DatabaseUnavailableError, LeaseLostError, StorageError, TransientStorageError
from kit.groupcommit import GroupCommitter
from kit.storage import StepRecord, StepResult, StepTransaction

from . import rows
from .connection import PostgresCore, scrub


class _PgStepTx(StepTransaction):
    def __init__(self, backend: StepsPart, conn: psycopg.Connection, step: StepResult) -> None:
        self._backend = backend
        self._conn = conn
        self._step = step
        self.record: StepRecord | None = None
        self.pending: StepResult | None = None

    @property
    def connection(self) -> psycopg.Connection:
        return self._conn

    def checkpoint(self, output: str | None) -> None:
        """Insert the checkpoint inside this transaction; the commit happens on leaving the block."""
        step = replace(self._step, output=output)
        cur = self._conn.execute(self._backend._q["step_record"], rows.step_params(step))
        if cur.fetchone() is None:
            raise LeaseLostError(f"workflow {step.workflow_id}: step {step.step_id} fenced (lease lost)")
        self.pending = step


class StepsPart(PostgresCore):
    """step_record / step_list / step_transaction, and ``_fenced_transaction``."""

    def __init__(self, url: str, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        # Checkpoints of concurrently running workflows share round trips (group commit).
        self._steps_gc: GroupCommitter[StepResult, StepRecord] = GroupCommitter(self._flush_steps)

    def step_record(self, step: StepResult) -> StepRecord:
        return self._steps_gc.submit(step)

    def _flush_steps(self, batch: Sequence[StepResult]) -> list[StepRecord | BaseException]:
        if len(batch) == 1:
            step = batch[0]
            params = rows.step_params(step)

            def one(conn: psycopg.Connection) -> list[StepRecord | BaseException]:
                row = conn.execute(self._q["step_record"], params).fetchone()
                if row is not None:
                    return [rows.recorded(step, row[0])]
                return [self._resolve_step(conn, step)]

            return self._run(one)
        if not self._caps.multi_row_locking_claims:
            return self._run(lambda conn: self._record_each(conn, batch))
        params = {
            "workflow_ids": [s.workflow_id for s in batch], "step_ids": [s.step_id for s in batch],
            "names": [s.name for s in batch], "outputs": [s.output for s in batch],
            "errors": [s.error for s in batch], "epochs": [s.epoch for s in batch],
            "attempts": [s.attempts for s in batch], "started": [s.started_at for s in batch],
        }

        def many(conn: psycopg.Connection) -> list[StepRecord | BaseException]:
            done = {(r[0], r[1]): r[2] for r in conn.execute(self._q["step_record_many"], params)}
            out: list[StepRecord | BaseException] = []
            for step in batch:
                finished = done.get((step.workflow_id, step.step_id))
                if finished is not None:
                    out.append(rows.recorded(step, finished))
                    continue
                try:
                    out.append(self._resolve_step(conn, step))
                except (LeaseLostError, TransientStorageError) as exc:
                    out.append(exc)
            return out

        return self._run(many)

    def _record_each(self, conn: psycopg.Connection, batch: Sequence[StepResult]) -> list[StepRecord | BaseException]:
        """A batch on a server whose row locks must stay single-row: one fenced insert per checkpoint."""
        out: list[StepRecord | BaseException] = []
        for step in batch:
            row = conn.execute(self._q["step_record"], rows.step_params(step)).fetchone()
            if row is not None:
                out.append(rows.recorded(step, row[0]))
                continue
            try:
                out.append(self._resolve_step(conn, step))
            except (LeaseLostError, TransientStorageError) as exc:
                out.append(exc)
        return out

    def _resolve_step(self, conn: psycopg.Connection, step: StepResult) -> StepRecord:
        """The checkpoint insert changed nothing: find out why instead of guessing."""
        existing = conn.execute(self._q["step_get"],
                                {"workflow_id": step.workflow_id, "step_id": step.step_id}).fetchone()
        owner = conn.execute(self._q["workflow_epoch"], {"workflow_id": step.workflow_id}).fetchone()
        if existing is not None and existing[5] == step.epoch:
            return rows.step(existing)  # our own commit, acknowledged late (lost connection during COMMIT)
        if owner is None or owner[0] != step.epoch or owner[1] != "RUNNING":
            raise LeaseLostError(
                f"workflow {step.workflow_id}: lease lost (epoch {step.epoch} superseded) before step "
                f"{step.step_id} '{step.name}' was recorded"
            )
        if existing is not None:
            return rows.step(existing)  # recorded by an earlier epoch: replay adopts it
        raise TransientStorageError("checkpoint neither recorded nor fenced; retrying")

    def step_list(self, workflow_id: str) -> list[StepRecord]:
        found = self._run(lambda c: c.execute(self._q["step_list"], {"workflow_id": workflow_id}).fetchall())
        return [rows.step(r) for r in found]

    @contextmanager
    def step_transaction(self, step: StepResult) -> Iterator[_PgStepTx]:
        """Run a transactional step's body and its checkpoint in one transaction.

        The engine calls ``tx.checkpoint(output)`` as the block's last action; leaving the block commits.
        If the COMMIT's outcome is unknown (connection lost), the checkpoint row is read back: present
        with our epoch means committed (user writes included), absent means rolled back. A serialization
        failure (40001) or deadlock (40P01) of the body, the checkpoint or the commit is a
        TransientStorageError: the engine runs the step again (nothing of it committed).
        """
        if self._pool is None:
            raise StorageError("backend is not open")
        try:
            # Wait as long as any other call would (the retry budget): a failover must not abandon the step.
            conn_cm, conn = self._checkout_checked(max(1.0, self.retry_seconds))
        except (psycopg.Error, PoolTimeout) as exc:
            raise DatabaseUnavailableError(scrub(f"database unavailable: {exc}", self.url)) from exc
        tx = _PgStepTx(self, conn, step)
        try:
            committed = False
            try:
                with conn.transaction():
                    yield tx
                    if tx.pending is None:
                        raise StorageError("transactional step finished without a checkpoint")
                if self._commit_unacknowledged(conn):  # local-only commit: resolve it as ambiguous
                    raise psycopg.OperationalError("commit not acknowledged by synchronous replication")
                committed = True
            except psycopg.OperationalError as exc:
                if not (conn.broken or conn.closed):
                    if getattr(exc, "sqlstate", None) in ("40001", "40P01"):
                        # The transaction lost a serialization race or a deadlock (in the body's SQL, the
                        # checkpoint or the COMMIT): nothing of it committed, so the step runs again.
                        raise TransientStorageError(f"transactional step rolled back ({exc.sqlstate}), "
                                                    f"it runs again: {exc}") from exc
                    raise  # an error of the user's SQL (e.g. statement timeout): a normal step failure
                if tx.pending is None:
                    raise TransientStorageError(scrub(f"connection lost during step: {exc}", self.url)) from exc
                # Ambiguous commit: learn the outcome (after a replication barrier: acknowledged state only).
                rec = self._run(lambda c: (self._sync_barrier(c), c.execute(self._q["step_get"], {
                    "workflow_id": step.workflow_id, "step_id": step.step_id}).fetchone())[1])
                if rec is not None and rec[5] == step.epoch:
                    tx.record = rows.step(rec)
                    return
                raise TransientStorageError("transactional step commit was lost; it will run again") from exc
            if committed and tx.pending is not None:
                p = tx.pending
                tx.record = StepRecord(p.workflow_id, p.step_id, p.name, p.output, p.error, p.epoch,
                                       p.attempts, p.started_at, None)
        finally:
            conn_cm.__exit__(None, None, None)

    def _fenced_transaction(self, step: StepResult,
                            body: Callable[[psycopg.Connection], StepRecord | None]) -> StepRecord | None:
        """Run ``body`` in one transaction holding the workflow row under our epoch (FOR KEY SHARE). If
        the step is already recorded (an earlier attempt whose COMMIT acknowledgement was lost), return
        that record instead; a COMMIT lost this time is resolved by the retry reading it back."""
        key = {"workflow_id": step.workflow_id, "step_id": step.step_id}

        def run(conn: psycopg.Connection) -> StepRecord | None:
            try:
                with conn.transaction():
                    if conn.execute(self._q["workflow_fence"], {"workflow_id": step.workflow_id,
                                                                "epoch": step.epoch}).fetchone() is None:
                        raise LeaseLostError(
                            f"workflow {step.workflow_id}: lease lost (epoch {step.epoch} superseded)")
                    existing = conn.execute(self._q["step_get"], key).fetchone()
                    if existing is not None:
                        return rows.step(existing)
                    return body(conn)
            except psycopg.errors.UniqueViolation as exc:
                # The same step committed concurrently (the steps key caught it; ours rolled back). Read back
                # rather than trust the constraint's name (a sharded server may not report it).
                row = conn.execute(self._q["step_get"], key).fetchone()
                if row is None:
                    raise TransientStorageError(f"concurrent write: {exc.diag.constraint_name}") from exc
                return rows.step(row)

        return self._run(run)
