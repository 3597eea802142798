"""Workflow lifecycle through the public API against real PostgreSQL: cancel, resume, fork, retention,
deadlines (with a virtual clock), versioning and patch markers.

Waits are bounded polls or events; assertions are on statuses, counts and recorded steps, never timing.
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from psycopg import sql

import kit
from kit.clock import VirtualClock
from kit.errors import UsageError, WorkflowCancelledError, WorkflowConflictError, WorkflowNotFoundError
from tests.conformance.helpers import wait_for

pytestmark = pytest.mark.all_backends  # also on the extra targets (Citus): tests/targets.py

FAST = {"lease_seconds": 2.0, "heartbeat_seconds": 0.25, "poll_seconds": 0.1}


class Env:
    """Apps on the test's server and schema, closed after the test; raw SQL for checks."""

    def __init__(self, url: str, schema: str) -> None:
        self.url, self.schema = url, schema
        self.apps: list[kit.Kit] = []
        self.release = threading.Event()

    def app(self, **overrides) -> kit.Kit:
        app = kit.Kit(database_url=self.url, schema=self.schema, **{**FAST, **overrides})
        self.apps.append(app)
        return app

    def sql(self, query: str, params: tuple = ()) -> list[tuple]:
        stmt = sql.SQL(query).format(s=sql.Identifier(self.schema))
        with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as conn:
            cur = conn.execute(stmt, params)
            return cur.fetchall() if cur.description else []

    def status(self, workflow_id: str) -> str | None:
        rows = self.sql("SELECT status FROM {s}.workflows WHERE workflow_id = %s", (workflow_id,))
        return rows[0][0] if rows else None

    def steps(self, workflow_id: str) -> list[str]:
        return [r[0] for r in self.sql("SELECT name FROM {s}.steps WHERE workflow_id = %s ORDER BY step_id",
                                       (workflow_id,))]

    def close(self) -> None:
        self.release.set()
        for app in reversed(self.apps):
            app.close(grace=1)


@pytest.fixture
def env(pg_url, schema):
    e = Env(pg_url, schema)
    yield e
    e.close()


def wid() -> str:
    return f"lc-{uuid.uuid4().hex[:10]}"


# -- cancel ------------------------------------------------------------------------------------------------
def test_cancel_running_workflow_stops_at_next_step_and_cancels_children(env):
    app = env.app()
    calls: Counter[str] = Counter()
    entered = threading.Event()

    @app.step(name="blocker")
    def blocker() -> int:
        calls["blocker"] += 1
        entered.set()
        env.release.wait(30)
        return 1

    @app.step(name="after")
    def after() -> int:
        calls["after"] += 1
        return 2

    @app.workflow(name="lc.child")
    def child() -> int:
        return blocker() + after()

    @app.workflow(name="lc.parent")
    def parent() -> int:
        return child() + after()

    app.launch()
    pid = wid()
    handle = app.start(parent, workflow_id=pid)
    assert entered.wait(20)
    cancelled = app.cancel(pid)
    assert sorted(cancelled) == sorted([pid, f"{pid}/0"])
    env.release.set()
    with pytest.raises(WorkflowCancelledError):
        handle.result(timeout=20)
    with pytest.raises(WorkflowCancelledError):
        app.retrieve(f"{pid}/0").result(timeout=20)
    wait_for(lambda: not app.runtime._held, what="runs to end")
    assert env.status(pid) == "CANCELLED" and env.status(f"{pid}/0") == "CANCELLED"
    assert calls["after"] == 0  # no step started after the cancel
    assert env.steps(f"{pid}/0") == []  # the in-flight step's checkpoint was refused (fenced)
    assert app.cancel(pid) == []  # already finished: nothing to cancel, no error


def test_cancel_pending_workflow_never_runs(env):
    submitter = env.app()
    ran = Counter()

    @submitter.workflow(name="lc.pending")
    def pending() -> int:
        ran["x"] += 1
        return 1

    w = wid()
    submitter.enqueue(pending, workflow_id=w)
    assert submitter.cancel(w) == [w]
    worker = env.app()
    worker.workflow(name="lc.pending")(pending.__wrapped__)
    worker.launch()
    with pytest.raises(WorkflowCancelledError):
        worker.retrieve(w).result(timeout=10)
    assert ran["x"] == 0


def test_cancel_sleeping_workflow_wakes_it(env):
    app = env.app()

    @app.workflow(name="lc.sleeper")
    def sleeper() -> str:
        app.sleep(3600)
        return "woke"

    app.launch()
    w = wid()
    handle = app.start(sleeper, workflow_id=w)
    wait_for(lambda: env.steps(w) == ["sleep"], what="sleep recorded")
    app.cancel(w)
    with pytest.raises(WorkflowCancelledError):
        handle.result(timeout=10)
    wait_for(lambda: not app.runtime._held, what="the sleeping thread to end")


