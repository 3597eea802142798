"""Conformance: streams (fenced, idempotent appends; ordered reads after a position; close) and the
read-only listings of a workflow's messages, events and streams."""

from __future__ import annotations

import pytest

from kit.errors import LeaseLostError, UsageError
from kit.storage import Finish, Status, StepResult

from .helpers import create, step, take_over


def _w(wid: str, step_id: int, epoch: int, key: str = "k") -> StepResult:
    return StepResult(wid, step_id, f"write_stream:{key}", epoch)


def _c(wid: str, step_id: int, epoch: int, key: str = "k") -> StepResult:
    return StepResult(wid, step_id, f"close_stream:{key}", epoch)


def test_stream_elements_are_read_in_order_and_recorded(backend_factory):
    backend = backend_factory()
    wid, _ = create(backend, owner="worker-a")
    for i in range(5):
        rec = backend.stream_write(_w(wid, i, 1), "k", f'"v{i}"')
        assert rec.output == str(i)  # the element's position
    backend.stream_write(_w(wid, 5, 1, key="other"), "other", '"x"')
    chunk = backend.stream_read(wid, "k", -1, 100)
    assert chunk.elements == tuple((i, f'"v{i}"') for i in range(5))
    assert chunk.closed is False and chunk.workflow_status == Status.RUNNING
    assert backend.stream_read(wid, "other", -1, 100).elements == ((0, '"x"'),)
    assert [(s.step_id, s.name, s.output) for s in backend.step_list(wid)] == (
        [(i, "write_stream:k", str(i)) for i in range(5)] + [(5, "write_stream:other", "0")])


def test_stream_read_after_a_position_and_by_limit(backend_factory):
    backend = backend_factory()
    wid, _ = create(backend, owner="worker-a")
    for i in range(6):
        backend.stream_write(_w(wid, i, 1), "k", str(i))
    assert [s for s, _ in backend.stream_read(wid, "k", 2, 100).elements] == [3, 4, 5]
    first = backend.stream_read(wid, "k", -1, 4)
    assert [v for _, v in first.elements] == ["0", "1", "2", "3"] and first.closed is False
    assert backend.stream_read(wid, "k", 5, 100).elements == ()
    assert backend.stream_read(wid, "missing-key", -1, 100).elements == ()
    backend.stream_close(_c(wid, 6, 1), "k")
    # the close follows the last element returned only when no element was left out by the limit
    assert backend.stream_read(wid, "k", -1, 4).closed is False
    tail = backend.stream_read(wid, "k", 3, 2)
    assert [s for s, _ in tail.elements] == [4, 5] and tail.closed is True


def test_close_ends_the_stream_and_a_write_after_it_is_refused(backend_factory):
    backend = backend_factory()
    wid, _ = create(backend, owner="worker-a")
    backend.stream_write(_w(wid, 0, 1), "k", '"a"')
    backend.stream_write(_w(wid, 1, 1), "k", '"b"')
    closed = backend.stream_close(_c(wid, 2, 1), "k")
    assert closed.output == "2"  # number of elements
    chunk = backend.stream_read(wid, "k", -1, 100)
    assert chunk.elements == ((0, '"a"'), (1, '"b"')) and chunk.closed is True
    end = backend.stream_read(wid, "k", 1, 100)
    assert end.elements == () and end.closed is True
    with pytest.raises(UsageError):
        backend.stream_write(_w(wid, 3, 1), "k", '"late"')
    again = backend.stream_close(_c(wid, 3, 1), "k")  # closing a closed stream only records the step
    assert again.output == "2"
    assert backend.stream_read(wid, "k", -1, 100).elements == ((0, '"a"'), (1, '"b"'))
    assert [s.step_id for s in backend.step_list(wid)] == [0, 1, 2, 3]
    # an empty stream can be closed too
    assert backend.stream_close(_c(wid, 4, 1, key="empty"), "empty").output == "0"
    assert backend.stream_read(wid, "empty", -1, 10).closed is True


