"""The storage interface: the only thing kit's engine knows about databases.

The engine speaks in semantic operations (create a workflow, claim with a lease, record a step under the
lease epoch, ...); a backend turns each into SQL for its database and states what it can do in
:class:`Capabilities`. Operation names lead with the entity (``workflow_*``, ``step_*``, ``lease_*``) and
take plain values or one request dataclass; every write made on behalf of a running workflow carries the
lease epoch and is refused (returns False / raises :class:`~kit.errors.LeaseLostError`) once a newer
epoch exists. Stability: this interface is public for backend authors; changes are listed in the
changelog. docs/backends.md maps each operation to PostgreSQL, CockroachDB and Citus.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any


class Status(str, enum.Enum):
    """Workflow status. PENDING is claimable; RUNNING is leased; the rest are terminal."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCESS = "SUCCESS"
    ERROR = "ERROR"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self in (Status.SUCCESS, Status.ERROR, Status.CANCELLED)


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do; the engine picks strategies from this, never from the backend's name."""

    listen_notify: bool = False  # wake-ups pushed by the database (else poll with backoff)
    skip_locked: bool = False  # claims skip rows locked by other claimers
    transactional_steps: bool = False  # a step's own writes can commit with its checkpoint
    advisory_locks: bool = False  # migrations may serialise on an advisory lock
    follower_reads: bool = False  # observability queries may read slightly stale replicas
    retry_serialization_failures: bool = False  # every transaction may fail with 40001 and must be retried
    server_version: str = ""


@dataclass(frozen=True)
class NewWorkflow:
    """A workflow to create. ``owner`` set means: create it already claimed by that worker (epoch 1)."""

    workflow_id: str
    name: str
    inputs: str  # JSON text from kit.serialization.encode_args
    queue: str | None = None
    app_version: str | None = None
    owner: str | None = None
    lease_seconds: float = 10.0
    parent_id: str | None = None
    priority: int = 0
    dedup_id: str | None = None  # one live (PENDING/RUNNING) workflow per (queue, dedup_id)
    delay_seconds: float = 0.0  # not claimable before now + delay (database clock)
    partition_key: str | None = None  # tenant of a partitioned queue
    deadline: datetime | None = None  # cancelled at its next step boundary after this instant
    parent_epoch: int | None = None  # created only while the parent is RUNNING at this epoch (else LeaseLostError)


@dataclass(frozen=True)
class QueueSpec:
    """A queue's definition and limits (None: no limit). ``rate_count`` starts per ``rate_period`` s."""

    name: str
    concurrency: int | None = None
    worker_concurrency: int | None = None
    partition_concurrency: int | None = None
    rate_count: int | None = None
    rate_period: float | None = None
    priority: bool = False
    partitioned: bool = False

    @property
    def limited(self) -> bool:
        return any(v is not None for v in (self.concurrency, self.worker_concurrency,
                                           self.partition_concurrency, self.rate_count)) or self.partitioned


@dataclass(frozen=True)
class Created:
    """Result of :meth:`Backend.workflow_create`: ``created`` is False when the id already existed."""

    created: bool
    epoch: int
    name: str
    status: Status


@dataclass(frozen=True)
class Claim:
    """A workflow claimed by a worker: run it under ``epoch`` until finished or the lease is lost."""

    workflow_id: str
    name: str
    inputs: str
    epoch: int
    recovery: bool  # True when it was taken from an expired lease (it ran somewhere before)
    queue: str | None = None
    deadline: datetime | None = None


@dataclass(frozen=True)
class StepRecord:
    """One step checkpoint: the output (JSON text) or the error record (JSON text), never both."""

    workflow_id: str
    step_id: int
    name: str
    output: str | None = None
    error: str | None = None
    epoch: int = 0
    attempts: int = 1
    started_at: datetime | None = None
    finished_at: datetime | None = None


@dataclass(frozen=True)
class StepResult:
    """A step checkpoint to record under ``epoch``. ``started_at`` is the client clock at step start."""

    workflow_id: str
    step_id: int
    name: str
    epoch: int
    output: str | None = None
    error: str | None = None
    attempts: int = 1
    started_at: datetime | None = None


