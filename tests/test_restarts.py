"""Database restarts and graceful stops with real worker processes, a real server and a side-effect ledger.

A database restart must cost no lease and re-run no step: every connection of the pool dies with the
server, and neither the workflows' calls nor the heartbeats may be charged for finding that out. A worker
that truly cannot reach the database for a lease period still stops its runs before anyone may take them
over, and the takeovers that follow are fenced. A graceful stop (SIGTERM) hands each workflow over at a
step boundary: the step in flight finishes and is recorded, then the workflow is released at once and the
next owner goes on with the next step; nothing runs twice.

The servers are private (they are stopped in immediate mode, i.e. every server process exits at once, like a
crash): the embedded default (pgserver's PostgreSQL 16, unix socket) and Debian's PostgreSQL 15 (TCP).
Workers run ``tests.apps.restart_app``, whose ledger is a file per process, outside the database.
"""

from __future__ import annotations

import importlib
import json
import os
import random
import signal
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kit.backends.postgres import PostgresBackend

from kit.storage import NewWorkflow
from tests.servers import DebianPostgres, PgServer, selected_servers
from tests.test_crash import DB, REPO, Workers, assert_no_engine_failures, wait_for

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
rs = importlib.import_module("tests.apps.restart_app")
SPEC = "tests.apps.restart_app:app"
RESTARTABLE = [n for n in selected_servers() if n in ("pgserver16", "debian15")]


