"""``kit workflow cancel|resume|fork`` and ``kit gc`` as real subprocesses against real PostgreSQL."""

from __future__ import annotations

import threading
import uuid
from collections import Counter

import pytest

import kit
from kit.errors import WorkflowCancelledError
from tests.conformance.helpers import wait_for
from tests.test_cli import assert_ok, assert_usage_error, run_kit

pytestmark = pytest.mark.all_backends  # also on the extra targets (Citus): tests/targets.py

FAST = {"lease_seconds": 2.0, "heartbeat_seconds": 0.25, "poll_seconds": 0.1}


@pytest.fixture
def db(pg_url: str, schema: str) -> list[str]:
    return ["--database-url", pg_url, "--schema", schema]


def test_cancel_resume_fork_and_gc_from_the_cli(pg_url: str, schema: str, db: list[str]) -> None:
    app = kit.Kit(database_url=pg_url, schema=schema, **FAST)
    gate = threading.Event()
    entered = threading.Event()
    calls: Counter[str] = Counter()

    @app.step(name="first")
    def first() -> int:
        calls["first"] += 1
        return 1

    @app.step(name="second")
    def second() -> int:
        calls["second"] += 1
        if calls["second"] == 1:
            entered.set()
            gate.wait(30)
        return 2

    @app.workflow(name="cli.flow")
    def flow() -> int:
        return first() + second()

    try:
        app.launch()
        wid = f"cli-{uuid.uuid4().hex[:8]}"
        handle = app.start(flow, workflow_id=wid)
        assert entered.wait(20)
        out = assert_ok(run_kit("workflow", "cancel", wid, *db))
        assert f"cancelled 1 workflow(s): {wid}" in out
        gate.set()
        with pytest.raises(WorkflowCancelledError):
            handle.result(timeout=20)
        wait_for(lambda: not app.runtime._held, what="the cancelled run to end")
        assert "nothing cancelled" in assert_ok(run_kit("workflow", "cancel", wid, *db))

        assert "resumed" in assert_ok(run_kit("workflow", "resume", wid, *db))
        assert app.retrieve(wid).result(timeout=20) == 3
        assert calls == Counter({"first": 1, "second": 2})
        assert_usage_error(run_kit("workflow", "resume", wid, *db), "SUCCESS")

        out = assert_ok(run_kit("workflow", "fork", wid, "--from-step", "1", "--new-id", wid + "-f", *db))
        assert f"as {wid}-f" in out
        assert app.retrieve(wid + "-f").result(timeout=20) == 3
        assert calls == Counter({"first": 1, "second": 3})
        assert_usage_error(run_kit("workflow", "fork", wid, "--from-step", "9", *db), "between 0 and 2")
        assert_usage_error(run_kit("workflow", "fork", wid, "--from-step", "-1", *db), "integer >= 0")
        assert_usage_error(run_kit("workflow", "cancel", "no-such-id", *db), "no workflow")

        assert "would delete 2 workflow(s)" in assert_ok(run_kit("gc", "--older-than", "0s", "--dry-run", *db))
        assert "deleted 0 workflow(s)" in assert_ok(run_kit("gc", "--older-than", "30d", *db))
        assert "deleted 2 workflow(s)" in assert_ok(run_kit("gc", "--older-than", "0s", "--batch-size", "1", *db))
        assert app.backend.workflow_get(wid) is None
        assert_usage_error(run_kit("gc", "--older-than", "soon", *db), "invalid age")
        assert_usage_error(run_kit("gc", *db), "--older-than")
    finally:
        gate.set()
        app.close(grace=1)
