"""The application facade: configuration, decorators, starting and retrieving workflows."""

from __future__ import annotations

import functools
import logging
import re
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
from kit.engine import Outcome, StepOptions, WorkflowContext, current_context, run_step
from kit.errors import (
    ConfigError,
    UnknownWorkflowError,
    UsageError,
    WorkflowConflictError,
    WorkflowError,
    WorkflowNotFoundError,
    WorkflowTimeoutError,
)
from kit.storage import Backend, NewWorkflow, Status, WorkflowRecord
from kit.worker import Runtime

if TYPE_CHECKING:
    from kit.queues import Queue

log = logging.getLogger("kit")
F = TypeVar("F", bound=Callable[..., Any])
_ID = re.compile(r"^[\x21-\x7e]{1,200}$")  # printable ASCII, no spaces


def validate_workflow_id(workflow_id: object) -> str:
    if not isinstance(workflow_id, str) or not _ID.match(workflow_id):
        raise UsageError(
            f"invalid workflow id {workflow_id!r}: use 1-200 printable ASCII characters without spaces"
        )
    return workflow_id


@dataclass(frozen=True)
class WorkflowDef:
    name: str
    fn: Callable[..., Any]


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

    def record(self) -> WorkflowRecord:
        rec = self._app.backend.workflow_get(self.workflow_id)
        if rec is None:
            raise WorkflowNotFoundError(f"no workflow with id {self.workflow_id!r}")
        return rec

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the workflow to end; return its result or raise :class:`WorkflowError`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._future is not None:
            try:
                outcome = self._future.result(timeout=timeout)
            except (TimeoutError, FutureTimeoutError):
                raise WorkflowTimeoutError(f"workflow {self.workflow_id} did not finish within {timeout}s") from None
            if outcome.status is not None:
                return _decode_outcome(self.workflow_id, outcome.status, outcome.output, outcome.error)
        local = self._app._local_outcome(self.workflow_id)
        while True:
            if local is not None and local.status is not None:
                return _decode_outcome(self.workflow_id, local.status, local.output, local.error)
            left = 5.0 if deadline is None else max(0.0, deadline - time.monotonic())
            done = self._app.backend.workflow_wait([self.workflow_id], min(left, 5.0))
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
    raise WorkflowError(workflow_id, type_name, rec.get("message", "workflow cancelled"), rec.get("traceback", ""))


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
        self._outcomes: dict[str, Outcome] = {}
        self._queues: dict[str, Queue] = {}
        self._queues_defined = False

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

    def close(self, grace: float = 5.0) -> None:
        """Stop the worker, release unfinished leases so others take over at once, close connections."""
        if self._runtime is not None:
            self._runtime.stop(grace)
            self._runtime = None
        if self._backend is not None:
            self._backend.close()
            self._backend = None

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
    def workflow(self, *, name: str | None = None) -> Callable[[F], F]:
        """Declare a durable workflow. Calling the function runs it durably and returns its result."""

        def decorate(fn: F) -> F:
            wf_name = name or fn.__qualname__
            existing = self._workflows.get(wf_name)
            if existing is not None and existing.fn is not fn:
                raise ConfigError(f"two workflows are named '{wf_name}': give one of them name=...")
            ser.register_types_from_hints(fn)
            self._workflows[wf_name] = WorkflowDef(wf_name, fn)

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

            @functools.wraps(fn)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                if opts.transactional and not self.backend.capabilities.transactional_steps:
                    raise UsageError(f"backend '{self.backend.name}' does not support transactional steps "
                                     f"(step '{step_name}')")
                return run_step(self, step_name, fn, opts, args, kwargs)

            wrapper.__kit_step__ = step_name  # type: ignore[attr-defined]
            return wrapper  # type: ignore[return-value]

        return decorate

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
              **kwargs: Any) -> WorkflowHandle:
        """Start a workflow (or return the existing one with that id) and return its handle at once.

        The workflow runs in this process under a lease; if the process dies, a worker recovers it.
        Inside a workflow this starts a child workflow with an id derived from the parent's step.
        """
        wf = self._resolve(fn)
        parent = current_context()
        if parent is not None and parent.step is None:
            return self._start_child(parent, wf, workflow_id, args, kwargs)
        wid = validate_workflow_id(workflow_id) if workflow_id is not None else str(uuid.uuid4())
        return self._create_and_run(wf, wid, args, kwargs, parent_id=None, inline=False)

    def _create_and_run(self, wf: WorkflowDef, wid: str, args: tuple, kwargs: dict, *, parent_id: str | None,
                        inline: bool) -> WorkflowHandle:
        inputs = ser.encode_args(args, kwargs, what=f"inputs of workflow '{wf.name}'")
        runtime = self.runtime
        ctx = WorkflowContext(wid, wf.name, 1)
        held = runtime.hold(wid, ctx)  # before the insert, so the heartbeat never mistakes it for a stray claim
        if held is not ctx:  # this process already runs (or is starting) that id: never a second run
            if held.name != wf.name:
                raise WorkflowConflictError(
                    f"workflow id {wid!r} already belongs to workflow '{held.name}', not '{wf.name}'"
                )
            return WorkflowHandle(self, wid)
        try:
            created = self.backend.workflow_create(NewWorkflow(
                workflow_id=wid, name=wf.name, inputs=inputs, app_version=self.config.app_version,
                owner=runtime.worker_id, lease_seconds=self.config.lease_seconds, parent_id=parent_id,
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
        ctx.confirmed_at = time.monotonic()
        future = runtime.submit_local(ctx, wf.fn, args, kwargs, dedicated=parent_id is not None)
        future.add_done_callback(lambda f: self._deliver(wid, f.result()) if not f.cancelled() else None)
        return WorkflowHandle(self, wid, future)

    def _start_child(self, parent: WorkflowContext, wf: WorkflowDef, workflow_id: str | None, args: tuple,
                     kwargs: dict) -> WorkflowHandle:
        """Start a child as a checkpointed step: a recovered parent re-attaches to the same child."""
        child_id = workflow_id or f"{parent.workflow_id}/{parent.next_step}"
        validate_workflow_id(child_id)

        def start_child() -> str:
            self._create_and_run(wf, child_id, args, kwargs, parent_id=parent.workflow_id, inline=False)
            return child_id

        recorded = run_step(self, f"start:{wf.name}", start_child, StepOptions(), (), {})
        return WorkflowHandle(self, recorded)

    def _deliver(self, workflow_id: str, outcome: Outcome) -> None:
        if outcome.status is not None:
            self._outcomes[workflow_id] = outcome
            if len(self._outcomes) > 10_000:
                self._outcomes.pop(next(iter(self._outcomes)))

    def _local_outcome(self, workflow_id: str) -> Outcome | None:
        return self._outcomes.get(workflow_id)

    def retrieve(self, workflow_id: str) -> WorkflowHandle:
        """A handle to an existing workflow; raises WorkflowNotFoundError when there is none."""
        validate_workflow_id(workflow_id)
        if self.backend.workflow_get(workflow_id) is None:
            raise WorkflowNotFoundError(f"no workflow with id {workflow_id!r}")
        return WorkflowHandle(self, workflow_id)

    def enqueue(self, fn: Callable[..., Any] | str, *args: Any, workflow_id: str | None = None,
                priority: int = 0, **kwargs: Any) -> WorkflowHandle:
        """Submit a workflow to the default queue for any worker to run; idempotent by id."""
        from kit.queues import submit

        return submit(self, fn, args, kwargs, queue=None, workflow_id=workflow_id, priority=priority)

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
