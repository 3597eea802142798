"""Flow-controlled queues: declared by the application, enforced by the database across all workers.

``q = app.queue("emails", concurrency=10, rate_limit=(100, 60))`` declares a queue (stored in the
``queues`` table when the app opens, so every worker and ``kit queues`` see the same limits);
``q.enqueue(fn, ...)`` submits work to it. Claims of a limited queue run one worker at a time per queue
(the others skip it that round rather than wait), count what is running and what started inside the rate
window in a snapshot taken after that lock, and never start more than the limits allow.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Callable
from typing import Any

from kit import serialization as ser
from kit import telemetry
from kit.engine import StepOptions, current_context, run_step
from kit.errors import ConfigError, UsageError, WorkflowConflictError, WorkflowDuplicateError
from kit.handle import WorkflowHandle
from kit.integrations import is_sqlalchemy
from kit.lifecycle import as_datetime, check_timeout, deadline_for
from kit.services import Services
from kit.storage import NewWorkflow, QueueSpec
from kit.validation import check_size, validate_key, validate_queue_name, validate_workflow_id

log = logging.getLogger("kit")

DEFAULT_QUEUE = "default"


def _positive_int(what: str, value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{what} must be a positive integer or None, got {value!r}")
    return value


def make_spec(name: str, *, concurrency: int | None, worker_concurrency: int | None,
              partition_concurrency: int | None, rate_limit: tuple[int, float] | None, priority: bool,
              partitioned: bool) -> QueueSpec:
    """Validate a queue declaration; every mistake is a ConfigError naming the parameter."""
    validate_queue_name(name)
    if name == DEFAULT_QUEUE:
        raise ConfigError("the queue name 'default' is reserved for app.enqueue without a queue")
    rate_count = rate_period = None
    if rate_limit is not None:
        if not isinstance(rate_limit, (tuple, list)) or len(rate_limit) != 2:
            raise ConfigError(f"rate_limit must be (count, per_seconds), got {rate_limit!r}")
        rate_count = _positive_int("rate_limit count", rate_limit[0])
        period = rate_limit[1]
        if isinstance(period, bool) or not isinstance(period, (int, float)) or period <= 0:
            raise ConfigError(f"rate_limit period must be a positive number of seconds, got {period!r}")
        rate_period = float(period)
    if partition_concurrency is not None and not partitioned:
        raise ConfigError("partition_concurrency needs partitioned=True")
    return QueueSpec(
        name=name,
        concurrency=_positive_int("concurrency", concurrency),
        worker_concurrency=_positive_int("worker_concurrency", worker_concurrency),
        partition_concurrency=_positive_int("partition_concurrency", partition_concurrency),
        rate_count=rate_count, rate_period=rate_period, priority=bool(priority), partitioned=bool(partitioned),
    )


class Queue:
    """A declared queue; ``enqueue`` submits workflows to it."""

    def __init__(self, services: Services, spec: QueueSpec) -> None:
        self._services = services
        self.spec = spec

    @property
    def name(self) -> str:
        return self.spec.name

    def __repr__(self) -> str:
        return f"Queue({self.spec!r})"

    def enqueue(self, fn: Callable[..., Any] | str, *args: Any, workflow_id: str | None = None,
                dedup_id: str | None = None, priority: int | None = None, delay: float | None = None,
                partition_key: str | None = None, if_duplicate: str = "error", workflow_timeout: float | None = None,
                connection: Any = None, **kwargs: Any) -> WorkflowHandle:
        """Submit a workflow to this queue and return its handle.

        ``dedup_id``: while a workflow with that id is PENDING or RUNNING in this queue, a second enqueue
        raises :class:`~kit.errors.WorkflowDuplicateError` (``if_duplicate="existing"``: returns the live
        workflow's handle instead). ``priority``: lower runs first (queues declared with priority=True).
        ``delay``: seconds before it may start. ``partition_key``: the tenant (partitioned queues only).
        ``workflow_timeout``: seconds from now after which the run is cancelled (queue wait included).
        ``connection``: insert it inside the caller's open transaction (a driver connection, or a
        SQLAlchemy ``Connection`` or ``Session``): it exists if and only if that transaction commits.
        """
        spec = self.spec
        if priority not in (None, 0) and not spec.priority:
            raise UsageError(f"queue {spec.name!r} was declared without priority=True; it takes no priority")
        if spec.partitioned and partition_key is None:
            raise UsageError(f"queue {spec.name!r} is partitioned: give partition_key= (a non-empty string)")
        if not spec.partitioned and partition_key is not None:
            raise UsageError(f"queue {spec.name!r} is not partitioned: partition_key= is not accepted")
        if connection is not None:
            ensure_declared(self._services)  # the limits are stored (on kit's connection) before work arrives
            return submit_in(self._services, connection, self._services.definitions.resolve(fn).name, args, kwargs,
                             queue=spec.name, workflow_id=workflow_id, dedup_id=dedup_id, priority=priority or 0,
                             delay=delay, partition_key=partition_key, if_duplicate=if_duplicate,
                             workflow_timeout=workflow_timeout)
        return submit(self._services, fn, args, kwargs, queue=spec.name, workflow_id=workflow_id, dedup_id=dedup_id,
                      priority=priority or 0, delay=delay, partition_key=partition_key, if_duplicate=if_duplicate,
                      workflow_timeout=workflow_timeout)


def check_submit_options(*, priority: int, delay: float | None, dedup_id: str | None, partition_key: str | None,
                         if_duplicate: str) -> None:
    """Validate enqueue options (shared by every way of submitting); UsageError names the option."""
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise UsageError(f"priority must be an integer, got {priority!r}")
    if delay is not None and (isinstance(delay, bool) or not isinstance(delay, (int, float))
                              or not math.isfinite(delay) or delay < 0):
        raise UsageError(f"delay must be a finite number of seconds >= 0, got {delay!r}")
    if dedup_id is not None:
        validate_key("dedup_id", dedup_id)
    if partition_key is not None:
        validate_key("partition_key", partition_key)
    if if_duplicate not in ("error", "existing"):
        raise UsageError(f"if_duplicate must be 'error' or 'existing', got {if_duplicate!r}")


def ensure_declared(services: Services) -> None:
    """Store the application's queue declarations (once per process, and after new declarations): every
    worker, and ``kit queues``, enforce the stored limits."""
    definitions = services.definitions
    if definitions.queues_stored:
        return
    backend = services.backend
    for spec in list(definitions.queues.values()):
        stored = backend.queue_get(spec.name)
        if stored is not None and stored != spec:
            log.warning("queue %r: replacing the stored declaration %s with this application's %s; every "
                        "worker enforces the stored limits from now on", spec.name, stored, spec)
        if stored != spec:
            backend.queue_define(spec)
    definitions.queues_stored = True


def submit(services: Services, fn: Callable[..., Any] | str, args: tuple, kwargs: dict, *, queue: str | None,
           workflow_id: str | None, dedup_id: str | None = None, priority: int = 0, delay: float | None = None,
           partition_key: str | None = None, if_duplicate: str = "error",
           workflow_timeout: float | None = None) -> WorkflowHandle:
    """Insert a PENDING workflow (one statement, which also wakes idle workers). Validates everything
    and serializes the inputs before writing anything."""
    wf = services.definitions.resolve(fn)
    timeout = check_timeout(workflow_timeout) if workflow_timeout is not None else wf.timeout
    check_submit_options(priority=priority, delay=delay, dedup_id=dedup_id, partition_key=partition_key,
                         if_duplicate=if_duplicate)
    parent = current_context()
    if parent is not None and parent.step is None:
        # In workflow code: a checkpointed step with an id derived from the parent, so a replay returns
        # the same workflow instead of submitting another one.
        child_id = workflow_id or f"{parent.workflow_id}/{parent.peek_position()}"
        validate_workflow_id(child_id)
        recorded = run_step(
            services, f"enqueue:{wf.name}",
            lambda: submit(services, wf.name, args, kwargs, queue=queue, workflow_id=child_id, dedup_id=dedup_id,
                           priority=priority, delay=delay, partition_key=partition_key,
                           if_duplicate=if_duplicate, workflow_timeout=timeout).workflow_id,
            StepOptions(), (), {},
        )
        return WorkflowHandle(services, recorded)
    wid = validate_workflow_id(workflow_id) if workflow_id is not None else str(uuid.uuid4())
    what = f"inputs of workflow '{wf.name}'"
    inputs = check_size(ser.encode_args(args, kwargs, what=what, trace=telemetry.carrier()), services.config,
                        "max_input_bytes", what)
    if queue is not None:
        ensure_declared(services)
    try:
        created = services.backend.workflow_create(NewWorkflow(
            workflow_id=wid, name=wf.name, inputs=inputs, queue=queue, app_version=services.config.app_version,
            priority=priority, dedup_id=dedup_id, delay_seconds=float(delay or 0.0), partition_key=partition_key,
            parent_id=parent.workflow_id if parent is not None else None,
            parent_epoch=parent.epoch if parent is not None else None,
            deadline=as_datetime(deadline_for(services.clock, timeout, parent)),
        ))
    except WorkflowDuplicateError as exc:
        if if_duplicate == "existing":
            return WorkflowHandle(services, exc.existing_id)
        raise
    if not created.created and created.name != wf.name:
        raise WorkflowConflictError(f"workflow id {wid!r} already belongs to workflow '{created.name}'")
    return WorkflowHandle(services, wid)


def submit_in(services: Services, connection: Any, name: str, args: tuple, kwargs: dict, *, queue: str | None,
              workflow_id: str | None, dedup_id: str | None, priority: int, delay: float | None,
              partition_key: str | None, if_duplicate: str, workflow_timeout: float | None = None) -> WorkflowHandle:
    """Insert a PENDING workflow named ``name`` inside the caller's open transaction on ``connection``
    (``kit.Client.enqueue(connection=...)``): it exists if and only if that transaction commits. A
    SQLAlchemy ``Connection`` or ``Session`` is unwrapped to its driver connection (its transaction begun)."""
    parent = current_context()
    if parent is not None and parent.step is None:
        raise UsageError("connection= cannot be used in workflow code, where an enqueue is a checkpointed step "
                         "of its own: leave it out (or enqueue from inside a transactional step with its connection)")
    check_submit_options(priority=priority, delay=delay, dedup_id=dedup_id, partition_key=partition_key,
                         if_duplicate=if_duplicate)
    wid = validate_workflow_id(workflow_id) if workflow_id is not None else str(uuid.uuid4())
    what = f"inputs of workflow '{name}'"
    inputs = check_size(ser.encode_args(args, kwargs, what=what, trace=telemetry.carrier()), services.config,
                        "max_input_bytes", what)
    if is_sqlalchemy(connection):
        from kit.integrations.sqlalchemy import driver_connection

        connection = driver_connection(connection)
    try:
        created = services.backend.workflow_enqueue_in(connection, NewWorkflow(
            workflow_id=wid, name=name, inputs=inputs, queue=queue, priority=priority, dedup_id=dedup_id,
            delay_seconds=float(delay or 0.0), partition_key=partition_key, app_version=services.config.app_version,
            deadline=as_datetime(deadline_for(services.clock, check_timeout(workflow_timeout), None))))
    except WorkflowDuplicateError as exc:
        if if_duplicate == "existing":
            return WorkflowHandle(services, exc.existing_id)
        raise
    if not created.created and created.name != name:
        raise WorkflowConflictError(f"workflow id {wid!r} already belongs to workflow '{created.name}'")
    return WorkflowHandle(services, wid)
