"""Conformance: messages (idempotent send, exactly-once fenced receive) and events."""

from __future__ import annotations

import pytest

from kit.errors import LeaseLostError
from kit.storage import StepResult

from .helpers import create, run_threads, step, take_over


def _recv_step(wid: str, step_id: int, epoch: int) -> StepResult:
    return StepResult(wid, step_id, "recv", epoch)


def test_message_send_to_unknown_workflow_writes_nothing(backend_factory):
    backend = backend_factory()
    assert backend.message_send("no-such-workflow", "", '"hi"') is False
    wid, _ = create(backend, owner="worker-a")
    assert backend.message_receive(_recv_step(wid, 0, 1), "") is None


def test_messages_are_received_in_order_per_topic_and_recorded(backend_factory):
    backend = backend_factory()
    wid, _ = create(backend, owner="worker-a")
    for i in range(3):
        assert backend.message_send(wid, "t", f'"m{i}"') is True
    assert backend.message_send(wid, "other", '"x"') is True
    got = [backend.message_receive(_recv_step(wid, k, 1), "t") for k in range(4)]
    assert [g.output if g else None for g in got] == ['"m0"', '"m1"', '"m2"', None]
    assert [(s.step_id, s.name, s.output) for s in backend.step_list(wid)] == [
        (0, "recv", '"m0"'), (1, "recv", '"m1"'), (2, "recv", '"m2"')]
    assert backend.message_receive(_recv_step(wid, 3, 1), "other").output == '"x"'


def test_send_with_a_sender_key_is_idempotent(backend_factory):
    backend = backend_factory()
    wid, _ = create(backend, owner="worker-a")
    for _ in range(3):
        assert backend.message_send(wid, "", '"once"', sender_key="sender:0") is True
    assert backend.message_receive(_recv_step(wid, 0, 1), "").output == '"once"'
    assert backend.message_receive(_recv_step(wid, 1, 1), "") is None


def test_receive_of_a_recorded_step_returns_it_without_consuming_again(backend_factory):
    """A retried receive (its first COMMIT's acknowledgement lost) must not consume a second message."""
    backend = backend_factory()
    wid, _ = create(backend, owner="worker-a")
    backend.message_send(wid, "", '"first"')
    backend.message_send(wid, "", '"second"')
    first = backend.message_receive(_recv_step(wid, 0, 1), "")
    again = backend.message_receive(_recv_step(wid, 0, 1), "")
    assert first.output == again.output == '"first"'
    assert backend.message_receive(_recv_step(wid, 1, 1), "").output == '"second"'


def test_receive_is_fenced_and_leaves_the_message(backend_factory):
    backend = backend_factory()
    wid, _ = create(backend, owner="worker-a")
    backend.message_send(wid, "", '"kept"')
    take_over(backend, wid, 1, "worker-b")
    with pytest.raises(LeaseLostError):
        backend.message_receive(_recv_step(wid, 0, 1), "")
    assert backend.step_list(wid) == []
    assert backend.message_receive(_recv_step(wid, 0, 2), "").output == '"kept"'  # the new owner gets it


def test_concurrent_receivers_consume_each_message_once(backend_factory):
    backend = backend_factory()
    wids = [create(backend, owner="worker-a")[0] for _ in range(4)]
    for wid in wids:
        for i in range(5):
            backend.message_send(wid, "", f'"{wid}-{i}"')
    # Two "processes" race for every step of every workflow; each message lands in exactly one step.
    others = [backend_factory() for _ in range(2)]

    def race(i: int):
        b = others[i % 2]
        wid = wids[i // 2]
        out = []
        for k in range(5):
            # None means "nothing to take right now" (the other racer may hold the last message
            # locked): like the engine's recv, try again until this step has an outcome.
            for _ in range(200):
                rec = b.message_receive(_recv_step(wid, k, 1), "")
                if rec is not None:
                    break
            out.append(rec.output if rec else None)
        return out

    results = run_threads(len(wids) * 2, race)
    for n, wid in enumerate(wids):
        a, b = results[2 * n], results[2 * n + 1]
        # Both racers see the one recorded outcome of every step, and every message landed in exactly one
        # step. (Order is FIFO for a single receiver; two racing receivers of one workflow, which the
        # engine never runs, may see the second-oldest message while the oldest is locked.)
        assert a == b
        assert sorted(a) == [f'"{wid}-{i}"' for i in range(5)]
        assert [s.output for s in backend.step_list(wid)] == a


def test_events_keep_the_latest_value_of_a_committed_step(backend_factory):
    backend = backend_factory()
    wid, _ = create(backend, owner="worker-a")
    assert backend.event_get(wid, "progress") is None
    backend.event_set(step(wid, 0, 1, name="set_event:progress", output="10"), "progress")
    backend.event_set(step(wid, 1, 1, name="set_event:progress", output="20"), "progress")
    assert backend.event_get(wid, "progress") == "20"
    take_over(backend, wid, 1, "worker-b")
    with pytest.raises(LeaseLostError):
        backend.event_set(step(wid, 2, 1, name="set_event:progress", output="99"), "progress")
    assert backend.event_get(wid, "progress") == "20"  # the fenced write left nothing behind
    assert [s.step_id for s in backend.step_list(wid)] == [0, 1]
