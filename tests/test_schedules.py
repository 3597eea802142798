"""@app.scheduled against real PostgreSQL: exactly one workflow per tick with several workers racing (real
processes, one SIGKILLed), the catch-up policies on a virtual clock, stable tick ids, one-transaction
enqueue, bad input, and `kit schedules`. Every assertion counts rows; none measures time."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
import pytest
from conformance.helpers import wait_for
from psycopg import sql
from test_engine import Apps

import kit
from kit.clock import VirtualClock
from kit.cron import parse
from kit.errors import CronError, UnknownQueueError, WorkflowDuplicateError
from kit.schedules import Schedule, plan_ticks, tick_workflow_id, wait_for_tick
from kit.storage import NewWorkflow

pytestmark = pytest.mark.all_backends  # also on the extra targets (Citus): tests/targets.py

REPO = Path(__file__).resolve().parents[1]
UTC = timezone.utc
PARIS = ZoneInfo("Europe/Paris")
START = datetime(2026, 11, 27, 10, 2, tzinfo=UTC)  # 11:02 in Paris; */5 ticks at :05, :10, ...


@pytest.fixture
def apps(pg_url, schema):
    made = Apps(pg_url, schema)
    yield made
    made.teardown()


def _rows(url: str, schema: str, query: str, params: tuple = ()) -> list[tuple]:
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        return conn.execute(sql.SQL(query).format(s=sql.Identifier(schema)), params).fetchall()


def _tick_rows(url: str, schema: str, name: str) -> list[tuple[str, str]]:
    return [(r[0], r[1]) for r in _rows(url, schema, "SELECT workflow_id, status FROM {s}.workflows WHERE name = %s "
                                                     "ORDER BY workflow_id", (name,))]


def _report_app(apps, clock: VirtualClock, catch_up: str, runs: list[datetime], **opts) -> kit.Kit:
    app = apps(clock=clock)

    @app.scheduled("*/5 * * * *", tz="Europe/Paris", name="report", catch_up=catch_up, **opts)
    def report(tick: datetime) -> str:
        runs.append(tick)
        return tick.isoformat()

    return app


def _settle(app: kit.Kit, clock: VirtualClock, url: str, schema: str, expected: int) -> list[tuple[str, str]]:
    """Wait until the scheduler waits for its next tick and ``expected`` tick workflows have finished."""
    assert clock.wait_for_waiters(1, timeout=30)

    def done() -> list[tuple[str, str]] | None:
        rows = _tick_rows(url, schema, "report")
        return rows if len(rows) == expected and all(s == "SUCCESS" for _, s in rows) else None

    return wait_for(done, timeout=30, what=f"{expected} finished tick workflows")


# -- (b) catch-up policies on a virtual clock ---------------------------------------------------------------
@pytest.mark.parametrize(("catch_up", "missed_runs"), [("latest", 1), ("none", 0), ("all", 12)])
def test_missed_ticks_follow_the_catch_up_policy(apps, pg_url, schema, catch_up, missed_runs):
    clock = VirtualClock(START)
    runs: list[datetime] = []
    first = _report_app(apps, clock, catch_up, runs).launch()
    assert clock.wait_for_waiters(1, timeout=30)  # the scheduler waits for 10:05
    assert _tick_rows(pg_url, schema, "report") == []  # no tick before the schedule existed is "missed"
    clock.advance(minutes=3)  # 10:05: an on-time tick runs under every policy
    _settle(first, clock, pg_url, schema, 1)
    first.close()

    clock.advance(hours=1, minutes=2)  # no worker from 10:05 to 11:07: ticks 10:10 ... 11:05 (12) are missed
    second = _report_app(apps, clock, catch_up, runs).launch()
    rows = _settle(second, clock, pg_url, schema, 1 + missed_runs)
    ids = [wid for wid, _ in rows]
    expected = {"latest": ["sched:report:2026-11-27T11:05:00Z"], "none": [],
                "all": [f"sched:report:2026-11-27T{h:02d}:{m:02d}:00Z"
                        for h, m in [(10, m) for m in range(10, 60, 5)] + [(11, 0), (11, 5)]]}[catch_up]
    assert sorted(ids) == sorted(["sched:report:2026-11-27T10:05:00Z", *expected])
    assert len(runs) == 1 + missed_runs
    state = second.backend.schedule_get("report")
    assert state.cursor_at == datetime(2026, 11, 27, 11, 5, tzinfo=UTC)  # missed ticks are handled for good

    clock.advance(minutes=3)  # 11:10: back to normal, one tick
    _settle(second, clock, pg_url, schema, 2 + missed_runs)
    assert runs[-1] == datetime(2026, 11, 27, 12, 10, tzinfo=PARIS)


def test_catch_up_all_is_bounded_by_max_catch_up(apps, pg_url, schema):
    clock = VirtualClock(START)
    runs: list[datetime] = []
    first = _report_app(apps, clock, "all", runs, max_catch_up=5).launch()
    assert clock.wait_for_waiters(1, timeout=30)
    first.close()
    clock.advance(hours=2)  # 24 ticks missed: only the 5 most recent run
    second = _report_app(apps, clock, "all", runs, max_catch_up=5).launch()
    rows = _settle(second, clock, pg_url, schema, 5)
    assert [wid for wid, _ in rows] == [f"sched:report:2026-11-27T11:{m:02d}:00Z" for m in (40, 45, 50, 55)] + [
        "sched:report:2026-11-27T12:00:00Z"]


def test_tick_workflow_id_is_stable_and_the_tick_is_in_the_schedule_zone(apps, pg_url, schema):
    clock = VirtualClock(START)
    runs: list[datetime] = []
    app = _report_app(apps, clock, "latest", runs).launch()
    assert clock.wait_for_waiters(1, timeout=30)
    clock.advance(minutes=3)
    _settle(app, clock, pg_url, schema, 1)
    tick = datetime(2026, 11, 27, 11, 5, tzinfo=PARIS)
    assert runs == [tick] and runs[0].tzinfo == PARIS
    assert tick_workflow_id("report", tick) == tick_workflow_id("report", tick.astimezone(UTC)) \
        == "sched:report:2026-11-27T10:05:00Z"
    handle = app.retrieve("sched:report:2026-11-27T10:05:00Z")
    assert handle.result(timeout=10) == tick.isoformat()
    again = app.enqueue("report", tick, workflow_id=tick_workflow_id("report", tick))  # the same tick: no new run
    assert again.result(timeout=10) == tick.isoformat()
    assert len(runs) == 1 and len(_tick_rows(pg_url, schema, "report")) == 1
    by_hand = app.enqueue("report", "2026-11-27T10:10:00Z", workflow_id="manual-1")  # as SQL's kit.enqueue would
    assert by_hand.result(timeout=10) == "2026-11-27T11:10:00+01:00" and runs[-1].tzinfo == PARIS


def test_in_process_workers_racing_on_one_virtual_clock_run_each_tick_once(apps, pg_url, schema):
    clock = VirtualClock(START)
    runs: list[datetime] = []
    workers = [_report_app(apps, clock, "latest", runs).launch() for _ in range(4)]
    assert clock.wait_for_waiters(4, timeout=30)
    for n in range(1, 7):
        clock.advance(minutes=3 if n == 1 else 5)
        _settle(workers[0], clock, pg_url, schema, n)
        assert clock.wait_for_waiters(4, timeout=30)
    assert sorted(runs) == [datetime(2026, 11, 27, 11, 5, tzinfo=PARIS) + timedelta(minutes=5 * i) for i in range(6)]
    assert sum(w.runtime._scheduler.enqueued for w in workers) == 6  # each tick enqueued by exactly one


def test_a_tick_and_the_cursor_commit_together(apps, pg_url, schema):
    app = apps()
    backend = app.backend
    schedule = Schedule("atomic", parse("* * * * *"), None, "latest", 100)
    backend.schedule_define(schedule.spec, START)
    state = backend.schedule_get("atomic")
    assert state.cursor_at == START and state.last_tick is None
    tick = datetime(2026, 11, 27, 10, 3, tzinfo=UTC)
    backend.workflow_create(NewWorkflow(workflow_id="holder", name="other", inputs='{"args":[],"kwargs":{}}',
                                        dedup_id="d"))
    doomed = NewWorkflow(workflow_id=schedule.workflow_id(tick), name="atomic", inputs='{"args":[],"kwargs":{}}',
                         dedup_id="d")
    with pytest.raises(WorkflowDuplicateError):  # the insert fails: the cursor must not move either
        backend.schedule_advance("atomic", START, tick, [doomed])
    assert backend.schedule_get("atomic").cursor_at == START
    assert _tick_rows(pg_url, schema, "atomic") == []
    good = NewWorkflow(workflow_id=schedule.workflow_id(tick), name="atomic", inputs='{"args":[],"kwargs":{}}')
    assert backend.schedule_advance("atomic", START, tick, [good])
    assert not backend.schedule_advance("atomic", START, tick, [good])  # a racer with the old cursor: no-op
    state = backend.schedule_get("atomic")
    assert state.cursor_at == tick and state.last_tick == tick and state.last_workflow_id == good.workflow_id
    assert len(_tick_rows(pg_url, schema, "atomic")) == 1


def test_plan_ticks_policies():
    cron = parse("*/5 * * * *")
    now = datetime(2026, 1, 1, 1, 2, tzinfo=UTC)
    cursor = datetime(2026, 1, 1, 0, 0, tzinfo=UTC)
    newest = datetime(2026, 1, 1, 1, 0, tzinfo=UTC)
    assert plan_ticks(Schedule("s", cron, None, "latest", 100), cursor, now) == ([newest], newest)
    assert plan_ticks(Schedule("s", cron, None, "none", 100), cursor, now) == ([], newest)
    ticks, new_cursor = plan_ticks(Schedule("s", cron, None, "all", 100), cursor, now)
    assert len(ticks) == 12 and ticks[-1] == new_cursor == newest
    assert plan_ticks(Schedule("s", cron, None, "all", 3), cursor, now)[0] == [newest - timedelta(minutes=10),
                                                                             newest - timedelta(minutes=5), newest]
    on_time = datetime(2026, 1, 1, 1, 0, 30, tzinfo=UTC)  # 30 s late: due now, not missed
    assert plan_ticks(Schedule("s", cron, None, "none", 100), cursor, on_time) == ([newest], newest)
    assert plan_ticks(Schedule("s", cron, None, "latest", 100), newest, now) == ([], None)


# -- (c) bad input --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("kwargs", "message"), [
    ({"cron": "*/5 * * *"}, "expected 5 fields"),
    ({"cron": "0 25 * * *"}, "hour field '25'"),
    ({"cron": "* * * * *", "tz": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
    ({"cron": "* * * * *", "catch_up": "some"}, "catch_up must be one of 'latest', 'none', 'all'"),
    ({"cron": "* * * * *", "catch_up": "all", "max_catch_up": 0}, "max_catch_up must be an integer"),
    ({"cron": "* * * * *", "max_catch_up": 5}, "max_catch_up only applies to catch_up='all'"),
    ({"cron": "* * * * *", "name": "has space"}, "invalid schedule name"),
])
def test_bad_input_fails_at_decoration_and_writes_nothing(pg_url, schema, kwargs, message):
    app = kit.Kit(database_url=pg_url, schema=schema)
    with pytest.raises(CronError, match=re.escape(message)):
        @app.scheduled(**kwargs)
        def job(tick: datetime) -> None:
            pass
    assert app._schedules == {} and app.workflow_names() == []
    assert app._backend is None  # the database was not even opened
    assert _rows(pg_url, "public", "SELECT to_regclass(%s)", (f"{schema}.schedules",)) == [(None,)]


def test_an_undeclared_queue_fails_at_launch_and_stores_nothing(apps, pg_url, schema):
    app = apps()

    @app.scheduled("* * * * *", queue="reports")
    def job(tick: datetime) -> None:
        pass

    with pytest.raises(UnknownQueueError, match=r"app.queue\('reports'"):
        app.launch()
    assert _rows(pg_url, schema, "SELECT count(*) FROM {s}.schedules") == [(0,)]


def test_a_named_queue_and_the_cli(apps, pg_url, schema):
    clock = VirtualClock(START)
    app = apps(clock=clock)
    app.queue("reports", concurrency=1)

    @app.scheduled("0 9 * * mon-fri", tz="America/New_York", queue="reports", name="weekday_report")
    def weekday_report(tick: datetime) -> str:
        return tick.strftime("%A")

    app.launch()
    assert clock.wait_for_waiters(1, timeout=30)
    clock.set(datetime(2026, 11, 27, 14, 0, 30, tzinfo=UTC))  # Friday 09:00:30 in New York
    wid = "sched:weekday_report:2026-11-27T14:00:00Z"
    wait_for(lambda: _tick_rows(pg_url, schema, "weekday_report"), timeout=30, what="the tick")
    assert app.retrieve(wid).result(timeout=30) == "Friday"
    assert _rows(pg_url, schema, "SELECT queue FROM {s}.workflows WHERE workflow_id = %s", (wid,)) == [("reports",)]

    env = {k: v for k, v in os.environ.items() if not k.startswith("KIT_")}
    out = subprocess.run([sys.executable, "-m", "kit.cli", "schedules", "--database-url", pg_url, "--schema", schema,
                          "--json"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    (row,) = [json.loads(line) for line in out.stdout.splitlines()]
    assert row["name"] == "weekday_report" and row["cron"] == "0 9 * * mon-fri"
    assert row["timezone"] == "America/New_York" and row["queue"] == "reports" and row["catch_up"] == "latest"
    assert row["last_tick"] == "2026-11-27T14:00:00+00:00" and row["last_workflow_id"] == wid
    assert datetime.fromisoformat(row["next_tick"]).astimezone(ZoneInfo("America/New_York")).hour == 9
    table = subprocess.run([sys.executable, "-m", "kit.cli", "schedules", "--database-url", pg_url, "--schema",
                            schema], cwd=REPO, env={**env, "COLUMNS": "200"}, capture_output=True, text=True,
                           timeout=60)
    assert table.returncode == 0 and "weekday_report" in table.stdout and "America/New_York" in table.stdout


# -- (a) real worker processes racing for real ticks, one SIGKILLed --------------------------------------------
def test_worker_processes_racing_run_each_tick_exactly_once(pg_url, schema, tmp_path):
    from tests.apps.cron_app import ensure_ledger

    ensure_ledger(pg_url, schema)
    with kit.Kit(database_url=pg_url, schema=schema) as migrator:
        migrator.backend.migrate()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIT_")}
    env.update(KIT_DATABASE_URL=pg_url, KIT_SCHEMA=schema, KIT_LEASE_SECONDS="1.5", KIT_HEARTBEAT_SECONDS="0.4",
               KIT_POLL_SECONDS="0.2", PYTHONUNBUFFERED="1")
    procs: list[tuple[subprocess.Popen, Path]] = []
    for i in range(4):
        log = tmp_path / f"worker-{i}.log"
        with open(log, "wb") as out:
            procs.append((subprocess.Popen(
                [sys.executable, "-m", "kit.cli", "-v", "worker", "tests.apps.cron_app:app", "--concurrency", "4"],
                cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT), log))

    def q(query: str, params: tuple = ()) -> list[tuple]:
        return _rows(pg_url, schema, query, params)

    def logs() -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')[-2000:]}" for _, log in procs)

    try:
        wait_for(lambda: q("SELECT count(*) FROM {s}.workflows WHERE name = 'race' AND status = 'SUCCESS'")[0][0] >= 3,
                 timeout=60, what=f"the first ticks to finish\n{logs()}")
        victim, _ = procs[0]
        owner = f"%:{victim.pid}:%"
        running = "SELECT workflow_id FROM {s}.workflows WHERE status = 'RUNNING' AND owner LIKE %s"
        for _ in range(100):  # freeze it while it holds a tick workflow (frozen, it cannot finish it)
            wait_for(lambda: q(running, (owner,)), timeout=60, what="the victim to run a tick")
            victim.send_signal(signal.SIGSTOP)
            if q(running, (owner,)):
                break
            victim.send_signal(signal.SIGCONT)
        victim.send_signal(signal.SIGKILL)  # mid-run: it holds a tick workflow, maybe mid-step
        victim.wait(10)
        held = q(running, (owner,))  # orphaned for sure: their owner is dead
        assert held, logs()
        killed_at = q("SELECT max(workflow_id) FROM {s}.workflows WHERE name = 'race'")[0][0]

        def settled() -> bool:
            rows = q("SELECT workflow_id, status FROM {s}.workflows WHERE name = 'race'")
            later = [w for w, _ in rows if w > killed_at]
            before_done = all(st == "SUCCESS" for w, st in rows if w <= killed_at)
            return len(later) >= 4 and before_done

        wait_for(settled, timeout=90, what=f"recovery of the victim's ticks and four more ticks\n{logs()}")
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc, _ in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)

    rows = q("SELECT workflow_id, status, epoch FROM {s}.workflows WHERE name = 'race' ORDER BY workflow_id")
    ticks = [datetime.strptime(w.removeprefix("sched:race:"), "%Y-%m-%dT%H:%M:%SZ") for w, _, _ in rows]
    # No tick lost, none doubled: one workflow for every second from the first tick to the last.
    assert ticks == [ticks[0] + timedelta(seconds=i) for i in range(len(ticks))], logs()
    # Exactly one side effect per finished tick (the transactional step commits with its checkpoint).
    ledger = Counter(w for (w,) in q("SELECT workflow_id FROM {s}.cron_ledger"))
    finished = {w for w, st, _ in rows if st == "SUCCESS"}
    assert set(ledger) <= {w for w, _, _ in rows} and finished <= set(ledger)
    assert all(n == 1 for n in ledger.values()), {w: n for w, n in ledger.items() if n != 1}
    # The victim's tick was recovered by another worker and finished once.
    for (wid,) in held:
        status, epoch = next((st, ep) for w, st, ep in rows if w == wid)
        assert status == "SUCCESS" and epoch >= 2 and ledger[wid] == 1
    # Every tick was enqueued by exactly one process, and more than one process won races.
    enqueued = Counter()
    winners = set()
    for i, (_, log) in enumerate(procs):
        for wid in re.findall(r"enqueued as (sched:race:\S+)", log.read_text(errors="replace")):
            enqueued[wid] += 1
            winners.add(i)
    assert all(n == 1 for n in enqueued.values()), [w for w, n in enqueued.items() if n > 1]
    assert len(winners) >= 2, logs()
    cursor = q("SELECT cursor_at FROM {s}.schedules WHERE name = 'race'")[0][0]
    assert cursor >= ticks[-1].replace(tzinfo=UTC)


def test_the_docs_example_and_an_async_schedule(pg_url, schema):
    clock = VirtualClock(datetime(2026, 11, 27, 10, 2, tzinfo=timezone.utc))
    app = kit.Kit(pg_url, schema=schema, clock=clock, lease_seconds=5, heartbeat_seconds=0.5, poll_seconds=0.1)
    ticks = []

    @app.scheduled("*/5 * * * *", name="report")
    def report(tick: datetime) -> None:
        ticks.append(tick)

    @app.scheduled("*/5 * * * *", name="async_report", tz="Asia/Tokyo")
    async def async_report(tick: datetime) -> str:
        return tick.isoformat()

    try:
        app.launch()
        assert clock.wait_for_waiters(1)
        clock.advance(minutes=3)
        wait_for_tick(app, "report", datetime(2026, 11, 27, 10, 5, tzinfo=timezone.utc)).result(timeout=10)
        assert ticks == [datetime(2026, 11, 27, 10, 5, tzinfo=timezone.utc)]
        handle = wait_for_tick(app, "async_report", datetime(2026, 11, 27, 19, 5, tzinfo=ZoneInfo("Asia/Tokyo")))
        assert handle.workflow_id == "sched:async_report:2026-11-27T10:05:00Z"
        assert handle.result(timeout=10) == "2026-11-27T19:05:00+09:00"
        with pytest.raises(kit.WorkflowTimeoutError, match="was not enqueued"):
            wait_for_tick(app, "report", datetime(2026, 11, 27, 10, 10, tzinfo=timezone.utc), timeout=0.2)
    finally:
        app.close()


def test_the_monitor_shows_schedules(apps, pg_url, schema):
    from kit.monitor import MonitorSource, render_text
    from kit.storage import MonitorQuery

    app = apps()
    schedule = Schedule("nightly", parse("30 2 * * *", tz="Europe/Paris"), None, "latest", 100)
    app.backend.schedule_define(schedule.spec, START)
    tick = datetime(2026, 11, 28, 1, 30, tzinfo=UTC)
    wf = NewWorkflow(workflow_id=schedule.workflow_id(tick), name="nightly", inputs='{"args":[],"kwargs":{}}')
    assert app.backend.schedule_advance("nightly", START, tick, [wf])
    source = MonitorSource(lambda: app.backend, backend_name="postgres", endpoint=pg_url, query=MonitorQuery())
    snap = source.poll()
    assert snap.error is None and [s.spec.name for s in snap.schedules] == ["nightly"]
    text = render_text(snap, datetime(2026, 11, 28, 1, 40, tzinfo=UTC), width=160)
    assert "schedules: 1" in text
    assert re.search(r"nightly\s+30 2 \* \* \*\s+Europe/Paris\s+10m00s ago\s+in 23h50m", text), text


def test_a_frozen_holder_of_the_schedule_row_is_cut_off(apps, pg_url, schema):
    """A process that freezes inside the advance transaction (holding the row lock) is disconnected by the
    server, so another worker enqueues the tick; when the frozen one resumes it finds the cursor moved."""
    import threading

    app = apps()
    schedule = Schedule("frozen", parse("* * * * *"), None, "latest", 100)
    app.backend.schedule_define(schedule.spec, START)
    tick = datetime(2026, 11, 27, 10, 3, tzinfo=UTC)
    wf = NewWorkflow(workflow_id=schedule.workflow_id(tick), name="frozen", inputs='{"args":[],"kwargs":{}}')

    zombie = type(app.backend)(pg_url, schema=schema, pool_size=2, retry_seconds=10)  # the server's backend
    zombie.open()
    zombie.schedule_idle_timeout_ms = 300
    frozen, resume = threading.Event(), threading.Event()
    original = zombie.workflow_enqueue_in

    def freeze_once(conn, new):  # after the cursor update, before the insert: the transaction is open
        if not frozen.is_set():
            frozen.set()
            resume.wait(30)
        return original(conn, new)

    zombie.workflow_enqueue_in = freeze_once
    result: list[bool] = []
    t = threading.Thread(target=lambda: result.append(zombie.schedule_advance("frozen", START, tick, [wf])))
    t.start()
    try:
        assert frozen.wait(30)
        assert app.backend.schedule_advance("frozen", START, tick, [wf])  # waits for the lock, then wins
    finally:
        resume.set()
        t.join(30)
        zombie.close()
    assert result == [False]  # resumed: its transaction was gone; the retry found the cursor moved
    assert app.backend.schedule_get("frozen").cursor_at == tick
    assert len(_tick_rows(pg_url, schema, "frozen")) == 1
