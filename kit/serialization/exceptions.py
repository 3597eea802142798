"""Exceptions as JSON records, and back: recorded step errors are re-raised on replay."""

from __future__ import annotations

import ast
import builtins
import traceback as _traceback
import typing
from typing import Any

from kit.errors import StepFailedError
from kit.serialization.registry import _REGISTRY


def exception_to_record(exc: BaseException) -> dict[str, Any]:
    """Describe ``exc`` as a JSON-compatible dict (type, module, message, traceback, built-in bases)."""
    cls = type(exc)
    try:
        message = str(exc)
    except Exception:
        message = f"<unprintable {cls.__qualname__}>"
    try:
        tb = "".join(_traceback.format_exception(cls, exc, exc.__traceback__))
    except Exception:
        tb = ""
    bases = [c.__name__ for c in cls.__mro__ if c.__module__ == "builtins" and issubclass(c, BaseException)]
    return {
        "type": cls.__qualname__,
        "module": cls.__module__,
        "message": message,
        "traceback": tb,
        "bases": bases,
    }


def _builtin_exception(name: object) -> type[BaseException] | None:
    if not isinstance(name, str) or not name.isidentifier():
        return None
    obj = getattr(builtins, name, None)
    if isinstance(obj, type) and issubclass(obj, BaseException):
        return obj
    return None


def _exact(cls: type[BaseException], message: str, literal: bool) -> BaseException | None:
    try:
        exc = cls(message)
        if str(exc) == message:
            return exc
    except Exception:
        pass
    if literal and len(message) <= 1000:  # KeyError('x') prints as "'x'": rebuild it from the literal
        try:
            exc = cls(ast.literal_eval(message))
            if str(exc) == message:
                return exc
        except Exception:
            pass
    return None


def _recorded_str(self: BaseException) -> str:
    message = self.__dict__.get("message")
    return message if isinstance(message, str) else BaseException.__str__(self)


_DYNAMIC: dict[tuple[str, str, str], type[StepFailedError]] = {}


def _dynamic_class(module: str, type_name: str, base: type[BaseException] | None) -> type[StepFailedError]:
    cache_key = (module, type_name, base.__name__ if base is not None else "")
    cls = _DYNAMIC.get(cache_key)
    if cls is None:
        bases: tuple[type, ...] = (StepFailedError,) if base is None else (StepFailedError, base)
        namespace = {
            "__module__": module,
            "__qualname__": type_name,
            "__str__": _recorded_str,
            "__doc__": f"Replay stand-in for {module}.{type_name} (not registered with kit.register_type).",
            "type_name": f"{module}.{type_name}",
        }
        cls = typing.cast(
            "type[StepFailedError]", type(type_name.rpartition(".")[2] or "StepFailedError", bases, namespace)
        )
        if len(_DYNAMIC) >= 4096:
            _DYNAMIC.clear()
        _DYNAMIC[cache_key] = cls
    return cls


def exception_from_record(rec: dict[str, Any]) -> BaseException:
    """Rebuild an exception from :func:`exception_to_record` output without importing anything.

    Built-in exceptions and registered Exception classes come back as themselves; anything else
    becomes a :class:`~kit.errors.StepFailedError` subclass named after the original that also
    derives from its nearest built-in base. ``str()`` always equals the recorded message, and the
    recorded traceback is available as ``.recorded_traceback``.
    """
    if not isinstance(rec, dict):
        rec = {}
    type_name = rec.get("type")
    if not isinstance(type_name, str) or not type_name:
        type_name = "Exception"
    module = rec.get("module")
    if not isinstance(module, str) or not module:
        module = "builtins"
    message = rec.get("message")
    if not isinstance(message, str):
        message = "" if message is None else str(message)
    tb = rec.get("traceback")
    if not isinstance(tb, str):
        tb = ""
    recorded_bases = rec.get("bases")
    if not isinstance(recorded_bases, list):
        recorded_bases = []

    exc: BaseException | None = None
    if module == "builtins":
        builtin = _builtin_exception(type_name)
        if builtin is not None:
            exc = _exact(builtin, message, literal=True)
    else:
        registered = _REGISTRY.get(f"{module}.{type_name}")
        if isinstance(registered, type) and issubclass(registered, BaseException):
            exc = _exact(registered, message, literal=False)

    if exc is None:
        candidates: list[type[BaseException] | None] = []
        for name in recorded_bases:
            base = _builtin_exception(name) if name not in ("BaseException", "Exception") else None
            if base is not None and base not in candidates:
                candidates.append(base)
        candidates.append(None)
        for base in candidates:
            try:
                exc = _dynamic_class(module, type_name, base)(
                    message, type_name=f"{module}.{type_name}", traceback=tb
                )
                break
            except Exception:
                continue
        if exc is None:
            exc = StepFailedError(message, type_name=f"{module}.{type_name}", traceback=tb)
    try:
        exc.recorded_traceback = tb  # type: ignore[attr-defined]
    except Exception:
        pass
    return exc
