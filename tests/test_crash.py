"""Multi-process failure tests: real worker processes, real PostgreSQL, real signals.

Workers are ``kit worker tests.apps.ledger_app:app`` subprocesses. Their steps append side effects to a
ledger table outside the checkpoint transaction, so the ledger shows every execution of every step and
the checks below can tell an allowed re-run (G3: the worker died between the side effect and the
checkpoint) from a forbidden one (G2: a step ran again after its checkpoint committed).

Short leases (1.5 s, heartbeat 0.4 s, poll 0.2 s) keep the whole file fast.
"""

from __future__ import annotations

import importlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

pytestmark = pytest.mark.all_backends  # also on the extra targets (Citus): tests/targets.py

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
ledger = importlib.import_module("tests.apps.ledger_app")

APP_SPEC = "tests.apps.ledger_app:app"
# Short leases keep the crash tests quick; 3 s still rides out a worker process starved of CPU for a second
# or two on a loaded 2-core machine (a live worker must not lose its leases to the test's other worker).
LEASE, HEARTBEAT, POLL = 3.0, 0.5, 0.2


# -- helpers ----------------------------------------------------------------------------------------------
def worker_env(url: str, schema: str) -> dict[str, str]:
    """The workers' environment: this test's database and timings; KIT_BACKEND (an extra target's backend,
    tests/targets.py) is kept so the workers run the backend under test."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIT_") or k == "KIT_BACKEND"}
    env.update(
        KIT_DATABASE_URL=url, KIT_SCHEMA=schema, KIT_LEASE_SECONDS=str(LEASE),
        KIT_HEARTBEAT_SECONDS=str(HEARTBEAT), KIT_POLL_SECONDS=str(POLL), PYTHONUNBUFFERED="1",
    )
    return env


class Worker:
    """One ``kit worker`` subprocess; stdout and stderr go to ``log``."""

    def __init__(self, proc: subprocess.Popen, log: Path) -> None:
        self.proc = proc
        self.log = log

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def signal(self, sig: int) -> None:
        if self.alive():
            self.proc.send_signal(sig)


class Workers:
    """Starts worker subprocesses; kills every one it started on exit."""

    def __init__(self, env: dict[str, str], logdir: Path, app_spec: str = APP_SPEC) -> None:
        self.env = env
        self.logdir = logdir
        self.app_spec = app_spec
        self.all: list[Worker] = []

    def start(self, concurrency: int = 3, env: dict[str, str] | None = None) -> Worker:
        log = self.logdir / f"worker-{len(self.all)}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "kit.cli", "worker", self.app_spec, "--concurrency", str(concurrency)],
                cwd=REPO, env={**self.env, **(env or {})}, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT,
            )
        w = Worker(proc, log)
        self.all.append(w)
        return w

    def alive(self) -> list[Worker]:
        return [w for w in self.all if w.alive()]

    def kill(self, w: Worker) -> None:
        w.signal(signal.SIGCONT)  # a stopped process dies on SIGKILL anyway; be explicit
        w.signal(signal.SIGKILL)
        w.proc.wait(timeout=10)

    def wait_ready(self, w: Worker, timeout: float = 30) -> None:
        wait_for(lambda: "kit worker " in w.text(), timeout, f"worker {w.pid} to start", lambda: w.text())
        assert w.alive(), w.text()

    def logs(self) -> str:
        return "\n".join(f"--- worker {w.pid} ({w.log.name}) ---\n{w.text()[-3000:]}" for w in self.all)

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        for w in self.all:
            if w.alive():
                self.kill(w)


def wait_for(cond: Callable[[], Any], timeout: float, what: str, details: Callable[[], str] | None = None,
             interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            extra = f"\n{details()}" if details else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{extra}")
        time.sleep(interval)


class DB:
    """Test-side SQL over one autocommit connection; ``{s}`` in a statement is the schema."""

    def __init__(self, url: str, schema: str) -> None:
        self.conn = psycopg.connect(url, autocommit=True)
        self.schema = schema

    def rows(self, stmt: str, params: Any = None) -> list[tuple]:
        return self.conn.execute(sql.SQL(stmt).format(s=sql.Identifier(self.schema)), params).fetchall()

    def one(self, stmt: str, params: Any = None) -> Any:
        rows = self.rows(stmt, params)
        return rows[0][0] if rows else None

    def status_counts(self) -> Counter:
        return Counter(dict(self.rows("SELECT status, count(*) FROM {s}.workflows GROUP BY status")))

    def owner_pids(self) -> Counter:
        """RUNNING workflows per owning worker's pid (worker ids are host:pid:random)."""
        owners = self.rows("SELECT owner FROM {s}.workflows WHERE status = 'RUNNING' AND owner IS NOT NULL")
        return Counter(int(o.rsplit(":", 2)[1]) for (o,) in owners)

    def close(self) -> None:
        self.conn.close()


