"""The storage interface: the only thing kit's engine knows about databases.

The engine speaks in semantic operations (create a workflow, claim with a lease, record a step under the
lease epoch, ...); a backend turns each into SQL for its database and states what it can do in
:class:`Capabilities`. Operation names lead with the entity (``workflow_*``, ``step_*``, ``lease_*``) and
take plain values or one request dataclass; every write made on behalf of a running workflow carries the
lease epoch and is refused (returns False / raises :class:`~kit.errors.LeaseLostError`) once a newer
epoch exists. Stability: this interface is public for backend authors; changes are listed in the
changelog. docs/backends.md maps each operation to PostgreSQL, CockroachDB and Citus.

Modules: :mod:`kit.storage.backend` (the :class:`Backend` operations, with which of them touch more than
one workflow), :mod:`kit.storage.records` (the values they pass), :mod:`kit.storage.capabilities`
(:class:`ServerInfo` and :class:`Capabilities`). Every public name is importable from ``kit.storage``.
"""

from __future__ import annotations

from kit.storage.backend import Backend, StepTransaction, iter_backend_names
from kit.storage.capabilities import Capabilities, ServerInfo
from kit.storage.records import (
    WORKFLOW_ORDERS,
    Claim,
    ClaimRequest,
    Created,
    EventInfo,
    Finish,
    FinishedBucket,
    ForkRequest,
    MessageInfo,
    MonitorQuery,
    MonitorStats,
    NewWorkflow,
    Percentiles,
    QueueSpec,
    QueueStats,
    ScheduleSpec,
    ScheduleState,
    Status,
    StepRecord,
    StepResult,
    StreamChunk,
    StreamInfo,
    WorkerInfo,
    WorkerStats,
    WorkflowQuery,
    WorkflowRecord,
)

__all__ = [
    "Backend",
    "Capabilities",
    "Claim",
    "ClaimRequest",
    "Created",
    "EventInfo",
    "Finish",
    "FinishedBucket",
    "ForkRequest",
    "MessageInfo",
    "MonitorQuery",
    "MonitorStats",
    "NewWorkflow",
    "Percentiles",
    "QueueSpec",
    "QueueStats",
    "ScheduleSpec",
    "ScheduleState",
    "ServerInfo",
    "Status",
    "StepRecord",
    "StepResult",
    "StepTransaction",
    "StreamChunk",
    "StreamInfo",
    "WORKFLOW_ORDERS",
    "WorkerInfo",
    "WorkerStats",
    "WorkflowQuery",
    "WorkflowRecord",
    "iter_backend_names",
]
