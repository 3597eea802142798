"""The values the storage interface passes: requests, records and readings (plain frozen dataclasses)."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime


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
