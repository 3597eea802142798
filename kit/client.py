"""``kit.Client``: submit and observe workflows from any process, without the application's code.

A client enqueues a workflow *by name* (a worker running the app that registers it will claim it), sends
messages, reads events and waits for results. Passing ``connection=`` to :meth:`Client.enqueue` inserts
the workflow inside the caller's own open transaction: it exists if and only if that transaction
commits (workers are woken at commit).
"""

from __future__ import annotations

from typing import Any

from kit.app import Kit, WorkflowDef, WorkflowHandle
from kit.errors import UnknownQueueError, UsageError, WorkflowConflictError, WorkflowDuplicateError
from kit.validation import check_size, validate_queue_name, validate_workflow_id, validate_workflow_name


class Client(Kit):
    """A connection to a kit database for submitting and observing work; runs no workflows itself."""

    def __init__(self, database_url: str | None = None, *, schema: str | None = None, data_dir: str | None = None,
                 backend: str | None = None, config_file: str | None = None, migrate: bool | None = None) -> None:
        super().__init__(database_url, schema=schema, data_dir=data_dir, backend=backend, config_file=config_file,
                         migrate=migrate)

    def _resolve(self, fn: Any) -> WorkflowDef:
        if not isinstance(fn, str):
            raise UsageError(f"a client enqueues workflows by name (a non-empty string), got {fn!r}")
        validate_workflow_name(fn)

        def not_here(*args: Any, **kwargs: Any) -> Any:
            raise UsageError("a kit.Client does not run workflows; start a worker with the application")

        return WorkflowDef(fn, not_here)

    def launch(self) -> Kit:
        raise UsageError("a kit.Client does not run workflows; run `kit worker MODULE:APP` for that")

    def start(self, fn: Any, *args: Any, workflow_id: str | None = None, **kwargs: Any) -> WorkflowHandle:
        raise UsageError("a kit.Client cannot start a workflow in-process; use client.enqueue(name, ...)")

    def enqueue(self, workflow_name: str, *args: Any, queue: str | None = None,  # type: ignore[override]
                workflow_id: str | None = None, dedup_id: str | None = None, priority: int | None = None,
                delay: float | None = None, partition_key: str | None = None, if_duplicate: str = "error",
                connection: Any = None, workflow_timeout: float | None = None, **kwargs: Any) -> WorkflowHandle:
        """Submit ``workflow_name`` with these arguments to ``queue`` (None: the default queue).

        ``connection``: a driver connection with an open transaction (for PostgreSQL a psycopg
        ``Connection``): the insert joins that transaction instead of committing on its own.
        ``workflow_timeout``: seconds from now after which the run is cancelled (queue wait included).
        """
        from kit.queues import Queue, submit

        if queue is not None:
            validate_queue_name(queue)
            spec = self.backend.queue_get(queue)
            if spec is None:
                raise UnknownQueueError(f"unknown queue {queue!r}: no application has declared it with app.queue()")
            target = Queue(self, spec)
            if priority not in (None, 0) and not spec.priority:
                raise UsageError(f"queue {queue!r} was declared without priority=True; it takes no priority")
            if spec.partitioned and not partition_key:
                raise UsageError(f"queue {queue!r} is partitioned: give partition_key=")
            if not spec.partitioned and partition_key is not None:
                raise UsageError(f"queue {queue!r} is not partitioned: partition_key= is not accepted")
        else:
            target = None
            if partition_key is not None:
                raise UsageError("the default queue is not partitioned: partition_key= is not accepted")
        if connection is None:
            return submit(self, workflow_name, args, kwargs, queue=target.name if target else None,
                          workflow_id=workflow_id, dedup_id=dedup_id, priority=priority or 0, delay=delay,
                          partition_key=partition_key, if_duplicate=if_duplicate, workflow_timeout=workflow_timeout)
        return self._enqueue_in(connection, workflow_name, args, kwargs, queue=queue, workflow_id=workflow_id,
                                dedup_id=dedup_id, priority=priority or 0, delay=delay, partition_key=partition_key,
                                if_duplicate=if_duplicate, workflow_timeout=workflow_timeout)

    def _enqueue_in(self, connection: Any, name: str, args: tuple, kwargs: dict, *, queue: str | None,
                    workflow_id: str | None, dedup_id: str | None, priority: int, delay: float | None,
                    partition_key: str | None, if_duplicate: str,
                    workflow_timeout: float | None = None) -> WorkflowHandle:
        import uuid

        from kit import serialization as ser
        from kit.lifecycle import as_datetime, check_timeout, deadline_for
        from kit.queues import check_submit_options
        from kit.storage import NewWorkflow

        check_submit_options(priority=priority, delay=delay, dedup_id=dedup_id, partition_key=partition_key,
                             if_duplicate=if_duplicate)
        wid = validate_workflow_id(workflow_id) if workflow_id is not None else str(uuid.uuid4())
        inputs = check_size(ser.encode_args(args, kwargs, what=f"inputs of workflow '{name}'"), self.config,
                            "max_input_bytes", f"inputs of workflow '{name}'")
        try:
            created = self.backend.workflow_enqueue_in(connection, NewWorkflow(
                workflow_id=wid, name=name, inputs=inputs, queue=queue, priority=priority, dedup_id=dedup_id,
                delay_seconds=float(delay or 0.0), partition_key=partition_key, app_version=self.config.app_version,
                deadline=as_datetime(deadline_for(self, check_timeout(workflow_timeout), None))))
        except WorkflowDuplicateError as exc:
            if if_duplicate == "existing":
                return WorkflowHandle(self, exc.existing_id)
            raise
        if not created.created and created.name != name:
            raise WorkflowConflictError(f"workflow id {wid!r} already belongs to workflow '{created.name}'")
        return WorkflowHandle(self, wid)
