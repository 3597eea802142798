"""Engine robustness: fan-out of children, graceful close, swallowed lease loss, frozen servers,
user SQL errors in transactional steps, enqueue from workflow code. All against real PostgreSQL."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections import Counter

import psycopg
import pytest
from test_engine import apps  # noqa: F401 - fixture

import kit
from kit.storage import ClaimRequest, Status

pytestmark = pytest.mark.all_backends  # also on the extra targets (Citus): tests/targets.py


def _wid() -> str:
    return f"rb-{uuid.uuid4().hex[:10]}"


def test_more_parents_than_local_threads_still_finish_their_children(apps):  # noqa: F811
    """Parents block waiting for their children; children must never queue behind their parents."""
    app = apps()
    parents = 80  # more than the 64 threads of the local pool
    together = threading.Barrier(64, timeout=60)  # every pool thread holds a parent before any child starts

    @app.step(name="fan.sync")
    def sync(i):
        if i < 64:
            together.wait()
        return i

    @app.step(name="fan.leaf")
    def leaf(i):
        return i * 2

    @app.workflow(name="fan.child")
    def child(i):
        return leaf(i)

    @app.workflow(name="fan.parent")
    def parent(i):
        sync(i)
        return child(i) + 1  # calling a workflow inside a workflow: a checkpointed child

    handles = [app.start(parent, i, workflow_id=f"fan-{i}") for i in range(parents)]
    assert [h.result(timeout=120) for h in handles] == [i * 2 + 1 for i in range(parents)]
    rows = apps.sql(f"SELECT count(*) FROM {apps.schema}.workflows WHERE status = 'SUCCESS'")
    assert rows[0][0] == parents * 2


def test_close_waits_for_locally_started_workflows_within_grace(apps):  # noqa: F811
    app = apps()
    gate = apps.gate()
    calls = Counter()

    @app.step(name="grace.slow")
    def slow():
        calls["slow"] += 1
        gate()
        return "done"

    @app.workflow(name="grace.wf")
    def wf():
        return slow()

    app.start(wf, workflow_id="grace-1")
    assert gate.entered.wait(20)
    threading.Timer(0.3, gate.open).start()
    app.close(grace=30)
    rec = apps().backend.workflow_get("grace-1")
    assert rec.status == Status.SUCCESS
    assert calls["slow"] == 1


def _three_steps(app: kit.Kit, gate, calls: Counter, name: str):
    @app.step(name=f"{name}.first")
    def first():
        calls["first"] += 1
        gate()
        return 1

    @app.step(name=f"{name}.second")
    def second():
        calls["second"] += 1
        return 2

    @app.workflow(name=f"{name}.wf")
    def wf():
        return first() + second() + 10

    return wf


def test_close_hands_over_at_the_step_boundary(apps):  # noqa: F811
    """The step in flight when close begins finishes and is recorded; the workflow is then released at
    once (long lease: only the release can hand it over) and the next owner starts at the next step."""
    gate = apps.gate()
    calls = Counter()
    a = apps(lease_seconds=60, heartbeat_seconds=1)
    handle = a.start(_three_steps(a, gate, calls, "handover"), workflow_id=_wid())
    assert gate.entered.wait(20)
    threading.Timer(0.3, gate.open).start()
    summary = a.close(grace=30)
    assert (summary.finished, summary.handed_over, summary.mid_step) == (0, 1, 0), summary
    rec = apps().backend.workflow_get(handle.workflow_id)
    assert (rec.status, rec.owner, rec.epoch) == (Status.PENDING, None, 1)
    assert [(s.step_id, s.epoch) for s in apps().backend.step_list(handle.workflow_id)] == [(0, 1)]
    b = apps(lease_seconds=60, heartbeat_seconds=1)
    _three_steps(b, gate, calls, "handover")
    b.launch()
    assert b.retrieve(handle.workflow_id).result(timeout=30) == 13
    assert calls == Counter({"first": 1, "second": 1})


def test_a_step_still_running_when_the_grace_period_ends_is_released_mid_step(apps, caplog):  # noqa: F811
    gate = apps.gate()
    calls = Counter()
    a = apps(lease_seconds=60, heartbeat_seconds=1)
    handle = a.start(_three_steps(a, gate, calls, "midstep"), workflow_id=_wid())
    assert gate.entered.wait(20)
    with caplog.at_level("WARNING", logger="kit.worker"):
        summary = a.close(grace=0.2)
    assert (summary.finished, summary.handed_over, summary.mid_step) == (0, 1, 1), summary
    assert f"workflow {handle.workflow_id}: step 0 'midstep.first' still running" in caplog.text
    assert "released mid-step" in caplog.text
    b = apps(lease_seconds=60, heartbeat_seconds=1)
    _three_steps(b, gate, calls, "midstep")
    b.launch()
    gate.open()
    assert b.retrieve(handle.workflow_id).result(timeout=30) == 13
    assert calls == Counter({"first": 2, "second": 1})  # the G3 case: the step in flight ran again


def test_a_workflow_reaching_its_end_while_stopping_finishes_here(apps):  # noqa: F811
    gate = apps.gate()
    app = apps(lease_seconds=60, heartbeat_seconds=1)

    @app.step(name="ending.last")
    def last():
        gate()
        return "done"

    @app.workflow(name="ending.wf")
    def wf():
        return last()

    handle = app.start(wf, workflow_id=_wid())
    assert gate.entered.wait(20)
    threading.Timer(0.3, gate.open).start()
    summary = app.close(grace=30)
    assert (summary.finished, summary.handed_over, summary.mid_step) == (1, 0, 0), summary
    rec = apps().backend.workflow_get(handle.workflow_id)
    assert (rec.status, rec.epoch) == (Status.SUCCESS, 1)


def test_a_run_stops_at_its_next_step_once_its_lease_may_have_expired(apps, caplog):  # noqa: F811
    """No renewal confirmed within the lease (the heartbeat is gone): the run stops at its next step
    boundary, before another worker may take the workflow over, even though nobody has yet."""
    gate = apps.gate()
    calls = Counter()
    a = apps(lease_seconds=2.0, heartbeat_seconds=0.5)
    handle = a.start(_three_steps(a, gate, calls, "expiry"), workflow_id=_wid())
    assert gate.entered.wait(20)
    a.runtime._stop.set()  # its heartbeat stops, as if it could not reach the database
    time.sleep(2.5)  # past the lease
    with caplog.at_level("WARNING", logger="kit.engine"):
        gate.open()
        outcome = handle._future.result(timeout=30)
    assert outcome.status is None, "the run must stop, not go on with a lease that may have expired"
    assert "lease may have expired" in caplog.text
    assert calls == Counter({"first": 1})  # the step in flight was recorded; the next one never started here
    b = apps(lease_seconds=2.0, heartbeat_seconds=0.5)
    _three_steps(b, gate, calls, "expiry")
    b.launch()
    assert b.retrieve(handle.workflow_id).result(timeout=30) == 13
    assert calls == Counter({"first": 1, "second": 1})
    assert b.backend.workflow_get(handle.workflow_id).epoch == 2


def test_swallowed_lease_loss_stops_the_run_before_the_next_step(apps):  # noqa: F811
    app = apps(lease_seconds=30, heartbeat_seconds=10)
    ran = Counter()

    @app.step(name="swallow.first")
    def first():
        info = kit.step_info()
        ctx = kit.engine.current_context()
        # Another worker takes the workflow over while this step runs.
        app.backend.workflow_release(info.workflow_id, ctx.epoch)
        app.backend.workflow_claim(ClaimRequest("other-worker", ["swallow.wf"], 10, 60))
        ran["first"] += 1
        return 1

    @app.step(name="swallow.second")
    def second():
        ran["second"] += 1
        return 2

    @app.workflow(name="swallow.wf")
    def wf():
        try:
            first()
        except Exception:  # noqa: BLE001 - user code that swallows everything
            pass
        second()
        return "done"

    handle = app.start(wf, workflow_id=_wid())
    outcome = handle._future.result(timeout=30)
    assert outcome.status is None  # abandoned
    assert ran == Counter({"first": 1})  # the superseded run never started the second step
    assert app.backend.step_list(handle.workflow_id) == []
    rec = app.backend.workflow_get(handle.workflow_id)
    assert rec.owner == "other-worker" and rec.status == Status.RUNNING


def test_a_frozen_server_connection_is_broken_and_the_call_retried(pg_url, schema):
    """SIGSTOP the server processes behind kit's pooled connections: the call must not hang forever."""
    app = kit.Kit(database_url=pg_url, schema=schema, call_timeout=1.0, db_retry_seconds=30, pool_size=2)
    try:
        backend = app.backend
        backend._pool.wait(timeout=10)
        with psycopg.connect(pg_url, autocommit=True) as admin:
            pids = [r[0] for r in admin.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'kit' AND pid <> pg_backend_pid()")]
            assert pids, "kit's pool has no server connections to freeze"
            for pid in pids:
                os.kill(pid, signal.SIGSTOP)
            try:
                assert backend.workflow_get("no-such-workflow") is None  # answered by a fresh connection
                assert backend._watchdog.broken >= 1
            finally:
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGCONT)
                    except ProcessLookupError:
                        pass
    finally:
        app.close()


