"""``async def`` workflows and steps: same semantics as sync ones, mixed freely in one app."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import datetime, timezone

import pytest

import kit
from kit.errors import UsageError, WorkflowCancelledError
from kit.testing import harness

pytestmark = pytest.mark.all_backends  # also on the extra targets (Citus): tests/targets.py

START = datetime(2026, 5, 1, tzinfo=timezone.utc)


def build(pg_url: str) -> tuple[kit.Kit, Counter]:
    app = kit.Kit(database_url=pg_url)
    calls: Counter[str] = Counter()

    @app.step(name="fetch")
    async def fetch(i: int) -> int:
        calls[f"fetch{i}"] += 1
        await asyncio.sleep(0.01 * (3 - i))  # finish in reverse order: positions must not depend on it
        return i * 10

    @app.step(name="sync_total")
    def sync_total(values: list[int]) -> int:
        calls["sync_total"] += 1
        return sum(values)

    @app.step(name="flaky_async", retries=2, initial_delay=0.01)
    async def flaky_async() -> str:
        calls["flaky"] += 1
        if calls["flaky"] < 2:
            raise TimeoutError("upstream slow")
        return "ok"

    @app.workflow(name="async.child")
    async def child(x: int) -> int:
        await app.sleep_async(60)
        return x + 1

    @app.workflow(name="async.parent")
    async def parent() -> dict:
        values = await asyncio.gather(*(fetch(i) for i in range(3)))
        total = sync_total(list(values))  # a sync step inside an async workflow
        kid = await child(total)
        msg = await app.recv_async("go", timeout=3600)
        return {"values": list(values), "total": total, "kid": kid, "msg": msg, "flaky": await flaky_async()}

    @app.workflow(name="sync.caller")
    def sync_caller() -> int:
        return asyncio.run(fetch(2)) + sync_total([1])  # an async step from a sync workflow

    return app, calls


def test_async_workflow_gathers_steps_and_mixes_with_sync(pg_url):
    app, calls = build(pg_url)
    with harness(app, start=START) as h:
        handle = app.start("async.parent")
        h.clock.wait_for_waiters(1)
        result = h.result(handle)
        assert result == {"values": [0, 10, 20], "total": 30, "kid": 31, "msg": None, "flaky": "ok"}
        steps = [s.name for s in app.backend.step_list(handle.workflow_id)]
        assert steps[:4] == ["fetch@t:0", "fetch@t:1", "fetch@t:2", "sync_total"]  # gathered: one task each
        assert [s.output for s in app.backend.step_list(handle.workflow_id)[:3]] == ["0", "10", "20"]
        assert calls["flaky"] == 2
        assert h.run("sync.caller") == 21


def test_async_workflow_recovers_without_rerunning_checkpointed_steps(pg_url):
    app, calls = build(pg_url)
    with harness(app, start=START) as h:
        h.crash_at("async.parent", step=4)  # after the three fetches and the sync step
        handle = app.start("async.parent")
        assert h.result(handle)["total"] == 30
        assert h.crashes == 1
        assert [calls[f"fetch{i}"] for i in range(3)] == [1, 1, 1]
        assert calls["sync_total"] == 1


def test_async_api_from_an_event_loop(pg_url):
    app, _ = build(pg_url)

    with harness(app, start=START) as h:
        loop_result: list[int] = []

        async def drive() -> None:
            handle = await app.start_async("async.child", 1)
            while not h.idle():
                await asyncio.sleep(0.01)
            h.advance(seconds=60)
            loop_result.append(await handle.result_async(timeout=30))

        asyncio.run(drive())
        assert loop_result == [2]


def test_async_deadline_and_cancel(pg_url):
    app, _ = build(pg_url)
    with harness(app, start=START) as h:
        handle = app.start("async.parent", workflow_timeout=30)  # the child's 60 s sleep outlives it
        with pytest.raises(WorkflowCancelledError):
            h.result(handle)
        other = app.start("async.child", 5)
        h.clock.wait_for_waiters(1)
        app.cancel(other.workflow_id)
        with pytest.raises(WorkflowCancelledError):
            other.result(timeout=20)


def test_async_transactional_step_is_refused(pg_url):
    app = kit.Kit(database_url=pg_url)
    with pytest.raises(UsageError, match="plain def"):
        @app.transaction(name="tx")
        async def tx(conn) -> None:
            return None