def test_cancel_unknown_workflow_is_a_clear_error(env):
    app = env.app()
    with pytest.raises(WorkflowNotFoundError):
        app.cancel("no-such-workflow")
    with pytest.raises(UsageError):
        app.cancel("has space")


# -- resume --------------------------------------------------------------------------------------------
def test_resume_failed_workflow_reruns_only_the_failed_step(env):
    app = env.app()
    calls: Counter[str] = Counter()
    broken = {"on": True}

    @app.step(name="one")
    def one() -> int:
        calls["one"] += 1
        return 1

    @app.step(name="flaky")
    def flaky() -> int:
        calls["flaky"] += 1
        if broken["on"]:
            raise ConnectionError("provider down")
        return 10

    @app.workflow(name="lc.resumable")
    def resumable() -> int:
        return one() + flaky()

    app.launch()
    w = wid()
    with pytest.raises(kit.WorkflowError):
        app.start(resumable, workflow_id=w).result(timeout=20)
    assert env.status(w) == "ERROR"
    broken["on"] = False
    assert app.resume(w).result(timeout=20) == 11
    assert calls == Counter({"one": 1, "flaky": 2})
    assert env.steps(w) == ["one", "flaky"]


def test_resume_cancelled_workflow_continues_from_checkpoint(env):
    app = env.app()
    calls: Counter[str] = Counter()
    gate = threading.Event()
    entered = threading.Event()

    @app.step(name="first")
    def first() -> int:
        calls["first"] += 1
        return 1

    @app.step(name="second")
    def second() -> int:
        calls["second"] += 1
        entered.set()
        gate.wait(30)
        return 2

    @app.workflow(name="lc.cancel_resume")
    def flow() -> int:
        return first() + second()

    app.launch()
    w = wid()
    app.start(flow, workflow_id=w)
    assert entered.wait(20)
    app.cancel(w)
    gate.set()
    wait_for(lambda: not app.runtime._held, what="the cancelled run to end")
    assert env.steps(w) == ["first"]
    assert app.resume(w).result(timeout=20) == 3
    assert calls == Counter({"first": 1, "second": 2})


def test_resume_refuses_running_and_succeeded_workflows(env):
    app = env.app()
    gate = threading.Event()

    @app.workflow(name="lc.busy")
    def busy() -> int:
        gate.wait(30)
        return 1

    app.launch()
    w = wid()
    handle = app.start(busy, workflow_id=w)
    with pytest.raises(kit.WorkflowStateError, match="RUNNING"):
        app.resume(w)
    gate.set()
    assert handle.result(timeout=20) == 1
    with pytest.raises(kit.WorkflowStateError, match="SUCCESS"):
        app.resume(w)
    with pytest.raises(WorkflowNotFoundError):
        app.resume("missing-workflow")
    assert env.status(w) == "SUCCESS"


# -- fork ----------------------------------------------------------------------------------------------
def test_fork_reuses_checkpoints_before_the_step(env):
    app = env.app()
    calls: Counter[str] = Counter()

    @app.step(name="a")
    def a(x: int) -> int:
        calls["a"] += 1
        return x + 1

    @app.step(name="b")
    def b(x: int) -> int:
        calls["b"] += 1
        return x * 10

    @app.step(name="c")
    def c(x: int) -> int:
        calls["c"] += 1
        return x - 3

    @app.workflow(name="lc.forkable")
    def forkable(x: int) -> int:
        app.set_event("stage", "a")
        return c(b(a(x)))

    app.launch()
    w = wid()
    assert app.start(forkable, 4, workflow_id=w).result(timeout=20) == 47
    forked = app.fork(w, from_step=2, new_workflow_id=w + "-f")
    assert forked.result(timeout=20) == 47
    assert calls == Counter({"a": 1, "b": 2, "c": 2})  # steps 0 (event) and 1 (a) reused
    assert env.steps(w + "-f") == ["set_event:stage", "a", "b", "c"]
    assert app.get_event(w + "-f", "stage", timeout=0) == "a"  # events of reused steps come along
    assert env.sql("SELECT forked_from FROM {s}.workflows WHERE workflow_id = %s", (w + "-f",)) == [(w,)]
    # A fork from the start runs everything again.
    assert app.fork(w, from_step=0).result(timeout=20) == 47
    assert calls == Counter({"a": 2, "b": 3, "c": 3})


