"""The chaos scenarios: each runs the lab workload under one fault against the Patroni cluster, then checks
G1-G9 from the database and the ledger and writes a JSON report. Assertions are on counts and states;
timings only go into the reports.
"""

from __future__ import annotations

import random
import signal
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from chaos.checker import check
from chaos.report import ScenarioReport
from chaos.workload import Workload
from kit.lab import Lab

DRAIN_TIMEOUT = 420.0


@dataclass
class Run:
    """What a fault function gets: the lab, the workload, and where to note extra facts for the report."""

    lab: Lab
    workload: Workload
    tmp: Path
    extra: dict[str, Any] = field(default_factory=dict)
    cleanup: list[Callable[[], None]] = field(default_factory=list)


def _wait_progress(wl: Workload, fraction: float, timeout: float = 120.0) -> None:
    """Wait until ``fraction`` of the workflows are terminal, so the fault lands mid-run."""
    deadline = time.monotonic() + timeout
    want = int(wl.workflows * fraction)
    while time.monotonic() < deadline:
        try:
            c = wl.progress()
            if c["SUCCESS"] + c["ERROR"] + c["CANCELLED"] >= want:
                return
        except Exception:  # noqa: BLE001 - the database may be mid-fault; keep waiting
            pass
        time.sleep(0.2)
    raise AssertionError(f"workload made no progress to {fraction:.0%} in {timeout:.0f}s: {wl.last_progress}\n"
                         + wl.worker_logs())


FENCED_MARKS = ("fenced (lease lost)", "lease lost (epoch", "its lease was taken over")


RELEASED_MARK = "leased to this worker but not running here"  # a stray lease given back (e.g. an ambiguous claim)
EXPIRED_MARK = "lease may have expired"  # a run stopped because no renewal was confirmed within the lease


def _count_logged(ledger: Path, marks: tuple[str, ...]) -> int:
    """How often the workers' logs say one of ``marks``, for the report."""
    n = 0
    for log in ledger.glob("worker-*.log"):
        try:
            text = log.read_text(errors="replace")
        except OSError:
            continue
        n += sum(text.count(mark) for mark in marks)
    return n


def _drop_schema(url: str, schema: str) -> None:
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    except psycopg.Error:
        pass


def run_scenario(lab: Lab, name: str, variant: str, fault: Callable[[Run], float], *, workflows: int,
                 reports: Path, tmp: Path, start_at: float = 0.15,
                 worker_env: dict[str, str] | None = None,
                 after: Callable[[Run, float], None] | None = None) -> ScenarioReport:
    """Run ``workflows`` lab workflows on 3 workers, inject ``fault`` once ``start_at`` of them finished,
    drain, heal the cluster, check G1-G9, write the report; returns it (assertions are the caller's).
    ``after(run, fault_time)`` runs once the cluster is healed and checked, before the schema is dropped (extra
    analysis for the report: what it puts in ``run.extra`` lands there)."""
    lab.set_variant(variant)
    report = ScenarioReport(name=name, variant=variant)
    t0 = time.time()
    first_event = len(lab.timeline.events)
    schema = f"lab_{name.replace('-', '_')}_{variant}_{uuid.uuid4().hex[:6]}"
    ledger = tmp / "ledger"
    wl = Workload(lab.database_url(), schema, ledger, workflows=workflows, workers=3, worker_env=worker_env)
    run = Run(lab, wl, tmp)
    try:
        wl.prepare()
        ids = wl.submit()
        lab.timeline.add(f"{len(ids)} workflows submitted")
        wl.start_workers()
        run.extra["workers_started_t"] = time.time()
        _wait_progress(wl, start_at)
        fault_t = fault(run)
        report.extra["wait_drained_s"] = round(wl.wait_drained(DRAIN_TIMEOUT), 3)
        report.drain_s = round(time.time() - fault_t, 3)  # fault -> every workflow terminal
        lab.timeline.add("workload drained")
        first = wl.first_checkpoint_after(fault_t)
        report.fault_to_first_checkpoint_s = round(first - fault_t, 3) if first is not None else None
    finally:
        wl.stop()
        for fn in run.cleanup:
            fn()
        report.extra["heal_s"] = round(lab.heal(), 3)
    report.extra["fenced_logged"] = _count_logged(ledger, FENCED_MARKS)
    report.extra["released_logged"] = _count_logged(ledger, (RELEASED_MARK,))
    report.extra["lease_expired_logged"] = _count_logged(ledger, (EXPIRED_MARK,))
    result = check(lab.database_url(), schema, ledger, ids, sync_replication=(variant == "sync"))
    report.apply_check(result)
    if after is not None:
        after(run, fault_t)
    report.extra.update(run.extra)
    for t, event in lab.timeline.events[first_event:]:
        report.event(t - t0, event)
    report.to_json(reports)
    if result.ok:
        _drop_schema(lab.database_url(), schema)
    else:
        report.extra["worker_logs"] = wl.worker_logs(1500)
        report.to_json(reports)
    return report


