"""The ``kit`` command line, run as a real subprocess against real PostgreSQL servers.

Every user mistake and every unreachable database must end with exit code 2 and exactly one line
``kit: error: ...`` on stderr: no traceback, and never a password.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

import kit
from kit.registry import resolve

pytestmark = pytest.mark.all_backends  # also on the extra targets (Citus): tests/targets.py

REPO = Path(__file__).resolve().parent.parent
SECRET = "secretpw"
UNREACHABLE = f"postgresql://u:{SECRET}@127.0.0.1:1/db"


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KIT_", "PG"))}
    env.update(COLUMNS="250", NO_COLOR="1", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def run_kit(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kit.cli", *args], capture_output=True, text=True,
                          env=env if env is not None else base_env(), cwd=cwd or REPO, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def password_of(url: str) -> str | None:
    return psycopg.conninfo.conninfo_to_dict(url).get("password") or None


def assert_ok(res: subprocess.CompletedProcess) -> str:
    assert res.returncode == 0, f"exit {res.returncode}\nstdout: {res.stdout}\nstderr: {res.stderr}"
    assert "Traceback" not in res.stderr, res.stderr
    return res.stdout


def assert_usage_error(res: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit 2, one ``kit: error:`` line on stderr, no traceback, no secret anywhere."""
    out = f"stdout: {res.stdout!r}\nstderr: {res.stderr!r}"
    assert res.returncode == 2, f"exit {res.returncode}\n{out}"
    assert "Traceback" not in res.stdout + res.stderr, out
    assert SECRET not in res.stdout + res.stderr, out
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr\n{out}"
    assert lines[0].startswith("kit: error: "), out
    for fragment in fragments:
        assert fragment.lower() in lines[0].lower(), f"{fragment!r} missing\n{out}"
    return lines[0]


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture
def db_args(pg_url: str, schema: str) -> list[str]:
    return ["--database-url", pg_url, "--schema", schema]


# -- migrate and db ---------------------------------------------------------------------------------------
def test_migrate_then_db_shows_backend_version_and_hides_password(pg_url: str, schema: str,
                                                                  db_args: list[str]) -> None:
    secret = password_of(pg_url)
    before = assert_ok(run_kit("db", *db_args))
    assert "not migrated" in before

    first = assert_ok(run_kit("migrate", *db_args))
    backend = resolve(pg_url)  # the server's backend: postgres, or citus on a Citus coordinator
    versions = [m.version for m in backend.migrations]
    latest = max(versions)
    applied = ", ".join(str(v) for v in versions)
    assert f"applied migrations {applied};" in first and f"version {latest}" in first and schema in first
    again = assert_ok(run_kit("migrate", *db_args))
    assert "up to date" in again

    # Configuration from the environment works the same as flags.
    res = run_kit("db", env=base_env(KIT_DATABASE_URL=pg_url, KIT_SCHEMA=schema))
    text = assert_ok(res)
    fields = dict(re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in text.splitlines() if line.strip())
    assert fields["backend"] == backend.name
    assert fields["schema"] == schema
    assert fields["schema version"] == str(latest)
    assert re.match(r"PostgreSQL [\d.]+", fields["server"]) and " on " not in fields["server"], fields["server"]
    assert "embedded server" not in fields  # a configured URL: kit runs no server of its own
    assert fields["url"].startswith("postgresql://")
    if secret:
        assert "***" in fields["url"]
        assert secret not in res.stdout + res.stderr

    res = run_kit("db", "--json", *db_args)
    info = json.loads(assert_ok(res))
    assert info["backend"] == backend.name and info["schema"] == schema and info["schema_version"] == latest
    if secret:
        assert secret not in res.stdout + res.stderr
        assert "***" in info["url"]


def test_migrate_print_sql_prints_ddl_without_touching_the_database(pg_url: str, schema: str,
                                                                    db_args: list[str]) -> None:
    text = assert_ok(run_kit("migrate", "--print-sql", *db_args))
    assert "CREATE TABLE" in text and schema in text and "workflows" in text and "steps" in text
    with psycopg.connect(pg_url, autocommit=True) as conn:
        exists = conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = %s", [schema]).fetchone()[0]
    assert exists == 0, "--print-sql must not apply anything"
    # Without any database configured at all.
    offline = assert_ok(run_kit("migrate", "--print-sql", "--schema", "some_schema"))
    assert "CREATE TABLE" in offline and "some_schema" in offline