def test_fork_bad_input_writes_nothing(env):
    app = env.app()

    @app.step(name="only")
    def only() -> int:
        return 1

    @app.workflow(name="lc.short")
    def short() -> int:
        return only()

    app.launch()
    w = wid()
    app.start(short, workflow_id=w).result(timeout=20)
    before = env.sql("SELECT count(*) FROM {s}.workflows")[0][0]
    with pytest.raises(UsageError, match="between 0 and 1"):
        app.fork(w, from_step=5)
    with pytest.raises(UsageError, match="from_step"):
        app.fork(w, from_step=-1)
    with pytest.raises(WorkflowNotFoundError):
        app.fork("nope-nope", from_step=0)
    app.fork(w, from_step=0, new_workflow_id=w + "x")
    with pytest.raises(WorkflowConflictError):
        app.fork(w, from_step=0, new_workflow_id=w + "x")
    with pytest.raises(UsageError, match="new workflow id"):
        app.fork(w, from_step=0, new_workflow_id=w)
    assert env.sql("SELECT count(*) FROM {s}.workflows")[0][0] == before + 1  # only the one good fork


# -- retention -------------------------------------------------------------------------------------------
def test_gc_deletes_finished_in_batches_and_never_live_work(env):
    app = env.app()
    gate = threading.Event()
    entered = threading.Event()

    @app.workflow(name="lc.done")
    def done(i: int) -> int:
        app.set_event("i", i)
        app.write_stream("s", i)
        return i

    @app.workflow(name="lc.kid")
    def kid() -> int:
        return 1

    @app.workflow(name="lc.waiting_parent")
    def waiting_parent() -> int:
        h = app.start(kid)
        h.result()
        entered.set()
        gate.wait(30)
        return 1

    app.launch()
    ids = [wid() for _ in range(5)]
    for i, w in enumerate(ids):
        app.start(done, i, workflow_id=w).result(timeout=20)
    app.send(ids[0], "hello")
    parent_id = wid()
    parent = app.start(waiting_parent, workflow_id=parent_id)
    assert entered.wait(20)
    assert app.gc("1d") == 0  # nothing is that old
    assert app.gc(timedelta(0), dry_run=True) >= 5
    deleted = app.gc(0, batch_size=2)
    assert deleted >= 5
    for w in ids:
        assert env.status(w) is None
        assert env.sql("SELECT count(*) FROM {s}.steps WHERE workflow_id = %s", (w,)) == [(0,)]
    for table in ("messages", "events", "streams"):
        assert env.sql(f"SELECT count(*) FROM {{s}}.{table} WHERE workflow_id = ANY(%s)", (ids,)) == [(0,)]
    assert env.status(parent_id) == "RUNNING"
    assert env.status(f"{parent_id}/0") == "SUCCESS"  # child of a running parent is kept
    gate.set()
    assert parent.result(timeout=20) == 1
    with pytest.raises(UsageError):
        app.gc("thirty days")
    with pytest.raises(UsageError):
        app.gc("1d", batch_size=0)


# -- deadlines -------------------------------------------------------------------------------------------
def test_deadline_cancels_at_the_next_boundary_and_propagates_to_children(env):
    clock = VirtualClock(datetime(2026, 1, 1, tzinfo=timezone.utc))
    app = env.app(clock=clock)
    ran: Counter[str] = Counter()

    @app.step(name="work")
    def work() -> int:
        ran["work"] += 1
        return 1

    @app.workflow(name="lc.child_long", timeout=7200)
    def child_long() -> int:
        app.sleep(5400)  # 1.5 h: past the parent's 1 h deadline
        return work()

    @app.workflow(name="lc.deadline_parent", timeout=3600)
    def deadline_parent() -> int:
        work()
        return child_long()

    app.launch()
    w = wid()
    handle = app.start(deadline_parent, workflow_id=w)
    wait_for(lambda: f"{w}/1" in clock.waiting_workflows(), what="the child to sleep")
    child_deadline = env.sql("SELECT deadline_at FROM {s}.workflows WHERE workflow_id = %s", (f"{w}/1",))[0][0]
    parent_deadline = env.sql("SELECT deadline_at FROM {s}.workflows WHERE workflow_id = %s", (w,))[0][0]
    assert child_deadline == parent_deadline == datetime(2026, 1, 1, 1, tzinfo=timezone.utc)
    clock.advance(hours=1)
    with pytest.raises(WorkflowCancelledError) as info:
        handle.result(timeout=20)
    assert "DeadlineExceeded" in info.value.type_name
    assert env.status(f"{w}/1") == "CANCELLED"
    assert ran["work"] == 1  # the child's step after the sleep never ran


def test_queued_workflow_past_its_deadline_never_starts(env):
    clock = VirtualClock(datetime(2026, 1, 1, tzinfo=timezone.utc))
    submitter = env.app(clock=clock)
    ran = Counter()

    def body() -> int:
        ran["x"] += 1
        return 1

    submitter.workflow(name="lc.late")(body)
    w = wid()
    submitter.enqueue("lc.late", workflow_id=w, workflow_timeout=60)
    clock.advance(minutes=5)
    worker = env.app(clock=clock)
    worker.workflow(name="lc.late")(body)
    worker.launch()
    with pytest.raises(WorkflowCancelledError):
        worker.retrieve(w).result(timeout=20)
    assert ran["x"] == 0