@pytest.fixture
def env(pg_url: str, schema: str) -> Iterator[tuple[Any, DB, dict[str, str]]]:
    """A migrated schema with a ledger table, a test-side app on it, SQL access and the worker env."""
    app = ledger.make_app(database_url=pg_url, schema=schema, lease_seconds=LEASE,
                          heartbeat_seconds=HEARTBEAT, poll_seconds=POLL)
    app.backend.migrate()
    ledger.ensure_ledger(pg_url, schema)
    db = DB(pg_url, schema)
    try:
        yield app, db, worker_env(pg_url, schema)
    finally:
        app.close()
        db.close()


def wait_all_success(db: DB, count: int, timeout: float, workers: Workers) -> None:
    def done() -> bool:
        c = db.status_counts()
        assert c["ERROR"] == 0 and c["CANCELLED"] == 0, (
            f"workflows failed: {db.rows('SELECT workflow_id, error FROM {s}.workflows WHERE status = %s', ['ERROR'])}"
        )
        return c["SUCCESS"] == count

    wait_for(done, timeout, f"{count} workflows to reach SUCCESS",
             lambda: f"{dict(db.status_counts())}\n{workers.logs()}", interval=0.1)


def assert_no_engine_failures(workers: Workers) -> None:
    for w in workers.all:
        text = w.text()
        assert "unexpected engine failure" not in text, text
        assert "NonDeterminismError" not in text, text


def check_ledger(db: DB, kinds: tuple[str, ...] = ("step", "slow", "whoami"), *,
                 step_names: set[str] | None = None) -> int:
    """G2/G3 against the ledger: for every checkpointed ordinary step, exactly one execution in the
    checkpoint's epoch and none in a newer epoch. Returns the number of G3 re-runs (older epochs)."""
    checkpoints = {(w, s): (name, ep) for w, s, name, ep in
                   db.rows("SELECT workflow_id, step_id, name, epoch FROM {s}.steps")}
    runs: dict[tuple[str, int], list[int]] = defaultdict(list)
    for w, s, ep in db.rows("SELECT workflow_id, step_id, epoch FROM {s}.ledger WHERE kind = ANY(%s)",
                            [list(kinds)]):
        runs[(w, s)].append(ep)
    g3 = 0
    for key, epochs in runs.items():
        assert key in checkpoints, f"step {key} ran (epochs {epochs}) but was never checkpointed"
    for key, (name, ep) in checkpoints.items():
        if name == "ledger_tx" or (step_names is not None and name not in step_names):
            continue
        epochs = runs.get(key, [])
        newer = [e for e in epochs if e > ep]
        assert not newer, f"G2 violated: step {key} checkpointed at epoch {ep} ran again at epochs {newer}"
        assert epochs.count(ep) == 1, (
            f"step {key} checkpointed at epoch {ep} has {epochs.count(ep)} executions in that epoch: {epochs}"
        )
        g3 += sum(1 for e in epochs if e < ep)
    return g3


