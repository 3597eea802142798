"""The instrumentation hook: how traces and metrics integrations see runs, steps and claims.

Nothing is instrumented unless an integration installs a hook (:mod:`kit.integrations.otel`,
:mod:`kit.integrations.prometheus`). The engine and the runtime read the module attribute :data:`hook`
once per step or run and go their plain way when it is ``None``: that check is all the instrumentation
costs when no integration is installed.

A hook receives the engine's objects as they are (a ``kit.engine.WorkflowContext``, the step's name and
position, a ``kit.storage.Claim``); it must never change what happens, only watch it. Its ``workflow`` and
``step`` methods *wrap* the run: they call ``run`` exactly once and return what it returns (or let what it
raises pass).
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol


class Hook(Protocol):
    """What an integration implements (every method is called on the thread doing the work)."""

    def workflow(self, ctx: Any, run: Callable[[], Any]) -> Any:
        """Wrap one run of a workflow in this process (``ctx``: its ``WorkflowContext``; ``run()`` returns
        its ``Outcome``: status None when the run was abandoned)."""

    def step(self, ctx: Any, step_id: int, name: str, fn: Callable[..., Any],
             run: Callable[[Callable[..., Any]], Any]) -> Any:
        """Wrap a step that runs (not a replayed one): ``run(body)`` runs its attempts, calling ``body``
        (``fn`` or a wrapper of it with the same signature) once per attempt, and records it."""

    def step_async(self, ctx: Any, step_id: int, name: str, fn: Callable[..., Any],
                   run: Callable[[Callable[..., Any]], Awaitable[Any]]) -> Awaitable[Any]:
        """``step`` for an ``async def`` step: returns an awaitable."""

    def claimed(self, claims: Sequence[Any], ctxs: Sequence[Any], seconds: float) -> None:
        """A claim round of a worker took ``seconds`` and returned ``claims`` (``kit.storage.Claim``, run
        as ``ctxs``, before any of them starts)."""

    def carrier(self) -> dict[str, str] | None:
        """The trace context of the caller, to be stored with a workflow it submits now (None: none)."""


# The installed hook, or None. Read it once into a local before use: it may be uninstalled meanwhile.
hook: Hook | None = None

_installed: list[Hook] = []
_lock = threading.Lock()


def install(new: Hook) -> None:
    """Install ``new`` (process-wide). Several hooks may be installed; each sees every run and step."""
    global hook
    with _lock:
        if any(h is new for h in _installed):
            return
        _installed.append(new)
        hook = _installed[0] if len(_installed) == 1 else _Chain(tuple(_installed))


def uninstall(old: Hook) -> None:
    """Remove ``old``; with no hook left, instrumentation costs nothing again."""
    global hook
    with _lock:
        _installed[:] = [h for h in _installed if h is not old]
        hook = None if not _installed else _installed[0] if len(_installed) == 1 else _Chain(tuple(_installed))


def installed() -> tuple[Hook, ...]:
    with _lock:
        return tuple(_installed)


def carrier() -> dict[str, str] | None:
    """The caller's trace context to store with a workflow submitted now; None without a hook."""
    h = hook
    return None if h is None else h.carrier()


class _Chain:
    """Several hooks as one: each wraps the next, the first outermost."""

    def __init__(self, hooks: tuple[Hook, ...]) -> None:
        self.hooks = hooks

    def workflow(self, ctx: Any, run: Callable[[], Any]) -> Any:
        for h in reversed(self.hooks):
            run = _bind_workflow(h, ctx, run)
        return run()

    def step(self, ctx: Any, step_id: int, name: str, fn: Callable[..., Any],
             run: Callable[[Callable[..., Any]], Any]) -> Any:
        for h in reversed(self.hooks):
            run = _bind_step(h, ctx, step_id, name, run)
        return run(fn)

    def step_async(self, ctx: Any, step_id: int, name: str, fn: Callable[..., Any],
                   run: Callable[[Callable[..., Any]], Awaitable[Any]]) -> Awaitable[Any]:
        for h in reversed(self.hooks):
            run = _bind_step_async(h, ctx, step_id, name, run)
        return run(fn)

    def claimed(self, claims: Sequence[Any], ctxs: Sequence[Any], seconds: float) -> None:
        for h in self.hooks:
            h.claimed(claims, ctxs, seconds)

    def carrier(self) -> dict[str, str] | None:
        for h in self.hooks:
            found = h.carrier()
            if found:
                return found
        return None


def _bind_workflow(h: Hook, ctx: Any, run: Callable[[], Any]) -> Callable[[], Any]:
    return lambda: h.workflow(ctx, run)


def _bind_step(h: Hook, ctx: Any, step_id: int, name: str,
               run: Callable[[Callable[..., Any]], Any]) -> Callable[[Callable[..., Any]], Any]:
    return lambda body: h.step(ctx, step_id, name, body, run)


_AsyncRun = Callable[[Callable[..., Any]], Awaitable[Any]]


def _bind_step_async(h: Hook, ctx: Any, step_id: int, name: str, run: _AsyncRun) -> _AsyncRun:
    return lambda body: h.step_async(ctx, step_id, name, body, run)
