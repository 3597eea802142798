"""Lifecycle edge cases found by an adversarial review (issue 4), each pinned against real PostgreSQL.
Comments marked ``Was:`` describe the bug the test caught before its fix.

Waits are events and bounded polls; assertions are on statuses, rows and results, never timing.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from datetime import datetime, timezone

import pytest

import kit
import kit.testing
from kit import engine
from kit.clock import VirtualClock
from kit.errors import UsageError, WorkflowCancelledError, WorkflowError
from tests.conformance.helpers import wait_for
from tests.test_lifecycle import Env as LifecycleEnv

pytestmark = pytest.mark.all_backends  # also on the extra targets (Citus): tests/targets.py

OLD_TENANTS = 1000
FAST = {"lease_seconds": 2.0, "heartbeat_seconds": 0.25, "poll_seconds": 0.1}


class Env(LifecycleEnv):
    """The lifecycle tests' environment; also clears a crash hook a test left installed."""

    def close(self) -> None:
        engine.crash_hook = None
        super().close()


@pytest.fixture
def env(pg_url, schema):
    e = Env(pg_url, schema)
    yield e
    e.close()


def wid() -> str:
    return f"rv-{uuid.uuid4().hex[:10]}"


def terminal(env: Env, workflow_id: str) -> str:
    return wait_for(lambda: (s := env.status(workflow_id)) in ("SUCCESS", "ERROR", "CANCELLED") and s,
                    what=f"{workflow_id} to finish")


# -- cancel ------------------------------------------------------------------------------------------------
# Was: a child whose start step body runs after the parent's cancel committed is created RUNNING and runs to the end (workflow_create is not fenced by the parent's epoch)
def test_child_started_after_parent_cancel_does_not_run(env):
    app = env.app()
    remote = env.app()  # another process: its cancel does not set this process's ctx.lost
    child_steps: list[str] = []

    @app.step(name="rv_child_step")
    def child_step() -> str:
        child_steps.append("ran")
        return "child done"

    @app.workflow(name="rv_child")
    def child() -> str:
        return child_step()

    @app.workflow(name="rv_parent")
    def parent() -> str:
        return child()

    pid = wid()
    cancelled: list[list[str]] = []

    def hook(ctx, step_id, name, phase):  # the cancel lands right at the parent's step boundary
        if ctx.workflow_id == pid and name == "start:rv_child" and phase == "before" and not cancelled:
            cancelled.append(remote.cancel(pid))

    engine.crash_hook = hook
    try:
        handle = app.start(parent, workflow_id=pid)
        with pytest.raises(WorkflowCancelledError):
            handle.result(timeout=20)
    finally:
        engine.crash_hook = None
    assert cancelled == [[pid]]
    child_id = f"{pid}/0"
    if env.status(child_id) is not None:
        # If the child row exists at all, it must be cancelled with its parent and have run nothing.
        assert terminal(env, child_id) == "CANCELLED"
        assert child_steps == []


# Was: a workflow-code send (and any other unfenced write in a step body, like a child enqueue) is delivered after the cancel committed: message_send is not fenced by the sender's epoch
def test_send_step_started_after_cancel_delivers_nothing(env):
    app = env.app()
    remote = env.app()

    @app.workflow(name="rv_inbox")
    def inbox() -> str:
        return "idle"

    @app.workflow(name="rv_sender")
    def sender(target: str) -> str:
        app.send(target, "charge-card")
        return "sent"

    target = wid()
    pid = wid()
    cancelled: list[list[str]] = []

    def hook(ctx, step_id, name, phase):
        if ctx.workflow_id == pid and name.startswith("send:") and phase == "before" and not cancelled:
            cancelled.append(remote.cancel(pid))

    app.enqueue(inbox, workflow_id=target)  # no worker: it stays PENDING and can receive messages
    engine.crash_hook = hook
    try:
        with pytest.raises(WorkflowCancelledError):
            app.start(sender, target, workflow_id=pid).result(timeout=20)
    finally:
        engine.crash_hook = None
    assert cancelled == [[pid]]
    assert env.sql("SELECT count(*) FROM {s}.messages WHERE workflow_id = %s", (target,)) == [(0,)]


