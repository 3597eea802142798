"""Conformance: wake-up notifications."""

from __future__ import annotations

import threading
import uuid

import pytest


def _channel() -> str:
    return f"conf_{uuid.uuid4().hex[:10]}"


def test_notify_wakes_a_waiter(backend_factory):
    waiter, sender = backend_factory(), backend_factory()
    if not waiter.capabilities.listen_notify:
        pytest.skip("backend has no notifications")
    ch = _channel()
    assert waiter.notify_wait([ch], 0.01) == ["*"]  # starts listening: "re-check, you may have missed some"
    assert waiter.notify_wait([ch], 0.01) == []  # nothing sent yet
    got: list[list[str]] = []
    t = threading.Thread(target=lambda: got.append(waiter.notify_wait([ch], 30)), daemon=True)
    t.start()
    sender.notify(ch, "hello")
    t.join(40)
    assert not t.is_alive()
    assert got == [["hello"]], "the waiter returned without the payload (timed out instead of waking)"


def test_notify_payloads_are_per_channel(backend_factory):
    backend = backend_factory()
    if not backend.capabilities.listen_notify:
        pytest.skip("backend has no notifications")
    ch, other = _channel(), _channel()
    assert backend.notify_wait([ch], 0.01) == ["*"]
    sender = backend_factory()
    sender.notify(other, "not for us")
    sender.notify(ch, "x'; DROP TABLE workflows; --")
    payloads: list[str] = []
    deadline_calls = 50
    while not payloads and deadline_calls:
        payloads = backend.notify_wait([ch], 0.5)
        deadline_calls -= 1
    assert payloads == ["x'; DROP TABLE workflows; --"]


def test_notify_wait_times_out_with_nothing(backend_factory):
    backend = backend_factory()
    ch = _channel()
    assert backend.notify_wait([ch], 0.05) in ([], ["*"])  # "*" when it has just started listening
    assert backend.notify_wait([ch], 0.05) == []
    backend.notify(_channel(), "")  # sending without listeners is fine
