"""JSON text back to values: only natives and registered classes are ever built."""

from __future__ import annotations

import base64
import dataclasses
import enum
import itertools
import json
import uuid
from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from kit.errors import SerializationError
from kit.serialization.registry import (
    _DC_FIELDS,
    _REGISTRY,
    TAG,
    _Fail,
    _is_model_class,
    _short_repr,
    _type_name,
    register_type,
)


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not allowed (JSON cannot hold NaN or infinity)")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)



def _dec_seq(value: list[Any] | tuple[Any, ...]) -> list[Any]:
    out: list[Any] | None = None
    i = 0
    try:
        for i, item in enumerate(value):
            t = type(item)
            dec = item if (t is str or t is int or t is bool or t is float or item is None) else _dec(item)
            if out is None:
                if dec is item:
                    continue
                out = list(value[:i])
            out.append(dec)
    except _Fail as e:
        e.path.append(f"[{i}]")
        raise
    if out is not None:
        return out
    return value if type(value) is list else list(value)  # type: ignore[return-value]


def _dec_dict(value: dict[str, Any]) -> Any:
    if TAG in value:
        return _dec_tagged(value)
    out: dict[str, Any] | None = None
    n = 0
    k: Any = None
    try:
        for k, item in value.items():
            t = type(item)
            dec = item if (t is str or t is int or t is bool or t is float or item is None) else _dec(item)
            if out is None:
                if dec is item:
                    n += 1
                    continue
                out = dict(itertools.islice(value.items(), n))
            out[k] = dec
    except _Fail as e:
        e.path.append(f"[{_short_repr(k)}]")
        raise
    return value if out is None else out


def _dec(value: Any) -> Any:
    t = type(value)
    if t is str or t is int or t is bool or t is float or value is None:
        return value
    if t is dict:
        return _dec_dict(value)
    if t is list or t is tuple:
        return _dec_seq(value)
    raise _Fail(f"unexpected {_type_name(value)} in stored data")


def _payload(value: dict[str, Any], kind: type | tuple[type, ...], field: str = "v") -> Any:
    payload = value.get(field)
    if not isinstance(payload, kind):
        raise _Fail(f"malformed {value.get(TAG)!r} value: {field!r} is {_type_name(payload)}")
    return payload


def _hashable(value: Any, what: str) -> Any:
    try:
        hash(value)
    except TypeError:
        raise _Fail(f"{what} of type {_type_name(value)} is not hashable") from None
    return value


def _dec_items(value: dict[str, Any], tag: str) -> Any:
    items = _payload(value, list)
    try:
        elements = [_hashable(_dec(x), "set element") for x in items]
    except _Fail as e:
        e.path.append("<set element>")
        raise
    return set(elements) if tag == "set" else frozenset(elements)


def _dec_tagged_dict(value: dict[str, Any]) -> dict[Any, Any]:
    out: dict[Any, Any] = {}
    for pair in _payload(value, list):
        if type(pair) is not list or len(pair) != 2:
            raise _Fail("malformed 'dict' value: entries must be [key, value] pairs")
        try:
            k = _hashable(_dec(pair[0]), "dict key")
        except _Fail as e:
            e.path.append("<key>")
            raise
        try:
            out[k] = _dec(pair[1])
        except _Fail as e:
            e.path.append(f"[{_short_repr(k)}]")
            raise
    return out


def _registered(value: dict[str, Any], check: Callable[[type], bool], kind: str) -> type:
    key = value.get("type")
    if not isinstance(key, str):
        raise _Fail(f"malformed {value.get(TAG)!r} value: 'type' is {_type_name(key)}")
    cls = _REGISTRY.get(key)
    if cls is None:
        raise _Fail(
            f"class {key!r} ({kind}) is not registered",
            "call kit.register_type on the class (e.g. decorate it with @kit.register_type) in the "
            "worker process that decodes this value; kit never imports classes named by stored data",
        )
    if not check(cls):
        raise _Fail(f"registered class {key!r} is not a {kind}")
    return cls


def _is_enum_class(cls: type) -> bool:
    return issubclass(cls, enum.Enum)


def _dec_enum(value: dict[str, Any]) -> Any:
    cls = _registered(value, _is_enum_class, "Enum")
    if "v" in value:
        name = _payload(value, str)
        member = cls.__members__.get(name)  # type: ignore[attr-defined]
        if member is None:
            raise _Fail(f"{_type_name(cls)} has no member {name!r}")
        return member
    return cls(_dec(value.get("value")))


def _dec_dataclass(value: dict[str, Any]) -> Any:
    cls = _registered(value, dataclasses.is_dataclass, "dataclass")
    stored = _payload(value, dict)
    fields = _DC_FIELDS.get(cls)
    if fields is None:
        register_type(cls)
        fields = _DC_FIELDS[cls]
    kwargs: dict[str, Any] = {}
    late: dict[str, Any] = {}
    for name, init in fields:
        if name in stored:
            try:
                decoded = _dec(stored[name])
            except _Fail as e:
                e.path.append(f".{name}")
                raise
            (kwargs if init else late)[name] = decoded
    try:
        obj = cls(**kwargs)
        for name, decoded in late.items():
            object.__setattr__(obj, name, decoded)
    except Exception as e:
        raise _Fail(f"rebuilding {_type_name(cls)} failed: {type(e).__name__}: {e}") from e
    return obj


