"""Streams through the public API: a workflow writes, readers iterate until the close, across crashes."""

from __future__ import annotations

import json
import threading
import uuid

import pytest
from test_engine import FAST, apps, crash, local_outcome  # noqa: F401 - fixtures and helpers

import kit
from kit.storage import Status

pytestmark = pytest.mark.all_backends  # also on the extra targets (Citus): tests/targets.py


def _wid() -> str:
    return f"st-{uuid.uuid4().hex[:10]}"


class Reader:
    """Iterates a stream in a thread, collecting every value (and the error that ended it, if any)."""

    def __init__(self, app: kit.Kit, workflow_id: str, key: str, timeout: float | None = 60.0) -> None:
        self.values: list = []
        self.error: BaseException | None = None
        self.first = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(app, workflow_id, key, timeout), daemon=True)
        self._thread.start()

    def _run(self, app: kit.Kit, workflow_id: str, key: str, timeout: float | None) -> None:
        try:
            for value in app.read_stream(workflow_id, key, timeout=timeout):
                self.values.append(value)
                self.first.set()
        except BaseException as exc:  # noqa: BLE001 - reported by join()
            self.error = exc

    def join(self, timeout: float = 60) -> list:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "reader did not end"
        if self.error is not None:
            raise self.error
        return self.values


def test_reader_receives_every_token_in_order_then_stops_at_close(apps):  # noqa: F811
    app = apps()
    gate = apps.gate()
    after = apps.gate()
    n = 25

    @app.step(name="st.wait")
    def wait_for_reader():
        gate()

    @app.step(name="st.after")
    def after_close():
        after()

    @app.workflow(name="st.tokens")
    def tokens(count):
        app.write_stream("tokens", "first")
        wait_for_reader()  # the reader is already iterating when the rest arrive
        for i in range(count):
            app.write_stream("tokens", {"i": i, "text": f"tok{i}"})
        app.close_stream("tokens")
        after_close()  # still RUNNING after the close: the reader must stop at the close itself
        return count

    wid = _wid()
    handle = app.start(tokens, n, workflow_id=wid)
    reader = Reader(apps(), wid, "tokens")  # a separate client app (its own listener)
    assert reader.first.wait(30)
    gate.open()
    got = reader.join()
    assert got == ["first"] + [{"i": i, "text": f"tok{i}"} for i in range(n)]
    assert handle.status() == Status.RUNNING  # it cannot finish before `after` opens
    after.open()
    assert handle.result(timeout=30) == n
    assert list(app.read_stream(wid, "tokens")) == got  # read again from the start: the same
    rows = apps.sql(f"SELECT count(*), count(DISTINCT seq), max(seq), bool_or(closed) FROM {apps.schema}.streams "
                    "WHERE workflow_id = %s", (wid,))
    assert rows == [(n + 2, n + 2, n + 1, True)]  # n + 1 elements and the close row
    names = [s.name for s in app.backend.step_list(wid)]
    assert names.count("write_stream:tokens") == n + 1 and names.count("close_stream:tokens") == 1


def test_a_crash_mid_stream_delivers_every_element_exactly_once(apps):  # noqa: F811
    n = 12
    stall = apps.gate()

    def register(app: kit.Kit):
        @app.step(name="st.stall")
        def block():
            stall()  # A is stuck here when it "dies"

        @app.workflow(name="st.crashy")
        def crashy(count):
            for i in range(count):
                if i == count // 2:
                    block()
                app.write_stream("out", i)
            app.close_stream("out")
            return "done"

        return crashy

    a = apps(**FAST)
    crashy = register(a)
    wid = _wid()
    stale = a.start(crashy, n, workflow_id=wid)
    reader = Reader(apps(), wid, "out")
    assert stall.entered.wait(30)
    crash(a)  # A's heartbeats stop: its lease expires, B takes over and replays the recorded writes
    b = apps(**FAST)
    register(b)
    b.launch()
    assert b.retrieve(wid).result(timeout=60) == "done"
    assert reader.join() == list(range(n))
    rows = apps.sql(f"SELECT count(*), count(DISTINCT value) FROM {apps.schema}.streams "
                    "WHERE workflow_id = %s AND NOT closed", (wid,))
    assert rows == [(n, n)]
    writes = apps.sql(f"SELECT count(*) FROM {apps.schema}.steps WHERE workflow_id = %s "
                      "AND name = 'write_stream:out'", (wid,))
    assert writes == [(n,)]
    stall.open()  # A's stale thread resumes: it is fenced and writes nothing more
    assert local_outcome(stale).status is None  # A abandoned its run
    assert apps.sql(f"SELECT count(*) FROM {apps.schema}.streams WHERE workflow_id = %s", (wid,)) == [(n + 1,)]