# -- deadlines ---------------------------------------------------------------------------------------------
# Was: retry backoff of a step ignores the workflow deadline: the step re-runs after it and the workflow ends SUCCESS
def test_step_retry_does_not_run_past_the_deadline(env):
    clock = VirtualClock(datetime(2026, 1, 1, tzinfo=timezone.utc))
    app = env.app(clock=clock)
    attempts: list[int] = []

    @app.step(name="rv_flaky", retries=3, initial_delay=100.0)
    def flaky() -> str:
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("provider down")
        return "charged"

    @app.workflow(name="rv_deadline_retry", timeout=10)
    def wf() -> str:
        return flaky()

    handle = app.start(wf)
    assert clock.wait_for_waiters(1, timeout=15)  # the retry backoff waits on the app clock
    clock.advance(100)  # past the 10 s deadline, at the retry time
    with pytest.raises(WorkflowCancelledError):
        handle.result(timeout=20)
    assert len(attempts) == 1  # no attempt starts after the deadline passed


# Was: _pause checks the deadline only when it woke before the wake time: a sleep whose wake time also passed (virtual-clock jump, or a recovery after both passed) returns normally and the workflow ends SUCCESS past its deadline
def test_deadline_passed_during_sleep_cancels_even_if_wake_time_also_passed(env):
    clock = VirtualClock(datetime(2026, 1, 1, tzinfo=timezone.utc))
    app = env.app(clock=clock)

    @app.workflow(name="rv_oversleep", timeout=60)
    def wf() -> str:
        app.sleep(3600)
        return "slept"

    handle = app.start(wf)
    assert clock.wait_for_waiters(1, timeout=15)
    clock.advance(3600)  # both the deadline (60 s) and the wake time are behind us now
    with pytest.raises(WorkflowCancelledError):
        handle.result(timeout=20)


def test_deadline_caught_and_swallowed_still_ends_cancelled(env):
    clock = VirtualClock(datetime(2026, 1, 1, tzinfo=timezone.utc))
    app = env.app(clock=clock)
    cleaned: list[str] = []

    @app.workflow(name="rv_swallow", timeout=60)
    def wf() -> str:
        try:
            app.sleep(3600)
        except kit.DeadlineExceededError:
            cleaned.append("yes")
            return "ignored"
        return "slept"

    handle = app.start(wf)
    assert clock.wait_for_waiters(1, timeout=15)
    clock.advance(60)  # exactly the deadline
    with pytest.raises(WorkflowCancelledError):
        handle.result(timeout=20)
    assert cleaned == ["yes"]


# -- retention ---------------------------------------------------------------------------------------------
def _parent_with_child(app: kit.Kit, fail: dict) -> tuple:
    @app.step(name="rv_c_step")
    def c_step() -> str:
        return "shipped"

    @app.workflow(name="rv_gc_child")
    def child() -> str:
        return c_step()

    @app.step(name="rv_after")
    def after() -> str:
        if fail["on"]:
            raise RuntimeError("provider down")
        return "ok"

    @app.workflow(name="rv_gc_parent")
    def parent() -> str:
        got = child()
        after()
        return got

    return parent, child


# Was: gc deletes a finished child of an ERROR/CANCELLED parent (resumable), so the resumed parent fails with WorkflowNotFoundError
def test_gc_keeps_children_a_resumable_parent_still_needs(env):
    fail = {"on": True}
    first = env.app()
    parent, _ = _parent_with_child(first, fail)
    pid = wid()
    with pytest.raises(WorkflowError):
        first.start(parent, workflow_id=pid).result(timeout=20)
    assert env.status(pid) == "ERROR" and env.status(f"{pid}/0") == "SUCCESS"
    first.close(grace=1)
    # The child finished long ago (a long-running parent); the parent failed just now.
    env.sql("UPDATE {s}.workflows SET finished_at = now() - interval '40 days' WHERE workflow_id = %s",
            (f"{pid}/0",))

    worker = env.app()
    parent2, _ = _parent_with_child(worker, fail)
    worker.gc("30d")
    fail["on"] = False
    worker.launch()
    assert worker.resume(pid).result(timeout=20) == "shipped"