@dataclass(frozen=True)
class WorkflowRecord:
    """A workflow row as observed (listing, status, results)."""

    workflow_id: str
    name: str
    status: Status
    inputs: str | None = None
    output: str | None = None
    error: str | None = None
    queue: str | None = None
    app_version: str | None = None
    owner: str | None = None
    epoch: int = 0
    lease_expires_at: datetime | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    recoveries: int = 0
    parent_id: str | None = None


@dataclass(frozen=True)
class WorkflowQuery:
    """Filters for :meth:`Backend.workflow_list`; every value is passed as a bound parameter."""

    statuses: Sequence[Status] = ()
    name: str | None = None
    queue: str | None = None
    app_version: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    error_contains: str | None = None
    limit: int = 100
    order: str = "created_desc"  # created_desc | created_asc | finished_desc | duration_desc


@dataclass(frozen=True)
class WorkerInfo:
    """A worker process as recorded by its heartbeats."""

    worker_id: str
    hostname: str
    pid: int
    started_at: datetime | None = None
    heartbeat_at: datetime | None = None


@dataclass(frozen=True)
class ClaimRequest:
    """Claim up to ``limit`` workflows whose names this worker can run: PENDING ones, and RUNNING ones
    whose lease expired (recovery)."""

    owner: str
    names: Sequence[str]
    limit: int
    lease_seconds: float
    queues: Sequence[str] | None = None  # None: any queue; "" stands for the default (no) queue
    versions: Sequence[str] | None = None  # None: any app_version; else these (and unversioned work)
    running_here: int = 0  # runs of this (limited) queue still executing in the claiming process


@dataclass(frozen=True)
class Finish:
    """Finish a workflow under ``epoch`` with SUCCESS (``output``) or ERROR (``error``)."""

    workflow_id: str
    epoch: int
    status: Status
    output: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class ForkRequest:
    """Start ``new_id`` as a copy of ``source_id`` reusing the checkpoints of steps before ``from_step``."""

    source_id: str
    new_id: str
    from_step: int
    app_version: str | None = None
    deadline: datetime | None = None


WORKFLOW_ORDERS = ("created_desc", "created_asc", "finished_desc", "duration_desc")


@dataclass(frozen=True)
class MonitorQuery:
    """What :meth:`Backend.monitor_stats` reads: filters and the bounds of every windowed query."""

    name: str | None = None  # only workflows with this name
    queue: str | None = None  # only this queue ("default" also matches workflows without a queue)
    window_seconds: int = 300  # throughput and finished counts cover this many seconds before now
    bucket_seconds: int = 5  # throughput bucket width
    latency_window_seconds: int = 300  # latency percentiles over workflows finished this recently...
    latency_rows: int = 2000  # ...at most this many of them (newest first), and their steps
    failures: int = 5  # most recent failures returned
    workers: int = 20  # at most this many workers (newest heartbeat first)
    alive_seconds: float = 7.5  # a worker is alive when it heartbeated this recently (3 x 2.5 s)


@dataclass(frozen=True)
class WorkerStats:
    """A worker as the monitor sees it: heartbeat, liveness and the workflows it holds."""

    worker_id: str
    hostname: str
    pid: int
    started_at: datetime | None
    heartbeat_at: datetime | None
    alive: bool
    claims: int


@dataclass(frozen=True)
class QueueStats:
    """Active work of one queue (a NULL queue is reported as ``default``). Limits: None = none set."""

    queue: str
    depth: int  # PENDING
    in_flight: int  # RUNNING
    concurrency_limit: int | None = None
    rate_limit_per_second: float | None = None
    worker_concurrency_limit: int | None = None
    partition_concurrency_limit: int | None = None
    partitioned: bool = False


@dataclass(frozen=True)
class Percentiles:
    """Latency percentiles in seconds over ``count`` samples (None when there were none)."""

    count: int = 0
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None


@dataclass(frozen=True)
class FinishedBucket:
    """Workflows that reached ``status`` during the bucket starting at ``start``."""

    start: datetime
    status: Status
    count: int


