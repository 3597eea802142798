"""JSON serialization of workflow inputs, step outputs and workflow results.

Values are stored in PostgreSQL as compact JSON text. Nothing is ever pickled, and decoding never
imports a module or instantiates a class named by the stored data unless the application registered
that class with :func:`register_type` (dataclasses, models and Enums met while *encoding* are
registered automatically, so the process that wrote a value can always read it back; other
processes must register the class, e.g. by importing the module that decorates it with
``@kit.register_type``, or through :func:`register_types_from_hints`).

Format
    JSON natives (``None``, ``bool``, ``int``, finite ``float``, ``str``, ``list``, ``dict`` with
    ``str`` keys) are stored as themselves. Everything else is a tagged object
    ``{"__kit__": TAG, "v": PAYLOAD}`` (plus ``"type"`` for registered classes):

    ============  ==========================================================================
    datetime      ISO 8601 text; the UTC offset is kept (named zones become fixed offsets),
                  naive stays naive; ``"fold": 1`` is added when set
    date, time    ISO 8601 text (an aware ``time`` keeps its offset)
    timedelta     ``[days, seconds, microseconds]`` (exact)
    uuid          canonical text
    decimal       ``str(value)`` (exact, keeps precision and exponent)
    bytes         base64 text; ``bytearray`` comes back as ``bytes``
    set           list of elements, sorted (naturally for all-number / all-str sets, otherwise by
    frozenset     their JSON text) so the output does not depend on hash order
    tuple         only inside set elements and dict keys, where hashability must survive
    dict          ``[[key, value], ...]``: used when a key is not a ``str`` or when the dict
                  contains the reserved key ``"__kit__"``
    enum          ``"type"`` = class key, ``"v"`` = member name (composite flags use ``"value"``)
    dataclass     ``"type"`` = class key, ``"v"`` = ``{field: value}``
    model         ``"type"`` = class key, ``"v"`` = ``model_dump(mode="json")`` (pydantic-style)
    ============  ==========================================================================

    The class key is ``f"{cls.__module__}.{cls.__qualname__}"``.

Decisions worth knowing
    * Tuples (including namedtuples) come back as lists, except inside set elements and dict keys.
    * Dict keys may be any value kit can encode whose decoded form is hashable (``int``, ``bool``,
      ``float``, ``UUID``, ``date``, ``Enum``, tuples, frozen dataclasses, ...). Such dicts use the
      tagged ``dict`` form so keys keep their type. Keys kit cannot encode raise SerializationError.
    * Subclasses of ``str``/``int``/``float``/``list``/``dict``/``tuple`` and of the date/time types
      (other than Enums, which keep their class) come back as the base type.
    * NaN and infinities are rejected (JSON cannot hold them), both when writing and reading.
    * Decoding a dataclass calls its ``__init__`` with the stored init fields (so new fields with
      defaults work for old data), sets stored ``init=False`` fields afterwards, and ignores stored
      fields the class no longer has. Models are rebuilt with ``cls.model_validate``.
    * :func:`encode` may return (parts of) its input unchanged when nothing needs tagging, so treat
      its result as read-only.
"""

from __future__ import annotations

import ast
import base64
import builtins
import dataclasses
import enum
import itertools
import json
import math
import traceback as _traceback
import types
import typing
import uuid
from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from kit.errors import SerializationError, StepFailedError

__all__ = [
    "decode",
    "decode_args",
    "dumps",
    "encode",
    "encode_args",
    "exception_from_record",
    "exception_to_record",
    "loads",
    "register_type",
    "register_types_from_hints",
]

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

_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False, check_circular=False)
_ENCODER_ASCII = json.JSONEncoder(
    separators=(",", ":"), ensure_ascii=True, allow_nan=False, check_circular=False
)


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not allowed (JSON cannot hold NaN or infinity)")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


# --------------------------------------------------------------------------------------------
# registry


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


# --------------------------------------------------------------------------------------------
# encoding


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


def encode_args(args: tuple[Any, ...], kwargs: dict[str, Any], *, what: str) -> str:
    """Serialize call arguments as ``{"args": [...], "kwargs": {...}}`` JSON text.

    ``what`` names the callee, e.g. ``"workflow 'checkout'"``; errors name the argument too.
    """
    enc_args = [encode(a, what=f"positional argument {i} of {what}") for i, a in enumerate(args)]
    enc_kwargs: dict[str, Any] = {k: encode(v, what=f"argument {k!r} of {what}") for k, v in kwargs.items()}
    if TAG in enc_kwargs:
        enc_kwargs = {TAG: "dict", "v": [[k, v] for k, v in enc_kwargs.items()]}
    return _to_text({"args": enc_args, "kwargs": enc_kwargs}, what)


# --------------------------------------------------------------------------------------------
# decoding


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


# --------------------------------------------------------------------------------------------
# exceptions


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