# Was: a fork re-attaches to the source's child (the copied start: checkpoint) but gc only protects children by parent_id, so gc of the finished source deletes a child the live fork still needs
def test_gc_keeps_a_child_that_a_pending_fork_reattaches_to(env):
    fail = {"on": True}
    first = env.app()
    parent, _ = _parent_with_child(first, fail)
    pid = wid()
    with pytest.raises(WorkflowError):
        first.start(parent, workflow_id=pid).result(timeout=20)
    fork = first.fork(pid, from_step=1)  # reuses the checkpoint of the child's start (step 0)
    first.close(grace=1)
    env.sql("UPDATE {s}.workflows SET finished_at = now() - interval '40 days' WHERE workflow_id IN (%s, %s)",
            (pid, f"{pid}/0"))

    worker = env.app()
    _parent_with_child(worker, fail)
    worker.gc("30d")
    fail["on"] = False
    worker.launch()
    assert worker.retrieve(fork.workflow_id).result(timeout=20) == "shipped"


# -- resume ------------------------------------------------------------------------------------------------
# Was: WorkflowHandle.result in a process that saw the earlier ending returns that stale outcome after a resume elsewhere (Kit._outcomes is only cleared in the resuming process)
def test_result_after_resume_elsewhere_is_not_the_stale_outcome(env):
    fail = {"on": True}

    def register(app: kit.Kit):
        @app.step(name="rv_flip")
        def flip() -> str:
            if fail["on"]:
                raise RuntimeError("provider down")
            return "fixed"

        @app.workflow(name="rv_resume_cache")
        def wf() -> str:
            return flip()

        return wf

    ran_here = env.app()
    wf = register(ran_here)
    w = wid()
    with pytest.raises(WorkflowError):
        ran_here.start(wf, workflow_id=w).result(timeout=20)

    other = env.app()
    register(other)
    other.launch()
    fail["on"] = False
    assert other.resume(w).result(timeout=20) == "fixed"
    assert env.status(w) == "SUCCESS"
    assert ran_here.retrieve(w).result(timeout=20) == "fixed"


# Was: workflow_resume_tree resumes every CANCELLED descendant, including a child the parent cancelled on purpose (or one cancelled by its own deadline) long before the parent ended
def test_resume_does_not_resurrect_a_child_the_parent_cancelled_itself(env):
    fail = {"on": True}
    app = env.app()  # no worker: the enqueued child stays PENDING until cancelled

    @app.workflow(name="rv_loser")
    def loser() -> str:
        return "should not run"

    @app.step(name="rv_boom")
    def boom() -> str:
        if fail["on"]:
            raise RuntimeError("boom")
        return "ok"

    @app.workflow(name="rv_racer")
    def racer() -> str:
        h = app.enqueue(loser)
        app.cancel(h.workflow_id)  # business logic: this child is not wanted any more
        boom()
        return h.workflow_id

    pid = wid()
    with pytest.raises(WorkflowError):
        app.start(racer, workflow_id=pid).result(timeout=20)
    child_id = f"{pid}/0"
    assert env.status(child_id) == "CANCELLED"
    app.resume(pid)
    assert env.status(child_id) == "CANCELLED"


# -- fork --------------------------------------------------------------------------------------------------
# Was: fork copies an event only when its LATEST write is before from_step; a key set before from_step and again later is missing from the fork
def test_fork_copies_events_set_before_from_step_even_if_overwritten_later(env):
    app = env.app()

    @app.step(name="rv_noop")
    def noop() -> int:
        return 1

    @app.workflow(name="rv_events")
    def wf() -> str:
        app.set_event("stage", "reserved")  # step 0
        noop()  # step 1
        app.set_event("stage", "shipped")  # step 2
        return "done"

    src = wid()
    assert app.start(wf, workflow_id=src).result(timeout=20) == "done"
    fork = app.fork(src, from_step=2, new_workflow_id=wid())  # no worker: the fork stays PENDING
    assert app.get_event(fork.workflow_id, "stage", timeout=0) == "reserved"


