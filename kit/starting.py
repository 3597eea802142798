"""Starting a workflow in this process (``app.start``), and retrieving one by id.

The path of a workflow id, top to bottom: :func:`start` validates and picks the id; :func:`create_and_run`
holds the id's lease in the runtime (before the row exists, so the heartbeat never mistakes it for a stray
claim), creates the row idempotently through the backend, and hands the function to the runtime's pool;
the runtime runs it with :func:`kit.engine.execute`, whose steps checkpoint with ``backend.step_record``.
Inside a workflow, :func:`start` starts a child as a checkpointed step instead.
"""

from __future__ import annotations

import time
import uuid

from kit import serialization as ser
from kit import telemetry
from kit.definitions import WorkflowDef
from kit.engine import StepOptions, WorkflowContext, current_context, run_step
from kit.errors import WorkflowConflictError, WorkflowNotFoundError
from kit.handle import WorkflowHandle
from kit.lifecycle import as_datetime, check_timeout, deadline_for
from kit.services import Services
from kit.storage import NewWorkflow
from kit.validation import check_size, validate_workflow_id


def start(services: Services, wf: WorkflowDef, args: tuple, kwargs: dict, *, workflow_id: str | None,
          workflow_timeout: float | None) -> WorkflowHandle:
    """Start ``wf`` here (or return the existing workflow with that id): a child when called from
    workflow code, else a top-level workflow whose deadline is ``workflow_timeout`` (or its declared one)."""
    timeout = check_timeout(workflow_timeout) if workflow_timeout is not None else wf.timeout
    parent = current_context()
    if parent is not None and parent.step is None:
        return start_child(services, parent, wf, workflow_id, args, kwargs, timeout)
    wid = validate_workflow_id(workflow_id) if workflow_id is not None else str(uuid.uuid4())
    return create_and_run(services, wf, wid, args, kwargs, parent_id=None,
                          deadline=deadline_for(services.clock, timeout, None))


def create_and_run(services: Services, wf: WorkflowDef, wid: str, args: tuple, kwargs: dict, *,
                   parent_id: str | None, deadline: float | None = None,
                   parent_epoch: int | None = None) -> WorkflowHandle:
    """Create workflow ``wid`` (idempotently) under this process's lease and run it in the local pool."""
    trace = telemetry.carrier()  # None unless an integration traces: then the run joins the caller's trace
    inputs = check_size(ser.encode_args(args, kwargs, what=f"inputs of workflow '{wf.name}'", trace=trace),
                        services.config, "max_input_bytes", f"inputs of workflow '{wf.name}'")
    runtime = services.runtime
    ctx = WorkflowContext(wid, wf.name, 1, deadline=deadline, trace=trace)
    held = runtime.hold(wid, ctx)  # before the insert, so the heartbeat never mistakes it for a stray claim
    if held is not ctx:  # this process already runs (or is starting) that id: never a second run
        if held.name != wf.name:
            raise WorkflowConflictError(
                f"workflow id {wid!r} already belongs to workflow '{held.name}', not '{wf.name}'"
            )
        return WorkflowHandle(services, wid)
    sent = time.monotonic()
    try:
        created = services.backend.workflow_create(NewWorkflow(
            workflow_id=wid, name=wf.name, inputs=inputs, app_version=services.config.app_version,
            owner=runtime.worker_id, lease_seconds=services.config.lease_seconds, parent_id=parent_id,
            deadline=as_datetime(deadline), parent_epoch=parent_epoch,
        ))
    except BaseException:
        runtime.drop(wid, ctx)
        raise
    if not created.created:
        runtime.drop(wid, ctx)
        if created.name != wf.name:
            raise WorkflowConflictError(
                f"workflow id {wid!r} already belongs to workflow '{created.name}', not '{wf.name}'"
            )
        return WorkflowHandle(services, wid)
    ctx.lease_until = runtime.lease_valid_until(sent)
    ctx.confirmed_at = time.monotonic()
    future = runtime.submit_local(ctx, wf.fn, args, kwargs, dedicated=parent_id is not None)
    return WorkflowHandle(services, wid, future)


def start_child(services: Services, parent: WorkflowContext, wf: WorkflowDef, workflow_id: str | None,
                args: tuple, kwargs: dict, timeout: float | None = None) -> WorkflowHandle:
    """Start a child as a checkpointed step: a recovered parent re-attaches to the same child. The
    child's deadline is the earlier of its own and its parent's."""
    child_id = workflow_id or f"{parent.workflow_id}/{parent.peek_position()}"
    validate_workflow_id(child_id)

    def start_child_step() -> str:
        create_and_run(services, wf, child_id, args, kwargs, parent_id=parent.workflow_id,
                       deadline=deadline_for(services.clock, timeout, parent), parent_epoch=parent.epoch)
        return child_id

    recorded = run_step(services, f"start:{wf.name}", start_child_step, StepOptions(), (), {})
    return WorkflowHandle(services, recorded)


def retrieve(services: Services, workflow_id: str) -> WorkflowHandle:
    """A handle to an existing workflow; raises WorkflowNotFoundError when there is none."""
    validate_workflow_id(workflow_id)
    if services.backend.workflow_get(workflow_id) is None:
        raise WorkflowNotFoundError(f"no workflow with id {workflow_id!r}")
    return WorkflowHandle(services, workflow_id)