@dataclass(frozen=True)
class MonitorStats:
    """One consistent-enough reading of the system for ``kit monitor`` (every part bounded)."""

    server_time: datetime
    primary: bool | None  # False on a standby; None when the backend cannot tell
    node: str  # the server the reading came from (address:port or socket), no credentials
    workers: tuple[WorkerStats, ...] = ()
    queues: tuple[QueueStats, ...] = ()
    finished: tuple[FinishedBucket, ...] = ()  # within the query's window, by bucket and status
    workflow_latency: Percentiles = Percentiles()
    step_latency: Percentiles = Percentiles()
    recent_failures: tuple[WorkflowRecord, ...] = ()
    oldest_pending: WorkflowRecord | None = None


class StepTransaction(abc.ABC):
    """A database transaction a transactional step writes through; committed with its checkpoint."""

    @property
    @abc.abstractmethod
    def connection(self) -> Any:
        """The driver connection the user's step function receives (e.g. a psycopg Connection)."""

    record: StepRecord | None = None

    @abc.abstractmethod
    def checkpoint(self, output: str | None) -> None:
        """Insert the step's checkpoint inside this transaction (fenced by the epoch); raises
        LeaseLostError when a newer epoch owns the workflow."""


class Backend(abc.ABC):
    """A storage backend. Implementations are registered under the entry-point group ``kit.backends``.

    Every method may raise :class:`~kit.errors.DatabaseUnavailableError` after its own bounded retries,
    :class:`~kit.errors.TransientStorageError` for retryable failures it chose not to retry, and
    :class:`~kit.errors.StorageError` otherwise. Writes under an epoch never guess after an ambiguous
    commit: they read back the outcome.
    """

    name: str = "abstract"

    # -- lifecycle ---------------------------------------------------------------------------------
    @abc.abstractmethod
    def open(self) -> None:
        """Connect (pool), verify the server is reachable, and compute capabilities."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release every connection. Idempotent."""

    @property
    @abc.abstractmethod
    def capabilities(self) -> Capabilities:
        """What this backend can do (valid after :meth:`open`)."""

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        """Backend name, endpoint with any password hidden, schema, server version: for `kit db`."""

    # -- schema --------------------------------------------------------------------------------------
    @abc.abstractmethod
    def migrate(self) -> list[int]:
        """Apply pending schema migrations (safe when several processes migrate at once); returns the
        versions applied by this call."""

    @abc.abstractmethod
    def schema_version(self) -> int | None:
        """The applied schema version, or None when the schema does not exist yet."""

    @abc.abstractmethod
    def migration_sql(self) -> str:
        """The full DDL that :meth:`migrate` would apply to an empty database, for review."""

    # -- workflows -----------------------------------------------------------------------------------
    @abc.abstractmethod
    def workflow_create(self, wf: NewWorkflow) -> Created:
        """Insert the workflow unless its id exists (one round trip on the fresh path)."""

    @abc.abstractmethod
    def workflow_get(self, workflow_id: str) -> WorkflowRecord | None:
        """The workflow, or None."""

    @abc.abstractmethod
    def workflow_finish(self, fin: Finish) -> bool:
        """Record the terminal status under the epoch; False when the lease was lost (fenced)."""

    @abc.abstractmethod
    def workflow_release(self, workflow_id: str, epoch: int) -> bool:
        """Give a claimed workflow back (PENDING, no owner) so another worker takes it at once."""

    @abc.abstractmethod
    def workflow_list(self, query: WorkflowQuery) -> list[WorkflowRecord]:
        """Workflows matching the query (index-served, bounded by ``limit``)."""

    @abc.abstractmethod
    def workflow_wait(self, workflow_ids: Sequence[str], timeout: float) -> list[WorkflowRecord]:
        """Terminal records among ``workflow_ids``; may block up to ``timeout`` waiting for one."""

    # -- claims and leases ----------------------------------------------------------------------------
    @abc.abstractmethod
    def workflow_claim(self, req: ClaimRequest) -> list[Claim]:
        """Claim ready or orphaned workflows: each claim sets owner, increments the epoch, sets expiry."""

    @abc.abstractmethod
    def lease_renew(self, owner: str, lease_seconds: float, worker: WorkerInfo | None = None) -> dict[str, int]:
        """Extend every lease ``owner`` still holds (and record its heartbeat); returns
        ``{workflow_id: epoch}`` of the leases still held, so the worker learns what it lost. Must return
        (or raise) well within ``lease_seconds`` and never wait behind other calls' connections: the
        worker retries at once after a failure and stops its runs when no renewal succeeds in time."""

    # -- steps -----------------------------------------------------------------------------------------
    @abc.abstractmethod
    def step_record(self, step: StepResult) -> StepRecord:
        """Record a checkpoint under the epoch: one round trip on the happy path. Returns the recorded
        row: normally ours; if another run of the same epoch-lineage recorded that step first, theirs.
        Raises LeaseLostError when a newer epoch owns the workflow."""

    @abc.abstractmethod
    def step_list(self, workflow_id: str) -> list[StepRecord]:
        """All checkpoints of a workflow, ordered by step id."""

    @abc.abstractmethod
    def step_transaction(self, step: StepResult) -> AbstractContextManager[StepTransaction]:
        """A transaction for a transactional step: the body writes through ``.connection`` and the engine
        calls ``tx.checkpoint(output)`` last; leaving the block commits both, an exception rolls back.
        After the block, ``tx.record`` is the committed checkpoint (an ambiguous commit is read back)."""

    # -- workers and notifications ----------------------------------------------------------------------
    @abc.abstractmethod
    def worker_list(self) -> list[WorkerInfo]:
        """Workers that have heartbeated, newest first."""

    @abc.abstractmethod
    def notify_wait(self, channels: Sequence[str], timeout: float) -> list[str]:
        """Block until a notification on one of ``channels`` or ``timeout``; returns payloads. After
        (re)establishing its listener it returns ``["*"]`` at once (notifications sent meanwhile were
        missed: waiters must re-check). Backends without notifications sleep ``timeout`` and return []."""

    @abc.abstractmethod
    def notify(self, channel: str, payload: str = "") -> None:
        """Send a wake-up outside any transaction (after commit)."""

    # -- observability ---------------------------------------------------------------------------------
    @abc.abstractmethod
    def workflow_children(self, workflow_id: str, limit: int = 1000) -> list[WorkflowRecord]:
        """Workflows started by ``workflow_id`` (``parent_id`` = it), oldest first, at most ``limit``."""

    @abc.abstractmethod
    def monitor_stats(self, query: MonitorQuery) -> MonitorStats:
        """One bounded, index-served reading for ``kit monitor``: workers, queues, finished counts by
        bucket, latency percentiles, recent failures, oldest pending. Retries briefly (a monitor must
        report an outage quickly, not wait it out)."""

    # -- messages and events ---------------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def wake_channel(self) -> str:
        """The notification channel of this schema. Payloads: ``q:<queue>`` (work to claim),
        ``m:<workflow id>`` (a message for it), ``e:<workflow id>`` (it set an event), ``s:<workflow id>`` (it
        wrote to or closed a stream)."""

    @abc.abstractmethod
    def message_send(self, workflow_id: str, topic: str, body: str, sender_key: str | None = None,
                     sender: tuple[str, int] | None = None) -> bool:
        """Deliver a message (JSON text) to a workflow and wake its waiters. ``sender_key`` makes the send
        idempotent (a second send with the same key is a no-op returning True). Returns False when no
        workflow ``workflow_id`` exists (nothing is written). ``sender`` (workflow id, epoch): a send
        from workflow code, delivered only while that epoch owns the sender (else LeaseLostError)."""

    @abc.abstractmethod
    def message_receive(self, step: StepResult, topic: str) -> StepRecord | None:
        """Consume the oldest unconsumed message of ``topic`` and record it as ``step``'s output, in one
        transaction fenced by the epoch: a message is consumed exactly once, by a committed step. None
        when no message is waiting (nothing written). If the step is already recorded, returns it."""

    @abc.abstractmethod
    def event_set(self, step: StepResult, key: str) -> StepRecord:
        """Set event ``key`` of the step's workflow to ``step.output`` and record the step, in one
        transaction fenced by the epoch; wakes readers after commit."""

    @abc.abstractmethod
    def event_get(self, workflow_id: str, key: str) -> str | None:
        """The latest value (JSON text) of an event, or None if it was never set."""

    # -- queues ----------------------------------------------------------------------------------------
    @abc.abstractmethod
    def workflow_enqueue_in(self, connection: Any, wf: NewWorkflow) -> Created:
        """Insert a PENDING workflow through the caller's own driver connection, inside the caller's open
        transaction (a savepoint keeps a duplicate from aborting it): the workflow exists if and only if
        that transaction commits. Raises WorkflowDuplicateError for a live dedup id."""

    @abc.abstractmethod
    def queue_define(self, spec: QueueSpec) -> None:
        """Create or update a queue's definition (the declaring application's limits win)."""

    @abc.abstractmethod
    def queue_get(self, name: str) -> QueueSpec | None:
        """A queue's definition, or None when no application declared it."""

    @abc.abstractmethod
    def queue_claim(self, req: ClaimRequest, queue: str) -> list[Claim] | None:
        """Claim ready workflows of one limited queue without exceeding its limits across all workers:
        global and per-worker concurrency, per-partition concurrency, claims per rate window; partitioned
        queues take the head of each tenant's backlog in turn (fairness). Expired leases of the queue are
        taken over within this worker's room. None: another worker is claiming from it right now."""

    @abc.abstractmethod
    def queue_limited_names(self) -> set[str]:
        """Names of the queues the database knows to have limits (whatever any one app declares)."""

    @abc.abstractmethod
    def queue_list(self) -> list[QueueStats]:
        """Every declared or active queue with its depth, in-flight count and limits."""

    # -- streams ---------------------------------------------------------------------------------------
    @abc.abstractmethod
    def stream_write(self, step: StepResult, key: str, value: str) -> StepRecord:
        """Append ``value`` (JSON text) to stream ``key`` of the step's workflow at the next position and
        record the step (output: the element's position, JSON) in one transaction fenced by the epoch;
        wakes readers (``s:<workflow id>``) after commit. If the step is already recorded, returns it and
        writes nothing. Raises :class:`~kit.errors.UsageError` (nothing written) when the stream is closed."""

    @abc.abstractmethod
    def stream_close(self, step: StepResult, key: str) -> StepRecord:
        """Close stream ``key`` (a final marker after the last element) and record the step (output: the
        number of elements, JSON) in one fenced transaction; wakes readers after commit. Closing a closed
        stream only records the step. If the step is already recorded, returns it."""

    @abc.abstractmethod
    def stream_read(self, workflow_id: str, key: str, after_seq: int, limit: int) -> StreamChunk:
        """Up to ``limit`` elements of a stream with position > ``after_seq`` (start with -1), in order,
        whether the stream is closed right after them, and the writing workflow's status, all read in one
        snapshot (a terminal status therefore means every element it wrote is in this or a later chunk)."""

    # -- observability of messages, events, streams (read-only) --------------------------------------------
    @abc.abstractmethod
    def message_list(self, workflow_id: str, limit: int = 1000) -> list[MessageInfo]:
        """Messages sent to a workflow, oldest first (consumed ones and those still waiting)."""

    @abc.abstractmethod
    def event_list(self, workflow_id: str, limit: int = 1000) -> list[EventInfo]:
        """A workflow's events with their latest values, by key."""

    @abc.abstractmethod
    def stream_list(self, workflow_id: str, limit: int = 1000) -> list[StreamInfo]:
        """A workflow's streams: element count and whether closed, by key."""

    # -- lifecycle ---------------------------------------------------------------------------------------
    @abc.abstractmethod
    def workflow_cancel(self, workflow_id: str, error: str) -> list[str]:
        """Cancel a workflow and its unfinished descendants (status CANCELLED, ``error`` recorded, epoch
        bumped so a running owner is fenced off at its next checkpoint). Returns the ids cancelled;
        raises WorkflowNotFoundError when the id does not exist."""

    @abc.abstractmethod
    def workflow_resume(self, workflow_id: str, deadline: datetime | None = None) -> list[str]:
        """Make a CANCELLED or ERROR workflow (and its CANCELLED descendants) PENDING again, keeping its
        checkpoints except a final recorded step error. Raises WorkflowStateError for other statuses."""

    @abc.abstractmethod
    def workflow_fork(self, req: ForkRequest) -> Created:
        """Create ``req.new_id`` (PENDING, same name, inputs and queue) with the source's checkpoints,
        events and stream rows of steps before ``req.from_step``, in one transaction."""

    @abc.abstractmethod
    def workflow_gc(self, older_than_seconds: float, batch_size: int, dry_run: bool = False) -> int:
        """Delete up to ``batch_size`` workflows finished more than ``older_than_seconds`` ago (database
        clock) with their steps, messages, events and streams; never one that is PENDING or RUNNING, nor
        one a remaining workflow's steps refer to (a child its parent or a fork may re-attach to). Returns how many were deleted (or would be, when ``dry_run``)."""

    @abc.abstractmethod
    def workflow_version_counts(self) -> dict[str | None, int]:
        """Unfinished (PENDING or RUNNING) workflows per application version."""

    @abc.abstractmethod
    def drop_schema(self) -> None:
        """Delete every kit table, view and function of this backend's schema (kit.testing teardown)."""

    # -- cron schedules ------------------------------------------------------------------------------------
    @abc.abstractmethod
    def schedule_define(self, spec: ScheduleSpec, now: datetime) -> ScheduleSpec | None:
        """Store a schedule's definition; a new one (or one whose cron or time zone changed) starts its
        cursor at ``now`` (the application clock), so ticks before its definition never count as missed.
        Returns the definition stored before (None when the schedule is new)."""

    @abc.abstractmethod
    def schedule_get(self, name: str) -> ScheduleState | None:
        """A schedule's definition and cursor; None when no application defined it."""

    @abc.abstractmethod
    def schedule_list(self) -> list[ScheduleState]:
        """Every stored schedule, by name."""

    @abc.abstractmethod
    def schedule_advance(self, name: str, expected_cursor: datetime, new_cursor: datetime,
                         workflows: Sequence[NewWorkflow]) -> bool:
        """In one transaction: move the schedule's cursor from ``expected_cursor`` to ``new_cursor`` and
        enqueue ``workflows`` (PENDING, idempotent by id, waking workers at commit). Returns False, writing
        nothing, when the cursor is no longer ``expected_cursor`` (another worker handled those ticks)."""


