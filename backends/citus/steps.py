"""Checkpoints on Citus: the fenced insert is one router statement (``step_record`` in overrides.sql); a
group commit sends one such statement per checkpoint, pipelined (one client round trip, each statement its
own single-shard transaction), never a multi-shard statement locking rows of many workflows.

A transactional step whose transaction fails because a worker node failed (faults.py: the coordinator relays
it as 08006 from a statement, or XX000 from the COMMIT) is a storage fault, never the step's own failure:
before the checkpoint was written nothing committed and the step runs again; after it, the COMMIT may have
committed on the node, so the checkpoint is read back (our epoch's row: committed, user writes included)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from kit.backends.postgres import rows
from kit.backends.postgres.steps import StepsPart

from kit.errors import LeaseLostError, TransientStorageError
from kit.storage import StepRecord, StepResult

from .faults import node_fault
from .lanes import run_each


class CitusStepsPart(StepsPart):
    """step_record without group commit; transactional steps through a node failure."""

    def step_record(self, step: StepResult) -> StepRecord:
        """On the caller's own pooled connection, not through the group committer: a batch there is one
        coordinator session running its router statements one after another (the coordinator's per-statement
        planning and routing, ~10x a PostgreSQL statement's cost, serialised), so concurrent workflows
        checkpointed no faster than one. Separate sessions run in parallel on the coordinator."""
        got = self._flush_steps([step])[0]
        if isinstance(got, BaseException):
            raise got
        return got

    @contextmanager
    def step_transaction(self, step: StepResult) -> Iterator[Any]:
        tx = None
        try:
            with super().step_transaction(step) as tx:
                yield tx
        except psycopg.Error as exc:
            if tx is None or not node_fault(exc):
                raise
            if tx.pending is None:  # failed before the checkpoint: the whole transaction rolled back
                raise TransientStorageError(f"transactional step rolled back by a node failure, it runs "
                                            f"again: {exc}") from exc
            # The checkpoint was written and the COMMIT failed: it may have committed on the node.
            rec = self._run(lambda c: (self._sync_barrier(c), c.execute(self._q["step_get"], {
                "workflow_id": step.workflow_id, "step_id": step.step_id}).fetchone())[1])
            if rec is not None and rec[5] == step.epoch:
                tx.record = rows.step(rec)
                return
            raise TransientStorageError(f"transactional step's commit failed on a node, it runs again: "
                                        f"{exc}") from exc

    def _flush_steps(self, batch: Sequence[StepResult]) -> list[StepRecord | BaseException]:
        def flush(conn: psycopg.Connection) -> list[StepRecord | BaseException]:
            found = run_each(conn, [(self._q["step_record"], rows.step_params(s)) for s in batch])
            out: list[StepRecord | BaseException] = []
            for step, got in zip(batch, found, strict=True):
                if got:
                    out.append(rows.recorded(step, got[0][0]))
                    continue
                try:
                    out.append(self._resolve_step(conn, step))
                except (LeaseLostError, TransientStorageError) as exc:
                    out.append(exc)
            return out

        return self._run(flush)