def test_rewriting_a_recorded_step_writes_no_duplicate_element(backend_factory):
    """A retried write (its first COMMIT's acknowledgement lost) returns the recorded step, adds nothing."""
    backend = backend_factory()
    wid, _ = create(backend, owner="worker-a")
    first = backend.stream_write(_w(wid, 0, 1), "k", '"once"')
    again = backend.stream_write(_w(wid, 0, 1), "k", '"once"')
    assert first.output == again.output == "0"
    assert backend.stream_close(_c(wid, 1, 1), "k").output == "1"
    assert backend.stream_close(_c(wid, 1, 1), "k").output == "1"
    chunk = backend.stream_read(wid, "k", -1, 100)
    assert chunk.elements == ((0, '"once"'),) and chunk.closed is True
    assert len(backend.step_list(wid)) == 2


def test_stream_writes_are_fenced_after_a_takeover(backend_factory):
    backend = backend_factory()
    wid, _ = create(backend, owner="worker-a")
    backend.stream_write(_w(wid, 0, 1), "k", '"before"')
    take_over(backend, wid, 1, "worker-b")
    with pytest.raises(LeaseLostError):
        backend.stream_write(_w(wid, 1, 1), "k", '"zombie"')
    with pytest.raises(LeaseLostError):
        backend.stream_close(_c(wid, 1, 1), "k")
    chunk = backend.stream_read(wid, "k", -1, 100)
    assert chunk.elements == ((0, '"before"'),) and chunk.closed is False
    assert [s.step_id for s in backend.step_list(wid)] == [0]
    assert backend.stream_write(_w(wid, 1, 2), "k", '"new owner"').output == "1"


def test_stream_read_reports_the_writer_status(backend_factory):
    backend = backend_factory()
    assert backend.stream_read("no-such-workflow", "k", -1, 10).workflow_status is None
    wid, _ = create(backend, owner="worker-a")
    backend.stream_write(_w(wid, 0, 1), "k", "1")
    assert backend.workflow_finish(Finish(wid, 1, Status.SUCCESS, output="null")) is True
    chunk = backend.stream_read(wid, "k", -1, 10)
    assert chunk.workflow_status == Status.SUCCESS and chunk.elements == ((0, "1"),) and chunk.closed is False
    with pytest.raises(LeaseLostError):
        backend.stream_write(_w(wid, 1, 1), "k", "2")


def test_messages_events_and_streams_are_listed_per_workflow(backend_factory):
    backend = backend_factory()
    wid, _ = create(backend, owner="worker-a")
    other, _ = create(backend, owner="worker-a")
    assert backend.message_list(wid) == [] and backend.event_list(wid) == [] and backend.stream_list(wid) == []
    backend.message_send(wid, "t", '"m0"')
    backend.message_send(wid, "", '"m1"', sender_key="s:1")
    backend.message_send(other, "t", '"elsewhere"')
    backend.message_receive(StepResult(wid, 0, "recv", 1), "t")
    backend.event_set(step(wid, 1, 1, name="set_event:state", output='"ready"'), "state")
    backend.stream_write(_w(wid, 2, 1, key="b"), "b", "1")
    backend.stream_write(_w(wid, 3, 1, key="b"), "b", "2")
    backend.stream_write(_w(wid, 4, 1, key="a"), "a", "1")
    backend.stream_close(_c(wid, 5, 1, key="a"), "a")

    messages = backend.message_list(wid)
    assert [(m.topic, m.body, m.consumed_step) for m in messages] == [("t", '"m0"', 0), ("", '"m1"', None)]
    assert messages[0].consumed_at is not None and messages[1].consumed_at is None
    assert messages[1].sender_key == "s:1" and all(m.created_at is not None for m in messages)
    assert [(e.key, e.value, e.step_id) for e in backend.event_list(wid)] == [("state", '"ready"', 1)]
    assert [(s.key, s.count, s.closed) for s in backend.stream_list(wid)] == [("a", 1, True), ("b", 2, False)]
    assert all(s.last_write_at is not None for s in backend.stream_list(wid))
    assert [m.body for m in backend.message_list(other)] == ['"elsewhere"']
    assert backend.event_list(other) == [] and backend.stream_list(other) == []