def test_bad_timeouts_are_refused(env):
    app = env.app()
    app.backend  # noqa: B018 - create the schema, so "nothing written" can be checked
    with pytest.raises(UsageError, match="timeout"):
        app.workflow(name="lc.neg", timeout=-1)
    with pytest.raises(UsageError, match="timeout"):
        app.workflow(name="lc.nan", timeout=float("nan"))

    @app.workflow(name="lc.ok")
    def ok() -> int:
        return 1

    with pytest.raises(UsageError, match="workflow_timeout"):
        app.start(ok, workflow_timeout=0)
    with pytest.raises(UsageError, match="workflow_timeout"):
        app.enqueue(ok, workflow_timeout="soon")
    assert env.sql("SELECT count(*) FROM {s}.workflows") == [(0,)]


# -- versioning ------------------------------------------------------------------------------------------
def test_new_version_worker_replays_old_work_only_when_compatible(env, caplog):
    old = env.app(app_version="v1")
    calls: Counter[str] = Counter()

    def body(x: int) -> int:
        calls["run"] += 1
        return x * 2

    old.workflow(name="lc.versioned")(body)
    ids = [wid() for _ in range(3)]
    for i, w in enumerate(ids):
        old.enqueue("lc.versioned", i, workflow_id=w)
    assert {r[0] for r in env.sql("SELECT app_version FROM {s}.workflows")} == {"v1"}

    strict = env.app(app_version="v2")
    strict.workflow(name="lc.versioned")(body)
    with caplog.at_level("WARNING", logger="kit.lifecycle"):
        strict.launch()
    assert "'v1': 3" in caplog.text
    own = wid()
    assert strict.start("lc.versioned", 21, workflow_id=own).result(timeout=20) == 42
    # The strict worker claims its own version's queued work but never v1's.
    own_q = wid()
    strict.enqueue("lc.versioned", 5, workflow_id=own_q)
    assert strict.retrieve(own_q).result(timeout=20) == 10
    assert [env.status(w) for w in ids] == ["PENDING"] * 3
    strict.close()

    compatible = env.app(app_version="v2", compatible_versions=["v1"])
    compatible.workflow(name="lc.versioned")(body)
    compatible.launch()
    assert [compatible.retrieve(w).result(timeout=20) for w in ids] == [0, 2, 4]
    assert calls["run"] == 5


def test_patched_keeps_old_runs_on_the_old_path(env):
    v1 = env.app(app_version="v1")
    gate = threading.Event()
    entered = threading.Event()
    seen: list[str] = []

    @v1.step(name="charge")
    def charge() -> str:
        seen.append("charge")
        return "charged"

    @v1.step(name="ship")
    def ship() -> str:
        return "shipped"

    @v1.step(name="block")
    def block() -> int:
        entered.set()
        gate.wait(30)
        return 0

    @v1.workflow(name="lc.patched")
    def flow_v1() -> str:
        charge()
        ship()
        block()
        return "v1-done"

    v1.launch()
    old_run = wid()
    v1.start(flow_v1, workflow_id=old_run)
    assert entered.wait(20)
    v1.runtime._stop.set()  # the v1 process "dies" holding the run (its heartbeat stops)

    v2 = env.app(app_version="v2", compatible_versions="v1")

    @v2.step(name="charge")
    def charge2() -> str:
        seen.append("charge")
        return "charged"

    @v2.step(name="ship")
    def ship2() -> str:
        return "shipped"

    @v2.step(name="block")
    def block2() -> int:
        return 0

    @v2.step(name="email")
    def email() -> str:
        seen.append("email")
        return "sent"

    @v2.workflow(name="lc.patched")
    def flow_v2() -> str:
        charge2()
        if v2.patched("send-email"):  # v2 sends an email instead of the v1 shipping steps
            email()
            return "v2-done"
        ship2()
        block2()
        return "v1-path"

    v2.launch()
    # The old run recorded 'ship' where the patch now stands: it replays the old path, no marker.
    assert v2.retrieve(old_run).result(timeout=30) == "v1-path"
    assert env.steps(old_run) == ["charge", "ship", "block"]
    new_run = wid()
    assert v2.start(flow_v2, workflow_id=new_run).result(timeout=20) == "v2-done"
    assert env.steps(new_run) == ["charge", "patch:send-email", "email"]
    assert seen.count("email") == 1 and seen.count("charge") == 2
    gate.set()
