"""The application facade: configuration, decorators, starting and retrieving workflows.

``Kit`` builds the :class:`~kit.services.Services` that the engine, the worker runtime and the features
receive (configuration, workflow clock, definitions, backend, runtime) and delegates every operation to
the feature module that implements it; nothing below this module knows the ``Kit`` object.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from kit import lifecycle, messaging, queues, schedules, starting, streams
from kit import serialization as ser
from kit.clock import SYSTEM_CLOCK, Clock
from kit.config import Config, load_config, redact_url
from kit.definitions import Definitions, WorkflowDef
from kit.engine import StepOptions, current_context, deprecate_patch, patched, run_step, run_step_async
from kit.errors import ConfigError, UsageError
from kit.handle import WorkflowHandle
from kit.queues import Queue, make_spec
from kit.registry import load_backend
from kit.runtime import Runtime, StopSummary
from kit.runtime.versions import accepted_versions
from kit.schedules import Schedule
from kit.services import Services
from kit.storage import Backend

F = TypeVar("F", bound=Callable[..., Any])

__all__ = ["Kit", "WorkflowDef", "WorkflowHandle", "load_backend"]


class Kit:
    """A kit application: register workflows and steps, start them, and run as a worker.

    ``Kit()`` with no database configured uses an embedded PostgreSQL in ``.kit/``. Settings come from
    keyword arguments, then ``KIT_*`` environment variables, then ``kit.toml`` / ``[tool.kit]``.
    """

    _definitions_class: type[Definitions] = Definitions

    def __init__(
        self,
        database_url: str | None = None,
        *,
        backend: str | None = None,
        schema: str | None = None,
        data_dir: str | None = None,
        app_version: str | None = None,
        compatible_versions: str | list[str] | None = None,
        lease_seconds: float | None = None,
        heartbeat_seconds: float | None = None,
        poll_seconds: float | None = None,
        worker_concurrency: int | None = None,
        pool_size: int | None = None,
        migrate: bool | None = None,
        db_retry_seconds: float | None = None,
        connect_timeout: float | None = None,
        call_timeout: float | None = None,
        notify: bool | None = None,
        max_input_bytes: int | None = None,
        max_output_bytes: int | None = None,
        max_message_bytes: int | None = None,
        max_event_bytes: int | None = None,
        config_file: str | None = None,
        clock: Clock | None = None,
    ) -> None:
        overrides = {k: v for k, v in locals().items() if k not in ("self", "config_file", "clock")}
        config = load_config(overrides, config_file=config_file)
        self._services = Services(config, clock or SYSTEM_CLOCK, self._definitions_class(), load_backend)
        self._queues: dict[str, Queue] = {}  # app.queue declarations (their specs are in the definitions)
        self._schedules: dict[str, Schedule] = {}  # @app.scheduled (kit.schedules)

    # -- the parts handed down -----------------------------------------------------------------------
    @property
    def services(self) -> Services:
        """What the engine, the worker runtime and the features use (never this object)."""
        return self._services

    @property
    def config(self) -> Config:
        return self._services.config

    @config.setter
    def config(self, value: Config) -> None:  # kit.testing swaps it before anything is open
        self._services.config = value

    @property
    def clock(self) -> Clock:
        """Workflow time: sleeps, timeouts, deadlines, cron ticks."""
        return self._services.clock

    @clock.setter
    def clock(self, value: Clock) -> None:
        self._services.clock = value

    @property
    def backend(self) -> Backend:
        """The opened storage backend (opened, and migrated if enabled, on first use)."""
        return self._services.backend

    @property
    def runtime(self) -> Runtime:
        return self._services.runtime

    @property
    def worker_id(self) -> str:
        return self.runtime.worker_id

    # What tools and tests look at without opening anything.
    @property
    def _backend(self) -> Backend | None:
        return self._services.opened_backend

    @property
    def _runtime(self) -> Runtime | None:
        return self._services.running

    @property
    def _workflows(self) -> dict[str, WorkflowDef]:
        return self._services.definitions.workflows

    @_workflows.setter
    def _workflows(self, value: dict[str, WorkflowDef]) -> None:
        self._services.definitions.workflows = value

    @property
    def _queues_defined(self) -> bool:
        return self._services.definitions.queues_stored

    @_queues_defined.setter
    def _queues_defined(self, value: bool) -> None:
        self._services.definitions.queues_stored = value

    # -- lifecycle -------------------------------------------------------------------------------
    def launch(self) -> Kit:
        """Open the database and start claiming ready and orphaned workflows in the background."""
        self.backend  # noqa: B018 - open and migrate now, so errors surface here
        self._ensure_queues()
        services = self._services
        self.runtime.start_worker(lambda: schedules.start(services, list(self._schedules.values())))
        return self

    def run_worker(self, stop: threading.Event | None = None) -> None:
        """Run as a worker until ``stop`` is set (or forever); used by ``kit worker``."""
        self.launch()
        stop = stop or threading.Event()
        while not stop.wait(0.5):
            pass

    def close(self, grace: float = 5.0) -> StopSummary | None:
        """Stop the worker and hand its running workflows over at step boundaries (each finishes the step it
        is in, records it and is released for another worker to go on at once; a step still running after
        ``grace`` seconds is released mid-step), then close connections. Returns what the stop did (None
        when this process ran no workflows)."""
        return self._services.close(grace)

    def __enter__(self) -> Kit:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> dict[str, Any]:
        info = self.backend.describe()
        if self.config.database_url is None:
            info["embedded_data_dir"] = self.config.data_dir
        info["url"] = redact_url(info.get("url", ""))
        return info

    # -- registration ----------------------------------------------------------------------------
    def workflow(self, *, name: str | None = None, timeout: float | None = None) -> Callable[[F], F]:
        """Declare a durable workflow (``def`` or ``async def``). Calling the function runs it durably and
        returns its result. ``timeout``: seconds from submission after which a run is cancelled at its
        next step boundary (its children's deadlines are capped by it)."""
        timeout = lifecycle.check_timeout(timeout, "timeout")

        def decorate(fn: F) -> F:
            wf_name = name or fn.__qualname__
            self._services.definitions.add(WorkflowDef(wf_name, fn, timeout))  # ConfigError if the name is taken
            ser.register_types_from_hints(fn)

            if inspect.iscoroutinefunction(fn):
                @functools.wraps(fn)
                async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                    if current_context() is not None:  # a child: started (checkpointed) before any await
                        handle = self.start(wf_name, *args, **kwargs)
                    else:
                        handle = await asyncio.to_thread(functools.partial(self.start, wf_name, *args, **kwargs))
                    return await handle.result_async()

                async_wrapper.__kit_workflow__ = wf_name  # type: ignore[attr-defined]
                return async_wrapper  # type: ignore[return-value]

            @functools.wraps(fn)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                return self.start(wf_name, *args, **kwargs).result()

            wrapper.__kit_workflow__ = wf_name  # type: ignore[attr-defined]
            return wrapper  # type: ignore[return-value]

        return decorate

    def step(
        self,
        *,
        name: str | None = None,
        retries: int = 0,
        backoff: float = 2.0,
        initial_delay: float = 1.0,
        max_delay: float = 60.0,
    ) -> Callable[[F], F]:
        """Declare a step: run at most once per workflow once checkpointed; retried on exceptions."""
        opts = _step_options(retries, backoff, initial_delay, max_delay, transactional=False)
        return self._step_decorator(name, opts)

    def transaction(
        self, *, name: str | None = None, retries: int = 0, backoff: float = 2.0, initial_delay: float = 1.0,
        max_delay: float = 60.0, sqlalchemy: str | None = None,
    ) -> Callable[[F], F]:
        """Declare a transactional step: it receives a database connection as its first argument and its
        writes commit in the same transaction as its checkpoint (exactly-once database effects).

        ``sqlalchemy="session"`` (or ``"connection"``): the first argument is a SQLAlchemy ``Session`` (or
        ``Connection``) bound to that same transaction instead of the driver connection (extra
        ``[sqlalchemy]``; :mod:`kit.integrations.sqlalchemy`)."""
        opts = _step_options(retries, backoff, initial_delay, max_delay, transactional=True)
        decorate = self._step_decorator(name, opts)
        if sqlalchemy is None:
            return decorate
        from kit.integrations.sqlalchemy import step_binder  # ConfigError when the extra is missing

        bind = step_binder(sqlalchemy, lambda: self._services.backend)
        return lambda fn: decorate(bind(fn))  # type: ignore[return-value]

    def _step_decorator(self, name: str | None, opts: StepOptions) -> Callable[[F], F]:
        services = self._services  # the engine's parts, bound once: a step call costs no lookup here

        def decorate(fn: F) -> F:
            step_name = name or fn.__qualname__
            ser.register_types_from_hints(fn)

            if inspect.iscoroutinefunction(fn):
                if opts.transactional:
                    raise ConfigError(f"transactional step '{step_name}' must be a plain def (its database "
                                      "connection is synchronous)")

                @functools.wraps(fn)
                async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                    return await run_step_async(services, step_name, fn, opts, args, kwargs)

                async_wrapper.__kit_step__ = step_name  # type: ignore[attr-defined]
                return async_wrapper  # type: ignore[return-value]

            @functools.wraps(fn)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                if opts.transactional and not services.backend.capabilities.transactional_steps:
                    raise UsageError(f"backend '{services.backend.name}' does not support transactional steps "
                                     f"(step '{step_name}')")
                return run_step(services, step_name, fn, opts, args, kwargs)

            wrapper.__kit_step__ = step_name  # type: ignore[attr-defined]
            return wrapper  # type: ignore[return-value]

        return decorate

    def scheduled(self, cron: str, *, tz: str | None = None, name: str | None = None, queue: str | None = None,
                  catch_up: str = "latest", max_catch_up: int = 100) -> Callable[[F], F]:
        """Declare a cron-scheduled workflow taking its tick (an aware datetime in ``tz``): worker processes
        run it exactly once per tick; ``catch_up`` ("latest", "none", "all") handles ticks missed while no
        worker ran. Invalid cron, time zone or options raise :class:`~kit.errors.CronError` here."""
        return schedules.scheduled(self._schedules, lambda wf_name, fn: self.workflow(name=wf_name)(fn), cron,
                                   tz=tz, name=name, queue=queue, catch_up=catch_up, max_catch_up=max_catch_up)

    def workflow_names(self) -> list[str]:
        return self._services.definitions.names()

    def workflow_definition(self, name: str) -> WorkflowDef:
        return self._services.definitions.get(name)

    def _resolve(self, fn: Callable[..., Any] | str) -> WorkflowDef:
        return self._services.definitions.resolve(fn)

    # -- starting and retrieving ----------------------------------------------------------------------
    def start(self, fn: Callable[..., Any] | str, *args: Any, workflow_id: str | None = None,
              workflow_timeout: float | None = None, **kwargs: Any) -> WorkflowHandle:
        """Start a workflow (or return the existing one with that id) and return its handle at once.

        The workflow runs in this process under a lease; if the process dies, a worker recovers it.
        Inside a workflow this starts a child workflow with an id derived from the parent's step.
        ``workflow_timeout`` (seconds) overrides the workflow's declared timeout for this run.
        """
        return starting.start(self._services, self._resolve(fn), args, kwargs, workflow_id=workflow_id,
                              workflow_timeout=workflow_timeout)

    async def start_async(self, fn: Callable[..., Any] | str, *args: Any, workflow_id: str | None = None,
                          workflow_timeout: float | None = None, **kwargs: Any) -> WorkflowHandle:
        """``start`` for asyncio code (the database round trip runs on a thread)."""
        if current_context() is not None:
            return self.start(fn, *args, workflow_id=workflow_id, workflow_timeout=workflow_timeout, **kwargs)
        return await asyncio.to_thread(functools.partial(self.start, fn, *args, workflow_id=workflow_id,
                                                         workflow_timeout=workflow_timeout, **kwargs))

    def retrieve(self, workflow_id: str) -> WorkflowHandle:
        """A handle to an existing workflow; raises WorkflowNotFoundError when there is none."""
        return starting.retrieve(self._services, workflow_id)

    def enqueue(self, fn: Callable[..., Any] | str, *args: Any, workflow_id: str | None = None,
                priority: int = 0, workflow_timeout: float | None = None, connection: Any = None,
                **kwargs: Any) -> WorkflowHandle:
        """Submit a workflow to the default queue for any worker to run; idempotent by id. ``connection``:
        insert it inside the caller's open transaction instead (see :meth:`kit.Client.enqueue`)."""
        if connection is not None:
            return queues.submit_in(self._services, connection, self._resolve(fn).name, args, kwargs, queue=None,
                                    workflow_id=workflow_id, dedup_id=None, priority=priority, delay=None,
                                    partition_key=None, if_duplicate="error", workflow_timeout=workflow_timeout)
        return queues.submit(self._services, fn, args, kwargs, queue=None, workflow_id=workflow_id,
                             priority=priority, workflow_timeout=workflow_timeout)

    # -- lifecycle ---------------------------------------------------------------------------------------
    def cancel(self, workflow_id: str) -> list[str]:
        """Cancel a workflow and its unfinished children: running ones stop at their next step boundary
        (no checkpoint commits after the cancel); returns the ids cancelled (empty if it had finished)."""
        return lifecycle.cancel(self._services, workflow_id)

    def resume(self, workflow_id: str, *, timeout: float | None = None) -> WorkflowHandle:
        """Continue a CANCELLED or ERROR workflow from its last checkpoint (the step that failed runs
        again); ``timeout`` sets a new deadline (the old one is cleared)."""
        lifecycle.resume(self._services, workflow_id, timeout)
        return WorkflowHandle(self._services, workflow_id)

    def fork(self, workflow_id: str, *, from_step: int, new_workflow_id: str | None = None,
             timeout: float | None = None) -> WorkflowHandle:
        """Start a new workflow with the same inputs that reuses the checkpoints of steps before
        ``from_step`` and runs the rest with this application's code."""
        return WorkflowHandle(self._services,
                              lifecycle.fork(self._services, workflow_id, from_step, new_workflow_id, timeout))

    def gc(self, older_than: Any, *, batch_size: int = 1000, dry_run: bool = False) -> int:
        """Delete workflows finished more than ``older_than`` ago (timedelta, seconds, or '30d') in
        batches; never a pending or running one. Returns how many were deleted."""
        return lifecycle.gc(self._services, older_than, batch_size=batch_size, dry_run=dry_run)

    def patched(self, patch: str) -> bool:
        """Versioning marker: True in runs that reach this point with the patched code (recorded), False
        when replaying a run that passed this point before the patch existed."""
        return patched(self._services, patch)

    def deprecate_patch(self, patch: str) -> None:
        """Replaces ``if app.patched(patch)`` once no pre-patch run remains: keeps runs that recorded
        the marker replayable after the check is removed."""
        deprecate_patch(patch)

    @property
    def accepted_versions(self) -> list[str] | None:
        """Application versions whose workflows this app's worker replays (None: all)."""
        return accepted_versions(self.config.app_version, self.config.compatible_versions)

    def queue(self, name: str, *, concurrency: int | None = None, worker_concurrency: int | None = None,
              rate_limit: tuple[int, float] | None = None, priority: bool = False, partitioned: bool = False,
              partition_concurrency: int | None = None) -> Queue:
        """Declare a flow-controlled queue. Limits hold across every worker process: ``concurrency``
        (running at once, all workers), ``worker_concurrency`` (per worker process), ``rate_limit``
        ``(count, per_seconds)`` (starts per window), ``partition_concurrency`` (per partition key of a
        ``partitioned`` queue, whose tenants are served in turn)."""
        spec = make_spec(name, concurrency=concurrency, worker_concurrency=worker_concurrency,
                         partition_concurrency=partition_concurrency, rate_limit=rate_limit, priority=priority,
                         partitioned=partitioned)
        self._services.definitions.declare_queue(spec)  # a different second declaration is a ConfigError
        queue = self._queues.get(name) or Queue(self._services, spec)
        self._queues[name] = queue
        return queue

    def queues(self) -> list[Queue]:
        return list(self._queues.values())

    def _ensure_queues(self) -> None:
        """Store this app's queue declarations (once per process, and after new declarations)."""
        queues.ensure_declared(self._services)

    # -- timers, messages, events, streams ------------------------------------------------------------
    def sleep(self, seconds: float) -> None:
        """Durable sleep: a recovered workflow sleeps only the remainder (``time.sleep`` outside one)."""
        messaging.sleep(self._services, seconds)

    async def sleep_async(self, seconds: float) -> None:
        """Durable sleep for async workflows: other tasks of the workflow run meanwhile."""
        await messaging.sleep_async(self._services, seconds)

    async def recv_async(self, topic: str | None = None, timeout: float = 60.0) -> Any:
        """``recv`` for async workflows: other tasks of the workflow run while it waits."""
        return await messaging.recv_async(self._services, topic, timeout)

    def send(self, workflow_id: str, message: Any, topic: str | None = None) -> None:
        """Send a message to a workflow (idempotent when called from workflow code)."""
        messaging.send(self._services, workflow_id, message, topic)

    def recv(self, topic: str | None = None, timeout: float = 60.0) -> Any:
        """In workflow code: the next message of ``topic`` (exactly once), or None after ``timeout``."""
        return messaging.recv(self._services, topic, timeout)

    def set_event(self, key: str, value: Any) -> None:
        """In workflow code: publish ``value`` under ``key`` for other workflows and clients to read."""
        messaging.set_event(self._services, key, value)

    def get_event(self, workflow_id: str, key: str, timeout: float = 60.0) -> Any:
        """The latest value of a workflow's event, waiting up to ``timeout`` seconds; None if unset."""
        return messaging.get_event(self._services, workflow_id, key, timeout)

    def write_stream(self, key: str, value: Any) -> None:
        """In workflow code: append ``value`` to this workflow's stream ``key`` (once, even across crashes)."""
        streams.write_stream(self._services, key, value)

    def close_stream(self, key: str) -> None:
        """In workflow code: close this workflow's stream ``key``; readers end after its last value."""
        streams.close_stream(self._services, key)

    def read_stream(self, workflow_id: str, key: str, *, timeout: float | None = 60.0) -> Iterator[Any]:
        """Iterate a workflow's stream in order until it is closed (or the workflow finished without
        closing it); WorkflowTimeoutError when nothing arrives for ``timeout`` seconds (None: no limit)."""
        return streams.read_stream(self._services, workflow_id, key, timeout)


def _step_options(retries: int, backoff: float, initial_delay: float, max_delay: float, *,
                  transactional: bool) -> StepOptions:
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise ConfigError(f"retries must be a non-negative integer, got {retries!r}")
    if backoff < 1:
        raise ConfigError(f"backoff must be at least 1, got {backoff!r}")
    if initial_delay < 0 or max_delay < 0:
        raise ConfigError("initial_delay and max_delay must not be negative")
    return StepOptions(retries=retries, backoff=float(backoff), initial_delay=float(initial_delay),
                       max_delay=float(max_delay), transactional=transactional)
