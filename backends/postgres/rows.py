"""Row mapping: result rows of the named queries to kit.storage records, and records to parameters."""

from __future__ import annotations

import re
from typing import Any

from kit.storage import (
    ScheduleSpec,
    ScheduleState,
    Status,
    StepRecord,
    StepResult,
    WorkflowRecord,
)

# The columns of workflow_list's SELECT, in the order wf() reads them (the named queries use the same).
WORKFLOW_COLUMNS = ("workflow_id, name, status, inputs, output, error, queue, app_version, owner, epoch, "
                    "lease_expires_at, created_at, started_at, finished_at, recoveries, parent_id")


def step_params(step: StepResult) -> dict[str, Any]:
    """Parameters of the checkpoint statements (step_record, step_insert)."""
    return {
        "workflow_id": step.workflow_id,
        "step_id": step.step_id,
        "name": step.name,
        "output": step.output,
        "error": step.error,
        "epoch": step.epoch,
        "attempts": step.attempts,
        "started_at": step.started_at,
    }


def recorded(step: StepResult, finished_at: Any) -> StepRecord:
    """The record of a checkpoint we just inserted (``finished_at`` from its RETURNING)."""
    return StepRecord(step.workflow_id, step.step_id, step.name, step.output, step.error, step.epoch,
                      step.attempts, step.started_at, finished_at)


def wf(row: tuple) -> WorkflowRecord:
    return WorkflowRecord(
        workflow_id=row[0], name=row[1], status=Status(row[2]), inputs=row[3], output=row[4], error=row[5],
        queue=row[6], app_version=row[7], owner=row[8], epoch=row[9], lease_expires_at=row[10],
        created_at=row[11], started_at=row[12], finished_at=row[13], recoveries=row[14], parent_id=row[15],
    )


def step(row: tuple) -> StepRecord:
    return StepRecord(
        workflow_id=row[0], step_id=row[1], name=row[2], output=row[3], error=row[4], epoch=row[5],
        attempts=row[6], started_at=row[7], finished_at=row[8],
    )


def schedule(row: tuple) -> ScheduleState:
    spec = ScheduleSpec(name=row[0], workflow_name=row[1], cron=row[2], timezone=row[3], queue=row[4],
                        catch_up=row[5], max_catch_up=row[6])
    return ScheduleState(spec=spec, cursor_at=row[7], last_tick=row[8], last_workflow_id=row[9], updated_at=row[10])


def error_type(error: str | None) -> str | None:
    """The exception type name inside an error record (JSON text), for the indexed ``error_type`` column."""
    if not error:
        return None
    m = re.search(r'"type":\s*"([^"]*)"', error)
    return m.group(1) if m else None
