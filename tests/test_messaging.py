"""Durable timers, messages and events through the public API, including crashes with them in flight."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter

import pytest
from conformance.helpers import wait_for
from test_engine import FAST, apps, crash  # noqa: F401 - fixtures and helpers

import kit
from kit.storage import Status

pytestmark = pytest.mark.all_backends  # also on the extra targets (Citus): tests/targets.py


def _wid() -> str:
    return f"msg-{uuid.uuid4().hex[:10]}"


def test_send_recv_by_topic_in_order_with_durable_timeout(apps):  # noqa: F811
    app = apps()

    @app.workflow(name="msg.inbox")
    def inbox():
        a = app.recv("orders", timeout=30)
        b = app.recv("orders", timeout=30)
        other = app.recv("audit", timeout=30)
        none = app.recv("orders", timeout=0.2)  # nothing more on that topic: None, recorded
        return [a, b, other, none]

    wid = _wid()
    handle = app.start(inbox, workflow_id=wid)
    app.send(wid, {"n": 1}, topic="orders")
    app.send(wid, {"n": 2}, topic="orders")
    app.send(wid, "a", topic="audit")
    assert handle.result(timeout=30) == [{"n": 1}, {"n": 2}, "a", None]
    names = [s.name for s in app.backend.step_list(wid)]
    assert names == ["recv.deadline", "recv:orders", "recv.deadline", "recv:orders",
                     "recv.deadline", "recv:audit", "recv.deadline", "recv:orders"]


def test_bad_messaging_input_is_a_clear_error_and_writes_nothing(apps):  # noqa: F811
    app = apps()

    @app.workflow(name="msg.target")
    def target():
        return app.recv(timeout=0)

    wid = _wid()
    app.start(target, workflow_id=wid).result(timeout=30)
    with pytest.raises(kit.WorkflowNotFoundError):
        app.send("nobody-home", "hi")
    with pytest.raises(kit.UsageError):
        app.send(wid, None)
    with pytest.raises(kit.SerializationError):
        app.send(wid, object())
    with pytest.raises(kit.UsageError):
        app.recv()  # outside a workflow
    with pytest.raises(kit.UsageError):
        app.set_event("k", 1)  # outside a workflow
    with pytest.raises(kit.UsageError):
        app.get_event(wid, "k", timeout=-1)
    with pytest.raises(kit.UsageError):
        app.sleep(-1)
    rows = apps.sql(f"SELECT count(*) FROM {apps.schema}.messages")
    assert rows == [(0,)]


def test_sends_from_workflow_code_happen_once_across_replay(apps):  # noqa: F811
    gate = apps.gate()

    def register(app: kit.Kit):
        @app.workflow(name="msg.receiver")
        def receiver(n):
            return [app.recv(timeout=30) for _ in range(n)]

        @app.step(name="msg.block")
        def block():
            gate()

        @app.workflow(name="msg.sender")
        def sender(to):
            app.send(to, "one")
            block()  # the sender's worker dies here; the send is already checkpointed
            app.send(to, "two")
            return "sent"

        return receiver, sender

    a = apps(**FAST)
    receiver, sender = register(a)
    rid = _wid()
    a.start(receiver, 2, workflow_id=rid)
    a.start(sender, rid, workflow_id=_wid())
    assert gate.entered.wait(20)
    crash(a)  # A's heartbeats stop: its leases expire, B takes over
    b = apps(**FAST)
    register(b)
    b.launch()
    gate.open()
    assert b.retrieve(rid).result(timeout=60) == ["one", "two"]
    rows = apps.sql(f"SELECT body, count(*) FROM {apps.schema}.messages GROUP BY body ORDER BY body")
    assert rows == [('"one"', 1), ('"two"', 1)]


def test_messages_are_consumed_exactly_once_across_a_crash(apps):  # noqa: F811
    """The receiver's worker dies mid-stream; its successor continues; every message is received once."""
    count = 12
    seen = Counter()
    stall = apps.gate()

    def register(app: kit.Kit):
        @app.step(name="msg.note")
        def note(i, value):
            seen[(i, value)] += 1
            if i == 5:
                stall()  # A is stuck here when it "dies"
            return value

        @app.workflow(name="msg.consumer")
        def consumer():
            out = []
            for i in range(count):
                out.append(note(i, app.recv("stream", timeout=60)))
            return out

        return consumer

    a = apps(**FAST)
    consumer = register(a)
    wid = _wid()
    a.start(consumer, workflow_id=wid)
    for i in range(count):
        a.send(wid, i, topic="stream")
    assert stall.entered.wait(30)
    crash(a)
    b = apps(**FAST)
    register(b)
    b.launch()
    threading.Timer(0.5, stall.open).start()
    assert b.retrieve(wid).result(timeout=60) == list(range(count))
    consumed = apps.sql(f"SELECT count(*), count(DISTINCT consumed_step) FROM {apps.schema}.messages "
                        "WHERE consumed_at IS NOT NULL")
    assert consumed == [(count, count)]  # each message consumed by exactly one recv step
    recv_steps = apps.sql(f"SELECT count(*) FROM {apps.schema}.steps WHERE workflow_id = %s AND name = 'recv:stream'",
                          (wid,))
    assert recv_steps == [(count,)]


