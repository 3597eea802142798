"""SQL-injection strings as workflow names, ids, queue names, topics, keys and CLI filters: every one is a
bound parameter (or refused by validation), the tables stay intact, and no filter returns extra rows."""

from __future__ import annotations

import json

import psycopg
import pytest
from psycopg import sql
from security_helpers import run_cli

import kit
from kit.errors import ConfigError, UsageError

pytestmark = pytest.mark.all_backends  # also on the extra targets (Citus): tests/targets.py

PAYLOADS = [
    "x'; DROP TABLE {schema}.workflows; --",
    "' OR '1'='1",
    "%' OR 1=1 --",
    '"; DELETE FROM {schema}.steps; --',
    "') UNION SELECT workflow_id, name FROM {schema}.workflows --",
    "$$; DROP SCHEMA {schema} CASCADE; $$",
    "\\'; SELECT pg_sleep(10); --",
    "%",
    "_",
    "\\",
]
MESSAGES = ("100% broken", "1000 broken", "fine_error", "fineXerror", "back\\slash", "' OR '1'='1")
# Workflow ids allow printable ASCII without spaces: injection strings written that way.
ID_PAYLOADS = ["x';DROP/**/TABLE/**/{schema}.workflows;--", "'OR'1'='1", "1;DELETE/**/FROM/**/{schema}.steps"]


def _tables(url: str, schema: str) -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                            "WHERE n.nspname = %s AND c.relkind IN ('r', 'v') ORDER BY 1", (schema,)).fetchall()
    return [r[0] for r in rows]


def _count(url: str, schema: str, table: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute(sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema),
                                                                         sql.Identifier(table))).fetchone()[0]


def _list(args: list[str], *filters: str) -> list[dict]:
    code, out, err = run_cli(["workflows", "list", "--json", *filters, *args])
    assert code == 0, err
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_injection_strings_everywhere(pg_url: str, schema: str) -> None:
    payloads = [p.format(schema=schema) for p in PAYLOADS]
    ids = [p.format(schema=schema) for p in ID_PAYLOADS]
    app = kit.Kit(pg_url, schema=schema)
    app.backend  # noqa: B018 - migrate
    before = _tables(pg_url, schema)
    handles = {}
    try:
        @app.workflow(name="inj.echo")
        def echo(value: str) -> str:
            for topic in payloads[:3]:
                app.set_event(topic, topic)
                app.write_stream(topic, topic)
            got = [app.recv(topic, timeout=10) for topic in payloads[:3]]
            return json.dumps(got)

        @app.workflow(name="inj.fail")
        def fail(message: str) -> None:
            raise ValueError(message)

        for name in payloads:
            app.workflow(name=name)(lambda: "ok")
            app.start(name).result(timeout=30)
        for wid in ids:
            handles[wid] = app.start(echo, wid, workflow_id=wid)
            for topic in payloads[:3]:
                app.send(wid, topic, topic=topic)
        for wid, handle in handles.items():
            assert json.loads(handle.result(timeout=30)) == payloads[:3]
            for topic in payloads[:3]:
                assert app.get_event(wid, topic, timeout=1) == topic
                assert list(app.read_stream(wid, topic, timeout=1)) == [topic]
        for message in MESSAGES:
            with pytest.raises(kit.WorkflowError):
                app.start(fail, message).result(timeout=30)
        # Queue names are validated: injection strings never reach a statement.
        for bad in payloads[:6]:
            with pytest.raises(ConfigError, match="invalid queue name"):
                app.queue(bad)
            with pytest.raises(ConfigError, match="invalid queue name"):
                kit.Client(pg_url, schema=schema).enqueue("inj.echo", "x", queue=bad)
        for bad in ("x' OR '1'='1", "a b", "", "x" * 201, "tab\there"):
            with pytest.raises(UsageError, match="invalid workflow id"):
                app.start(echo, "v", workflow_id=bad)
    finally:
        app.close()

    total = len(payloads) + len(ids) + len(MESSAGES)
    assert _tables(pg_url, schema) == before
    assert _count(pg_url, schema, "workflows") == total
    args = ["--database-url", pg_url, "--schema", schema]
    assert len(_list(args, "--limit", "1000")) == total
    for name in payloads:  # equality on a bound parameter: exactly the one workflow of that name
        rows = _list(args, "--name", name)
        assert [r["name"] for r in rows] == [name]
        for option in ("--queue", "--version"):
            assert _list(args, option, name) == []
    # --error is a substring match with %, _ and \ escaped: they match themselves only.
    # (Unescaped, "100%" would also match "1000 broken" and "fine_err" would match "fineXerror".) The text
    # searched is the stored JSON error record, where a backslash is written as two.
    errors = {"100%": ["100% broken"], "fine_err": ["fine_error"], "back\\\\s": ["back\\slash"],
              "' OR '1'='1": ["' OR '1'='1"], "%' OR 1=1 --": [], "x'; DROP TABLE": []}
    for needle, expected in errors.items():
        rows = _list(args, "--error", needle)
        assert sorted(r["error"]["message"] for r in rows) == expected, needle
    for wid in ids:
        code, out, err = run_cli(["workflow", "show", "--json", wid, *args])
        assert code == 0, err
        assert json.loads(out)["workflow"]["workflow_id"] == wid
    for wid in ("nope';--", "'OR'1'='2"):
        code, _out, err = run_cli(["workflow", "show", wid, *args])
        assert code == 2 and "no workflow" in err
    code, out, err = run_cli(["monitor", "--once", "--name", payloads[0], "--queue", payloads[1], *args])
    assert code == 0, err
    assert _tables(pg_url, schema) == before
    assert _count(pg_url, schema, "workflows") == total
    assert _count(pg_url, schema, "messages") == len(ids) * 3
    assert _count(pg_url, schema, "events") == len(ids) * 3