def check_tx_ledger(db: DB, workflow_ids: list[str]) -> None:
    """G4: the transactional step's ledger row exists exactly once, in the epoch of its checkpoint."""
    tx_steps = {w: (s, ep) for w, s, ep in
                db.rows("SELECT workflow_id, step_id, epoch FROM {s}.steps WHERE name = 'ledger_tx'")}
    rows = db.rows("SELECT workflow_id, step_id, epoch FROM {s}.ledger WHERE kind = 'tx'")
    per_wf = Counter(w for w, _, _ in rows)
    for wid in workflow_ids:
        assert per_wf[wid] == 1, f"G4: workflow {wid} has {per_wf[wid]} transactional ledger rows"
    for w, s, ep in rows:
        assert tx_steps.get(w) == (s, ep), f"G4: tx ledger row {(w, s, ep)} != checkpoint {tx_steps.get(w)}"


def check_results(db: DB, expected: dict[str, dict[str, Any]]) -> None:
    rows = db.rows("SELECT workflow_id, status, output FROM {s}.workflows")
    assert len(rows) == len(expected), f"{len(rows)} workflow rows, expected {len(expected)}"
    for wid, status, output in rows:
        assert status == "SUCCESS", (wid, status)
        assert json.loads(output) == expected[wid], (wid, output)


def check_step_order(db: DB, steps_per_workflow: int) -> None:
    """Each workflow has contiguous step ids and its checkpoint epochs never go backwards."""
    by_wf: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for w, s, ep in db.rows("SELECT workflow_id, step_id, epoch FROM {s}.steps ORDER BY workflow_id, step_id"):
        by_wf[w].append((s, ep))
    for w, steps in by_wf.items():
        assert [s for s, _ in steps] == list(range(steps_per_workflow)), (w, steps)
        epochs = [ep for _, ep in steps]
        assert epochs == sorted(epochs), f"{w}: checkpoint epochs go backwards: {steps}"