def test_recovered_sleep_uses_the_recorded_wake_time(apps):  # noqa: F811
    def register(app: kit.Kit):
        @app.workflow(name="msg.sleeper")
        def sleeper():
            app.sleep(2.5)
            return "awake"

        return sleeper

    a = apps(**FAST)
    sleeper = register(a)
    wid = _wid()
    a.start(sleeper, workflow_id=wid)
    deadline = time.monotonic() + 20
    while not a.backend.step_list(wid) and time.monotonic() < deadline:
        time.sleep(0.02)
    [sleep_step] = a.backend.step_list(wid)
    wake_at = float(sleep_step.output)
    crash(a)
    b = apps(**FAST)
    register(b)
    b.launch()
    assert b.retrieve(wid).result(timeout=60) == "awake"
    rec = b.backend.workflow_get(wid)
    assert rec.recoveries >= 1 and rec.status == Status.SUCCESS
    assert [s.name for s in b.backend.step_list(wid)] == ["sleep"]  # the wake time was not recorded again
    assert rec.finished_at.timestamp() >= wake_at  # and the successor did not wake early


def test_events_latest_value_and_waiting_readers(apps):  # noqa: F811
    app = apps()
    go = threading.Event()

    @app.step(name="msg.wait_go")
    def wait_go():
        assert go.wait(30)

    @app.workflow(name="msg.progress")
    def progress():
        app.set_event("pct", 10)
        wait_go()
        app.set_event("pct", 100)
        app.set_event("done", True)
        return "ok"

    wid = _wid()
    h = app.start(progress, workflow_id=wid)
    assert app.get_event(wid, "pct", timeout=30) in (10, 100)
    assert app.get_event(wid, "missing", timeout=0.1) is None
    threading.Timer(0.2, go.set).start()
    assert app.get_event(wid, "done", timeout=30) is True  # woken by the event, not a fixed sleep
    assert app.get_event(wid, "pct", timeout=1) == 100
    assert h.result(timeout=30) == "ok"


def test_get_event_in_workflow_code_is_checkpointed(apps):  # noqa: F811
    app = apps()

    @app.workflow(name="msg.publisher")
    def publisher():
        app.set_event("answer", 42)
        return True

    @app.workflow(name="msg.reader")
    def reader(other):
        return app.get_event(other, "answer", timeout=30)

    pid, rid = _wid(), _wid()
    app.start(publisher, workflow_id=pid).result(timeout=30)
    assert app.start(reader, pid, workflow_id=rid).result(timeout=30) == 42
    assert [(s.name, s.output) for s in app.backend.step_list(rid)] == [(f"get_event:{pid}:answer", "42")]


SLOW_POLL = {"poll_seconds": 30.0}  # any wait that ends in time was ended by a notification


def test_recv_is_woken_by_notification_not_by_polling(apps):  # noqa: F811
    app = apps(**SLOW_POLL)

    @app.workflow(name="notif.wait")
    def wait():
        return app.recv(timeout=120)

    wid = _wid()
    h = app.start(wait, workflow_id=wid)
    wait_for(lambda: [s for s in app.backend.step_list(wid) if s.name == "recv.deadline"])
    time.sleep(0.2)  # it is waiting now
    app.send(wid, "ping")
    assert h.result(timeout=10) == "ping"  # long before the 30 s poll


def test_waiters_recheck_after_the_listener_reconnects(apps):  # noqa: F811
    import psycopg

    app = apps(**SLOW_POLL)

    @app.workflow(name="notif.reconnect")
    def wait():
        return app.recv(timeout=120)

    wid = _wid()
    h = app.start(wait, workflow_id=wid)
    wait_for(lambda: [s for s in app.backend.step_list(wid) if s.name == "recv.deadline"])
    with psycopg.connect(apps.url, autocommit=True) as admin:  # cut the LISTEN connection, once it exists
        listen = "SELECT pid FROM pg_stat_activity WHERE query ILIKE 'LISTEN%%' AND pid <> pg_backend_pid()"
        pids = wait_for(lambda: admin.execute(listen).fetchall())
        for (pid,) in pids:
            admin.execute("SELECT pg_terminate_backend(%s::int)", (pid,))
    # A message sent while the listener is away is found once it is back, not after the 30 s poll.
    app.send(wid, "after the cut")
    assert h.result(timeout=15) == "after the cut"


def test_sends_from_a_step_body_are_idempotent_across_retries(apps):  # noqa: F811
    app = apps()
    attempts = Counter()

    @app.workflow(name="notif.inbox")
    def inbox():
        return [app.recv(timeout=30), app.recv(timeout=0.2)]

    target = _wid()
    h = app.start(inbox, workflow_id=target)

    @app.step(name="notif.flaky_sender", retries=2, initial_delay=0.01)
    def flaky_sender():
        attempts["n"] += 1
        app.send(target, "exactly once")
        if attempts["n"] < 3:
            raise RuntimeError("fails after sending")

    @app.workflow(name="notif.sender")
    def sender():
        flaky_sender()

    app.start(sender, workflow_id=_wid()).result(timeout=30)
    assert attempts["n"] == 3
    assert h.result(timeout=30) == ["exactly once", None]
    assert apps.sql(f"SELECT count(*) FROM {apps.schema}.messages")[0][0] == 1


def test_non_finite_waits_and_bad_event_keys_are_rejected(apps):  # noqa: F811
    app = apps()

    @app.workflow(name="notif.any")
    def anything():
        return 1

    wid = _wid()
    app.start(anything, workflow_id=wid).result(timeout=30)
    for bad in (float("nan"), float("inf"), -1, 10**12):
        with pytest.raises(kit.UsageError):
            app.sleep(bad)
        with pytest.raises(kit.UsageError):
            app.get_event(wid, "k", timeout=bad)
    for key in (123, None, "", "k" * 201):
        with pytest.raises(kit.UsageError):
            app.get_event(wid, key, timeout=0)