def _assert_ok(report: ScenarioReport) -> None:
    failed = {g: v.get("detail", "") for g, v in report.guarantees.items() if v.get("status") == "fail"}
    assert report.ok and not failed, f"{report.name} ({report.variant}): guarantees failed: {failed}"
    assert report.workflows > 0
    if report.variant == "sync":
        assert report.lost_acks == 0, "an acknowledged checkpoint was lost under synchronous replication"


# -- the faults ----------------------------------------------------------------------------------------------
def kill_workers(run: Run) -> float:
    """SIGKILL a random worker and restart it, five times, a few seconds apart."""
    t = run.lab.timeline.add("start killing workers")
    for _ in range(5):
        i = random.randrange(run.workload.workers)
        pid = run.workload.kill_worker(i, signal.SIGKILL)
        run.lab.timeline.add(f"SIGKILL worker {i} (pid {pid})")
        time.sleep(random.uniform(0.5, 1.5))
        run.workload.restart_worker(i)
        time.sleep(random.uniform(1.0, 2.5))
    return t


def kill_primary(run: Run) -> float:
    """SIGKILL the primary, wait for the promotion, start the old primary again (it rejoins as a replica)."""
    old = run.lab.kill_primary()
    t = run.lab.timeline.events[-1][0]
    run.lab.wait_new_primary(old)
    run.extra["failover_s"] = round(time.time() - t, 3)
    run.lab.start(old)
    return t


def pause_primary(run: Run) -> float:
    """Freeze the primary until a replica is promoted, then thaw it (it must demote and rejoin)."""
    old = run.lab.pause_primary()
    t = run.lab.timeline.events[-1][0]
    run.lab.wait_new_primary(old)
    run.extra["failover_s"] = round(time.time() - t, 3)
    time.sleep(2.0)
    run.lab.unpause(old)
    return t


def partition_worker(run: Run) -> float:
    """A fourth worker reaches the database through its own proxies; its links hang (timeout toxic) past
    its lease, then come back: its workflows are taken over and its late writes fenced."""
    victim = Workload(run.lab.database_url(victim=True), run.workload.schema, run.workload.ledger_dir,
                      workflows=run.workload.workflows, workers=1)
    victim._generation = 1000  # its log files (worker-0-1001.log) must not collide with the main workload's
    victim.start_workers()
    run.cleanup.append(victim.stop)
    time.sleep(3.0)  # let it claim work
    run.lab.partition_victim("timeout")
    t = run.lab.timeline.events[-1][0]
    time.sleep(15.0)
    run.lab.heal_victim()
    run.extra["partition_s"] = 15.0
    return t


def latency_jitter(run: Run) -> float:
    """50 ms +/- 40 ms on every link for 20 s."""
    run.lab.latency(50, 40)
    t = run.lab.timeline.events[-1][0]
    time.sleep(20.0)
    run.lab.clear_toxics()
    return t


def reset_commits(run: Run) -> float:
    """Alternate reset_peer (RST mid-statement) and limit_data (the reply to a committed statement is cut)
    on the workers' links, 4 rounds of 3 s each."""
    t = time.time()
    for r in range(4):
        if r % 2 == 0:
            run.lab.reset_peer(toxicity=0.3, after_ms=random.randint(100, 500))
        else:
            run.lab.limit_data(toxicity=0.3, nbytes=random.randint(2000, 20000))
        time.sleep(3.0)
        run.lab.clear_toxics()
        time.sleep(1.0)
    return t


def zombie_worker(run: Run) -> float:
    """Freeze worker 0 (SIGSTOP) for four leases while it holds workflows, then resume it."""
    pid = run.workload.pause_worker(0)
    t = run.lab.timeline.add(f"SIGSTOP worker 0 (pid {pid})")
    time.sleep(16.0)
    run.workload.resume_worker(0)
    run.lab.timeline.add(f"SIGCONT worker 0 (pid {pid})")
    return t


