"""The storage interface: :class:`Backend` (the operations) and :class:`StepTransaction`.

Operations that touch more than one workflow are marked **[multi-workflow]** in their docstrings with what
a backend must guarantee for them; on a sharded database (Citus) they are the multi-shard transactions, so
a backend there must make them atomic across shards (two-phase commit) or split them where the docstring
allows. Every other operation reads or writes one workflow's rows only (a single-shard router query when
data is distributed by workflow id).
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, ClassVar

from kit.storage.capabilities import Capabilities, ServerInfo
from kit.storage.records import (
    Claim,
    ClaimRequest,
    Created,
    EventInfo,
    Finish,
    ForkRequest,
    MessageInfo,
    MonitorQuery,
    MonitorStats,
    NewWorkflow,
    QueueSpec,
    QueueStats,
    ScheduleSpec,
    ScheduleState,
    StepRecord,
    StepResult,
    StreamChunk,
    StreamInfo,
    WorkerInfo,
    WorkflowQuery,
    WorkflowRecord,
)


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

    Ambiguous commits (the statement or COMMIT committed, then the connection was lost before the reply):
    a write retries on its own and, when it returns, answers as the attempt that committed would have
    (each operation's "Ambiguous commit:" line says how much of that the caller may rely on). A write that
    raises DatabaseUnavailableError after its retries may or may not have committed: re-read the state.

    Class-level contract used by :mod:`kit.registry` (no instance, no connection): ``name``, the
    ``url_schemes`` it accepts, ``specificity`` (the most specific backend whose :meth:`detect` accepts a
    server wins a scheme several backends claim), :meth:`probe` and :meth:`detect`. Instances are built
    as ``cls(url, schema=..., pool_size=..., connect_timeout=..., retry_seconds=..., notify=...,
    call_timeout=...)``; :meth:`open` refuses (ConfigError) a server :meth:`detect` does not accept.

    Wake-ups: a backend with notifications sends them only where they are delivered at commit (never
    before the row they announce is visible) and never from a server node the listeners are not
    connected to; docs/backends.md states exactly when the PostgreSQL backend notifies.
    """

    name: ClassVar[str] = "abstract"
    url_schemes: ClassVar[tuple[str, ...]] = ()
    specificity: ClassVar[int] = 0  # higher: a refinement of another backend on the same scheme
    # The SQLAlchemy dialect URL (no host) matching the driver connection a transactional step gets, for
    # @app.transaction(sqlalchemy=...) (kit.integrations.sqlalchemy); None: not offered.
    sqlalchemy_url: ClassVar[str | None] = None

    # -- registry contract (class level) ------------------------------------------------------------
    @classmethod
    def probe(cls, url: str, *, connect_timeout: float) -> ServerInfo:
        """Connect once and describe the server (version, extensions, relevant settings); used by the
        registry only when several installed backends claim ``url``'s scheme."""
        raise NotImplementedError(f"backend '{cls.name}' cannot probe servers")

    @classmethod
    def detect(cls, info: ServerInfo) -> bool:
        """True when this backend is made for the probed server (pure; no I/O)."""
        return True

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
        versions applied by this call.

        Ambiguous commit: the versions the committed attempt applied (recorded with them), not []."""

    @abc.abstractmethod
    def schema_version(self) -> int | None:
        """The applied schema version, or None when the schema does not exist yet."""

    @abc.abstractmethod
    def migration_sql(self) -> str:
        """The full DDL that :meth:`migrate` would apply to an empty database, for review."""

    # -- workflows -----------------------------------------------------------------------------------
    @abc.abstractmethod
    def workflow_create(self, wf: NewWorkflow) -> Created:
        """Insert the workflow unless its id exists (one round trip on the fresh path).

        **[multi-workflow]** when ``wf.parent_epoch`` is set: the child is inserted only while the parent
        is RUNNING at that epoch, checked and written atomically (the parent row held against a concurrent
        claim or cancel until commit), else LeaseLostError and nothing written. A cancel of the parent
        therefore commits either before (no child) or after (it finds and cancels the child).

        Ambiguous commit: ``created`` is True when the row found is this call's insert. A backend without a
        creation token (PostgreSQL) takes an identical row (same owner, epoch 1, same inputs; for an enqueue,
        same name, inputs, queue, parent) for its own, so it cannot tell a second start of the id with the
        same arguments apart (the engine never starts one id twice in a process)."""

    @abc.abstractmethod
    def workflow_get(self, workflow_id: str) -> WorkflowRecord | None:
        """The workflow, or None."""

    @abc.abstractmethod
    def workflow_finish(self, fin: Finish) -> bool:
        """Record the terminal status under the epoch; False when the lease was lost (fenced).

        **[multi-workflow]** a backend may group finishes of concurrently running workflows into one
        statement or transaction (group commit); each row stays fenced by its own epoch, and a fenced row
        never fails the others.

        Ambiguous commit: True when the stored status is ours at our epoch (read back)."""

    @abc.abstractmethod
    def workflow_release(self, workflow_id: str, epoch: int) -> bool:
        """Give a claimed workflow back (PENDING, no owner) so another worker takes it at once.

        Ambiguous commit: True when it is PENDING at our epoch (read back; no claim came in between)."""

    @abc.abstractmethod
    def workflow_list(self, query: WorkflowQuery) -> list[WorkflowRecord]:
        """Workflows matching the query (index-served, bounded by ``limit``)."""

    @abc.abstractmethod
    def workflow_wait(self, workflow_ids: Sequence[str], timeout: float) -> list[WorkflowRecord]:
        """Terminal records among ``workflow_ids``; may block up to ``timeout`` waiting for one."""

    # -- claims and leases ----------------------------------------------------------------------------
    @abc.abstractmethod
    def workflow_claim(self, req: ClaimRequest) -> list[Claim]:
        """Claim ready or orphaned workflows: each claim sets owner, increments the epoch, sets expiry.

        **[multi-workflow]** one call claims many workflows. Required: no workflow is returned to two
        claimers at the same epoch (each claim is a per-row compare-and-set of the epoch, whatever locks
        the backend uses); claims need not be atomic together.

        Ambiguous commit: the claims the committed attempt made are returned, with their epochs, inputs,
        deadlines and recovery flags, read back by a per-call token before anything new is claimed (never more
        than ``limit`` in all). If the call raises instead, what it claimed stays leased to ``owner``: the
        worker's heartbeat gives back leases it holds but does not run, else the lease expires."""

    @abc.abstractmethod
    def lease_renew(self, owner: str, lease_seconds: float, worker: WorkerInfo | None = None) -> dict[str, int]:
        """Extend every lease ``owner`` still holds (and record its heartbeat); returns
        ``{workflow_id: epoch}`` of the leases still held, so the worker learns what it lost. Must return
        (or raise) well within ``lease_seconds`` and never wait behind other calls' connections: the
        worker retries at once after a failure and stops its runs when no renewal succeeds in time.

        **[multi-workflow]** touches every workflow ``owner`` holds; per-row semantics suffice (a lease
        renewed for one workflow and not another is reported as such).

        Ambiguous commit: idempotent; the answer is the leases held when the retry ran."""

    # -- steps -----------------------------------------------------------------------------------------
    @abc.abstractmethod
    def step_record(self, step: StepResult) -> StepRecord:
        """Record a checkpoint under the epoch: one round trip on the happy path. Returns the recorded
        row: normally ours; if another run of the same epoch-lineage recorded that step first, theirs.
        Raises LeaseLostError when a newer epoch owns the workflow.

        **[multi-workflow]** a backend may group checkpoints of concurrently running workflows into one
        statement (group commit, one round trip for many); each row is fenced by its own epoch and the
        outcome is reported per step.

        Ambiguous commit: the row recorded (ours, read back), or LeaseLostError if none of our epoch is."""

    @abc.abstractmethod
    def step_list(self, workflow_id: str) -> list[StepRecord]:
        """All checkpoints of a workflow, ordered by step id."""

    @abc.abstractmethod
    def step_transaction(self, step: StepResult) -> AbstractContextManager[StepTransaction]:
        """A transaction for a transactional step: the body writes through ``.connection`` and the engine
        calls ``tx.checkpoint(output)`` last; leaving the block commits both, an exception rolls back.
        After the block, ``tx.record`` is the committed checkpoint.

        Ambiguous commit: the checkpoint is read back; a row of our epoch means the user's writes committed
        with it, none means both rolled back (the engine runs the step again)."""

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
        """Send a wake-up outside any transaction (after commit). One attempt, best effort: a lost wake-up
        only delays work until the waiter's next poll."""

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
        from workflow code, delivered only while that epoch owns the sender (else LeaseLostError).

        **[multi-workflow]** with ``sender``: the fence on the sender and the insert for the receiver are
        one atomic transaction (the sender's row held against a takeover until commit): the message exists
        if and only if the sender's epoch owned it at commit.

        Ambiguous commit: one call delivers at most once. Without ``sender_key`` the backend keys the call
        itself (visible as ``MessageInfo.sender_key``), so its retry finds its own message; two calls are two
        messages."""

    @abc.abstractmethod
    def message_receive(self, step: StepResult, topic: str) -> StepRecord | None:
        """Consume the oldest unconsumed message of ``topic`` and record it as ``step``'s output, in one
        transaction fenced by the epoch: a message is consumed exactly once, by a committed step. None
        when no message is waiting (nothing written). If the step is already recorded, returns it.

        Ambiguous commit: the recorded step is read back (the message it consumed, consumed once)."""

    @abc.abstractmethod
    def event_set(self, step: StepResult, key: str) -> StepRecord:
        """Set event ``key`` of the step's workflow to ``step.output`` and record the step, in one
        transaction fenced by the epoch; wakes readers after commit.

        Ambiguous commit: the recorded step is read back; the event holds its value if it committed."""

    @abc.abstractmethod
    def event_get(self, workflow_id: str, key: str) -> str | None:
        """The latest value (JSON text) of an event, or None if it was never set."""

    # -- queues ----------------------------------------------------------------------------------------
    @abc.abstractmethod
    def workflow_enqueue_in(self, connection: Any, wf: NewWorkflow) -> Created:
        """Insert a PENDING workflow through the caller's own driver connection, inside the caller's open
        transaction (a savepoint keeps a duplicate from aborting it): the workflow exists if and only if
        that transaction commits. Raises WorkflowDuplicateError for a live dedup id.

        **[multi-workflow]** the caller's transaction may write anything else (other workflows included):
        the backend adds its insert and its wake-up to it and never commits or rolls it back.

        Ambiguous commit: the caller's own (it commits); a serialization failure is a TransientStorageError."""

    @abc.abstractmethod
    def queue_define(self, spec: QueueSpec) -> None:
        """Create or update a queue's definition (the declaring application's limits win).

        Ambiguous commit: idempotent (an upsert of the same values)."""

    @abc.abstractmethod
    def queue_get(self, name: str) -> QueueSpec | None:
        """A queue's definition, or None when no application declared it."""

    @abc.abstractmethod
    def queue_claim(self, req: ClaimRequest, queue: str) -> list[Claim] | None:
        """Claim ready workflows of one limited queue without exceeding its limits across all workers:
        global and per-worker concurrency, per-partition concurrency, claims per rate window; partitioned
        queues take the head of each tenant's backlog in turn (fairness). Expired leases of the queue are
        taken over within this worker's room. None: another worker is claiming from it right now.

        **[multi-workflow]** counting the queue's running work and claiming within the room must be one
        serialised decision per queue (else two workers together exceed a limit, G7); the claimed rows are
        compare-and-set per row as in :meth:`workflow_claim`.

        Ambiguous commit: as :meth:`workflow_claim`; the claims read back count within ``limit`` and the
        queue's room, so the retry never starts more than the limits allow."""

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
        writes nothing. Raises :class:`~kit.errors.UsageError` (nothing written) when the stream is closed.

        Ambiguous commit: the recorded step is read back (one element written)."""

    @abc.abstractmethod
    def stream_close(self, step: StepResult, key: str) -> StepRecord:
        """Close stream ``key`` (a final marker after the last element) and record the step (output: the
        number of elements, JSON) in one fenced transaction; wakes readers after commit. Closing a closed
        stream only records the step. If the step is already recorded, returns it.

        Ambiguous commit: the recorded step is read back."""

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
        raises WorkflowNotFoundError when the id does not exist.

        **[multi-workflow]** the whole tree in one atomic transaction: either every unfinished workflow of
        it is cancelled (and fenced) or none is; a checkpoint in flight commits before the cancel or is
        fenced by it.

        Ambiguous commit: the ids the committed attempt cancelled (recorded with the cancel), not []."""

    @abc.abstractmethod
    def workflow_resume(self, workflow_id: str, deadline: datetime | None = None) -> list[str]:
        """Make a CANCELLED or ERROR workflow (and its CANCELLED descendants) PENDING again, keeping its
        checkpoints except a final recorded step error. Raises WorkflowStateError for other statuses.

        **[multi-workflow]** the workflow and the descendants its cancel cancelled, atomically (all resumed
        or none), waking workers at commit.

        Ambiguous commit: the ids the committed attempt resumed (recorded with them), not WorkflowStateError
        for the workflow it made PENDING."""

    @abc.abstractmethod
    def workflow_fork(self, req: ForkRequest) -> Created:
        """Create ``req.new_id`` (PENDING, same name, inputs and queue) with the source's checkpoints,
        events and stream rows of steps before ``req.from_step``, in one transaction.

        **[multi-workflow]** reads the source and writes the new workflow: the new one exists with all its
        copied rows or not at all (a claim never sees it half-copied); the source is not changed.

        Ambiguous commit: the fork the committed attempt created (recorded with it), not
        WorkflowConflictError for its own new id."""

    @abc.abstractmethod
    def workflow_gc(self, older_than_seconds: float, batch_size: int, dry_run: bool = False) -> int:
        """Delete up to ``batch_size`` workflows finished more than ``older_than_seconds`` ago (database
        clock) with their steps, messages, events and streams; never one that is PENDING or RUNNING, nor
        one a remaining workflow's steps refer to (a child its parent or a fork may re-attach to).
        Returns how many were deleted (or would be, when ``dry_run``).

        **[multi-workflow]** a batch of workflows: each one is deleted with all its rows atomically (never
        half-deleted) and skipped if a resume holds it; the batch itself may commit per workflow.

        Ambiguous commit: the count the committed attempt deleted (recorded with the batch), not 0."""

    @abc.abstractmethod
    def workflow_version_counts(self) -> dict[str | None, int]:
        """Unfinished (PENDING or RUNNING) workflows per application version."""

    @abc.abstractmethod
    def drop_schema(self) -> None:
        """Delete every kit table, view and function of this backend's schema (kit.testing teardown).
        Ambiguous commit: idempotent."""

    # -- cron schedules ------------------------------------------------------------------------------------
    @abc.abstractmethod
    def schedule_define(self, spec: ScheduleSpec, now: datetime) -> ScheduleSpec | None:
        """Store a schedule's definition; a new one (or one whose cron or time zone changed) starts its
        cursor at ``now`` (the application clock), so ticks before its definition never count as missed.
        Returns the definition stored before (None when the schedule is new).

        Ambiguous commit: what the committed attempt found before it (recorded with the write), never the
        definition this call stored itself."""

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
        nothing, when the cursor is no longer ``expected_cursor`` (another worker handled those ticks).

        **[multi-workflow]** the cursor move and every enqueued workflow commit atomically together: a
        tick is enqueued exactly once across all workers (G1 by id, the compare-and-set by cursor).

        Ambiguous commit: True when the cursor is at or past ``new_cursor`` and the last tick's workflow
        exists (read back after an attempt that moved the cursor); False stays False."""


def iter_backend_names() -> Iterator[str]:
    """Names of installed backends (entry-point group ``kit.backends``; see :mod:`kit.registry`)."""
    from importlib.metadata import entry_points

    for ep in entry_points(group="kit.backends"):
        yield ep.name