@dataclass(frozen=True)
class StreamChunk:
    """Result of :meth:`Backend.stream_read`. ``closed``: the close marker follows the last element
    returned (nothing more will come). ``workflow_status``: None when no such workflow exists."""

    elements: tuple[tuple[int, str], ...]  # (position, JSON text), ascending
    closed: bool
    workflow_status: Status | None


@dataclass(frozen=True)
class MessageInfo:
    """A message sent to a workflow as observed (``consumed_at`` None: still waiting for a ``recv``)."""

    message_id: int
    topic: str
    body: str
    sender_key: str | None = None
    created_at: datetime | None = None
    consumed_at: datetime | None = None
    consumed_step: int | None = None


@dataclass(frozen=True)
class EventInfo:
    """An event of a workflow: its latest value and the step that set it."""

    key: str
    value: str | None
    step_id: int
    updated_at: datetime | None = None


@dataclass(frozen=True)
class StreamInfo:
    """A stream of a workflow: how many elements it has, whether it is closed, its last write."""

    key: str
    count: int
    closed: bool
    last_write_at: datetime | None = None


def iter_backend_names() -> Iterator[str]:
    """Names of installed backends (entry-point group ``kit.backends``)."""
    from importlib.metadata import entry_points

    for ep in entry_points(group="kit.backends"):
        yield ep.name


@dataclass(frozen=True)
class ScheduleSpec:
    """A cron schedule as declared by ``@app.scheduled`` (stored so every worker and the CLI see it)."""

    name: str
    workflow_name: str
    cron: str
    timezone: str
    queue: str | None = None
    catch_up: str = "latest"  # latest | none | all
    max_catch_up: int = 100


@dataclass(frozen=True)
class ScheduleState:
    """A stored schedule: every tick at or before ``cursor_at`` has been enqueued or skipped by policy."""

    spec: ScheduleSpec
    cursor_at: datetime
    last_tick: datetime | None = None
    last_workflow_id: str | None = None
    updated_at: datetime | None = None