def restart_primary(run: Run) -> float:
    """Restart the primary's PostgreSQL every few seconds for a minute (the pattern of DBOS's chaos tests):
    an immediate-mode stop, i.e. every server process exits at once like a crash, and Patroni starts it again
    in place (no failover). The outages are far shorter than the lease: no takeover, no re-run."""
    first = run.lab.primary()
    t = run.lab.timeline.add(f"start restarting the primary ({first}) for 60 s")
    end = time.monotonic() + 60.0
    down: list[float] = []
    while time.monotonic() < end:
        run.lab.restart_primary()
        down.append(round(run.lab.wait_writable(), 2))
        time.sleep(random.uniform(2.0, 4.0))
    run.lab.timeline.add(f"{len(down)} restarts of the primary done")
    run.extra["restarts"] = len(down)
    run.extra["writes_back_after_s"] = down
    run.extra["primary_changed"] = run.lab.primary() != first
    return t


def restart_cluster(run: Run) -> float:
    """Stop every node and etcd, start them again, wait for a leader; recovery counts from "all down"."""
    down = run.lab.restart_cluster()
    run.lab.wait_healthy(timeout=180)
    run.lab.timeline.add("cluster healthy again")
    return down


# -- the scenarios (async scenarios first, then the synchronous variant: one switch of the cluster) ---------
SCENARIOS: list[tuple[str, str, Callable[[Run], float]]] = [
    ("kill-workers", "async", kill_workers),
    ("kill-primary", "async", kill_primary),
    ("pause-primary", "async", pause_primary),
    ("partition-worker", "async", partition_worker),
    ("latency-jitter", "async", latency_jitter),
    ("reset-commits", "async", reset_commits),
    ("zombie-worker", "async", zombie_worker),
    ("restart-cluster", "async", restart_cluster),
    ("restart-primary", "async", restart_primary),
    ("kill-primary", "sync", kill_primary),
    ("pause-primary", "sync", pause_primary),
]


# The fault starts once this share of the workflows finished (default 15%); the restarts run a whole minute,
# so they start early enough to keep hitting work in flight.
START_AT = {"restart-primary": 0.05}
# Worker settings over the lab's (lease 4 s, heartbeat 1 s): the restarts run with kit's defaults (lease 10 s,
# heartbeat 2.5 s). An in-place restart under the workload keeps the primary from taking writes for 2.4-3.6 s
# here, longer than the lab lease minus a heartbeat period leaves (docs/lab.md).
WORKER_ENV = {"restart-primary": {"KIT_LEASE_SECONDS": "10", "KIT_HEARTBEAT_SECONDS": "2.5"}}


@pytest.mark.parametrize(("name", "variant", "fault"), SCENARIOS, ids=[f"{n}-{v}" for n, v, _ in SCENARIOS])
def test_scenario(name: str, variant: str, fault: Callable[[Run], float], lab_cluster: Lab, lab_workflows: int,
                  lab_reports_dir: Path, tmp_path: Path) -> None:
    """Under the fault every workflow completes and every guarantee holds (G9 strictly when synchronous)."""
    report = run_scenario(lab_cluster, name, variant, fault, workflows=lab_workflows, reports=lab_reports_dir,
                          tmp=tmp_path, start_at=START_AT.get(name, 0.15), worker_env=WORKER_ENV.get(name))
    _assert_ok(report)
    if name == "restart-primary" and not report.extra.get("primary_changed"):
        # Outages of a few seconds, under the lease: no lease is lost (no run stopped for it, no takeover after
        # an expiry) and no step runs again. Two things remain, neither a lease loss: a transactional step
        # whose transaction died with the server runs again by its owner (nothing of it had committed), and a
        # claim whose reply died with the server is given back by its worker's heartbeat and claimed anew
        # (nothing of it had run).
        stats = report.extra["stats"]
        assert stats["recoveries"] == 0 and report.extra["lease_expired_logged"] == 0, (stats, report.extra)
        assert report.duplicates == stats["duplicate_kinds"].get("tx_rolled_back", 0), stats
        assert report.takeovers <= report.extra["released_logged"], (report.takeovers, report.extra)
