"""Without notifications: the engine's core tests on PostgreSQL with ``notify`` switched off, and the
notifier's adaptive backoff.

Every app these tests build reads ``KIT_NOTIFY=0`` from the environment (explicit arguments still win, and
none of the imported tests passes ``notify``), so the claim loop, ``recv``, ``get_event``, streams and
parent waits all poll. Representative tests of tests/test_engine.py, test_messaging.py and test_streams.py
run here (starting, idempotency, queues across workers, crash recovery and fencing, hand-over, children,
retries, transactional steps; messages, events, streams, each across a crash); the tests about the
notification mechanism itself (listener reconnects, woken "not by polling") are replaced by
``test_recv_is_woken_quickly_by_adaptive_polling``.
"""

from __future__ import annotations

import time
import uuid

import pytest
from conformance.helpers import wait_for
from test_engine import (  # noqa: F401 - fixtures and the tests that run again here
    FAST,
    apps,
    crash,
    local_outcome,
    test_child_workflow_is_reattached_after_parent_recovery,
    test_enqueued_workflows_run_once_each_across_two_workers,
    test_fencing_old_owner_cannot_checkpoint_after_takeover,
    test_graceful_close_hands_workflows_over_at_once,
    test_recovery_after_crash_skips_completed_steps,
    test_start_same_id_twice_runs_once,
    test_step_retries_then_succeeds,
    test_transactional_step_commits_with_its_checkpoint,
    test_transactional_step_interrupted_by_crash_commits_exactly_once,
    test_workflow_runs_steps_and_returns_result,
)
from test_messaging import (  # noqa: F401
    test_events_latest_value_and_waiting_readers,
    test_get_event_in_workflow_code_is_checkpointed,
    test_messages_are_consumed_exactly_once_across_a_crash,
    test_send_recv_by_topic_in_order_with_durable_timeout,
    test_sends_from_workflow_code_happen_once_across_replay,
)
from test_streams import (  # noqa: F401
    test_a_crash_mid_stream_delivers_every_element_exactly_once,
    test_read_stream_times_out_when_nothing_arrives,
    test_reader_receives_every_token_in_order_then_stops_at_close,
)

from kit.notifier import ANY_QUEUE, Notifier
from kit.storage import Capabilities

pytestmark = pytest.mark.all_backends  # also on the extra targets (Citus): tests/targets.py


@pytest.fixture(autouse=True)
def _notifications_off(monkeypatch):
    monkeypatch.setenv("KIT_NOTIFY", "0")


def test_apps_here_poll(apps):  # noqa: F811
    app = apps()
    assert app.config.notify is False
    assert app.backend.capabilities.listen_notify  # the server could notify: this is polling by choice
    assert app.runtime.notifier.polling and not app.runtime.notifier.enabled


def test_recv_is_woken_quickly_by_adaptive_polling(apps):  # noqa: F811
    """A waiter that just started re-checks quickly: the message is received long before poll_seconds."""
    app = apps(poll_seconds=30.0)

    @app.workflow(name="poll.wait")
    def wait():
        return app.recv(timeout=120)

    wid = f"poll-{uuid.uuid4().hex[:8]}"
    h = app.start(wait, workflow_id=wid)
    wait_for(lambda: [s for s in app.backend.step_list(wid) if s.name == "recv.deadline"])
    app.send(wid, "ping")
    assert h.result(timeout=10) == "ping"  # the 30 s poll period would time this out


def test_enqueued_work_is_claimed_by_polling(apps):  # noqa: F811
    worker = apps()
    client = apps()

    for app in (worker, client):  # both processes know the workflow; only the worker runs one
        app.workflow(name="poll.enq")(lambda x: x * 2)
    worker.launch()
    handles = [client.enqueue("poll.enq", i) for i in range(5)]
    assert [h.result(timeout=30) for h in handles] == [0, 2, 4, 6, 8]


# -- the backoff itself (no database) ------------------------------------------------------------------


class _Silent:
    """A backend without notifications, as the notifier sees it."""

    capabilities = Capabilities(listen_notify=False)
    wake_channel = "unused"


def _interval(n: Notifier, watch) -> float:
    with n._lock:  # the ticker wakes a watch and moves its backoff under this lock
        return watch._interval


def test_backoff_grows_to_the_poll_period_and_resets_on_activity():
    n = Notifier(_Silent(), poll=0.4, quick=0.05)  # type: ignore[arg-type]
    assert n.polling
    try:
        watch = n.watch(ANY_QUEUE)
        assert _interval(n, watch) == 0.05
        seen = []
        while len(seen) < 12 and (not seen or seen[-1] < 0.4):  # every tick wakes the waiter ...
            assert watch.event.wait(5), "the poller never ticked"
            watch.event.clear()
            seen.append(_interval(n, watch))
        # ... and the next one comes twice as late, up to the poll period
        assert seen == sorted(seen) and set(seen) <= {0.1, 0.2, 0.4} and seen[-1] == 0.4, seen
        assert watch.event.wait(5) and _interval(n, watch) == 0.4  # and stays there while idle
        n.poke(ANY_QUEUE)  # activity in this process: quick again
        assert _interval(n, watch) == 0.05 and watch.fired()
        other = n.watch("m:x")  # a new waiter starts quick, whatever the others' backoff
        assert _interval(n, other) == 0.05
        other.close()
        watch.close()
        assert not n._watches
    finally:
        n.stop()


def test_closed_watches_stop_ticking():
    n = Notifier(_Silent(), poll=0.05, quick=0.01)  # type: ignore[arg-type]
    try:
        watches = [n.watch(f"m:{i}") for i in range(20)]
        for w in watches:
            assert w.event.wait(5)
            w.close()
        deadline = time.monotonic() + 5
        while n._ticks and time.monotonic() < deadline:  # stale entries drain without waking anyone
            time.sleep(0.02)
        assert not n._ticks
    finally:
        n.stop()
