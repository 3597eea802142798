"""Tests for kit.serialization: JSON round trips, safe decoding, error messages, exception records."""

import builtins
import dataclasses
import enum
import importlib
import json
import sys
import uuid
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import NamedTuple, Optional

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kit.errors import SerializationError, StepFailedError, WorkflowError
from kit.serialization import (
    decode,
    decode_args,
    dumps,
    encode,
    encode_args,
    exception_from_record,
    exception_to_record,
    loads,
    register_type,
    register_types_from_hints,
)

# ---------------------------------------------------------------------------------------------
# module-level fixtures (classes)


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Perm(enum.Flag):
    R = 1
    W = 2


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


@dataclasses.dataclass
class Point:
    x: int
    y: int


@register_type
@dataclasses.dataclass
class Line:
    start: Point
    end: Point
    label: str = ""
    tags: list = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class FrozenKey:
    name: str
    parts: tuple


@dataclasses.dataclass
class WithLateField:
    a: int
    b: int = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.b = self.a * 2


class FakeModel:
    """Minimal pydantic-style model: classmethod model_validate + instance model_dump(mode=...)."""

    def __init__(self, name: str, when: datetime) -> None:
        self.name = name
        self.when = when

    @classmethod
    def model_validate(cls, obj: dict) -> "FakeModel":
        when = obj["when"]
        return cls(name=obj["name"], when=datetime.fromisoformat(when) if isinstance(when, str) else when)

    def model_dump(self, *, mode: str = "python") -> dict:
        if mode == "json":
            return {"name": self.name, "when": self.when.isoformat()}
        return {"name": self.name, "when": self.when}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FakeModel) and (self.name, self.when) == (other.name, other.when)


class OldStyleModel:
    """model_dump() without a ``mode`` parameter: its python-mode output gets encoded by kit."""

    def __init__(self, items: dict) -> None:
        self.items = items

    @classmethod
    def model_validate(cls, obj: dict) -> "OldStyleModel":
        return cls(obj["items"])

    def model_dump(self) -> dict:
        return {"items": self.items}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OldStyleModel) and self.items == other.items


class PaymentDeclined(ValueError):
    pass


class DiskGone(OSError):
    pass


@register_type
class RegisteredError(RuntimeError):
    pass


@register_type
class NeedsTwoArgs(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code}: {reason}")


class Pair(NamedTuple):
    a: int
    b: str


def rt(value):
    return loads(dumps(value))


# ---------------------------------------------------------------------------------------------
# round trips


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        False,
        0,
        -(2**70),
        1.5,
        -0.0,
        1e308,
        "",
        "héllo ✓ \x00 \n",
        [],
        {},
        [1, "a", None, [2, [3]]],
        {"a": {"b": [1, {"c": None}]}},
        date(2024, 2, 29),
        time(13, 14, 15, 123456),
        time(1, 2, tzinfo=timezone(timedelta(hours=-3))),
        timedelta(days=-3, seconds=5, microseconds=7),
        timedelta(microseconds=1),
        uuid.UUID("12345678-1234-5678-1234-567812345678"),
        b"",
        b"\x00\xffbinary",
        {1, 2, 3},
        {"b", "a"},
        frozenset({1, "a", None}),
        set(),
        Color.RED,
        Level.HIGH,
        Perm.R,
        Perm.R | Perm.W,
    ],
)
def test_round_trip_scalars_and_containers(value):
    back = rt(value)
    assert back == value
    assert type(back) is type(value)


def test_tuples_come_back_as_lists():
    assert rt((1, (2, 3))) == [1, [2, 3]]
    assert rt(Pair(1, "x")) == [1, "x"]
    # ... except where hashability matters: set elements and dict keys
    assert rt({(1, (2, 3))}) == {(1, (2, 3))}
    assert rt({(1, 2): "a"}) == {(1, 2): "a"}


def test_bytearray_comes_back_as_bytes():
    back = rt(bytearray(b"abc"))
    assert back == b"abc" and type(back) is bytes


def test_datetimes_keep_awareness_and_offset():
    naive = datetime(2024, 1, 2, 3, 4, 5, 678901)
    back = rt(naive)
    assert back == naive and back.tzinfo is None

    aware = datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    back = rt(aware)
    assert back == aware
    assert back.utcoffset() == timedelta(hours=5, minutes=30)

    utc = datetime(2024, 6, 1, tzinfo=timezone.utc)
    assert rt(utc).utcoffset() == timedelta(0)
    assert rt(utc).tzinfo is not None
    assert rt(utc.replace(tzinfo=None)).tzinfo is None

    folded = datetime(2024, 11, 3, 1, 30, fold=1)
    assert rt(folded).fold == 1


