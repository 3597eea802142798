"""Real worker processes, real signals: children and timers in flight when workers die, and a deploy of a
new application version while old workflows are pending. Workers run ``tests.apps.lifecycle_app``.
"""

from __future__ import annotations

import importlib
import json
import random
import signal
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.test_crash import (
    DB,
    HEARTBEAT,
    LEASE,
    POLL,
    REPO,
    Workers,
    assert_no_engine_failures,
    check_ledger,
    wait_all_success,
    wait_for,
    worker_env,
)

pytestmark = pytest.mark.all_backends  # also on the extra targets (Citus): tests/targets.py

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
lc = importlib.import_module("tests.apps.lifecycle_app")
SPEC = "tests.apps.lifecycle_app:app"


@pytest.fixture
def env(pg_url: str, schema: str):
    app = lc.make_app(database_url=pg_url, schema=schema, lease_seconds=LEASE, heartbeat_seconds=HEARTBEAT,
                      poll_seconds=POLL)
    app.backend.migrate()
    lc.ensure_ledger(pg_url, schema)
    db = DB(pg_url, schema)
    try:
        yield app, db, worker_env(pg_url, schema)
    finally:
        app.close()
        db.close()


def order_ids(n: int, prefix: str = "order") -> list[str]:
    return [f"{prefix}-{i}" for i in range(n)]


def check_children(db: DB, parents: list[str]) -> None:
    """Every parent has exactly one child, the one its checkpointed start step names (re-attached, never
    started twice), and it succeeded."""
    kids = db.rows("SELECT parent_id, workflow_id, status FROM {s}.workflows WHERE parent_id IS NOT NULL")
    per_parent = Counter(p for p, _, _ in kids)
    recorded = dict(db.rows("SELECT workflow_id, output FROM {s}.steps WHERE name = 'start:lc.ship'"))
    for p in parents:
        assert per_parent[p] == 1, f"parent {p} has {per_parent[p]} children"
        assert json.loads(recorded[p]) == f"{p}/1"
    assert all(status == "SUCCESS" for _, _, status in kids)


def test_killing_workers_with_children_and_timers_in_flight(env, tmp_path: Path) -> None:
    app, db, wenv = env
    ids = order_ids(16)
    for i, wid in enumerate(ids):
        app.enqueue("lc.order", i, workflow_id=wid)
    rng = random.Random(7)
    # Timers long enough that work is still in flight for a second kill on a loaded machine (the kill loop
    # waits for workers to start and for timers to be recorded; it must not find everything finished).
    with Workers({**wenv, "LC_SLEEP": "2.0"}, tmp_path, SPEC) as workers:
        for _ in range(2):
            workers.wait_ready(workers.start(concurrency=8))
        kills = 0
        # Kill a worker whenever it holds parents waiting on children or sleeping, then replace it.
        while kills < 4 and db.status_counts()["SUCCESS"] < 2 * len(ids):
            wait_for(lambda k=kills: db.one("SELECT count(*) FROM {s}.steps WHERE name = 'sleep'") > k, 30,
                     "timers in flight", workers.logs)
            victim = rng.choice(workers.alive())
            workers.kill(victim)
            kills += 1
            workers.wait_ready(workers.start(concurrency=8))
        wait_all_success(db, 2 * len(ids), 90, workers)  # 16 parents + 16 children
        assert_no_engine_failures(workers)
    assert kills >= 2
    check_children(db, ids)
    check_ledger(db, kinds=("reserve", "pack", "ship", "notify"), step_names={"reserve", "pack", "ship", "notify"})
    outputs = dict(db.rows("SELECT workflow_id, output FROM {s}.workflows WHERE parent_id IS NULL"))
    for i, wid in enumerate(ids):
        assert json.loads(outputs[wid]) == {"n": i, "shipped": f"shipped box-{i}", "note": f"notified {i}"}
    assert db.one("SELECT sum(recoveries) FROM {s}.workflows") > 0  # work really was taken over


def test_deploy_of_a_new_version_finishes_pending_old_work(env, tmp_path: Path) -> None:
    app, db, wenv = env
    old = order_ids(10, "old")
    v1 = {**wenv, "KIT_APP_VERSION": "v1", "LC_CODE": "v1", "LC_SLEEP": "1.5"}
    submit = lc.make_app(database_url=wenv["KIT_DATABASE_URL"], schema=wenv["KIT_SCHEMA"], app_version="v1")
    try:
        for i, wid in enumerate(old):
            submit.enqueue("lc.order", i, workflow_id=wid)
    finally:
        submit.close()
    with Workers(wenv, tmp_path, SPEC) as workers:
        w1 = workers.start(concurrency=4, env=v1)  # runs 4 at a time: the rest stay queued
        workers.wait_ready(w1)
        wait_for(lambda: db.one("SELECT count(*) FROM {s}.steps WHERE name = 'sleep'") >= 2, 30,
                 "old workflows mid-flight", workers.logs)
        # The deploy: the old worker is stopped (SIGTERM: graceful, it releases its leases) ...
        w1.signal(signal.SIGTERM)
        w1.proc.wait(timeout=20)
        pending = db.rows("SELECT status, count(*) FROM {s}.workflows WHERE app_version = 'v1' "
                          "AND status IN ('PENDING', 'RUNNING') GROUP BY status")
        assert sum(n for _, n in pending) > 0, "the deploy should leave v1 work unfinished"
        # ... and the new one starts: v2 code (a patched step), replaying v1 work it declares compatible.
        v2 = {**wenv, "KIT_APP_VERSION": "v2", "KIT_COMPATIBLE_VERSIONS": "v1", "LC_CODE": "v2", "LC_SLEEP": "1.5"}
        w2 = workers.start(concurrency=8, env=v2)
        workers.wait_ready(w2)
        new_app = lc.make_app(database_url=wenv["KIT_DATABASE_URL"], schema=wenv["KIT_SCHEMA"], app_version="v2")
        try:
            new = order_ids(4, "new")
            for i, wid in enumerate(new):
                new_app.enqueue("lc.order", 100 + i, workflow_id=wid)
        finally:
            new_app.close()
        wait_all_success(db, 2 * (len(old) + len(new)), 90, workers)
        assert_no_engine_failures(workers)
        assert "unfinished workflows of other application versions" not in w2.text()
    versions = dict(db.rows("SELECT workflow_id, app_version FROM {s}.workflows WHERE parent_id IS NULL"))
    assert {versions[w] for w in old} == {"v1"} and {versions[w] for w in new} == {"v2"}
    notes = dict(db.rows("SELECT workflow_id, output FROM {s}.workflows WHERE parent_id IS NULL"))
    for i, wid in enumerate(new):
        assert json.loads(notes[wid])["note"] == f"notified {100 + i} (v2)"
    check_children(db, old + new)
    kinds = ("reserve", "pack", "ship", "notify", "notify_v2")
    check_ledger(db, kinds=kinds, step_names=set(kinds))
    # The old worker finished some v1 workflows before the deploy; the rest finished on v2 code.
    finished_by = Counter(json.loads(notes[w])["note"].endswith("(v2)") for w in old)
    assert finished_by[True] > 0