# Was: workflow_fork_insert does not copy partition_key: a fork of a workflow on a partitioned queue is never claimed
def test_fork_on_a_partitioned_queue_runs(env):
    app = env.app()
    q = app.queue("rv_tenants", partitioned=True, partition_concurrency=1)

    @app.workflow(name="rv_tenant_wf")
    def wf(n: int) -> int:
        return n * 2

    app.launch()
    src = q.enqueue(wf, 21, partition_key="acme")
    assert src.result(timeout=20) == 42
    fork = app.fork(src.workflow_id, from_step=0)
    assert fork.result(timeout=10) == 42  # never claimed: its partition_key is NULL
    rows = env.sql("SELECT partition_key FROM {s}.workflows WHERE workflow_id = %s", (fork.workflow_id,))
    assert rows == [("acme",)]


# Was: queue_claim_partitioned walks tenants without the versions (and names) filter, capped at 1000: tenants holding only work of other versions starve compatible work behind them
def test_partitioned_claim_is_not_starved_by_tenants_of_other_versions(env):
    old = env.app(app_version="v1")
    q_old = old.queue("rv_deploy", partitioned=True, partition_concurrency=1)

    @old.workflow(name="rv_deploy_wf")
    def wf_old(n: int) -> int:
        return n

    first = q_old.enqueue(wf_old, 0, partition_key="t0000")
    # 1000 more tenants with pending v1 work (inserted in bulk like the first one).
    env.sql("""INSERT INTO {s}.workflows (workflow_id, name, status, inputs, queue, priority, app_version,
                                          partition_key)
               SELECT 'old-' || i, name, 'PENDING', inputs, queue, priority, app_version, 't' || lpad(i::text, 4, '0')
                 FROM {s}.workflows, generate_series(1, %s) i WHERE workflow_id = %s""", (OLD_TENANTS, first.workflow_id))
    new = env.app(app_version="v2")
    q_new = new.queue("rv_deploy", partitioned=True, partition_concurrency=1)

    @new.workflow(name="rv_deploy_wf")
    def wf_new(n: int) -> int:
        return n

    h = q_new.enqueue(wf_new, 7, partition_key="zzzz")
    new.launch()
    assert h.result(timeout=10) == 7


# -- async -------------------------------------------------------------------------------------------------
# Was: positions of gathered multi-step coroutines depend on interleaving; replay (recorded steps do not yield) hands one task another task's recorded output
def test_async_gather_of_multi_step_coroutines_replays_the_same_values(pg_url, schema):
    app = kit.Kit(database_url=pg_url, schema=schema)

    @app.step(name="rv_echo")
    async def echo(x: int) -> int:
        await asyncio.sleep(0)
        return x

    async def helper(x: int) -> tuple:
        a = await echo(x)
        b = await echo(x + 10)
        return (a, b)

    @app.workflow(name="rv_gather")
    async def wf() -> list:
        return list(await asyncio.gather(helper(1), helper(2)))

    with kit.testing.harness(app) as h:
        h.crash_at(wf, step=3)  # steps 0..2 recorded, then the process "dies"
        got = h.run(wf, timeout=20)
        assert h.crashes == 1
    assert [tuple(x) for x in got] == [(1, 11), (2, 12)]


def test_async_gathered_steps_get_distinct_step_info_and_keys(pg_url, schema):
    app = kit.Kit(database_url=pg_url, schema=schema)
    seen: list[tuple] = []

    @app.step(name="rv_info")
    async def info(x: int) -> str:
        await asyncio.sleep(0)
        i = kit.step_info()
        seen.append((x, i.step_id, i.idempotency_key))
        return i.idempotency_key

    @app.workflow(name="rv_infos")
    async def wf() -> list:
        return list(await asyncio.gather(*(info(x) for x in range(4))))

    with kit.testing.harness(app) as h:
        keys = h.run(wf, timeout=20)
    assert len(set(keys)) == 4
    assert sorted(s[1] for s in seen) == [0, 1, 2, 3]
    assert [k.rsplit(":", 1)[1] for k in keys] == ["0", "1", "2", "3"]