def test_a_stream_of_a_workflow_that_ended_without_closing_it_ends(apps):  # noqa: F811
    app = apps()

    @app.workflow(name="st.unclosed")
    def unclosed():
        for i in range(3):
            app.write_stream("s", i)
        return "no close"

    @app.workflow(name="st.failing")
    def failing():
        app.write_stream("s", "partial")
        raise ValueError("boom")

    wid = _wid()
    assert app.start(unclosed, workflow_id=wid).result(timeout=30) == "no close"
    assert list(app.read_stream(wid, "s", timeout=None)) == [0, 1, 2]
    assert list(app.read_stream(wid, "never-written")) == []
    fid = _wid()
    with pytest.raises(kit.WorkflowError):
        app.start(failing, workflow_id=fid).result(timeout=30)
    assert list(app.read_stream(fid, "s")) == ["partial"]


def test_read_stream_times_out_when_nothing_arrives(apps):  # noqa: F811
    app = apps()
    gate = apps.gate()

    @app.step(name="st.hold")
    def hold():
        gate()

    @app.workflow(name="st.slow")
    def slow():
        app.write_stream("s", "one")
        hold()
        app.close_stream("s")

    wid = _wid()
    handle = app.start(slow, workflow_id=wid)
    assert gate.entered.wait(30)
    it = app.read_stream(wid, "s", timeout=0.3)
    assert next(it) == "one"
    with pytest.raises(kit.WorkflowTimeoutError):
        next(it)
    gate.open()
    handle.result(timeout=30)
    assert list(app.read_stream(wid, "s", timeout=0)) == ["one"]


def test_reading_a_stream_in_workflow_code_checkpoints_the_whole_list(apps):  # noqa: F811
    app = apps()

    @app.workflow(name="st.producer")
    def producer():
        for word in ("a", "b", "c"):
            app.write_stream("words", word)
        app.close_stream("words")

    @app.workflow(name="st.consumer")
    def consumer(source):
        return "".join(app.read_stream(source, "words", timeout=30))

    pid = _wid()
    app.start(producer, workflow_id=pid)
    cid = _wid()
    assert app.start(consumer, pid, workflow_id=cid).result(timeout=30) == "abc"
    recorded = [(s.name, json.loads(s.output)) for s in app.backend.step_list(cid)]
    assert recorded == [("read_stream:words", ["a", "b", "c"])]


def test_bad_stream_input_is_a_clear_error_and_writes_nothing(apps):  # noqa: F811
    app = apps()

    @app.workflow(name="st.bad_value")
    def bad_value():
        app.write_stream("s", object())

    @app.workflow(name="st.bad_key")
    def bad_key():
        app.write_stream("", 1)

    @app.workflow(name="st.after_close")
    def after_close():
        app.write_stream("s", 1)
        app.close_stream("s")
        app.close_stream("s")  # closing twice is fine
        app.write_stream("s", 2)

    @app.workflow(name="st.own")
    def own(me):
        return list(app.read_stream(me, "s"))

    with pytest.raises(kit.UsageError):
        app.write_stream("s", 1)  # outside a workflow
    with pytest.raises(kit.UsageError):
        app.close_stream("s")
    wid = _wid()
    with pytest.raises(kit.WorkflowError, match="SerializationError"):
        app.start(bad_value, workflow_id=wid).result(timeout=30)
    with pytest.raises(kit.WorkflowError, match="UsageError"):
        app.start(bad_key, workflow_id=_wid()).result(timeout=30)
    assert apps.sql(f"SELECT count(*) FROM {apps.schema}.streams") == [(0,)]
    closed = _wid()
    with pytest.raises(kit.WorkflowError, match="closed"):
        app.start(after_close, workflow_id=closed).result(timeout=30)
    assert list(app.read_stream(closed, "s")) == [1]
    me = _wid()
    with pytest.raises(kit.WorkflowError, match="own stream"):
        app.start(own, me, workflow_id=me).result(timeout=30)
    for bad in ({"key": ""}, {"key": "k" * 201}, {"key": 5}, {"timeout": -1}, {"timeout": "soon"},
                {"workflow_id": "has space"}):
        args = {"workflow_id": wid, "key": "s", "timeout": 1.0, **bad}
        with pytest.raises(kit.UsageError):
            app.read_stream(args["workflow_id"], args["key"], timeout=args["timeout"])
    with pytest.raises(kit.WorkflowNotFoundError):
        next(app.read_stream("no-such-workflow", "s"))
    assert apps.sql(f"SELECT count(*) FROM {apps.schema}.streams") == [(2,)]  # after_close's element + close