def test_decimal_keeps_precision_and_exponent():
    for text in ["0.1", "1.50", "-0", "1E+3", "3.14159265358979323846264338327950288419716939937510", "NaN"]:
        back = rt(Decimal(text))
        assert type(back) is Decimal
        assert str(back) == text


def test_nested_structure_round_trip():
    value = {
        "when": [datetime(2024, 1, 1, tzinfo=timezone.utc), date(2024, 1, 1)],
        "ids": {uuid.UUID(int=1), uuid.UUID(int=2)},
        "money": {"EUR": Decimal("10.00")},
        "blob": [b"x", {"y": b"z"}],
        "color": Color.GREEN,
        "line": Line(Point(0, 0), Point(1, 2), "diag", [Decimal("1.1")]),
    }
    assert rt(value) == value


def test_plain_values_are_not_copied():
    plain = {"a": [1, "x", None, {"b": 2.5}], "c": True}
    assert encode(plain) is plain
    assert decode(plain) is plain
    assert dumps(plain) == json.dumps(plain, separators=(",", ":"))


def test_output_is_compact_and_deterministic():
    assert dumps({"a": [1, 2], "é": "ü"}) == '{"a":[1,2],"é":"ü"}'
    # sets are sorted, independent of hash order
    assert dumps({"b", "a", "c"}) == '{"__kit__":"set","v":["a","b","c"]}'
    assert dumps({3, 1, 2}) == dumps({2, 3, 1})
    assert dumps({"x", 1, None}) == dumps({None, 1, "x"})


def test_lone_surrogates_produce_valid_utf8():
    text = dumps(["ok", "\ud800"])
    text.encode("utf-8")
    assert loads(text) == ["ok", "\ud800"]


# ---------------------------------------------------------------------------------------------
# reserved key and dict keys


def test_reserved_key_is_escaped():
    tricky = {"__kit__": "datetime", "v": "2024-01-01"}
    assert rt(tricky) == tricky
    nested = [{"__kit__": {"__kit__": 1}}, {"x": {"__kit__": "dataclass", "type": "os.system", "v": {}}}]
    assert rt(nested) == nested


def test_non_str_keys_use_tagged_dict():
    value = {1: "a", 2: {"b": 3}, Color.RED: [1], uuid.UUID(int=5): None, (1, "t"): "tuple"}
    back = rt(value)
    assert back == value
    assert list(back) == list(value)


def test_frozen_dataclass_as_key_and_set_element():
    key = FrozenKey("k", (1, (2, 3)))
    assert rt({key: 1}) == {key: 1}
    assert rt({key}) == {key}


def test_unsupported_dict_key_is_rejected():
    with pytest.raises(SerializationError) as info:
        dumps({"ok": 1, object(): 2})
    assert "object" in str(info.value) and "<key" in str(info.value)


# ---------------------------------------------------------------------------------------------
# dataclasses, models, enums


def test_dataclass_auto_registered_on_encode():
    @dataclasses.dataclass
    class Local:
        n: int
        when: date

    value = Local(3, date(2020, 1, 1))
    text = dumps(value)
    assert json.loads(text)["type"] == f"{Local.__module__}.{Local.__qualname__}"
    assert loads(text) == value


def test_explicitly_registered_dataclass_with_nested_dataclass_fields():
    value = Line(Point(1, 2), Point(3, 4), "l", [Point(5, 6)])
    back = rt(value)
    assert back == value
    assert type(back.start) is Point


def test_dataclass_init_false_field_and_schema_evolution():
    value = WithLateField(4)
    back = rt(value)
    assert back == value and back.b == 8

    @register_type
    @dataclasses.dataclass
    class Evolving:
        a: int
        added: str = "default"

    key = f"{Evolving.__module__}.{Evolving.__qualname__}"
    old = json.dumps({"__kit__": "dataclass", "type": key, "v": {"a": 1, "removed": 2}})
    assert loads(old) == Evolving(1, "default")


def test_models_round_trip():
    model = FakeModel("m", datetime(2024, 5, 6, 7, 8, tzinfo=timezone.utc))
    text = dumps(model)
    assert json.loads(text)["__kit__"] == "model"
    assert rt(model) == model
    assert rt([model, {"m": model}]) == [model, {"m": model}]

    old = OldStyleModel({"at": date(2024, 1, 1), "__kit__": 1})
    assert rt(old) == old