# Was: when one gathered task fails, asyncio.run's executor shutdown joins the to_thread still blocked in a child's result(): the parent cannot end ERROR until that child ends
def test_async_parent_failing_beside_a_waiting_child_ends_promptly(env):
    app = env.app()

    @app.workflow(name="rv_slow_child")
    async def slow_child() -> str:
        await app.sleep_async(3600)
        return "late"

    @app.step(name="rv_fail_async")
    async def fail_async() -> str:
        await asyncio.sleep(0)
        raise RuntimeError("boom")

    @app.workflow(name="rv_gather_fail")
    async def parent() -> list:
        return list(await asyncio.gather(slow_child(), fail_async()))

    pid = wid()
    app.start(parent, workflow_id=pid)
    try:
        wait_for(lambda: env.status(f"{pid}/0") == "RUNNING", what="the child to run")
        wait_for(lambda: env.status(pid) in ("ERROR", "SUCCESS", "CANCELLED"), timeout=15, what="the parent to end")
        assert env.status(pid) == "ERROR"
    finally:
        app.cancel(f"{pid}/0")  # lets the blocked thread go, whatever happened


# -- kit.testing -------------------------------------------------------------------------------------------
# Was: runtime.awaiting is a set of ids: an async parent awaiting two children is dropped from it when the first child ends, so the harness never skips time for the second
def test_harness_skips_time_for_async_parent_gathering_two_children(pg_url, schema):
    app = kit.Kit(database_url=pg_url, schema=schema)
    gate, first_done = threading.Event(), threading.Event()

    @app.step(name="rv_gate")
    def gate_step() -> int:
        gate.wait(30)
        return 1

    @app.workflow(name="rv_quick")
    async def quick() -> int:
        return gate_step()

    @app.workflow(name="rv_napper")
    async def napper(days: int) -> int:
        await app.sleep_async(days * 86400)
        return days

    async def first() -> int:
        got = await quick()
        first_done.set()
        return got

    @app.workflow(name="rv_gather_children")
    async def parent() -> list:
        return list(await asyncio.gather(first(), napper(1)))

    with kit.testing.harness(app, start=datetime(2026, 1, 1, tzinfo=timezone.utc)) as h:
        handle = app.start(parent)
        assert h.clock.wait_for_waiters(1, timeout=15)  # the napper child sleeps
        gate.set()
        assert first_done.wait(15)  # the parent's wait on the first child is over; it still awaits the napper
        assert h.result(handle, timeout=10) == [1, 1]


# Was: Kit._queues_defined survives harness cleanup, so a second harness on the same app never stores its queue limits in the fresh schema (limits silently off)
def test_second_harness_on_the_same_app_keeps_queue_limits(pg_url, schema):
    app = kit.Kit(database_url=pg_url, schema=schema)
    q = app.queue("rv_limited", concurrency=1)

    @app.workflow(name="rv_q_wf")
    def wf() -> int:
        return 1

    for _ in range(2):  # two tests of one user module sharing their app
        with kit.testing.harness(app) as h:
            assert h.result(q.enqueue(wf)) == 1
            assert app.backend.queue_get("rv_limited") is not None


# Was: crash_at(after_body=True) never fires for a transactional step (the "after" crash point is only on the non-transactional path), silently
def test_crash_at_after_body_of_a_transactional_step_fires(pg_url, schema):
    app = kit.Kit(database_url=pg_url, schema=schema)
    runs: list[int] = []

    @app.transaction(name="rv_tx")
    def tx(conn) -> int:
        runs.append(1)
        return conn.execute("SELECT 41 + 1").fetchone()[0]

    @app.workflow(name="rv_tx_wf")
    def wf() -> int:
        return tx()

    with kit.testing.harness(app) as h:
        h.crash_at(wf, step=0, after_body=True)
        assert h.run(wf, timeout=20) == 42
        assert h.crashes == 1
        assert len(runs) == 2  # the body ran, its transaction rolled back with the crash, then ran again


# -- bad input ---------------------------------------------------------------------------------------------
# Was: ages that parse but overflow a PostgreSQL interval reach the database instead of raising UsageError
@pytest.mark.parametrize("age", ["100000000000d", 10**400], ids=["huge-text", "huge-int"])
def test_gc_age_out_of_range_is_a_usage_error(env, age):
    app = env.app()
    with pytest.raises(UsageError):
        app.gc(age)
