"""Which classes stored data may name: the registry of dataclasses, models, Enums and Exceptions."""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Callable
from typing import Any

from kit.errors import SerializationError

TAG = "__kit__"

_HINT = (
    "use a supported type (None, bool, int, float, str, list, tuple, dict, datetime, date, time, "
    "timedelta, UUID, Decimal, bytes, set, frozenset, Enum, dataclass, pydantic-style model) "
    "or register the class with kit.register_type"
)

# key -> class, class -> key, dataclass -> ((field name, init), ...)
_REGISTRY: dict[str, type] = {}
_KEYS: dict[type, str] = {}
_DC_FIELDS: dict[type, tuple[tuple[str, bool], ...]] = {}


def _type_name(obj: object) -> str:
    cls = obj if isinstance(obj, type) else type(obj)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def _is_model_class(cls: type) -> bool:
    return callable(getattr(cls, "model_validate", None)) and callable(getattr(cls, "model_dump", None))


def register_type(cls: type) -> type:
    """Allow ``cls`` to be decoded from stored data; returns ``cls`` so it works as a decorator.

    Accepts dataclasses, pydantic-style models (``model_validate`` / ``model_dump``), Enum subclasses
    and Exception subclasses. Idempotent; registering another class under the same
    ``module.qualname`` key replaces the earlier one.
    """
    if not isinstance(cls, type):
        raise SerializationError(f"kit.register_type expects a class, got {_type_name(cls)} {cls!r:.80}")
    if dataclasses.is_dataclass(cls):
        _DC_FIELDS[cls] = tuple((f.name, f.init) for f in dataclasses.fields(cls))
    elif not (issubclass(cls, (enum.Enum, BaseException)) or _is_model_class(cls)):
        raise SerializationError(
            f"kit.register_type cannot register {_type_name(cls)}: only dataclasses, pydantic-style "
            "models (model_validate/model_dump), Enum subclasses and Exception subclasses are "
            "supported (apply @kit.register_type above @dataclass, not below it)"
        )
    key = f"{cls.__module__}.{cls.__qualname__}"
    _REGISTRY[key] = cls
    _KEYS[cls] = key
    return cls


def _walk_hint(tp: object, seen: set[int]) -> None:
    if id(tp) in seen:
        return
    seen.add(id(tp))
    if isinstance(tp, (str, typing.ForwardRef)):
        return
    if isinstance(tp, enum.Enum):  # Literal[Color.RED]
        _walk_hint(type(tp), seen)
        return
    if isinstance(tp, type) and typing.get_origin(tp) is None:
        if dataclasses.is_dataclass(tp):
            register_type(tp)
            try:
                field_hints = typing.get_type_hints(tp)
            except Exception:
                field_hints = {f.name: f.type for f in dataclasses.fields(tp)}
            for hint in field_hints.values():
                _walk_hint(hint, seen)
        elif issubclass(tp, enum.Enum) or _is_model_class(tp):
            register_type(tp)
        return
    for arg in typing.get_args(tp):
        _walk_hint(arg, seen)


def register_types_from_hints(fn: Callable[..., Any]) -> None:
    """Register the dataclasses, models and Enums named in ``fn``'s parameter and return hints.

    Generic arguments are walked (``list[X]``, ``dict[str, X]``, ``X | None``, ``tuple[X, ...]``,
    ...), as are the field hints of dataclasses found. Unresolvable forward references are skipped.
    """
    seen: set[int] = set()
    try:
        hints: dict[str, Any] = typing.get_type_hints(fn)
    except Exception:
        # One bad forward reference makes get_type_hints fail as a whole: resolve one at a time.
        hints = {}
        raw = getattr(fn, "__annotations__", None)
        if not isinstance(raw, dict):
            return
        globalns = getattr(fn, "__globals__", None)
        for name, ann in raw.items():
            holder = types.SimpleNamespace(__annotations__={"x": ann})
            try:
                hints[name] = typing.get_type_hints(holder, globalns=globalns)["x"]
            except Exception:
                if not isinstance(ann, str):
                    hints[name] = ann
    for hint in hints.values():
        try:
            _walk_hint(hint, seen)
        except Exception:
            continue


class _Fail(Exception):
    """Internal: an encode/decode failure; ``path`` collects segments innermost first."""

    def __init__(self, detail: str, hint: str = "") -> None:
        super().__init__(detail)
        self.detail = detail
        self.hint = hint
        self.path: list[str] = []

    def where(self) -> str:
        return "".join(reversed(self.path))


def _short_repr(value: object) -> str:
    try:
        text = repr(value)
    except Exception:
        text = f"<{_type_name(value)}>"
    return text if len(text) <= 60 else text[:57] + "..."
