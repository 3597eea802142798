"""``kit.Client``: submit and observe workflows from any process, without the application's code.

A client enqueues a workflow *by name* (a worker running the app that registers it will claim it), sends
messages, reads events and waits for results. Passing ``connection=`` to :meth:`Client.enqueue` inserts
the workflow inside the caller's own open transaction: it exists if and only if that transaction
commits (workers are woken at commit).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kit.app import Kit
from kit.definitions import Definitions, WorkflowDef
from kit.errors import UnknownQueueError, UsageError
from kit.handle import WorkflowHandle
from kit.queues import Queue, submit, submit_in
from kit.validation import validate_queue_name, validate_workflow_name


def _not_here(*args: Any, **kwargs: Any) -> Any:
    raise UsageError("a kit.Client does not run workflows; start a worker with the application")


class ByName(Definitions):
    """A client's definitions: any workflow name resolves (a worker of the application runs it)."""

    def resolve(self, fn: Callable[..., Any] | str) -> WorkflowDef:
        if not isinstance(fn, str):
            raise UsageError(f"a client enqueues workflows by name (a non-empty string), got {fn!r}")
        validate_workflow_name(fn)
        return WorkflowDef(fn, _not_here)


class Client(Kit):
    """A connection to a kit database for submitting and observing work; runs no workflows itself."""

    _definitions_class = ByName

    def __init__(self, database_url: str | None = None, *, schema: str | None = None, data_dir: str | None = None,
                 backend: str | None = None, config_file: str | None = None, migrate: bool | None = None) -> None:
        super().__init__(database_url, schema=schema, data_dir=data_dir, backend=backend, config_file=config_file,
                         migrate=migrate)

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
        if queue is not None:
            validate_queue_name(queue)
            spec = self.backend.queue_get(queue)
            if spec is None:
                raise UnknownQueueError(f"unknown queue {queue!r}: no application has declared it with app.queue()")
            target = Queue(self.services, spec)
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
            return submit(self.services, workflow_name, args, kwargs, queue=target.name if target else None,
                          workflow_id=workflow_id, dedup_id=dedup_id, priority=priority or 0, delay=delay,
                          partition_key=partition_key, if_duplicate=if_duplicate, workflow_timeout=workflow_timeout)
        return submit_in(self.services, connection, workflow_name, args, kwargs, queue=queue,
                         workflow_id=workflow_id, dedup_id=dedup_id, priority=priority or 0, delay=delay,
                         partition_key=partition_key, if_duplicate=if_duplicate, workflow_timeout=workflow_timeout)