class Server:
    """A private server the test may stop in immediate mode and start again."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.handle: Any = PgServer().start() if name == "pgserver16" else DebianPostgres().start()
        self.url: str = self.handle.url
        self.outages: list[float] = []

    def outage(self, down: float) -> None:
        """Every server process exits at once (``pg_ctl stop -m immediate``); back after ``down`` seconds."""
        self.handle.stop_immediate()
        time.sleep(down)
        self.handle.start_again()
        self.outages.append(down)

    def stop(self) -> None:
        self.handle.stop()


@pytest.fixture(params=RESTARTABLE)
def server(request) -> Iterator[Server]:
    srv = Server(request.param)
    try:
        yield srv
    finally:
        srv.stop()


def worker_env(url: str, schema: str, ledger: Path, **settings: float) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIT_")}
    env.update(KIT_DATABASE_URL=url, KIT_SCHEMA=schema, RESTART_LEDGER_DIR=str(ledger), PYTHONUNBUFFERED="1")
    env.update({f"KIT_{k.upper()}": str(v) for k, v in settings.items()})
    return env


def prepare(url: str, schema: str, **settings: float) -> tuple[Any, DB]:
    app = rs.make_app(database_url=url, schema=schema, **settings)
    app.backend.migrate()
    rs.ensure_effects(url, schema)
    return app, DB(url, schema)


def wait_done(db: DB, count: int, timeout: float, workers: Workers) -> None:
    def done() -> bool:
        c = db.status_counts()
        assert c["ERROR"] == 0 and c["CANCELLED"] == 0, db.rows(
            "SELECT workflow_id, status, error FROM {s}.workflows WHERE status IN ('ERROR', 'CANCELLED')")
        return c["SUCCESS"] == count

    wait_for(done, timeout, f"{count} workflows to succeed", lambda: f"{db.status_counts()}\n{workers.logs()}",
             interval=0.2)


def analyse(db: DB, ledger: Path) -> dict[str, Any]:
    """Counts from the database and the ledger: takeovers, executions, re-runs (and of them, re-runs of a
    step whose body had finished), transactional rows; asserts what must hold whatever the faults (G2, G4,
    fencing order)."""
    marks = rs.read_ledger(ledger)
    starts: dict[tuple[str, int], list[dict]] = defaultdict(list)
    ends: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for m in marks:
        (starts if m["kind"] == "start" else ends)[(m["wf"], m["step"])].append(m)
    checkpoints = {(w, s): ep for w, s, ep in
                   db.rows("SELECT workflow_id, step_id, epoch FROM {s}.steps WHERE name = 'rs.work'")}
    reruns = reruns_after_end = 0
    for key, runs in starts.items():
        assert key in checkpoints, f"step {key} ran but was never checkpointed"
        ep = checkpoints[key]
        assert all(r["epoch"] <= ep for r in runs), f"G2: step {key} checkpointed at epoch {ep} ran again: {runs}"
        reruns += len(runs) - 1
        first_end = min((e["t"] for e in ends[key]), default=None)
        if first_end is not None:
            reruns_after_end += sum(1 for r in runs if r["t"] > first_end)
    assert set(checkpoints) <= set(starts), "a checkpointed step left no ledger mark"
    # Fencing: along each workflow, checkpoint epochs never go back; the finish is by the newest epoch.
    by_wf: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for w, s, ep in db.rows("SELECT workflow_id, step_id, epoch FROM {s}.steps ORDER BY workflow_id, step_id"):
        by_wf[w].append((s, ep))
    final = dict(db.rows("SELECT workflow_id, epoch FROM {s}.workflows"))
    for w, steps in by_wf.items():
        epochs = [ep for _, ep in steps]
        assert epochs == sorted(epochs), f"{w}: checkpoint epochs go backwards: {steps}"
        assert epochs[-1] <= final[w], (w, steps, final[w])
    # G4: one transactional row per workflow, written in the epoch of its checkpoint.
    tx = {w: (s, ep) for w, s, ep in
          db.rows("SELECT workflow_id, step_id, epoch FROM {s}.steps WHERE name = 'rs.record'")}
    rows = db.rows("SELECT workflow_id, step_id, epoch FROM {s}.restart_effects")
    per_wf = Counter(w for w, _, _ in rows)
    assert set(per_wf) == set(final) and set(per_wf.values()) == {1}, \
        f"G4: transactional rows per workflow: {[(w, n) for w, n in per_wf.items() if n != 1]}"
    for w, s, ep in rows:
        assert tx[w] == (s, ep), f"G4: effect row {(w, s, ep)} != checkpoint {tx[w]}"
    return {
        "takeovers": int(db.one("SELECT coalesce(sum(recoveries), 0) FROM {s}.workflows")),
        "reclaimed": int(db.one("SELECT count(*) FROM {s}.workflows WHERE epoch > 1")),
        "executions": sum(len(r) for r in starts.values()),
        "reruns": reruns,
        "reruns_after_end": reruns_after_end,
    }


def log_counts(workers: Workers) -> dict[str, int]:
    text = "\n".join(w.text() for w in workers.all)
    return {"heartbeat_failed": text.count("heartbeat failed"), "lease_lost": text.count("lease lost"),
            "abandoning": text.count("abandoning workflow")}


def run_with_outages(server: Server, schema: str, tmp_path: Path, *, workflows: int, steps: int, seconds: float,
                     workers_n: int, concurrency: int, outages: int, down: tuple[float, float],
                     apart: tuple[float, float], settings: dict[str, float]) -> tuple[dict[str, Any], Workers]:
    seed = int(os.environ.get("KIT_TEST_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    print(f"\n[{server.name}] seed {seed} (KIT_TEST_SEED={seed} replays the outage schedule)")
    ledger = tmp_path / "ledger"
    ledger.mkdir()
    app, db = prepare(server.url, schema, **settings)
    expected = {}
    try:
        for n in range(workflows):
            wid = f"rs-{n:04d}"
            app.enqueue(app.flow, n, steps, seconds, workflow_id=wid)
            expected[wid] = rs.expected_result(n, steps)
        app.close()
        env = worker_env(server.url, schema, ledger, **settings)
        with Workers(env, tmp_path, SPEC) as workers:
            for _ in range(workers_n):
                workers.start(concurrency=concurrency)
            for w in workers.all:
                workers.wait_ready(w)
            wait_for(lambda: db.one("SELECT count(*) FROM {s}.steps") >= workers_n * concurrency, 60,
                     "the workload to get going", workers.logs)
            for _ in range(outages):
                time.sleep(rng.uniform(*apart))
                left = workflows - db.status_counts()["SUCCESS"]
                assert left > 0, "the workload finished before the outages: make it longer"
                db.close()
                pause = rng.uniform(*down)
                server.outage(pause)
                db = DB(server.url, schema)
                print(f"outage {len(server.outages)}: down {pause:.2f}s with {left} workflows unfinished")
            wait_done(db, workflows, 240, workers)
            assert_no_engine_failures(workers)
            for w in workers.all:
                assert w.alive(), w.text()
        rows = dict(db.rows("SELECT workflow_id, output FROM {s}.workflows"))
        assert {w: json.loads(o) for w, o in rows.items()} == expected
        counts = analyse(db, ledger)
        counts.update(log_counts(workers))
        print(f"[{server.name}] outages {[round(d, 2) for d in server.outages]}: {counts}")
        return counts, workers
    finally:
        db.close()


# -- outages shorter than the lease -------------------------------------------------------------------------
@pytest.mark.slow
def test_short_database_outages_cost_no_lease_and_rerun_no_step(server: Server, schema: str,
                                                                tmp_path: Path) -> None:
    """Eight immediate-mode stops, down 0.5-3 s each, 1-3 s apart, under three workers with the default lease
    (10 s): no takeover, no step runs twice, every transactional step exactly once."""
    counts, _ = run_with_outages(server, schema, tmp_path, workflows=720, steps=3, seconds=0.3, workers_n=3,
                                 concurrency=8, outages=8, down=(0.5, 3.0), apart=(1.0, 3.0), settings={})
    assert counts["takeovers"] == 0 and counts["reclaimed"] == 0, counts
    assert counts["reruns_after_end"] == 0, counts
    assert counts["reruns"] == 0, counts
    assert counts["lease_lost"] == 0 and counts["abandoning"] == 0, counts


# -- outages longer than the lease --------------------------------------------------------------------------
@pytest.mark.slow
def test_outages_longer_than_the_lease_end_in_fenced_takeovers(server: Server, schema: str,
                                                               tmp_path: Path) -> None:
    """A 2 s lease and outages of 3.5-5 s: the workers stop their runs (their local view says the leases may
    have expired), the workflows are taken over when the database is back, and every takeover is fenced:
    no checkpointed step runs again, epochs never go back, transactional steps commit once."""
    counts, workers = run_with_outages(
        server, schema, tmp_path, workflows=120, steps=4, seconds=0.3, workers_n=2, concurrency=6, outages=2,
        down=(3.5, 5.0), apart=(1.5, 2.5),
        settings={"lease_seconds": 2.0, "heartbeat_seconds": 0.5, "poll_seconds": 0.25})
    assert counts["reclaimed"] > 0, counts
    assert "may have expired" in "\n".join(w.text() for w in workers.all)


# -- graceful stop ------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_sigterm_hands_workflows_over_at_step_boundaries(pg_url: str, schema: str, tmp_path: Path) -> None:
    """SIGTERM to the worker running four long workflows: each finishes the step in flight, records it and is
    released at once; the idle worker's first step of each is the next one; no step runs twice."""
    ledger = tmp_path / "ledger"
    ledger.mkdir()
    steps, seconds = 20, 0.5
    app, db = prepare(pg_url, schema)
    try:
        for n in range(4):
            app.enqueue(app.flow, n, steps, seconds, workflow_id=f"deploy-{n}")
        app.close()
        env = worker_env(pg_url, schema, ledger)
        with Workers(env, tmp_path, SPEC) as workers:
            a = workers.start(concurrency=8)
            wait_for(lambda: db.one("SELECT count(DISTINCT workflow_id) FROM {s}.steps WHERE step_id >= 1") == 4,
                     60, "worker A to checkpoint two steps of every workflow", workers.logs)
            b = workers.start(concurrency=8)
            workers.wait_ready(b)
            assert db.owner_pids()[a.pid] == 4
            a.signal(signal.SIGTERM)
            assert a.proc.wait(timeout=30) == 0, a.text()
            wait_done(db, 4, 60, workers)
            assert_no_engine_failures(workers)
        report = [ln for ln in a.text().splitlines() if "handed over" in ln]
        assert report and "4 handed over" in report[-1] and "0 finished" in report[-1], a.text()
        assert "mid-step" not in a.text() or "0 of them mid-step" in report[-1], a.text()
        marks = rs.read_ledger(ledger)
        starts = Counter((m["wf"], m["step"]) for m in marks if m["kind"] == "start")
        assert set(starts.values()) == {1}, f"steps ran twice: {[k for k, n in starts.items() if n > 1]}"
        gaps = []
        for n in range(4):
            wid = f"deploy-{n}"
            mine = sorted((m for m in marks if m["wf"] == wid and m["kind"] == "start"), key=lambda m: m["step"])
            by_a = [m["step"] for m in mine if m["pid"] == a.pid]
            by_b = [m["step"] for m in mine if m["pid"] == b.pid]
            assert by_a == list(range(len(by_a))) and by_b == list(range(len(by_a), steps)), (wid, by_a, by_b)
            # A recorded every step it ran (the one in flight at SIGTERM included), at epoch 1.
            recorded = db.rows("SELECT step_id, epoch FROM {s}.steps WHERE workflow_id = %s AND step_id = ANY(%s)",
                               [wid, by_a])
            assert sorted(recorded) == [(s, 1) for s in by_a], (wid, recorded)
            a_end = max(m["t"] for m in marks if m["wf"] == wid and m["pid"] == a.pid and m["kind"] == "end")
            gaps.append(min(m["t"] for m in mine if m["pid"] == b.pid) - a_end)
        rows = db.rows("SELECT status, epoch, recoveries FROM {s}.workflows")
        assert rows == [("SUCCESS", 2, 0)] * 4, rows  # released, not taken over after a lease expiry
        print(f"\nhand-over: B's first step began {', '.join(f'{g:.2f}' for g in gaps)} s after A's last "
              f"step ended (steps of {seconds}s)")
    finally:
        db.close()