# -- 1. random SIGKILLs ----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_random_sigkill_no_lost_or_repeated_steps(env, tmp_path: Path) -> None:
    app, db, wenv = env
    seed = int(os.environ.get("KIT_TEST_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    print(f"\nchaos seed {seed} (KIT_TEST_SEED={seed} to replay the kill schedule)")
    n_wf = 40
    expected = {}
    for n in range(n_wf):
        wid = f"chaos-{n:02d}"
        app.enqueue(app.ledger_workflow, n, workflow_id=wid)
        expected[wid] = ledger.expected_result(n)

    kills = 0
    with Workers(wenv, tmp_path) as workers:
        for _ in range(3):
            workers.start(concurrency=3)
        wait_for(lambda: db.one("SELECT count(*) FROM {s}.ledger") > 0, 30, "the first step to run",
                 workers.logs)
        deadline = time.monotonic() + 20
        while kills < 6 and time.monotonic() < deadline:
            time.sleep(rng.uniform(0.25, 0.8))
            if db.status_counts()["SUCCESS"] >= n_wf - 3:
                break
            held = db.owner_pids()
            candidates = [w for w in workers.alive() if held[w.pid] > 0]
            if not candidates:
                continue  # kill only workers in the middle of something
            victim = rng.choice(candidates)
            workers.kill(victim)
            kills += 1
            print(f"t={time.monotonic():.2f} SIGKILL worker {victim.pid} holding {held[victim.pid]} workflow(s)")
            workers.start(concurrency=3)
        # Leave one worker: kill the others, mid-run if they hold work.
        survivors = workers.alive()
        for w in survivors[:-1]:
            workers.kill(w)
            kills += 1
        print(f"{kills} kills; one worker ({survivors[-1].pid}) left to finish")
        wait_all_success(db, n_wf, 60, workers)
        assert_no_engine_failures(workers)

    check_results(db, expected)
    check_step_order(db, 6)
    g3 = check_ledger(db)
    check_tx_ledger(db, list(expected))
    recoveries = db.one("SELECT coalesce(sum(recoveries), 0) FROM {s}.workflows")
    recovered = db.one("SELECT count(*) FROM {s}.workflows WHERE recoveries > 0")
    max_epoch = db.one("SELECT max(epoch) FROM {s}.workflows")
    print(f"kills={kills} recoveries={recoveries} recovered_workflows={recovered} max_epoch={max_epoch} "
          f"g3_reruns={g3}")
    assert kills >= 3
    assert recoveries > 0, "no workflow was recovered: the kills never landed mid-run"


# -- 2. lease expiry -------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_dead_workers_leases_expire_and_another_worker_takes_over(env, tmp_path: Path) -> None:
    app, db, wenv = env
    expected = {}
    # Six steps of 1 s: A's workflows must outlive starting worker B (a new process opening the backend:
    # about 3 s on a loaded 2-core machine), so that A still holds them all when it is killed.
    for n in range(6):
        wid = f"lease-{n}"
        app.enqueue(app.ledger_workflow, n, steps=6, delay=1.0, workflow_id=wid)
        expected[wid] = ledger.expected_result(n, steps=6)

    with Workers(wenv, tmp_path) as workers:
        a = workers.start(concurrency=8)
        # A holds all six and each has checkpointed its first step.
        wait_for(lambda: db.owner_pids()[a.pid] == 6
                 and db.one("SELECT count(DISTINCT workflow_id) FROM {s}.steps") == 6,
                 30, "worker A to hold all workflows mid-run", workers.logs)
        b = workers.start(concurrency=8)
        workers.wait_ready(b)
        before = {w: (ep, exp) for w, ep, exp in
                  db.rows("SELECT workflow_id, epoch, lease_expires_at FROM {s}.workflows")}
        workers.kill(a)
        killed_at = db.one("SELECT clock_timestamp()")
        assert db.owner_pids()[a.pid] == 6, "worker B claimed live leases"
        wait_all_success(db, 6, 30, workers)
        assert_no_engine_failures(workers)

    check_results(db, expected)
    check_step_order(db, 7)
    check_ledger(db)
    check_tx_ledger(db, list(expected))
    rows = db.rows("SELECT workflow_id, epoch, recoveries FROM {s}.workflows")
    for wid, epoch, recoveries in rows:
        assert recoveries >= 1, f"{wid} finished without a recovery"
        assert epoch > before[wid][0], (wid, epoch, before[wid])
    # Steps checkpointed by A stay A's (epoch 1); B ran the rest under its newer epoch.
    assert db.one("SELECT count(*) FROM {s}.steps WHERE epoch = 1 AND step_id = 0") == 6
    b_pids = set(db.rows("SELECT DISTINCT pid FROM {s}.ledger WHERE at > %s", [killed_at]))
    assert b_pids == {(b.pid,)}, b_pids
    takeover = db.one("SELECT extract(epoch FROM min(at) - %s) FROM {s}.ledger WHERE pid = %s",
                      [killed_at, b.pid])
    print(f"\nrecoveries={sum(r for _, _, r in rows)} takeover {float(takeover):.2f}s after SIGKILL "
          f"(lease {LEASE}s)")
    # Never before a lease expired: each expiry read before the kill only moved later with renewals ...
    for wid, first in db.rows("SELECT workflow_id, min(at) FROM {s}.ledger WHERE pid = %s GROUP BY 1", [b.pid]):
        assert first >= before[wid][1], f"{wid} taken over at {first}, before its lease expired ({before[wid][1]})"
    # How soon after expiry the takeover came is measured by `kit bench recovery`, not asserted here.


# -- 3. a frozen zombie is fenced ------------------------------------------------------------------------------
@pytest.mark.slow
def test_sigstopped_zombie_cannot_commit_after_takeover(env, tmp_path: Path) -> None:
    app, db, wenv = env
    wid = "zombie-1"
    app.enqueue(app.slow_workflow, 7, 2.5, workflow_id=wid)
    with Workers(wenv, tmp_path) as workers:
        zombie = workers.start(concurrency=2)
        wait_for(lambda: db.one("SELECT count(*) FROM {s}.ledger WHERE kind = 'slow' AND pid = %s",
                                [zombie.pid]) == 1, 30, "the slow step to start", workers.logs)
        zombie.signal(signal.SIGSTOP)
        zombie_epoch = db.one("SELECT epoch FROM {s}.ledger WHERE kind = 'slow'")
        assert zombie_epoch == 1
        try:
            heir = workers.start(concurrency=2)
            wait_for(lambda: db.one("SELECT status FROM {s}.workflows WHERE workflow_id = %s", [wid]) == "SUCCESS",
                     30, "the new owner to finish the workflow", workers.logs)
            snapshot = db.rows("SELECT status, output, error, epoch, owner, finished_at FROM {s}.workflows")
            steps_before = db.rows("SELECT step_id, name, output, epoch FROM {s}.steps ORDER BY step_id")
            assert snapshot[0][3] > zombie_epoch
        finally:
            zombie.signal(signal.SIGCONT)
        # The zombie wakes inside its slow step, finishes it and tries to checkpoint: refused.
        wait_for(lambda: "abandon" in zombie.text().lower(), 10, "the zombie to abandon the workflow",
                 workers.logs)
        time.sleep(3 * HEARTBEAT)  # let it try anything else it would try
        assert zombie.alive(), zombie.text()
        zombie_log = zombie.text()
        assert_no_engine_failures(workers)

    print("\nzombie log:\n" + "\n".join(ln for ln in zombie_log.splitlines() if "WARNING" in ln))
    assert "lease" in zombie_log.lower() and "abandon" in zombie_log.lower(), zombie_log
    assert db.rows("SELECT status, output, error, epoch, owner, finished_at FROM {s}.workflows") == snapshot
    assert db.rows("SELECT step_id, name, output, epoch FROM {s}.steps ORDER BY step_id") == steps_before
    steps = {s: ep for s, ep in db.rows("SELECT step_id, epoch FROM {s}.steps")}
    assert steps[0] == zombie_epoch  # checkpointed before the freeze: kept, not re-run
    assert all(ep > zombie_epoch for s, ep in steps.items() if s >= 1), steps
    result = json.loads(snapshot[0][1])
    assert result["finisher"] == {"pid": heir.pid, "epoch": snapshot[0][3]}
    assert result["values"] == [70, "slow done", 72]
    # The zombie did nothing after its freeze point; the slow step ran twice (a G3 re-run).
    zombie_rows = db.rows("SELECT step_id, kind FROM {s}.ledger WHERE pid = %s ORDER BY step_id", [zombie.pid])
    assert zombie_rows == [(0, "step"), (1, "slow")], zombie_rows
    assert check_ledger(db) == 1


# -- 4. one id started from several processes at once -------------------------------------------------------
@pytest.mark.slow
def test_same_workflow_id_started_concurrently_runs_once(env, tmp_path: Path) -> None:
    app, db, wenv = env
    wid, n, procs = "same", 5, []
    go = tmp_path / "go"
    try:
        for i in range(4):
            out = open(tmp_path / f"starter-{i}.out", "wb")
            err = open(tmp_path / f"starter-{i}.err", "wb")
            procs.append((subprocess.Popen(
                [sys.executable, "-m", "tests.apps.ledger_app", "start-same", "--id", wid, "--n", str(n),
                 "--ready", str(tmp_path / f"ready-{i}"), "--go", str(go)],
                cwd=REPO, env=wenv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
            ), out, err, i))
        wait_for(lambda: all((tmp_path / f"ready-{i}").exists() for i in range(4)), 60, "the starters",
                 lambda: "\n".join((tmp_path / f"starter-{i}.err").read_text() for i in range(4)))
        go.touch()
        results = []
        for proc, _out, _err, i in procs:
            assert proc.wait(timeout=60) == 0, (tmp_path / f"starter-{i}.err").read_text()
            results.append(json.loads((tmp_path / f"starter-{i}.out").read_text()))
    finally:
        for proc, out, err, _ in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            out.close()
            err.close()

    assert len({r["pid"] for r in results}) == 4
    assert all(r["result"] == ledger.expected_result(n) for r in results), results
    rows = db.rows("SELECT workflow_id, status, epoch, recoveries FROM {s}.workflows")
    assert rows == [(wid, "SUCCESS", 1, 0)]
    runs = Counter((s, kind) for s, kind in db.rows("SELECT step_id, kind FROM {s}.ledger"))
    assert runs == Counter({(i, "step"): 1 for i in range(5)} | {(5, "tx"): 1}), runs
    assert len(set(db.rows("SELECT pid FROM {s}.ledger"))) == 1  # one process ran it
    assert check_ledger(db) == 0