def test_register_type_rejects_other_classes():
    class Plain:
        pass

    with pytest.raises(SerializationError):
        register_type(Plain)
    with pytest.raises(SerializationError):
        register_type(42)  # type: ignore[arg-type]
    assert register_type(Point) is Point
    assert register_type(Point) is Point  # idempotent


def _crafted(tag: str, key: str, v: object = None) -> str:
    return json.dumps({"__kit__": tag, "type": key, "v": {} if v is None else v})


def test_unregistered_class_is_rejected_without_importing(monkeypatch):
    real_import = builtins.__import__
    attempted: list = []

    def recording_import(name, *args, **kwargs):
        attempted.append(name)
        return real_import(name, *args, **kwargs)

    def recording_import_module(name, *args, **kwargs):
        attempted.append(name)
        raise AssertionError("import_module called")

    before = set(sys.modules)
    texts = [
        _crafted("dataclass", "os.system"),
        _crafted("model", "subprocess.Popen"),
        _crafted("enum", "signal.Signals", "SIGKILL"),
        _crafted("dataclass", "kit_never_imported_module.Thing"),
    ]
    errors = []
    with monkeypatch.context() as patch:
        patch.setattr(importlib, "import_module", recording_import_module)
        patch.setattr(builtins, "__import__", recording_import)  # last: setattr itself imports
        for text in texts:
            try:
                loads(text, what="output of step 'x'")
            except SerializationError as e:
                errors.append(str(e))
    assert attempted == []
    assert len(errors) == len(texts)
    for message in errors:
        assert "not registered" in message and "kit.register_type" in message
        assert "output of step 'x'" in message
    assert "kit_never_imported_module" not in sys.modules
    assert set(sys.modules) == before


def test_registered_class_of_wrong_kind_is_rejected():
    key = f"{Color.__module__}.{Color.__qualname__}"
    with pytest.raises(SerializationError, match="not a dataclass"):
        loads(_crafted("dataclass", key))
    with pytest.raises(SerializationError, match="not a model"):
        loads(_crafted("model", f"{RegisteredError.__module__}.{RegisteredError.__qualname__}"))


def test_register_types_from_hints():
    @dataclasses.dataclass
    class A:
        inner: "B"  # noqa: F821 - resolved below through the dataclass's own hints

    @dataclasses.dataclass
    class B:
        n: int

    @dataclasses.dataclass
    class C:
        n: int

    class Mode(enum.Enum):
        X = 1

    def key(cls):
        return f"{cls.__module__}.{cls.__qualname__}"

    def workflow(a: list[A], c: Optional[dict[str, C]], m: "Mode | None", missing: "Nope") -> tuple[C, ...]:  # noqa: F821, UP045
        return ()  # never called: only its type hints are read

    for cls in (A, C):
        with pytest.raises(SerializationError):
            loads(_crafted("dataclass", key(cls)))
    register_types_from_hints(workflow)  # "Nope" cannot be resolved: skipped, not raised
    assert loads(_crafted("dataclass", key(C), {"n": 1})) == C(1)
    assert loads(
        _crafted("dataclass", key(A), {"inner": {"__kit__": "dataclass", "type": key(C), "v": {"n": 2}}})
    )

    register_types_from_hints(len)  # no hints at all: nothing happens
    register_types_from_hints(lambda x: x)


# ---------------------------------------------------------------------------------------------
# errors


def test_unsupported_value_message_names_what_path_and_type():
    with pytest.raises(SerializationError) as info:
        dumps([1, 2, {"when": lambda: None}], what="argument 'x' of workflow 'checkout'")
    message = str(info.value)
    assert "argument 'x' of workflow 'checkout'" in message
    assert "at [2]['when']" in message
    assert "function" in message
    assert "kit.register_type" in message


def test_unsupported_value_inside_dataclass_and_set():
    @dataclasses.dataclass
    class Holder:
        items: list

    with pytest.raises(SerializationError) as info:
        dumps(Holder([1, object()]))
    assert "at .items[1]" in str(info.value)

    with pytest.raises(SerializationError) as info:
        dumps({"s": frozenset({1, 2.0, float("inf")})})
    assert "['s']<set element>" in str(info.value)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_floats_rejected(bad):
    with pytest.raises(SerializationError, match="NaN or infinity") as info:
        dumps({"a": [bad]})
    assert "['a'][0]" in str(info.value)


