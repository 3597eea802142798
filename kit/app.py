"""The application facade: configuration, decorators, starting and retrieving workflows."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeoutError  # not the builtin before Python 3.11
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from kit import serialization as ser
from kit.clock import SYSTEM_CLOCK, Clock
from kit.config import Config, check_url, load_config, redact_url
from kit.engine import Outcome, StepOptions, WorkflowContext, current_context, run_step, run_step_async
from kit.errors import (
    ConfigError,
    LeaseLostError,
    UnknownWorkflowError,
    UsageError,
    WorkflowCancelledError,
    WorkflowConflictError,
    WorkflowError,
    WorkflowNotFoundError,
    WorkflowTimeoutError,
)
from kit.storage import Backend, NewWorkflow, Status, WorkflowRecord
from kit.validation import check_size, validate_workflow_id
from kit.worker import Runtime, StopSummary

if TYPE_CHECKING:
    from kit.queues import Queue
    from kit.schedules import Schedule

log = logging.getLogger("kit")
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class WorkflowDef:
    name: str
    fn: Callable[..., Any]
    timeout: float | None = None  # default deadline (seconds from submission) of each run


def load_backend(cfg: Config) -> Backend:
    """Build the configured backend (entry point group ``kit.backends``); embedded PostgreSQL by default."""
    url = cfg.database_url
    if url is None:
        if cfg.backend not in (None, "postgres"):
            raise ConfigError(f"backend '{cfg.backend}' needs a database_url (KIT_DATABASE_URL)")
        from kit.embedded import embedded_url

        url = embedded_url(cfg.data_dir)
        name = "postgres"
    else:
        implied = check_url(url)
        name = cfg.backend or implied
    cls = _backend_class(name)
    return cls(url, schema=cfg.schema, pool_size=cfg.effective_pool_size, connect_timeout=cfg.connect_timeout,
               retry_seconds=cfg.db_retry_seconds, notify=cfg.notify, call_timeout=cfg.call_timeout)


def _backend_class(name: str) -> type[Backend]:
    from importlib.metadata import entry_points

    found = {ep.name: ep for ep in entry_points(group="kit.backends")}
    if name in found:
        return found[name].load()
    if name == "postgres":  # running from a source tree without installed metadata
        from kit.backends.postgres import PostgresBackend

        return PostgresBackend
    known = sorted(set(found) | {"postgres"})
    raise ConfigError(f"unknown backend '{name}'; installed backends: {', '.join(known)}")


class WorkflowHandle:
    """A started workflow: wait for its result or look at its status."""

    def __init__(self, app: Kit, workflow_id: str, future: Future[Outcome] | None = None) -> None:
        self._app = app
        self.workflow_id = workflow_id
        self._future = future

    def __repr__(self) -> str:
        return f"WorkflowHandle({self.workflow_id!r})"

    def status(self) -> Status:
        """The workflow's current status as recorded in the database."""
        return self.record().status

    async def result_async(self, timeout: float | None = None) -> Any:
        """``result`` for asyncio code: waits on a thread, never blocking the event loop."""
        return await asyncio.to_thread(self.result, timeout)

    def cancel(self) -> list[str]:
        """Cancel this workflow (and its unfinished children); see :meth:`Kit.cancel`."""
        return self._app.cancel(self.workflow_id)

    def _check_waiter(self, waiter: WorkflowContext) -> None:
        if waiter.ended.is_set():
            raise LeaseLostError(f"workflow {waiter.workflow_id}: its run ended while waiting for {self.workflow_id}")
        waiter.check_lease()
        waiter.check_deadline(self._app.clock.time())

    def record(self) -> WorkflowRecord:
        rec = self._app.backend.workflow_get(self.workflow_id)
        if rec is None:
            raise WorkflowNotFoundError(f"no workflow with id {self.workflow_id!r}")
        return rec

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the workflow to end; return its result or raise :class:`WorkflowError`."""
        waiter = current_context()
        if waiter is None or waiter.step is not None:
            return self._result(timeout)
        runtime = self._app.runtime
        with runtime._lock:
            runtime.awaiting[waiter.workflow_id] += 1
        try:
            return self._result(timeout, waiter)
        finally:
            with runtime._lock:
                runtime.awaiting[waiter.workflow_id] -= 1
                if runtime.awaiting[waiter.workflow_id] <= 0:
                    del runtime.awaiting[waiter.workflow_id]

    def _result(self, timeout: float | None, waiter: WorkflowContext | None = None) -> Any:
        """Wait for the end; a waiting workflow (``waiter``) checks its lease, deadline and run between
        short slices, so a cancelled, expired or finished run stops waiting on its children."""
        deadline = None if timeout is None else time.monotonic() + timeout
        slice_ = 5.0 if waiter is None else 0.25
        if self._future is not None:
            while True:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                try:
                    outcome = self._future.result(timeout=slice_ if left is None else min(left, slice_))
                    break
                except (TimeoutError, FutureTimeoutError):
                    if deadline is not None and time.monotonic() >= deadline:
                        raise WorkflowTimeoutError(
                            f"workflow {self.workflow_id} did not finish within {timeout}s") from None
                    if waiter is not None:
                        self._check_waiter(waiter)
            if outcome.status is not None:
                return _decode_outcome(self.workflow_id, outcome.status, outcome.output, outcome.error)
        # The database decides (not an outcome cached here: the workflow may have been resumed elsewhere).
        while True:
            if waiter is not None:
                self._check_waiter(waiter)
            left = slice_ if deadline is None else max(0.0, deadline - time.monotonic())
            done = self._app.backend.workflow_wait([self.workflow_id], min(left, slice_))
            if done:
                rec = done[0]
                return _decode_outcome(self.workflow_id, rec.status, rec.output, rec.error)
            if self._app.backend.workflow_get(self.workflow_id) is None:
                raise WorkflowNotFoundError(f"no workflow with id {self.workflow_id!r}")
            if deadline is not None and time.monotonic() >= deadline:
                raise WorkflowTimeoutError(f"workflow {self.workflow_id} did not finish within {timeout}s")


def _decode_outcome(workflow_id: str, status: Status, output: str | None, error: str | None) -> Any:
    if status == Status.SUCCESS:
        return ser.loads(output, what=f"result of workflow {workflow_id}")
    rec = ser.loads(error) if error else {}
    if not isinstance(rec, dict):
        rec = {}
    type_name = rec.get("type", status.value)
    module = rec.get("module")
    if module and module != "builtins":
        type_name = f"{module}.{type_name}"
    cls = WorkflowCancelledError if status == Status.CANCELLED else WorkflowError
    raise cls(workflow_id, type_name, rec.get("message", "workflow cancelled"), rec.get("traceback", ""))


class Kit:
    """A kit application: register workflows and steps, start them, and run as a worker.

    ``Kit()`` with no database configured uses an embedded PostgreSQL in ``.kit/``. Settings come from
    keyword arguments, then ``KIT_*`` environment variables, then ``kit.toml`` / ``[tool.kit]``.
    """

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
        self.config: Config = load_config(overrides, config_file=config_file)
        self.clock: Clock = clock or SYSTEM_CLOCK  # workflow time: sleeps, timeouts, deadlines, cron ticks
        self._workflows: dict[str, WorkflowDef] = {}
        self._backend: Backend | None = None
        self._open_lock = threading.Lock()
        self._runtime: Runtime | None = None
        self._queues: dict[str, Queue] = {}
        self._queues_defined = False
        self._schedules: dict[str, Schedule] = {}  # @app.scheduled (kit.schedules)

    # -- lifecycle -------------------------------------------------------------------------------
    @property
    def backend(self) -> Backend:
        """The opened storage backend (opened, and migrated if enabled, on first use)."""
        if self._backend is None:
            with self._open_lock:
                if self._backend is None:
                    backend = load_backend(self.config)
                    backend.open()
                    try:
                        if self.config.migrate:
                            backend.migrate()
                    except BaseException:
                        backend.close()
                        raise
                    self._backend = backend
        return self._backend

    @property
    def runtime(self) -> Runtime:
        if self._runtime is None:
            with self._open_lock:
                if self._runtime is None:
                    self._runtime = Runtime(self)
        return self._runtime

    @property
    def worker_id(self) -> str:
        return self.runtime.worker_id

    def launch(self) -> Kit:
        """Open the database and start claiming ready and orphaned workflows in the background."""
        self.backend  # noqa: B018 - open and migrate now, so errors surface here
        self._ensure_queues()
        self.runtime.start_worker()
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
        summary = None
        if self._runtime is not None:
            summary = self._runtime.stop(grace)
            self._runtime = None
        if self._backend is not None:
            self._backend.close()
            self._backend = None
        return summary

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
        from kit.lifecycle import check_timeout

        timeout = check_timeout(timeout, "timeout")

        def decorate(fn: F) -> F:
            wf_name = name or fn.__qualname__
            existing = self._workflows.get(wf_name)
            if existing is not None and existing.fn is not fn:
                raise ConfigError(f"two workflows are named '{wf_name}': give one of them name=...")
            ser.register_types_from_hints(fn)
            self._workflows[wf_name] = WorkflowDef(wf_name, fn, timeout)

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
        max_delay: float = 60.0,
    ) -> Callable[[F], F]:
        """Declare a transactional step: it receives a database connection as its first argument and its
        writes commit in the same transaction as its checkpoint (exactly-once database effects)."""
        opts = _step_options(retries, backoff, initial_delay, max_delay, transactional=True)
        return self._step_decorator(name, opts)

    def _step_decorator(self, name: str | None, opts: StepOptions) -> Callable[[F], F]:
        def decorate(fn: F) -> F:
            step_name = name or fn.__qualname__
            ser.register_types_from_hints(fn)

            if inspect.iscoroutinefunction(fn):
                if opts.transactional:
                    raise ConfigError(f"transactional step '{step_name}' must be a plain def (its database "
                                      "connection is synchronous)")

                @functools.wraps(fn)
                async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                    return await run_step_async(self, step_name, fn, opts, args, kwargs)

                async_wrapper.__kit_step__ = step_name  # type: ignore[attr-defined]
                return async_wrapper  # type: ignore[return-value]

            @functools.wraps(fn)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                if opts.transactional and not self.backend.capabilities.transactional_steps:
                    raise UsageError(f"backend '{self.backend.name}' does not support transactional steps "
                                     f"(step '{step_name}')")
                return run_step(self, step_name, fn, opts, args, kwargs)

            wrapper.__kit_step__ = step_name  # type: ignore[attr-defined]
            return wrapper  # type: ignore[return-value]

        return decorate

    def scheduled(self, cron: str, *, tz: str | None = None, name: str | None = None, queue: str | None = None,
                  catch_up: str = "latest", max_catch_up: int = 100) -> Callable[[F], F]:
        """Declare a cron-scheduled workflow taking its tick (an aware datetime in ``tz``): worker processes
        run it exactly once per tick; ``catch_up`` ("latest", "none", "all") handles ticks missed while no
        worker ran. Invalid cron, time zone or options raise :class:`~kit.errors.CronError` here."""
        from kit.schedules import scheduled

        return scheduled(self, cron, tz=tz, name=name, queue=queue, catch_up=catch_up, max_catch_up=max_catch_up)

    def workflow_names(self) -> list[str]:
        return list(self._workflows)

    def workflow_definition(self, name: str) -> WorkflowDef:
        try:
            return self._workflows[name]
        except KeyError:
            raise UnknownWorkflowError(
                f"workflow '{name}' is not registered in this application; known: {', '.join(self._workflows) or 'none'}"
            ) from None

    def _resolve(self, fn: Callable[..., Any] | str) -> WorkflowDef:
        if isinstance(fn, str):
            return self.workflow_definition(fn)
        name = getattr(fn, "__kit_workflow__", None)
        if name is None:
            raise UsageError(f"{getattr(fn, '__qualname__', fn)!r} is not a workflow: decorate it with @app.workflow()")
        return self.workflow_definition(name)

    # -- starting and retrieving ----------------------------------------------------------------------
    def start(self, fn: Callable[..., Any] | str, *args: Any, workflow_id: str | None = None,
              workflow_timeout: float | None = None, **kwargs: Any) -> WorkflowHandle:
        """Start a workflow (or return the existing one with that id) and return its handle at once.

        The workflow runs in this process under a lease; if the process dies, a worker recovers it.
        Inside a workflow this starts a child workflow with an id derived from the parent's step.
        ``workflow_timeout`` (seconds) overrides the workflow's declared timeout for this run.
        """
        from kit.lifecycle import check_timeout, deadline_for

        wf = self._resolve(fn)
        timeout = check_timeout(workflow_timeout) if workflow_timeout is not None else wf.timeout
        parent = current_context()
        if parent is not None and parent.step is None:
            return self._start_child(parent, wf, workflow_id, args, kwargs, timeout)
        wid = validate_workflow_id(workflow_id) if workflow_id is not None else str(uuid.uuid4())
        return self._create_and_run(wf, wid, args, kwargs, parent_id=None, inline=False,
                                    deadline=deadline_for(self, timeout, None))

    async def start_async(self, fn: Callable[..., Any] | str, *args: Any, workflow_id: str | None = None,
                          workflow_timeout: float | None = None, **kwargs: Any) -> WorkflowHandle:
        """``start`` for asyncio code (the database round trip runs on a thread)."""
        if current_context() is not None:
            return self.start(fn, *args, workflow_id=workflow_id, workflow_timeout=workflow_timeout, **kwargs)
        return await asyncio.to_thread(functools.partial(self.start, fn, *args, workflow_id=workflow_id,
                                                         workflow_timeout=workflow_timeout, **kwargs))

    def _create_and_run(self, wf: WorkflowDef, wid: str, args: tuple, kwargs: dict, *, parent_id: str | None,
                        inline: bool, deadline: float | None = None,
                        parent_epoch: int | None = None) -> WorkflowHandle:
        from kit.lifecycle import as_datetime

        inputs = check_size(ser.encode_args(args, kwargs, what=f"inputs of workflow '{wf.name}'"), self.config,
                            "max_input_bytes", f"inputs of workflow '{wf.name}'")
        runtime = self.runtime
        ctx = WorkflowContext(wid, wf.name, 1, deadline=deadline)
        held = runtime.hold(wid, ctx)  # before the insert, so the heartbeat never mistakes it for a stray claim
        if held is not ctx:  # this process already runs (or is starting) that id: never a second run
            if held.name != wf.name:
                raise WorkflowConflictError(
                    f"workflow id {wid!r} already belongs to workflow '{held.name}', not '{wf.name}'"
                )
            return WorkflowHandle(self, wid)
        sent = time.monotonic()
        try:
            created = self.backend.workflow_create(NewWorkflow(
                workflow_id=wid, name=wf.name, inputs=inputs, app_version=self.config.app_version,
                owner=runtime.worker_id, lease_seconds=self.config.lease_seconds, parent_id=parent_id,
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
            return WorkflowHandle(self, wid)
        ctx.lease_until = runtime.lease_valid_until(sent)
        ctx.confirmed_at = time.monotonic()
        future = runtime.submit_local(ctx, wf.fn, args, kwargs, dedicated=parent_id is not None)
        return WorkflowHandle(self, wid, future)

    def _start_child(self, parent: WorkflowContext, wf: WorkflowDef, workflow_id: str | None, args: tuple,
                     kwargs: dict, timeout: float | None = None) -> WorkflowHandle:
        """Start a child as a checkpointed step: a recovered parent re-attaches to the same child. The
        child's deadline is the earlier of its own and its parent's."""
        from kit.lifecycle import deadline_for

        child_id = workflow_id or f"{parent.workflow_id}/{parent.peek_position()}"
        validate_workflow_id(child_id)

        def start_child() -> str:
            self._create_and_run(wf, child_id, args, kwargs, parent_id=parent.workflow_id, inline=False,
                                 deadline=deadline_for(self, timeout, parent), parent_epoch=parent.epoch)
            return child_id

        recorded = run_step(self, f"start:{wf.name}", start_child, StepOptions(), (), {})
        return WorkflowHandle(self, recorded)

    def retrieve(self, workflow_id: str) -> WorkflowHandle:
        """A handle to an existing workflow; raises WorkflowNotFoundError when there is none."""
        validate_workflow_id(workflow_id)
        if self.backend.workflow_get(workflow_id) is None:
            raise WorkflowNotFoundError(f"no workflow with id {workflow_id!r}")
        return WorkflowHandle(self, workflow_id)

    def enqueue(self, fn: Callable[..., Any] | str, *args: Any, workflow_id: str | None = None,
                priority: int = 0, workflow_timeout: float | None = None, **kwargs: Any) -> WorkflowHandle:
        """Submit a workflow to the default queue for any worker to run; idempotent by id."""
        from kit.queues import submit

        return submit(self, fn, args, kwargs, queue=None, workflow_id=workflow_id, priority=priority,
                      workflow_timeout=workflow_timeout)

    # -- lifecycle ---------------------------------------------------------------------------------------
    def cancel(self, workflow_id: str) -> list[str]:
        """Cancel a workflow and its unfinished children: running ones stop at their next step boundary
        (no checkpoint commits after the cancel); returns the ids cancelled (empty if it had finished)."""
        from kit import lifecycle

        return lifecycle.cancel(self, workflow_id)

    def resume(self, workflow_id: str, *, timeout: float | None = None) -> WorkflowHandle:
        """Continue a CANCELLED or ERROR workflow from its last checkpoint (the step that failed runs
        again); ``timeout`` sets a new deadline (the old one is cleared)."""
        from kit import lifecycle

        return lifecycle.resume(self, workflow_id, timeout)

    def fork(self, workflow_id: str, *, from_step: int, new_workflow_id: str | None = None,
             timeout: float | None = None) -> WorkflowHandle:
        """Start a new workflow with the same inputs that reuses the checkpoints of steps before
        ``from_step`` and runs the rest with this application's code."""
        from kit import lifecycle

        return lifecycle.fork(self, workflow_id, from_step, new_workflow_id, timeout)

    def gc(self, older_than: Any, *, batch_size: int = 1000, dry_run: bool = False) -> int:
        """Delete workflows finished more than ``older_than`` ago (timedelta, seconds, or '30d') in
        batches; never a pending or running one. Returns how many were deleted."""
        from kit import lifecycle

        return lifecycle.gc(self, older_than, batch_size=batch_size, dry_run=dry_run)

    def patched(self, patch: str) -> bool:
        """Versioning marker: True in runs that reach this point with the patched code (recorded), False
        when replaying a run that passed this point before the patch existed."""
        from kit.engine import patched

        return patched(self, patch)

    def deprecate_patch(self, patch: str) -> None:
        """Replaces ``if app.patched(patch)`` once no pre-patch run remains: keeps runs that recorded
        the marker replayable after the check is removed."""
        from kit.engine import deprecate_patch

        deprecate_patch(patch)

    @property
    def accepted_versions(self) -> list[str] | None:
        """Application versions whose workflows this app's worker replays (None: all)."""
        from kit.lifecycle import accepted_versions

        return accepted_versions(self.config.app_version, self.config.compatible_versions)

    def queue(self, name: str, *, concurrency: int | None = None, worker_concurrency: int | None = None,
              rate_limit: tuple[int, float] | None = None, priority: bool = False, partitioned: bool = False,
              partition_concurrency: int | None = None) -> Queue:
        """Declare a flow-controlled queue. Limits hold across every worker process: ``concurrency``
        (running at once, all workers), ``worker_concurrency`` (per worker process), ``rate_limit``
        ``(count, per_seconds)`` (starts per window), ``partition_concurrency`` (per partition key of a
        ``partitioned`` queue, whose tenants are served in turn)."""
        from kit.queues import Queue, make_spec

        spec = make_spec(name, concurrency=concurrency, worker_concurrency=worker_concurrency,
                         partition_concurrency=partition_concurrency, rate_limit=rate_limit, priority=priority,
                         partitioned=partitioned)
        existing = self._queues.get(name)
        if existing is not None and existing.spec != spec:
            raise ConfigError(f"queue {name!r} is declared twice with different settings")
        queue = existing or Queue(self, spec)
        self._queues[name] = queue
        self._queues_defined = False
        return queue

    def queues(self) -> list[Queue]:
        return list(self._queues.values())

    def _ensure_queues(self) -> None:
        """Store this app's queue declarations (once per process, and after new declarations)."""
        if self._queues_defined:
            return
        for queue in list(self._queues.values()):
            stored = self.backend.queue_get(queue.name)
            if stored is not None and stored != queue.spec:
                log.warning("queue %r: replacing the stored declaration %s with this application's %s; every "
                            "worker enforces the stored limits from now on", queue.name, stored, queue.spec)
            if stored != queue.spec:
                self.backend.queue_define(queue.spec)
        self._queues_defined = True

    # -- timers, messages, events ---------------------------------------------------------------------
    def sleep(self, seconds: float) -> None:
        """Durable sleep: a recovered workflow sleeps only the remainder (``time.sleep`` outside one)."""
        from kit import messaging

        messaging.sleep(self, seconds)

    async def sleep_async(self, seconds: float) -> None:
        """Durable sleep for async workflows: other tasks of the workflow run meanwhile."""
        from kit import messaging

        await messaging.sleep_async(self, seconds)

    async def recv_async(self, topic: str | None = None, timeout: float = 60.0) -> Any:
        """``recv`` for async workflows: other tasks of the workflow run while it waits."""
        from kit import messaging

        return await messaging.recv_async(self, topic, timeout)

    def send(self, workflow_id: str, message: Any, topic: str | None = None) -> None:
        """Send a message to a workflow (idempotent when called from workflow code)."""
        from kit import messaging

        messaging.send(self, workflow_id, message, topic)

    def recv(self, topic: str | None = None, timeout: float = 60.0) -> Any:
        """In workflow code: the next message of ``topic`` (exactly once), or None after ``timeout``."""
        from kit import messaging

        return messaging.recv(self, topic, timeout)

    def set_event(self, key: str, value: Any) -> None:
        """In workflow code: publish ``value`` under ``key`` for other workflows and clients to read."""
        from kit import messaging

        messaging.set_event(self, key, value)

    def get_event(self, workflow_id: str, key: str, timeout: float = 60.0) -> Any:
        """The latest value of a workflow's event, waiting up to ``timeout`` seconds; None if unset."""
        from kit import messaging

        return messaging.get_event(self, workflow_id, key, timeout)

    def write_stream(self, key: str, value: Any) -> None:
        """In workflow code: append ``value`` to this workflow's stream ``key`` (once, even across crashes)."""
        from kit import streams

        streams.write_stream(self, key, value)

    def close_stream(self, key: str) -> None:
        """In workflow code: close this workflow's stream ``key``; readers end after its last value."""
        from kit import streams

        streams.close_stream(self, key)

    def read_stream(self, workflow_id: str, key: str, *, timeout: float | None = 60.0) -> Iterator[Any]:
        """Iterate a workflow's stream in order until it is closed (or the workflow finished without
        closing it); WorkflowTimeoutError when nothing arrives for ``timeout`` seconds (None: no limit)."""
        from kit import streams

        return streams.read_stream(self, workflow_id, key, timeout)


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
