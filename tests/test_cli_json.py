"""Every ``--json`` output of the CLI: values are JSON (a stored value is the JSON it was stored as, never a
string holding JSON) and each field has the type docs/observability.md ("JSON output") documents."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

import kit

REPO = Path(__file__).resolve().parent.parent
ISO = "iso"  # a type marker: an ISO 8601 string with a UTC offset


def run_json(*args: str, lines: bool) -> Any:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KIT_", "PG"))}
    res = subprocess.run([sys.executable, "-m", "kit.cli", *args, "--json"], capture_output=True, text=True,
                         cwd=REPO, env=env, timeout=120, stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stderr
    if lines:
        return [json.loads(line) for line in res.stdout.splitlines()]
    (line,) = res.stdout.splitlines()  # one document on one line
    return json.loads(line)


def check_types(obj: dict[str, Any], spec: dict[str, Any]) -> None:
    """Every documented field is present with its type (a tuple: any of them; None: null allowed)."""
    assert set(spec) <= set(obj), f"missing fields: {sorted(set(spec) - set(obj))}"
    for key, want in spec.items():
        value = obj[key]
        kinds = want if isinstance(want, tuple) else (want,)
        if value is None:
            assert None in kinds, f"{key} is null"
            continue
        if ISO in kinds and isinstance(value, str):
            assert datetime.fromisoformat(value).utcoffset() is not None, f"{key}={value!r} is not ISO with offset"
            continue
        types = tuple(k for k in kinds if isinstance(k, type))
        assert isinstance(value, types), (key, value, kinds)
        if int in types and bool not in types:
            assert not isinstance(value, bool), (key, value)


WORKFLOW = {"workflow_id": str, "name": str, "status": str, "inputs": (dict, None), "output": (object, None),
            "error": (dict, None), "queue": (str, None), "app_version": (str, None), "owner": (str, None),
            "epoch": int, "lease_expires_at": (ISO, None), "created_at": ISO, "started_at": (ISO, None),
            "finished_at": (ISO, None), "recoveries": int, "parent_id": (str, None)}
STEP = {"workflow_id": str, "step_id": int, "name": str, "output": (object, None), "error": (dict, None),
        "epoch": int, "attempts": int, "started_at": (ISO, None), "finished_at": (ISO, None)}
MESSAGE = {"message_id": int, "topic": str, "body": object, "sender_key": (str, None), "created_at": ISO,
           "consumed_at": (ISO, None), "consumed_step": (int, None)}
EVENT = {"key": str, "value": (object, None), "step_id": int, "updated_at": (ISO, None)}
STREAM = {"key": str, "count": int, "closed": bool, "last_write_at": (ISO, None)}
QUEUE = {"queue": str, "depth": int, "in_flight": int, "concurrency_limit": (int, None),
         "rate_limit_per_second": (float, int, None), "worker_concurrency_limit": (int, None),
         "partition_concurrency_limit": (int, None), "partitioned": bool}
SCHEDULE = {"name": str, "workflow_name": str, "cron": str, "timezone": str, "queue": str, "catch_up": str,
            "max_catch_up": int, "cursor_at": ISO, "last_tick": (ISO, None), "last_workflow_id": (str, None),
            "next_tick": (ISO, None)}


@pytest.fixture
def seeded(pg_url: str, schema: str) -> list[str]:
    app = kit.Kit(database_url=pg_url, schema=schema)
    app.queue("mail", concurrency=4, rate_limit=(10, 1.0))

    @app.step(name="json.total")
    def total(items: list[int]) -> dict:
        return {"sum": sum(items), "items": items}

    @app.workflow(name="json.order")
    def order(items: list[int], note: str = "") -> dict:
        app.set_event("state", {"phase": "done"})
        app.write_stream("log", "one")
        got = app.recv("go", timeout=30)
        return {**total(items), "got": got}

    @app.workflow(name="json.fail")
    def fail() -> None:
        raise ValueError("nope")

    @app.scheduled("*/5 * * * *", name="json.tick", tz="Europe/Berlin")
    def tick(scheduled_at: datetime) -> None:
        pass

    try:
        app.launch()
        handle = app.start(order, [1, 2, 3], note="x", workflow_id="json-1")
        app.send("json-1", {"go": True}, topic="go")
        assert handle.result(timeout=30)["sum"] == 6
        with pytest.raises(kit.errors.WorkflowError):
            app.start(fail, workflow_id="json-2").result(timeout=30)
    finally:
        app.close()
    return ["--database-url", pg_url, "--schema", schema]


def test_workflows_list_json(seeded: list[str]) -> None:
    rows = {r["workflow_id"]: r for r in run_json("workflows", "list", *seeded, lines=True)}
    for row in rows.values():
        check_types(row, WORKFLOW)
    ok, failed = rows["json-1"], rows["json-2"]
    assert ok["inputs"] == {"args": [[1, 2, 3]], "kwargs": {"note": "x"}}
    assert ok["output"] == {"sum": 6, "items": [1, 2, 3], "got": {"go": True}} and ok["status"] == "SUCCESS"
    assert failed["error"]["type"] == "ValueError" and failed["error"]["message"] == "nope"


def test_workflow_show_json(seeded: list[str]) -> None:
    shown = run_json("workflow", "show", "json-1", *seeded, lines=False)
    assert set(shown) == {"workflow", "steps", "children", "messages", "events", "streams"}
    check_types(shown["workflow"], WORKFLOW)
    for key, spec in (("steps", STEP), ("messages", MESSAGE), ("events", EVENT), ("streams", STREAM)):
        assert shown[key], key
        for item in shown[key]:
            check_types(item, spec)
    assert {"sum": 6, "items": [1, 2, 3]} in [s["output"] for s in shown["steps"]]
    assert shown["messages"][0]["body"] == {"go": True}
    assert shown["events"][0]["value"] == {"phase": "done"}


def test_queues_json(seeded: list[str]) -> None:
    rows = {r["queue"]: r for r in run_json("queues", *seeded, lines=True)}
    for row in rows.values():
        check_types(row, QUEUE)
    assert rows["mail"]["concurrency_limit"] == 4 and rows["mail"]["rate_limit_per_second"] == 10


def test_schedules_json(seeded: list[str]) -> None:
    (row,) = run_json("schedules", *seeded, lines=True)
    check_types(row, SCHEDULE)
    assert row["name"] == "json.tick" and row["timezone"] == "Europe/Berlin" and row["queue"] == "default"


def test_db_json(seeded: list[str]) -> None:
    info = run_json("db", *seeded, lines=False)
    check_types(info, {"backend": str, "url": str, "schema": str, "schema_version": int, "server_version": str,
                       "capabilities": dict})
    assert info["embedded"] is None  # a configured URL: no server of kit's own
    assert all(isinstance(v, bool) for v in info["capabilities"].values())


def test_db_json_for_a_stopped_embedded_server(tmp_path: Path) -> None:
    """`kit db` on the embedded default says whether it runs, without starting it."""
    info = run_json("db", "--data-dir", str(tmp_path / "kitdata"), lines=False)
    assert info["backend"] is None
    check_types(info["embedded"], {"running": bool, "pid": (int, None), "data_dir": str, "pgdata": str, "log": str,
                                   "socket_dir": (str, None), "started_at": (ISO, None)})
    assert info["embedded"]["running"] is False and not (tmp_path / "kitdata" / "pgdata").exists()
    stopped = run_json("db", "stop", "--data-dir", str(tmp_path / "kitdata"), lines=False)
    assert stopped["stopped"] is False and stopped["embedded"]["running"] is False