def test_loads_rejects_nan_and_garbage():
    for text in ["NaN", "[Infinity]", "{", "[1,]", "\ufeff", '{"__kit__":"nope"}', '{"__kit__":3}']:
        with pytest.raises(SerializationError):
            loads(text)
    assert loads(None) is None
    assert loads("") is None
    assert loads("null") is None


def test_reference_cycle_and_deep_nesting_rejected():
    cyclic: list = []
    cyclic.append(cyclic)
    with pytest.raises(SerializationError, match="cycle"):
        dumps(cyclic)
    with pytest.raises(SerializationError):
        loads("[" * 100_000 + "]" * 100_000)


def test_other_unsupported_values():
    for bad in [object(), len, sys, Point, iter([]), Exception("x"), 1j]:
        with pytest.raises(SerializationError):
            dumps(bad)


# ---------------------------------------------------------------------------------------------
# call arguments


def test_args_round_trip():
    args = (1, Point(1, 2), [date(2024, 1, 1)])
    kwargs = {"when": datetime(2024, 1, 1, tzinfo=timezone.utc), "__kit__": "odd", "n": None}
    back_args, back_kwargs = decode_args(encode_args(args, kwargs, what="workflow 'w'"))
    assert back_args == args and type(back_args) is tuple
    assert back_kwargs == kwargs
    assert decode_args(encode_args((), {}, what="workflow 'w'")) == ((), {})
    assert decode_args(None) == ((), {})


def test_args_errors_name_the_argument():
    with pytest.raises(SerializationError, match=r"argument 'conn' of workflow 'checkout'.*at \[0\]"):
        encode_args((), {"conn": [object()]}, what="workflow 'checkout'")
    with pytest.raises(SerializationError, match="positional argument 1 of workflow 'checkout'"):
        encode_args((1, object()), {}, what="workflow 'checkout'")
    for bad in ["[1, 2]", '{"args": 1, "kwargs": {}}', '{"args": [], "kwargs": []}']:
        with pytest.raises(SerializationError):
            decode_args(bad)


# ---------------------------------------------------------------------------------------------
# exception records


def _raise(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:
        return caught


def test_exception_record_shape():
    rec = exception_to_record(_raise(ValueError("bad value")))
    assert rec["type"] == "ValueError" and rec["module"] == "builtins"
    assert rec["message"] == "bad value"
    assert rec["bases"] == ["ValueError", "Exception", "BaseException"]
    assert "Traceback" in rec["traceback"] and "ValueError: bad value" in rec["traceback"]
    json.dumps(rec)
    assert exception_to_record(PaymentDeclined("x"))["bases"] == ["ValueError", "Exception", "BaseException"]


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("bad"),
        KeyError("missing"),
        KeyError(42),
        TypeError(),
        OSError(2, "No such file"),
        ZeroDivisionError("division by zero"),
        KeyboardInterrupt(),
    ],
)
def test_builtin_exceptions_rebuilt_exactly(exc):
    rec = exception_to_record(_raise(exc))
    back = exception_from_record(json.loads(json.dumps(rec)))
    assert type(back) is type(exc)
    assert str(back) == str(exc)
    assert back.recorded_traceback == rec["traceback"]


def test_custom_exception_becomes_step_failed_error_with_builtin_base():
    rec = exception_to_record(_raise(PaymentDeclined("card declined")))
    back = exception_from_record(rec)
    assert isinstance(back, ValueError)
    assert isinstance(back, StepFailedError)
    assert str(back) == "card declined"
    assert type(back).__name__ == "PaymentDeclined"
    assert back.type_name == f"{PaymentDeclined.__module__}.PaymentDeclined"
    assert back.recorded_traceback == rec["traceback"]
    assert type(exception_from_record(rec)) is type(back)  # dynamic classes are cached
    with pytest.raises(ValueError):
        raise back
    # a rebuilt exception records like the original
    again = exception_to_record(back)
    assert (again["type"], again["module"], again["message"]) == (rec["type"], rec["module"], rec["message"])


def test_custom_oserror_subclass():
    back = exception_from_record(exception_to_record(DiskGone("disk gone")))
    assert isinstance(back, OSError) and isinstance(back, StepFailedError)
    assert str(back) == "disk gone"


def test_registered_exception_rebuilt_exactly_and_fallback_on_bad_init():
    back = exception_from_record(exception_to_record(RegisteredError("boom")))
    assert type(back) is RegisteredError and str(back) == "boom"

    back = exception_from_record(exception_to_record(NeedsTwoArgs(7, "nope")))
    assert isinstance(back, StepFailedError) and str(back) == "7: nope"


