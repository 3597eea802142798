"""Property-based tests (hypothesis) of every input path: the serializer, the configuration parser, the CLI
argument parser, the cron parser, and submissions to the database. Each may only succeed or raise its
documented error; a refused call writes nothing. Example counts stay small so the suite stays fast."""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import string
from datetime import datetime, timezone
from pathlib import Path

import psycopg
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from psycopg import sql
from security_helpers import run_cli

import kit
from kit import serialization as ser
from kit.config import Config, load_config
from kit.errors import ConfigError, SerializationError, UsageError

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DB = settings(max_examples=25, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


# -- serializer -------------------------------------------------------------------------------------------
class Color(enum.Enum):
    RED = "red"
    BLUE = 2


@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: str = ""


ser.register_type(Color)
ser.register_type(Point)

hashables = st.one_of(
    st.none(), st.booleans(), st.integers(), st.text(max_size=8),
    st.floats(allow_nan=False, allow_infinity=False), st.uuids(), st.dates(), st.sampled_from(list(Color)),
    st.builds(Point, st.integers(), st.text(max_size=5)),
)
scalars = st.one_of(
    hashables,
    st.datetimes(timezones=st.none() | st.timezones()),
    st.times(), st.timedeltas(),
    st.decimals(allow_nan=False, allow_infinity=False),
    st.binary(max_size=16),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text(max_size=6) | st.just(ser.TAG), inner, max_size=4),
        st.dictionaries(st.integers() | st.uuids() | st.dates(), inner, max_size=3),
        st.frozensets(hashables, max_size=4),
        st.sets(st.integers() | st.text(max_size=4), max_size=4),
    ),
    max_leaves=12,
)