# -- workflows list / workflow show ------------------------------------------------------------------------
@pytest.fixture
def populated(pg_url: str, schema: str) -> dict[str, list[str]]:
    """Three successful, one failed and one pending (never run) workflow, created in that order."""
    app = kit.Kit(database_url=pg_url, schema=schema)

    @app.step(name="cli_shout")
    def shout(text: str) -> str:
        return text.upper()

    @app.step(name="cli_count")
    def count(text: str) -> int:
        return len(text)

    @app.workflow(name="cli_greet")
    def greet(name: str) -> dict:
        return {"greeting": shout(f"hello {name}"), "length": count(name)}

    @app.step(name="cli_explode")
    def explode() -> None:
        raise ValueError("kaboom in step")

    @app.workflow(name="cli_fail")
    def fail() -> None:
        explode()

    ids: dict[str, list[str]] = {"SUCCESS": [], "ERROR": [], "PENDING": [], "order": []}
    try:
        for who in ("ada", "bob", "cy"):
            wid = f"greet-{who}"
            assert app.start(greet, who, workflow_id=wid).result(timeout=30)["length"] == len(who)
            ids["SUCCESS"].append(wid)
            ids["order"].append(wid)
            time.sleep(0.01)
        with pytest.raises(kit.WorkflowError):
            app.start(fail, workflow_id="fail-1").result(timeout=30)
        ids["ERROR"].append("fail-1")
        ids["order"].append("fail-1")
        time.sleep(0.01)
        app.enqueue(greet, "later", workflow_id="pending-1")  # no worker runs here: stays PENDING
        ids["PENDING"].append("pending-1")
        ids["order"].append("pending-1")
    finally:
        app.close()
    return ids


def test_workflows_list_filters(populated: dict[str, list[str]], db_args: list[str]) -> None:
    def listed(*extra: str) -> list[dict]:
        return json_lines(assert_ok(run_kit("workflows", "list", "--json", *db_args, *extra)))

    everything = listed()
    assert [r["workflow_id"] for r in everything] == populated["order"][::-1]  # newest first
    assert {r["workflow_id"]: r["status"] for r in everything}["fail-1"] == "ERROR"
    assert all(r["created_at"] for r in everything)

    assert {r["workflow_id"] for r in listed("--status", "success")} == set(populated["SUCCESS"])
    errors = listed("--status", "ERROR")
    assert [r["workflow_id"] for r in errors] == ["fail-1"]
    assert "kaboom in step" in errors[0]["error"]["message"]  # JSON, not a string of JSON
    assert [r["workflow_id"] for r in listed("--status", "pending")] == ["pending-1"]
    both = listed("--status", "success", "--status", "error")
    assert {r["workflow_id"] for r in both} == set(populated["SUCCESS"] + populated["ERROR"])

    assert [r["workflow_id"] for r in listed("--name", "cli_fail")] == ["fail-1"]
    assert {r["workflow_id"] for r in listed("--name", "cli_greet", "--status", "success")} == set(
        populated["SUCCESS"])
    assert listed("--name", "no_such_workflow") == []

    assert len(listed("--since", "1h")) == 5
    assert len(listed("--since", "2h", "--status", "success")) == 3
    assert listed("--since", "2999-01-01") == []
    assert listed("--until", "1h") == []

    assert [r["workflow_id"] for r in listed("--limit", "2")] == populated["order"][::-1][:2]
    assert [r["workflow_id"] for r in listed("--limit", "1", "--oldest-first")] == populated["order"][:1]

    table = assert_ok(run_kit("workflows", "list", *db_args))
    assert "5 workflow(s)" in table
    for wid in populated["order"]:
        assert wid in table
    assert "ValueError: kaboom in step" in table
    filtered = assert_ok(run_kit("workflows", "list", "--status", "error", *db_args))
    assert "1 workflow(s)" in filtered and "fail-1" in filtered and "greet-ada" not in filtered