def test_awkward_builtins_and_kit_errors_do_not_crash():
    uni = _raise(UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"))
    back = exception_from_record(exception_to_record(uni))
    assert isinstance(back, ValueError) and str(back) == str(uni)

    wf = WorkflowError("wf-1", "ValueError", "bad", "tb")
    back = exception_from_record(exception_to_record(wf))
    assert isinstance(back, Exception) and str(back) == str(wf)

    group_cls = getattr(builtins, "ExceptionGroup", None)  # 3.11+
    group = group_cls("many", [ValueError("a")]) if group_cls else ValueError("many")
    back = exception_from_record(exception_to_record(group))
    assert str(back) == str(group)


@pytest.mark.parametrize(
    "rec",
    [
        {},
        {"type": None, "module": 3, "message": None, "bases": "x"},
        {"type": "print", "module": "builtins", "message": "not an exception"},
        {"type": "x\x00y", "module": "m", "message": "nul in name", "bases": ["KeyError"]},
        {"type": "Weird", "module": "m", "message": "m", "bases": ["NotABuiltin", "__import__", 5]},
        "not a dict",
    ],
)
def test_malformed_records_do_not_crash(rec):
    back = exception_from_record(rec)  # type: ignore[arg-type]
    assert isinstance(back, BaseException)
    if isinstance(rec, dict) and isinstance(rec.get("message"), str):
        assert str(back) == rec["message"]


# ---------------------------------------------------------------------------------------------
# property tests

_offsets = st.builds(
    timezone,
    st.timedeltas(min_value=timedelta(hours=-23, minutes=59), max_value=timedelta(hours=23, minutes=59)),
)
_tz = st.none() | st.just(timezone.utc) | _offsets
_hashable = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(max_size=8)
    | st.uuids()
    | st.dates()
    | st.sampled_from(Color)
    | st.decimals(allow_nan=False, allow_infinity=False)
)
_scalars = (
    _hashable
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.datetimes(timezones=_tz)
    | st.times(timezones=_tz)
    | st.timedeltas()
    | st.binary(max_size=16)
    | st.sets(_hashable, max_size=4)
    | st.frozensets(_hashable, max_size=4)
    | st.builds(Point, st.integers(), st.integers())
)
_values = st.recursive(
    _scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.tuples(children, children)
        | st.dictionaries(st.text(max_size=6) | st.just("__kit__"), children, max_size=4)
        | st.dictionaries(st.integers() | st.sampled_from(Color), children, max_size=3)
        | st.builds(
            Line,
            st.builds(Point, st.integers(), st.integers()),
            st.builds(Point, st.integers(), st.integers()),
            st.text(max_size=4),
            st.lists(children, max_size=2),
        )
    ),
    max_leaves=12,
)


def _normalise(value):
    if isinstance(value, (list, tuple)):
        return [_normalise(v) for v in value]
    if isinstance(value, dict):
        return {k: _normalise(v) for k, v in value.items()}
    if isinstance(value, Line):
        return dataclasses.replace(value, tags=_normalise(value.tags))
    return value


@settings(max_examples=100, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(_values)
def test_property_round_trip(value):
    text = dumps(value)
    assert loads(text) == _normalise(value)
    assert dumps(loads(text)) == text  # stable: decoding then encoding gives the same text


@settings(max_examples=150, deadline=None, database=None)
@given(st.text())
def test_property_loads_arbitrary_text(text):
    try:
        loads(text)
    except SerializationError:
        pass


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(["__kit__", "v", "type", "value", "fold", "a"]), children, max_size=4
        )
        | st.fixed_dictionaries(
            {
                "__kit__": st.sampled_from(
                    [
                        "dict",
                        "datetime",
                        "date",
                        "time",
                        "timedelta",
                        "uuid",
                        "decimal",
                        "bytes",
                        "set",
                        "frozenset",
                        "tuple",
                        "enum",
                        "dataclass",
                        "model",
                        "other",
                    ]
                ),
                "v": children,
            },
            optional={
                "type": st.sampled_from(
                    [
                        "os.system",
                        f"{Line.__module__}.Line",
                        f"{Color.__module__}.Color",
                        f"{FakeModel.__module__}.FakeModel",
                        f"{RegisteredError.__module__}.RegisteredError",
                    ]
                ),
                "value": children,
            },
        )
    ),
    max_leaves=10,
)


@settings(max_examples=150, deadline=None, database=None)
@given(_json)
def test_property_loads_arbitrary_json_structures(structure):
    register_type(FakeModel)
    register_type(Color)
    try:
        loads(json.dumps(structure))
    except SerializationError:
        pass
