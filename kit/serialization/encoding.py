"""Values to JSON text: the tagged encoding of non-JSON types (see :mod:`kit.serialization`)."""

from __future__ import annotations

import base64
import enum
import itertools
import json
import math
import uuid
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from kit.errors import SerializationError
from kit.serialization.registry import (
    _DC_FIELDS,
    _HINT,
    _KEYS,
    TAG,
    _Fail,
    _is_model_class,
    _short_repr,
    _type_name,
    register_type,
)

_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False, check_circular=False)
_ENCODER_ASCII = json.JSONEncoder(
    separators=(",", ":"), ensure_ascii=True, allow_nan=False, check_circular=False
)


def _enc_seq(value: list[Any] | tuple[Any, ...], in_key: bool) -> list[Any]:
    out: list[Any] | None = None
    i = 0
    try:
        for i, item in enumerate(value):
            t = type(item)
            enc = item if (t is str or t is int or t is bool or item is None) else _enc(item, in_key)
            if out is None:
                if enc is item:
                    continue
                out = list(value[:i])
            out.append(enc)
    except _Fail as e:
        e.path.append(f"[{i}]")
        raise
    if out is not None:
        return out
    return value if type(value) is list else list(value)  # type: ignore[return-value]


def _enc_tagged_dict(value: dict[Any, Any]) -> dict[str, Any]:
    pairs: list[list[Any]] = []
    for k, item in value.items():
        try:
            ek = _enc(k, True)
        except _Fail as e:
            e.path.append(f"<key {_short_repr(k)}>")
            raise
        try:
            ev = _enc(item, False)
        except _Fail as e:
            e.path.append(f"[{_short_repr(k)}]")
            raise
        pairs.append([ek, ev])
    return {TAG: "dict", "v": pairs}


def _enc_dict(value: dict[Any, Any]) -> dict[str, Any]:
    if TAG in value:
        return _enc_tagged_dict(value)
    out: dict[str, Any] | None = None
    n = 0
    k: Any = None
    try:
        for k, item in value.items():
            if type(k) is not str:
                return _enc_tagged_dict(value)
            t = type(item)
            enc = item if (t is str or t is int or t is bool or item is None) else _enc(item, False)
            if out is None:
                if enc is item:
                    n += 1
                    continue
                out = dict(itertools.islice(value.items(), n))
            out[k] = enc
    except _Fail as e:
        e.path.append(f"[{_short_repr(k)}]")
        raise
    return value if out is None else out


def _set_sort_key(encoded: Any) -> str:
    return _ENCODER.encode(encoded)


def _enc_set(value: set[Any] | frozenset[Any], tag: str) -> dict[str, Any]:
    natural: list[Any] | None = None
    kinds = {type(x) for x in value}
    if kinds <= {int, float, Decimal} or kinds == {str}:
        try:
            natural = sorted(value)
        except Exception:  # e.g. Decimal('NaN') refuses ordering
            natural = None
    try:
        if natural is not None:
            return {TAG: tag, "v": [_enc(x, True) for x in natural]}
        items = [_enc(x, True) for x in value]
    except _Fail as e:
        e.path.append("<set element>")
        raise
    items.sort(key=_set_sort_key)
    return {TAG: tag, "v": items}


def _enc_enum(value: enum.Enum) -> dict[str, Any]:
    cls = type(value)
    key = _KEYS.get(cls) or _KEYS[register_type(cls)]
    name = value.name
    if name is not None and cls.__members__.get(name) is value:
        return {TAG: "enum", "type": key, "v": name}
    try:  # composite Flag members have no single name
        payload = _enc(value.value, True)
    except _Fail as e:
        e.path.append(".value")
        raise
    return {TAG: "enum", "type": key, "value": payload}


def _enc_dataclass(value: Any, in_key: bool) -> dict[str, Any]:
    cls = type(value)
    fields = _DC_FIELDS.get(cls)
    if fields is None or cls not in _KEYS:
        register_type(cls)
        fields = _DC_FIELDS[cls]
    out: dict[str, Any] = {}
    for name, _init in fields:
        try:
            out[name] = _enc(getattr(value, name), in_key)
        except AttributeError:
            continue  # an init=False field that was never set
        except _Fail as e:
            e.path.append(f".{name}")
            raise
    return {TAG: "dataclass", "type": _KEYS[cls], "v": out}


def _enc_model(value: Any, in_key: bool) -> dict[str, Any]:
    cls = type(value)
    key = _KEYS.get(cls) or _KEYS[register_type(cls)]
    try:
        try:
            dumped = value.model_dump(mode="json")
        except TypeError:
            dumped = value.model_dump()
    except Exception as e:
        raise _Fail(f"{_type_name(value)}.model_dump() failed: {type(e).__name__}: {e}") from e
    try:
        payload = _enc(dumped, in_key)
    except _Fail as e:
        e.path.append(".model_dump()")
        raise
    return {TAG: "model", "type": key, "v": payload}


def _enc_datetime(value: datetime) -> dict[str, Any]:
    if value.fold:
        return {TAG: "datetime", "v": value.isoformat(), "fold": 1}
    return {TAG: "datetime", "v": value.isoformat()}