def test_workflow_show(populated: dict[str, list[str]], db_args: list[str]) -> None:
    shown = json.loads(assert_ok(run_kit("workflow", "show", "greet-bob", "--json", *db_args)))
    wf = shown["workflow"]
    assert wf["workflow_id"] == "greet-bob" and wf["name"] == "cli_greet" and wf["status"] == "SUCCESS"
    assert wf["output"] == {"greeting": "HELLO BOB", "length": 3}
    assert wf["epoch"] == 1 and wf["recoveries"] == 0
    steps = shown["steps"]
    assert [(s["step_id"], s["name"]) for s in steps] == [(0, "cli_shout"), (1, "cli_count")]
    assert [s["output"] for s in steps] == ["HELLO BOB", 3]
    assert all(s["error"] is None and s["epoch"] == 1 and s["attempts"] == 1 for s in steps)

    text = assert_ok(run_kit("workflow", "show", "greet-bob", *db_args))
    for fragment in ("greet-bob", "cli_greet", "SUCCESS", "cli_shout", "cli_count", "HELLO BOB"):
        assert fragment in text

    failed = json.loads(assert_ok(run_kit("workflow", "show", "fail-1", "--json", *db_args)))
    assert failed["workflow"]["status"] == "ERROR"
    assert [s["name"] for s in failed["steps"]] == ["cli_explode"]
    assert "kaboom in step" in failed["steps"][0]["error"]["message"]
    text = assert_ok(run_kit("workflow", "show", "fail-1", *db_args))
    assert "ValueError: kaboom in step" in text

    pending = json.loads(assert_ok(run_kit("workflow", "show", "pending-1", "--json", *db_args)))
    assert pending["workflow"]["status"] == "PENDING" and pending["steps"] == []

    assert_usage_error(run_kit("workflow", "show", "no-such-id", *db_args), "no-such-id")
    assert_usage_error(run_kit("workflow", "show", "no-such-id", "--json", *db_args), "no-such-id")


def test_listing_a_schema_that_was_never_migrated_says_so(pg_url: str, schema: str, db_args: list[str]) -> None:
    assert_usage_error(run_kit("workflows", "list", *db_args), "kit migrate")
    assert_usage_error(run_kit("workflow", "show", "x", *db_args), "kit migrate")


def test_workflow_show_lists_messages_events_and_streams(pg_url: str, schema: str, db_args: list[str]) -> None:
    app = kit.Kit(database_url=pg_url, schema=schema)

    @app.workflow(name="cli_chatty")
    def chatty() -> str:
        app.set_event("state", "streaming")
        for word in ("a", "b", "c"):
            app.write_stream("tokens", word)
        app.close_stream("tokens")
        app.write_stream("log", "one line")  # left open
        app.set_event("flags", [True, None])  # not rich markup, printed as is
        return app.recv("orders", timeout=30)

    try:
        handle = app.start(chatty, workflow_id="chatty-1")
        app.send("chatty-1", {"n": 1}, topic="orders")
        assert handle.result(timeout=30) == {"n": 1}
        app.send("chatty-1", "too late", topic="orders")  # never received: still waiting
    finally:
        app.close()

    shown = json.loads(assert_ok(run_kit("workflow", "show", "chatty-1", "--json", *db_args)))
    assert shown["workflow"]["status"] == "SUCCESS" and shown["children"] == []
    recv_step = next(s["step_id"] for s in shown["steps"] if s["name"].startswith("recv:"))
    messages = shown["messages"]
    assert [(m["topic"], m["body"], m["consumed_step"]) for m in messages] == [
        ("orders", {"n": 1}, recv_step), ("orders", "too late", None)]
    assert messages[0]["consumed_at"] and messages[1]["consumed_at"] is None and messages[0]["created_at"]
    assert [(e["key"], e["value"]) for e in shown["events"]] == [("flags", [True, None]),
                                                                             ("state", "streaming")]
    assert shown["events"][0]["updated_at"]
    assert [(s["key"], s["count"], s["closed"]) for s in shown["streams"]] == [("log", 1, False), ("tokens", 3, True)]

    text = assert_ok(run_kit("workflow", "show", "chatty-1", *db_args))
    for fragment in ("messages received (2, 1 still waiting)", "waiting", "too late", "events (2)", "streaming",
                     "streams (2)", "tokens", "closed", "open", "[true,null]"):
        assert fragment in text, fragment

    quiet = assert_ok(run_kit("workflow", "show", "chatty-1", "--json", *db_args))
    assert set(json.loads(quiet)) == {"workflow", "steps", "children", "messages", "events", "streams"}


