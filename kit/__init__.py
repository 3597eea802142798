"""kit: durable execution for Python where the database is the orchestrator.

Workflows of steps checkpoint every step to the database; any process running the app recovers the
work of a dead one from those checkpoints. No orchestrator server, no broker.
"""

from kit.app import Kit
from kit.client import Client
from kit.engine import StepInfo, step_info
from kit.errors import (
    ConfigError,
    CronError,
    DeadlineExceededError,
    KitError,
    LeaseLostError,
    LimitExceededError,
    NonDeterminismError,
    SerializationError,
    StepFailedError,
    UnknownQueueError,
    UsageError,
    WorkflowCancelledError,
    WorkflowConflictError,
    WorkflowDuplicateError,
    WorkflowError,
    WorkflowNotFoundError,
    WorkflowStateError,
    WorkflowTimeoutError,
)
from kit.handle import WorkflowHandle
from kit.serialization import register_type
from kit.storage import Status

__version__ = "0.1.0"

__all__ = [
    "Client",
    "ConfigError",
    "CronError",
    "DeadlineExceededError",
    "Kit",
    "KitError",
    "LeaseLostError",
    "LimitExceededError",
    "NonDeterminismError",
    "SerializationError",
    "Status",
    "StepFailedError",
    "StepInfo",
    "UsageError",
    "UnknownQueueError",
    "WorkflowCancelledError",
    "WorkflowConflictError",
    "WorkflowDuplicateError",
    "WorkflowError",
    "WorkflowHandle",
    "WorkflowNotFoundError",
    "WorkflowStateError",
    "WorkflowTimeoutError",
    "register_type",
    "step_info",
    "__version__",
]