def _enc_time(value: time) -> dict[str, Any]:
    if value.fold:
        return {TAG: "time", "v": value.isoformat(), "fold": 1}
    return {TAG: "time", "v": value.isoformat()}


def _enc_other(value: Any, in_key: bool) -> Any:
    """Everything that is not an exact str/int/bool/None/float/list/dict/tuple."""
    if isinstance(value, enum.Enum):
        return _enc_enum(value)
    if isinstance(value, datetime):
        return _enc_datetime(value)
    if isinstance(value, date):
        return {TAG: "date", "v": value.isoformat()}
    if isinstance(value, time):
        return _enc_time(value)
    if isinstance(value, timedelta):
        return {TAG: "timedelta", "v": [value.days, value.seconds, value.microseconds]}
    if isinstance(value, uuid.UUID):
        return {TAG: "uuid", "v": str(value)}
    if isinstance(value, Decimal):
        return {TAG: "decimal", "v": str(value)}
    if isinstance(value, (bytes, bytearray)):
        return {TAG: "bytes", "v": base64.b64encode(value).decode("ascii")}
    if isinstance(value, frozenset):
        return _enc_set(value, "frozenset")
    if isinstance(value, set):
        return _enc_set(value, "set")
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return _enc(float.__float__(value), in_key)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, tuple):
        return _enc(tuple(value), in_key)
    if isinstance(value, list):
        return _enc_seq(list(value), in_key)
    if isinstance(value, dict):
        return _enc_dict(dict(value))
    cls = type(value)
    if hasattr(cls, "__dataclass_fields__") and not isinstance(value, type):
        return _enc_dataclass(value, in_key)
    if _is_model_class(cls) and not isinstance(value, type):
        return _enc_model(value, in_key)
    raise _Fail(f"value of type {_type_name(value)!r} is not supported", _HINT)


def _enc(value: Any, in_key: bool) -> Any:
    t = type(value)
    if t is str or t is int or t is bool or value is None:
        return value
    if t is float:
        if math.isfinite(value):
            return value
        raise _Fail(
            f"float {value!r} is not allowed (JSON cannot hold NaN or infinity)",
            "use None, a string or a Decimal instead",
        )
    if t is dict:
        return _enc_dict(value)
    if t is list:
        return _enc_seq(value, in_key)
    if t is tuple:
        if in_key:  # must stay hashable when decoded
            return {TAG: "tuple", "v": _enc_seq(value, True)}
        return _enc_seq(value, False)
    return _enc_other(value, in_key)


def _encode_error(what: str, fail: _Fail) -> SerializationError:
    where = fail.where()
    location = f" at {where}" if where else ""
    hint = f"; {fail.hint}" if fail.hint else ""
    err = SerializationError(f"cannot serialize {what}: {fail.detail}{location}{hint}")
    err.__cause__ = fail.__cause__
    return err


def encode(value: object, *, what: str = "value") -> Any:
    """Turn ``value`` into a structure ``json`` can write (may share parts with ``value``)."""
    try:
        return _enc(value, False)
    except _Fail as fail:
        raise _encode_error(what, fail) from None
    except RecursionError:
        raise SerializationError(
            f"cannot serialize {what}: it is nested too deeply or contains a reference cycle"
        ) from None


def _to_text(structure: Any, what: str) -> str:
    try:
        text = _ENCODER.encode(structure)
    except (ValueError, TypeError, RecursionError) as e:
        raise SerializationError(f"cannot serialize {what}: {e}") from e
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates: escape them so the text is valid UTF-8
            text = _ENCODER_ASCII.encode(structure)
    return text


def dumps(value: object, *, what: str = "value") -> str:
    """Serialize ``value`` to compact, deterministic JSON text.

    ``what`` names the value in error messages, e.g. ``"argument 'x' of workflow 'checkout'"``.
    """
    return _to_text(encode(value, what=what), what)


def encode_args(args: tuple[Any, ...], kwargs: dict[str, Any], *, what: str,
                trace: dict[str, str] | None = None) -> str:
    """Serialize call arguments as ``{"args": [...], "kwargs": {...}}`` JSON text.

    ``what`` names the callee, e.g. ``"workflow 'checkout'"``; errors name the argument too. ``trace``:
    the submitter's trace context (W3C headers, :mod:`kit.telemetry`), stored beside them as ``"trace"``
    (decoders of the arguments ignore it; :func:`~kit.serialization.decode_trace` reads it).
    """
    enc_args = [encode(a, what=f"positional argument {i} of {what}") for i, a in enumerate(args)]
    enc_kwargs: dict[str, Any] = {k: encode(v, what=f"argument {k!r} of {what}") for k, v in kwargs.items()}
    if TAG in enc_kwargs:
        enc_kwargs = {TAG: "dict", "v": [[k, v] for k, v in enc_kwargs.items()]}
    if trace:
        return _to_text({"args": enc_args, "kwargs": enc_kwargs, "trace": dict(trace)}, what)
    return _to_text({"args": enc_args, "kwargs": enc_kwargs}, what)