def test_sql_enqueue_function_validates_its_arguments(pg_url: str, schema: str) -> None:
    app = kit.Kit(pg_url, schema=schema)
    try:
        app.backend  # noqa: B018 - migrate
    finally:
        app.close()
    s = sql.Identifier(schema)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for bad_id in ("x' OR '1'='1", "a b"):
            with pytest.raises(psycopg.errors.InvalidParameterValue, match="workflow_id"):
                conn.execute(sql.SQL("SELECT {}.enqueue('w', workflow_id => %s)").format(s), (bad_id,))
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="unknown queue"):
            conn.execute(sql.SQL("SELECT {}.enqueue('w', queue => %s)").format(s), ("q'; DROP TABLE x; --",))
        wid = conn.execute(sql.SQL("SELECT {}.enqueue(%s)").format(s), ("n'); DROP TABLE x; --",)).fetchone()[0]
        assert conn.execute(sql.SQL("SELECT name FROM {}.workflows WHERE workflow_id = %s").format(s),
                            (wid,)).fetchone()[0] == "n'); DROP TABLE x; --"


@pytest.mark.parametrize("check, value, fragment", [
    ("id", "has space", "invalid workflow id"),
    ("id", "é", "invalid workflow id"),
    ("id", "x" * 201, "invalid workflow id"),
    ("id", "", "invalid workflow id"),
    ("id", 42, "invalid workflow id"),
    ("name", "", "invalid workflow name"),
    ("name", "nul\x00", "invalid workflow name"),
    ("queue", "has space", "invalid queue name"),
    ("queue", "q" * 101, "invalid queue name"),
    ("queue", "semi;colon", "invalid queue name"),
    ("topic", "line\nbreak", "topic must be"),
    ("topic", "t" * 201, "topic must be"),
    ("key", "", "event key must be"),
    ("key", "nul\x00", "event key must be"),
    ("key", "\ud800", "event key must be"),
])
def test_validation_rules_name_the_problem(check: str, value: object, fragment: str) -> None:
    from kit import validation as v

    run = {"id": v.validate_workflow_id, "name": v.validate_workflow_name, "queue": v.validate_queue_name,
           "topic": v.validate_topic, "key": lambda x: v.validate_key("event key", x)}[check]
    with pytest.raises(UsageError, match=fragment):
        run(value)


def test_validation_accepts_what_it_documents() -> None:
    from kit import validation as v

    assert v.validate_workflow_id("order-42/3:a") == "order-42/3:a"
    assert v.validate_workflow_name("shop.checkout v2 ✓") == "shop.checkout v2 ✓"
    assert v.validate_queue_name("emails.eu-west:1") == "emails.eu-west:1"
    assert v.validate_topic(None) == "" and v.validate_topic("") == ""
    assert v.validate_key("stream key", "логи 📜") == "логи 📜"