def _dec_model(value: dict[str, Any]) -> Any:
    cls = _registered(value, _is_model_class, "model")
    try:
        payload = _dec(value.get("v"))
    except _Fail as e:
        e.path.append(".model_dump()")
        raise
    try:
        return cls.model_validate(payload)  # type: ignore[attr-defined]
    except Exception as e:
        raise _Fail(f"{_type_name(cls)}.model_validate failed: {type(e).__name__}: {e}") from e


def _dec_datetime(value: dict[str, Any]) -> datetime:
    result = datetime.fromisoformat(_payload(value, str))
    return result.replace(fold=1) if value.get("fold") == 1 else result


def _dec_time(value: dict[str, Any]) -> time:
    result = time.fromisoformat(_payload(value, str))
    return result.replace(fold=1) if value.get("fold") == 1 else result


def _dec_timedelta(value: dict[str, Any]) -> timedelta:
    days, seconds, micros = _payload(value, list)
    if not all(type(x) is int for x in (days, seconds, micros)):
        raise _Fail("malformed 'timedelta' value: expected three integers")
    return timedelta(days=days, seconds=seconds, microseconds=micros)


def _dec_tuple(value: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(_dec_seq(_payload(value, list)))


_DECODERS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "dict": _dec_tagged_dict,
    "datetime": _dec_datetime,
    "date": lambda v: date.fromisoformat(_payload(v, str)),
    "time": _dec_time,
    "timedelta": _dec_timedelta,
    "uuid": lambda v: uuid.UUID(_payload(v, str)),
    "decimal": lambda v: Decimal(_payload(v, str)),
    "bytes": lambda v: base64.b64decode(_payload(v, str), validate=True),
    "set": lambda v: _dec_items(v, "set"),
    "frozenset": lambda v: _dec_items(v, "frozenset"),
    "tuple": _dec_tuple,
    "enum": _dec_enum,
    "dataclass": _dec_dataclass,
    "model": _dec_model,
}


def _dec_tagged(value: dict[str, Any]) -> Any:
    tag = value[TAG]
    handler = _DECODERS.get(tag) if type(tag) is str else None
    if handler is None:
        raise _Fail(f"unknown {TAG} tag {_short_repr(tag)} (written by a newer version of kit?)")
    try:
        return handler(value)
    except _Fail:
        raise
    except Exception as e:
        raise _Fail(f"malformed {tag!r} value: {type(e).__name__}: {e}") from e


def _decode_error(what: str, fail: _Fail) -> SerializationError:
    where = fail.where()
    location = f" at {where}" if where else ""
    hint = f"; {fail.hint}" if fail.hint else ""
    err = SerializationError(f"cannot decode {what}: {fail.detail}{location}{hint}")
    err.__cause__ = fail.__cause__
    return err


def decode(structure: Any, *, what: str = "value") -> Any:
    """Rebuild a value from a structure produced by :func:`encode` (or parsed from JSON)."""
    try:
        return _dec(structure)
    except _Fail as fail:
        raise _decode_error(what, fail) from None
    except RecursionError:
        raise SerializationError(f"cannot decode {what}: it is nested too deeply") from None


def _parse(text: str | bytes | None, what: str) -> Any:
    if text is None or text == "" or text == b"":
        return None
    if not isinstance(text, (str, bytes, bytearray)):
        raise SerializationError(f"cannot decode {what}: expected JSON text, got {_type_name(text)}")
    try:
        return _DECODER.decode(text if isinstance(text, str) else bytes(text).decode("utf-8"))
    except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise SerializationError(f"cannot decode {what}: not valid JSON ({e})") from e


def loads(text: str | None, *, what: str = "value") -> object:
    """Decode JSON text written by :func:`dumps`; ``None`` or ``""`` gives ``None``."""
    return decode(_parse(text, what), what=what)


def decode_args(text: str | None, *, what: str = "arguments") -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Decode text written by :func:`encode_args` into ``(args, kwargs)``; empty text gives ``((), {})``."""
    structure = _parse(text, what)
    if structure is None:
        return (), {}
    if type(structure) is not dict or type(structure.get("args")) is not list or "kwargs" not in structure:
        raise SerializationError(f"cannot decode {what}: expected an object with 'args' and 'kwargs'")
    args = decode(structure["args"], what=what)
    kwargs = decode(structure["kwargs"], what=what)
    if type(kwargs) is not dict or not all(type(k) is str for k in kwargs):
        raise SerializationError(f"cannot decode {what}: 'kwargs' must be an object with string keys")
    return tuple(args), kwargs


def decode_trace(text: str | None) -> dict[str, str] | None:
    """The trace context stored with workflow inputs by :func:`encode_args` (``trace=``), or None. Never
    raises: telemetry must not fail a run whose arguments decode."""
    if not text or '"trace"' not in text:
        return None
    try:
        structure = _DECODER.decode(text)
    except (ValueError, RecursionError, TypeError):
        return None
    trace = structure.get("trace") if type(structure) is dict else None
    if type(trace) is not dict or not all(type(k) is str and type(v) is str for k, v in trace.items()):
        return None
    return trace