def test_user_sql_error_in_a_transactional_step_is_a_step_failure(apps):  # noqa: F811
    """A statement timeout in the user's SQL is the step failing, not a lost connection to retry."""
    app = apps()
    attempts = Counter()

    @app.transaction(name="tx.timeout")
    def slow_sql(conn):
        attempts["tx"] += 1
        conn.execute("SET LOCAL statement_timeout = '50ms'")
        conn.execute("SELECT pg_sleep(2)")

    @app.workflow(name="tx.timeout.wf")
    def wf():
        slow_sql()

    handle = app.start(wf, workflow_id=_wid())
    with pytest.raises(kit.WorkflowError) as info:
        handle.result(timeout=60)
    assert "QueryCanceled" in info.value.type_name
    assert attempts["tx"] == 1
    assert handle.status() == Status.ERROR


def test_enqueue_inside_a_workflow_is_checkpointed_with_a_derived_id(apps):  # noqa: F811
    app = apps()

    @app.workflow(name="enq.child")
    def child(x):
        return x + 1

    @app.workflow(name="enq.parent")
    def parent():
        first = app.enqueue(child, 1)
        second = app.enqueue(child, 2)
        return [first.workflow_id, second.workflow_id]

    wid = _wid()
    ids = app.start(parent, workflow_id=wid).result(timeout=30)
    assert ids == [f"{wid}/0", f"{wid}/1"]
    steps = [(s.step_id, s.name) for s in app.backend.step_list(wid)]
    assert steps == [(0, "enqueue:enq.child"), (1, "enqueue:enq.child")]
    app.launch()
    assert [app.retrieve(i).result(timeout=30) for i in ids] == [2, 3]
