"""kit's exception hierarchy: one root, families beneath, storage errors translated at the backend edge.

Everything kit raises on purpose derives from :class:`KitError`. User mistakes (bad configuration,
bad arguments, non-serializable values) derive from :class:`UsageError` so the CLI can print one line and
exit 2 instead of a traceback.
"""

from __future__ import annotations


class KitError(Exception):
    """Root of every error kit raises on purpose."""


class UsageError(KitError):
    """The caller did something kit cannot do: the message says what and how to fix it."""


class ConfigError(UsageError):
    """Configuration is invalid (unknown backend, malformed URL, bad value)."""


class SerializationError(UsageError):
    """A value cannot be stored as JSON (or a stored value cannot be decoded safely)."""


class LimitExceededError(SerializationError):
    """A serialized value is larger than the configured ``max_*_bytes`` setting allows; nothing was written."""

    def __init__(self, message: str, *, setting: str = "", limit: int = 0, size: int = 0) -> None:
        super().__init__(message)
        self.setting = setting
        self.limit = limit
        self.size = size


class NonDeterminismError(KitError):
    """Replay found a different step at a recorded position: the workflow code changed under it."""


class WorkflowNotFoundError(UsageError):
    """No workflow with that id exists."""


class WorkflowConflictError(UsageError):
    """A workflow id is already used by a different workflow function."""


class WorkflowDuplicateError(UsageError):
    """A live workflow already holds that deduplication id in that queue."""

    def __init__(self, message: str, existing_id: str) -> None:
        super().__init__(message)
        self.existing_id = existing_id


class UnknownQueueError(UsageError):
    """No application declared a queue of that name."""


class UnknownWorkflowError(UsageError):
    """A workflow name is not registered in this application."""


class CronError(UsageError):
    """A cron expression, time zone or schedule option is invalid: the message names the field and value."""


class WorkflowTimeoutError(KitError, TimeoutError):
    """Waiting for a workflow's result took longer than the given timeout."""


class WorkflowError(KitError):
    """A workflow ended in ERROR; carries the original exception's type name, message and traceback."""

    def __init__(self, workflow_id: str, type_name: str, message: str, traceback: str = "") -> None:
        self.workflow_id = workflow_id
        self.type_name = type_name
        self.message = message
        self.traceback = traceback
        super().__init__(f"workflow {workflow_id} failed: {type_name}: {message}")


class WorkflowCancelledError(WorkflowError):
    """The workflow was cancelled (``app.cancel``, or its deadline passed) before it finished."""


class DeadlineExceededError(KitError):
    """Raised in workflow code at a step boundary or wait once the workflow's deadline has passed; the
    workflow then ends CANCELLED (catching it lets code clean up, not continue)."""


class WorkflowStateError(UsageError):
    """The workflow is not in a state that allows the operation (e.g. resuming a running workflow)."""


class StepFailedError(KitError):
    """A recorded step error re-raised on replay when its original class cannot be rebuilt safely.

    Replay creates a subclass named after the original type that also derives from the original's
    nearest built-in exception base, so ``except ValueError`` keeps working on replay.
    """

    type_name: str = "Exception"

    def __init__(self, message: str = "", *, type_name: str | None = None, traceback: str = "") -> None:
        super().__init__(message)
        if type_name is not None:
            self.type_name = type_name
        self.message = message
        self.recorded_traceback = traceback


class LeaseLostError(KitError):
    """This worker no longer owns the workflow (a newer lease epoch exists): the run is abandoned."""


class StorageError(KitError):
    """The storage backend failed; the original driver error is chained as ``__cause__``."""


class DatabaseUnavailableError(StorageError):
    """The database cannot be reached (connection refused, timed out, or lost and not regained)."""


class TransientStorageError(StorageError):
    """A retryable failure: serialization failure (40001), deadlock, lost connection mid-statement."""


class SchemaError(StorageError):
    """The database schema is missing or newer than this version of kit understands."""