# -- the backend on its own -----------------------------------------------------------------------------------
def test_dead_pooled_connections_are_not_charged_to_the_caller(server: Server, schema: str) -> None:
    """After a restart every pooled connection is dead: a call still succeeds within a retry budget far
    shorter than trying each dead connection with backoff would take, and the heartbeat's renewal too."""
    backend = PostgresBackend(server.url, schema=schema, pool_size=8, retry_seconds=1.0)
    backend.open()
    try:
        backend.migrate()
        backend.workflow_create(NewWorkflow("held", "r.flow", "[]", owner="w1", lease_seconds=30))
        gate = threading.Barrier(8)
        threads = [threading.Thread(target=backend._run, args=(lambda c: (gate.wait(10), c.execute("SELECT 1")),))
                   for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert backend._pool.get_stats()["pool_available"] == 8  # eight idle connections, soon all dead
        server.outage(0.0)
        assert backend.workflow_get("held").owner == "w1"
        assert backend.lease_renew("w1", 30) == {"held": 1}
        server.outage(0.0)
        assert backend.lease_renew("w1", 30) == {"held": 1}
        assert backend.workflow_get("held").owner == "w1"
    finally:
        backend.close()


def test_lease_renewal_is_not_queued_behind_a_busy_pool(pg_url: str, schema: str) -> None:
    """Every pooled connection is taken by step traffic: the heartbeat's renewal still goes through."""
    backend = PostgresBackend(pg_url, schema=schema, pool_size=2, retry_seconds=1.0)
    backend.open()
    release = threading.Event()
    taken = threading.Barrier(3)
    try:
        backend.migrate()
        backend.workflow_create(NewWorkflow("busy", "r.flow", "[]", owner="w1", lease_seconds=30))
        threads = [threading.Thread(target=backend._run, args=(lambda c: (taken.wait(10), release.wait(30)),))
                   for _ in range(2)]
        for t in threads:
            t.start()
        taken.wait(10)
        assert backend.lease_renew("w1", 30) == {"busy": 1}
    finally:
        release.set()
        backend.close()