# -- errors -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["workflows", "list", "--status", "bogus"], "unknown status"),
        (["workflows", "list", "--since", "yesterday"], "invalid time"),
        (["workflows", "list", "--since", "5x"], "invalid time"),
        (["workflows", "list", "--limit", "0"], "positive integer"),
        (["workflows", "list", "--limit", "many"], "positive integer"),
        (["frobnicate"], "invalid choice"),
        ([], "required"),
        (["workflows"], "required"),
        (["workflow", "show"], "required"),
        (["workflow", "show", "has space"], "invalid workflow id"),
        (["workflow", "show", "5f0c9a8e…"], "shortened id: `kit workflows list --wide`"),
        (["worker", "nonsense"], "MODULE:APP"),
        (["worker", "nomodule_kit_test:app"], "nomodule_kit_test"),
        (["worker", "tests.apps.ledger_app:no_such_attr"], "no_such_attr"),
        (["worker", "json:dumps"], "not a kit.Kit"),
        (["worker"], "required"),
        (["db", "--database-url", "mysql://u:secretpw@h/db"], "no installed backend takes mysql:// URLs"),
        (["db", "--database-url", "postgresql://u:secretpw@h:notaport/db"], "malformed database URL"),
        (["db", "--schema", "Bad-Schema"], "invalid schema name"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_bad_arguments_exit_2_with_one_line(argv: list[str], fragment: str) -> None:
    assert_usage_error(run_kit(*argv), fragment)


def test_bad_environment_setting_is_a_usage_error() -> None:
    res = run_kit("db", env=base_env(KIT_DATABASE_URL=UNREACHABLE, KIT_LEASE_SECONDS="soon"))
    assert_usage_error(res, "KIT_LEASE_SECONDS")


@pytest.mark.parametrize(
    "argv",
    [
        ["db"],
        ["db", "--json"],
        ["migrate"],
        ["workflows", "list"],
        ["workflow", "show", "some-id"],
        ["worker", "tests.apps.ledger_app:app"],
    ],
    ids=" ".join,
)
def test_unreachable_database_exit_2_without_leaking_the_password(argv: list[str]) -> None:
    res = run_kit(*argv, "--database-url", UNREACHABLE, env=base_env(KIT_CONNECT_TIMEOUT="1"))
    line = assert_usage_error(res)
    assert "127.0.0.1" in line


def test_unreachable_database_from_the_environment() -> None:
    res = run_kit("worker", "tests.apps.ledger_app:app",
                  env=base_env(KIT_DATABASE_URL=UNREACHABLE, KIT_CONNECT_TIMEOUT="1"))
    assert_usage_error(res, "127.0.0.1")


def test_wrong_password_is_not_echoed(pg_url: str, schema: str) -> None:
    """A server that checks passwords (debian15) refuses a wrong one; the message never shows it."""
    parts = psycopg.conninfo.conninfo_to_dict(pg_url)
    if not parts.get("password") or str(parts.get("host", "")).startswith("/"):
        pytest.skip("this server does not use password authentication")
    real = parts["password"]
    bad = pg_url.replace(f":{real}@", f":{SECRET}@")
    assert bad != pg_url
    for argv in (["db"], ["workflows", "list"]):
        res = run_kit(*argv, "--database-url", bad, "--schema", schema, env=base_env(KIT_CONNECT_TIMEOUT="2"))
        assert_usage_error(res)
        assert real not in res.stdout + res.stderr
