"""Checkpoints on Citus: the fenced insert is one router statement (``step_record`` in overrides.sql); a
group commit sends one such statement per checkpoint, pipelined (one client round trip, each statement its
own single-shard transaction), never a multi-shard statement locking rows of many workflows."""

from __future__ import annotations

from collections.abc import Sequence

import psycopg
from kit.backends.postgres import rows
from kit.backends.postgres.steps import StepsPart

from kit.errors import LeaseLostError, TransientStorageError
from kit.storage import StepRecord, StepResult

from .lanes import run_each


class CitusStepsPart(StepsPart):
    """step_record's group commit."""

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
