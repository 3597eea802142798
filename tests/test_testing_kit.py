"""kit.testing used the way a user would: a virtual clock and simulated crashes, real PostgreSQL."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest

import kit
from kit.errors import UsageError, WorkflowCancelledError
from kit.testing import harness

pytestmark = pytest.mark.all_backends  # also on the extra targets (Citus): tests/targets.py

START = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)


def make_app(pg_url: str) -> tuple[kit.Kit, Counter]:
    app = kit.Kit(database_url=pg_url)
    calls: Counter[str] = Counter()

    @app.step(name="remind")
    def remind(user: str) -> str:
        calls["remind"] += 1
        return f"reminded {user}"

    @app.step(name="charge")
    def charge(user: str) -> str:
        calls["charge"] += 1
        info = kit.step_info()
        calls[info.idempotency_key] += 1
        return f"charged {user}"

    @app.workflow(name="trial")
    def trial(user: str) -> list[str]:
        out = [remind(user)]
        app.sleep(24 * 3600)  # a day
        out.append(charge(user))
        answer = app.recv("confirm", timeout=7 * 24 * 3600)  # a week to confirm, or None
        out.append(answer or "no answer")
        return out

    return app, calls


def test_workflow_that_sleeps_a_day_finishes_at_once(pg_url):
    app, calls = make_app(pg_url)
    with harness(app, start=START) as h:
        handle = app.start("trial", "ada")
        assert h.result(handle, timeout=30) == ["reminded ada", "charged ada", "no answer"]
        assert h.now() >= START + timedelta(days=8)  # the day of sleep and the week of waiting passed
        assert calls["remind"] == 1 and calls["charge"] == 1


def test_message_arrives_within_the_virtual_timeout(pg_url):
    app, calls = make_app(pg_url)
    with harness(app, start=START) as h:
        handle = app.start("trial", "bob")
        h.clock.wait_for_waiters(1)
        h.advance(days=1)  # the sleep ends
        assert h.clock.wait_for_waiters(1)  # now waiting for the confirmation
        app.send(handle.workflow_id, "yes", topic="confirm")
        assert h.result(handle) == ["reminded bob", "charged bob", "yes"]
        assert h.now() < START + timedelta(days=2)


def test_crash_before_a_step_recovers_from_checkpoints(pg_url):
    app, calls = make_app(pg_url)
    with harness(app, start=START) as h:
        h.crash_at("trial", step=2)  # step 0: remind, 1: sleep, 2: charge
        handle = app.start("trial", "cy")
        assert h.result(handle) == ["reminded cy", "charged cy", "no answer"]
        assert h.crashes == 1
        assert calls["remind"] == 1 and calls["charge"] == 1  # recovery replayed remind and the sleep


def test_crash_after_a_step_body_reruns_it_with_the_same_idempotency_key(pg_url):
    app, calls = make_app(pg_url)
    with harness(app, start=START) as h:
        h.crash_at("trial", step=2, after_body=True)
        handle = app.start("trial", "dee")
        assert h.result(handle) == ["reminded dee", "charged dee", "no answer"]
        assert calls["charge"] == 2  # the documented window: the body ran, its checkpoint did not commit
        assert calls[f"{handle.workflow_id}:2"] == 2  # ... with one idempotency key for the provider
        assert calls["remind"] == 1


def test_deadline_in_virtual_time(pg_url):
    app, _ = make_app(pg_url)
    with harness(app, start=START) as h:
        handle = app.start("trial", "eve", workflow_timeout=3600)
        with pytest.raises(WorkflowCancelledError):
            h.result(handle)
        assert h.now() == START + timedelta(hours=1)


def test_harness_bad_input(pg_url):
    app, _ = make_app(pg_url)
    with harness(app) as h:
        with pytest.raises(UsageError, match="not a workflow"):
            h.crash_at(lambda: None, step=1)
        with pytest.raises(UsageError, match="step"):
            h.crash_at("trial", step=-1)
        with pytest.raises(ValueError, match="back"):
            h.clock.advance(-5)
    opened = kit.Kit(database_url=pg_url)
    opened.backend  # noqa: B018
    try:
        with pytest.raises(UsageError, match="not opened"):
            with harness(opened):
                pass
    finally:
        opened.close()


def test_embedded_default_needs_no_server(tmp_path):
    app = kit.Kit(data_dir=str(tmp_path / "kitdata"))

    @app.workflow(name="nap")
    def nap() -> str:
        app.sleep(3 * 24 * 3600)
        return "rested"

    with harness(app, start=START) as h:
        assert h.run(nap) == "rested"
        assert h.now() == START + timedelta(days=3)


def test_cron_ticks_advance_instantly(pg_url):
    app = kit.Kit(database_url=pg_url)
    seen: list[str] = []

    @app.scheduled("0 9 * * mon-fri", tz="Europe/Paris", catch_up="none", name="morning_report")
    def morning_report(tick: datetime) -> str:
        seen.append(tick.isoformat())
        return tick.strftime("%a %H:%M")

    with harness(app, start=datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)) as h:  # a Friday, 13:00 Paris
        first = h.next_tick(morning_report)
        assert first.workflow_id == "sched:morning_report:2026-11-30T08:00:00Z"  # Monday 09:00 Paris
        assert h.result(first) == "Mon 09:00"
        second = h.next_tick("morning_report")
        assert h.result(second) == "Tue 09:00"
        assert len(seen) == 2
        with pytest.raises(UsageError, match="not a schedule"):
            h.next_tick("nope")


def test_get_event_timeout_is_virtual_time(pg_url):
    app = kit.Kit(database_url=pg_url)

    @app.workflow(name="waits_for_approval")
    def waits_for_approval(other: str) -> str:
        value = app.get_event(other, "approved", timeout=2 * 3600)
        return "approved" if value else "timed out"

    with harness(app, start=START) as h:
        assert h.run(waits_for_approval, "nobody-sets-it") == "timed out"
        assert h.now() == START + timedelta(hours=2)