def _same(a: object, b: object) -> bool:
    """Equality that also tells 0.0 from -0.0 and keeps datetime's offset and fold."""
    if isinstance(a, datetime) and isinstance(b, datetime):
        return (a == b and a.utcoffset() == b.utcoffset() and (a.tzinfo is None) == (b.tzinfo is None)
                and a.fold == b.fold)
    if isinstance(a, float) and isinstance(b, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


@FAST
@given(values)
def test_serializer_round_trip(value: object) -> None:
    text = ser.dumps(value)
    json.loads(text)  # always plain JSON
    assert _same(ser.loads(text), value)
    assert ser.dumps(ser.loads(text)) == text  # stable: same value, same text


class Opaque:
    pass


unsupported = st.sampled_from([object(), Opaque(), lambda: 1, float("nan"), float("inf"), -float("inf"),
                               complex(1, 2), Opaque, print, iter([1]), range(3)])


@FAST
@given(st.recursive(unsupported, lambda inner: st.lists(inner, min_size=1, max_size=3)
                    | st.dictionaries(st.text(max_size=4), inner, min_size=1, max_size=3), max_leaves=5),
       values)
def test_serializer_rejects_unsupported_values_only_with_serialization_error(bad: object, good: object) -> None:
    for value in (bad, [good, bad], {"ok": good, "bad": bad}):
        with pytest.raises(SerializationError):
            ser.dumps(value)


instantiated: list[object] = []


@dataclasses.dataclass
class Trap:  # never registered: decoding must never build one
    x: int = 0

    def __post_init__(self) -> None:
        instantiated.append(self)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
tags = st.sampled_from(["dataclass", "model", "enum", "set", "frozenset", "tuple", "dict", "datetime", "date",
                        "time", "timedelta", "uuid", "decimal", "bytes", "pickle", "object", "", "__import__"])
type_keys = st.sampled_from([f"{Trap.__module__}.{Trap.__qualname__}", "os.system", "builtins.eval",
                             "subprocess.Popen", "pickle.loads", f"{Point.__module__}.Point", "x"]) | st.text(max_size=10)
tagged = st.recursive(
    st.builds(lambda t, k, v: {ser.TAG: t, "type": k, "v": v}, tags | st.text(max_size=6), type_keys, json_values),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    | st.builds(lambda t, v: {ser.TAG: t, "v": v}, tags, inner),
    max_leaves=6,
)


@FAST
@given(tagged | json_values)
def test_decoding_hostile_json_never_builds_unregistered_classes(structure: object) -> None:
    try:
        text = json.dumps(structure)
    except ValueError:
        return
    try:
        ser.loads(text)
    except SerializationError as exc:
        assert str(exc).startswith("cannot decode")
    assert instantiated == []


@FAST
@given(st.text(max_size=12) | st.sampled_from(["pickle", "object", "eval", "os.system", "class"]))
def test_unregistered_tags_are_rejected(tag: str) -> None:
    assume(tag not in ser._DECODERS)  # noqa: SLF001
    with pytest.raises(SerializationError, match=r"unknown __kit__ tag"):
        ser.loads(json.dumps({ser.TAG: tag, "v": 1}))


@FAST
@given(st.binary(max_size=40) | st.text(max_size=40).map(str.encode))
def test_arbitrary_bytes_decode_or_raise_serialization_error(data: bytes) -> None:
    try:
        ser.loads(data.decode("utf-8", "replace"))
    except SerializationError:
        pass


# -- configuration ------------------------------------------------------------------------------------------
SETTINGS = [f.name for f in dataclasses.fields(Config)]
odd_text = st.text(max_size=12) | st.sampled_from(
    ["nan", "inf", "-inf", "1e999", "-1", "0", "0.0", "1_000", "0x10", "１２", "true", "off", " ", "", "9" * 5000,
     "postgresql://u:p@h:99999/db", "postgresql://", "mysql://h/db", "postgresql://[::1/db", "Kit", "kit-x"])


@FAST
@given(st.dictionaries(st.sampled_from(SETTINGS), odd_text, max_size=5))
def test_config_from_environment_raises_only_config_error(env: dict[str, str]) -> None:
    try:
        cfg = load_config({}, env={"KIT_" + k.upper(): v for k, v in env.items()}, cwd="/nonexistent")
    except ConfigError as exc:
        assert "\n" not in str(exc).strip() or "Traceback" not in str(exc)
        return
    for name in ("lease_seconds", "poll_seconds", "heartbeat_seconds", "connect_timeout"):
        assert 0 < getattr(cfg, name) < float("inf")


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(value)


toml_values = st.one_of(st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(), odd_text,
                        st.lists(st.integers(-5, 5), max_size=3))


@FAST
@given(st.dictionaries(st.sampled_from([*SETTINGS, "bogus", "tool"]), toml_values, max_size=5),
       st.sampled_from(["kit.toml", "pyproject.toml"]), st.text(max_size=60))
def test_config_files_raise_only_config_error(tmp_path_factory: pytest.TempPathFactory, data: dict[str, object],
                                              filename: str, junk: str) -> None:
    folder = tmp_path_factory.mktemp("cfg")
    body = "\n".join(f"{k} = {_toml_value(v)}" for k, v in data.items())
    header = "[tool.kit]\n" if filename == "pyproject.toml" else ""
    for text in (header + body, junk, "tool = 5\n", "[tool]\nkit = 3\n", header + body + "\n" + junk):
        (folder / filename).write_text(text, encoding="utf-8")
        try:
            load_config({}, env={}, cwd=folder)
            load_config({}, env={}, config_file=folder / filename)
        except ConfigError:
            pass


# -- command line -------------------------------------------------------------------------------------------
COMMANDS = [["workflows", "list"], ["workflow", "show"], ["db"], ["monitor", "--once"], ["queues"],
            ["migrate", "--print-sql"], ["migrate", "--print-grants"], ["migrate"], ["workflows"], ["workflow"],
            ["workflow", "cancel"], ["workflow", "resume"], ["workflow", "fork"], ["gc", "--dry-run"],
            ["schedules"]]
OPTIONS = ["--status", "--name", "--queue", "--version", "--since", "--until", "--error", "--sort", "--limit",
           "--json", "--oldest-first", "--interval", "--schema", "--config", "--worker-role", "--monitor-role",
           "--print-sql", "--concurrency", "-v", "--help", "--database-url", "--backend", "--data-dir", "-x", "--",
           "--older-than", "--batch-size", "--from-step", "--new-id", "--timeout", "--app-version"]
OPTION_VALUES = ["RUNNING", "success", "bogus", "10", "0", "-5", "1e9", "99999999999d", "2h", "2026-13-45",
                 "2026-01-01T00:00+14:00", "0001-01-01", "oldest", "slowest", "nan", "inf", "x'; DROP TABLE x; --",
                 "Bad-Schema", "/nonexistent/kit.toml", "mysql://u:p@h/db", "postgresql://u:p@h:notaport/db",
                 "cockroachdb", "a\nb", "", "%", "\x00"]
DANGEROUS = {"demo", "worker", "bench", "lab"}


@pytest.fixture
def cli_env(pg_url: str, schema: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KIT_DATABASE_URL", pg_url)
    monkeypatch.setenv("KIT_SCHEMA", schema)
    monkeypatch.setenv("KIT_CONNECT_TIMEOUT", "1")
    monkeypatch.setenv("COLUMNS", "120")
    monkeypatch.chdir(Path(__file__).resolve().parent.parent)


@DB
@given(st.sampled_from(COMMANDS) | st.lists(st.text(max_size=8), max_size=2),
       st.lists(st.sampled_from(OPTIONS) | st.sampled_from(OPTION_VALUES) | st.text(max_size=10), max_size=5))
def test_cli_exits_0_or_2_with_one_line_never_a_traceback(cli_env: None, command: list[str],
                                                          rest: list[str]) -> None:
    argv = [*command, *rest]
    assume(not (set(argv) & DANGEROUS))
    if argv[:1] == ["monitor"] and "--once" not in argv:
        return  # the live dashboard runs until interrupted
    if "--database-url" in argv:  # only URLs that fail fast or are the test server's
        i = argv.index("--database-url")
        assume(i + 1 < len(argv) and argv[i + 1] in OPTION_VALUES)
    code, out, err = run_cli(argv)
    assert "Traceback" not in out + err, (argv, err)
    assert code in (0, 2), (argv, code, err)
    if code == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("kit: error: "), (argv, err)


# -- cron ---------------------------------------------------------------------------------------------------
CRON_TOKENS = ["*", "*/5", "*/0", "0", "59", "60", "-1", "1-5", "5-1", "mon-fri", "jan", "JAN-dec", "sun", "7",
               "1,2,3", "1-10/3", "3/15", ",", "/", "L", "?", "#", "W", "@hourly", "@daily", "@reboot", "31", "2"]
ZONES = [None, "UTC", "Europe/Paris", "America/New_York", "Asia/Kathmandu", "Mars/Olympus", "", "../etc/passwd"]


@FAST
@given(st.lists(st.sampled_from(CRON_TOKENS) | st.text(alphabet=string.printable, max_size=6), min_size=0,
                max_size=7).map(" ".join) | st.text(max_size=30),
       st.sampled_from(ZONES),
       st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(timezone.utc)))
def test_cron_parser_raises_only_its_documented_error(expr: str, tz: str | None, after: datetime) -> None:
    cron = pytest.importorskip("kit.cron", reason="kit/cron.py (the cron parser) is not in this tree yet")
    try:
        schedule = cron.parse(expr, tz)
    except UsageError:
        return
    try:
        tick = schedule.next_after(after)
    except UsageError:
        return
    assert tick.tzinfo is not None and tick > after


# -- submissions: never a partial write -------------------------------------------------------------------------
ids = st.none() | st.text(max_size=12) | st.sampled_from(["ok-1", "a b", "x" * 201, "é", "'; DROP TABLE x; --",
                                                         "tab\t", "null\x00"]) | st.uuids().map(str)
names = st.text(max_size=10) | st.sampled_from(["fz.flow", "", "x" * 201, "nul\x00", "ok"])
arguments = st.lists(values | unsupported, max_size=2)


def _counts(url: str, schema: str) -> tuple[int, int]:
    with psycopg.connect(url) as conn:
        s = sql.Identifier(schema)
        return (conn.execute(sql.SQL("SELECT count(*) FROM {}.workflows").format(s)).fetchone()[0],
                conn.execute(sql.SQL("SELECT count(*) FROM {}.messages").format(s)).fetchone()[0])


@pytest.fixture
def fuzz_client(pg_url: str, schema: str):
    client = kit.Client(pg_url, schema=schema)
    client.backend  # noqa: B018 - migrate
    yield client
    client.close()


@DB
@given(names, ids, arguments, st.none() | st.text(max_size=6), st.none() | st.text(max_size=6), st.integers(-3, 3))
def test_enqueue_either_writes_one_row_or_nothing(fuzz_client: kit.Client, pg_url: str, schema: str, name: str,
                                                  wid: str | None, args: list, dedup: str | None,
                                                  queue: str | None, priority: int) -> None:
    before = _counts(pg_url, schema)
    try:
        handle = fuzz_client.enqueue(name, *args, workflow_id=wid, dedup_id=dedup, queue=queue, priority=priority)
    except UsageError:  # SerializationError, LimitExceededError, UnknownQueueError, ConfigError, ...
        assert _counts(pg_url, schema) == before
        return
    rec = fuzz_client.backend.workflow_get(handle.workflow_id)
    assert rec is not None and rec.name == name
    assert _counts(pg_url, schema)[0] in (before[0], before[0] + 1)  # the same id again: idempotent


@DB
@given(ids, st.none() | st.text(max_size=8) | st.sampled_from(["x" * 201, "nul\x00", "ok"]), values | unsupported)
def test_send_either_writes_one_message_or_nothing(fuzz_client: kit.Client, pg_url: str, schema: str,
                                                   wid: str | None, topic: str | None, message: object) -> None:
    target = "fz-target"
    if fuzz_client.backend.workflow_get(target) is None:
        fuzz_client.enqueue("fz.inbox", workflow_id=target)
    before = _counts(pg_url, schema)
    try:
        fuzz_client.send(target if wid is None else wid, message, topic=topic)
    except UsageError:  # invalid id/topic, None, unserializable, unknown workflow
        assert _counts(pg_url, schema) == before
        return
    assert _counts(pg_url, schema) == (before[0], before[1] + 1)
