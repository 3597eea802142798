"""What an application declared: its workflow definitions and queue declarations.

The worker runtime claims only workflows whose names are registered here and runs them with the
registered function; the features resolve what a caller passes to ``start``/``enqueue`` through
:meth:`Definitions.resolve`. The ``Kit`` facade fills it through its decorators and ``app.queue``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kit.errors import ConfigError, UnknownWorkflowError, UsageError
from kit.storage import QueueSpec


@dataclass(frozen=True)
class WorkflowDef:
    """A registered workflow: its name, its function and its default deadline."""

    name: str
    fn: Callable[..., Any]
    timeout: float | None = None  # default deadline (seconds from submission) of each run


class Definitions:
    """The workflows and queues one application declared (what its worker may claim and run)."""

    def __init__(self) -> None:
        self.workflows: dict[str, WorkflowDef] = {}
        self.queues: dict[str, QueueSpec] = {}  # app.queue declarations, by name
        self.queues_stored = False  # the declarations above are stored in the database (kit.queues)

    def add(self, wf: WorkflowDef) -> None:
        """Register ``wf``; a second function under the same name is a ConfigError."""
        existing = self.workflows.get(wf.name)
        if existing is not None and existing.fn is not wf.fn:
            raise ConfigError(f"two workflows are named '{wf.name}': give one of them name=...")
        self.workflows[wf.name] = wf

    def names(self) -> list[str]:
        return list(self.workflows)

    def get(self, name: str) -> WorkflowDef:
        """The definition registered as ``name``; UnknownWorkflowError naming the known ones otherwise."""
        try:
            return self.workflows[name]
        except KeyError:
            raise UnknownWorkflowError(
                f"workflow '{name}' is not registered in this application; known: {', '.join(self.workflows) or 'none'}"
            ) from None

    def resolve(self, fn: Callable[..., Any] | str) -> WorkflowDef:
        """The definition of a decorated workflow function or of a registered name."""
        if isinstance(fn, str):
            return self.get(fn)
        name = getattr(fn, "__kit_workflow__", None)
        if name is None:
            raise UsageError(f"{getattr(fn, '__qualname__', fn)!r} is not a workflow: decorate it with @app.workflow()")
        return self.get(name)

    def declare_queue(self, spec: QueueSpec) -> None:
        """Record a queue declaration; it is stored in the database again before the next use."""
        if self.queues.get(spec.name) not in (None, spec):
            raise ConfigError(f"queue {spec.name!r} is declared twice with different settings")
        self.queues[spec.name] = spec
        self.queues_stored = False

    def queue_names(self) -> list[str]:
        return list(self.queues)
