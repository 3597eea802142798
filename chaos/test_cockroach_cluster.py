"""The chaos scenarios on a 3-node CockroachDB cluster (compose/cockroachdb) through kit's CockroachDB backend:
kill a node mid-workflow, partition a node, kill workers. Each runs the lab workload (chaos/workload.py,
chaos/lab_app.py) under the fault, drains it, and checks G1-G8 from the database and the ledger, and G9 as
Raft's: with every write replicated to a majority before it is acknowledged, no acknowledged checkpoint may be
missing after a node dies (the checker's strict mode). Reports go where the other scenarios' go.

They run only where a Docker engine and the CockroachDB image are already present; otherwise every scenario
is skipped with that reason. Nothing here pulls the image: CockroachDB is under its vendor's licence, and kit
neither downloads, vendors nor builds it (``docker pull cockroachdb/cockroach:v24.1.4`` on a machine with
registry access, or ``KIT_COCKROACH_LAB_IMAGE`` for another tag).
"""

from __future__ import annotations

import random
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from chaos.checker import check
from chaos.report import ScenarioReport
from chaos.workload import Workload
from kit.lab.cockroach import NODES, CockroachLab
from kit.lab.controller import Timeline
from kit.lab.host import LabUnavailable

DRAIN_TIMEOUT = 420.0
VARIANT = "raft"


def _log(msg: str) -> None:
    print(f"[crdb-lab {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@pytest.fixture(scope="session")
def crdb_lab(pytestconfig: pytest.Config) -> Iterator[CockroachLab]:
    """The CockroachDB cluster of the session (reused when running), down at the end unless --lab-keep."""
    lab = CockroachLab(timeline=Timeline(log=_log))
    problem = lab.image_problem()
    if problem:
        pytest.skip(f"CockroachDB lab unavailable: {problem}")
    try:
        if lab.is_up():
            lab.heal()
        else:
            lab.up()
    except LabUnavailable as exc:
        pytest.skip(f"CockroachDB lab unavailable: {exc}")
    yield lab
    if not pytestconfig.getoption("--lab-keep"):
        lab.down()
    lab.close()


@dataclass
class Run:
    lab: CockroachLab
    workload: Workload
    extra: dict[str, Any] = field(default_factory=dict)


def _wait_progress(wl: Workload, fraction: float, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    want = int(wl.workflows * fraction)
    while time.monotonic() < deadline:
        try:
            c = wl.progress()
            if c["SUCCESS"] + c["ERROR"] + c["CANCELLED"] >= want:
                return
        except Exception:  # noqa: BLE001 - the cluster may be mid-fault; keep waiting
            pass
        time.sleep(0.2)
    raise AssertionError(f"workload made no progress to {fraction:.0%} in {timeout:.0f}s: {wl.last_progress}\n"
                         + wl.worker_logs())


# -- the faults ----------------------------------------------------------------------------------------------
def kill_node(run: Run) -> float:
    """SIGKILL one node while workflows run on it; start it again after 10 s (it catches up through Raft)."""
    node = random.choice(NODES)
    run.lab.kill_node(node)
    t = run.lab.timeline.events[-1][0]
    time.sleep(10.0)
    run.lab.start_node(node)
    run.extra["killed"] = node
    return t


def partition_node(run: Run) -> float:
    """Disconnect one node from the other two (and from clients) for 15 s: the majority keeps serving, the
    node's leases move, and the workers' connections to it fail over to the other nodes."""
    node = random.choice(NODES)
    run.lab.partition_node(node)
    t = run.lab.timeline.events[-1][0]
    time.sleep(15.0)
    run.lab.reconnect(node)
    run.extra["partitioned"] = node
    return t


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


SCENARIOS: list[tuple[str, Callable[[Run], float]]] = [
    ("crdb-kill-node", kill_node),
    ("crdb-partition-node", partition_node),
    ("crdb-kill-workers", kill_workers),
]


def run_scenario(lab: CockroachLab, name: str, fault: Callable[[Run], float], *, workflows: int, reports: Path,
                 tmp: Path, start_at: float = 0.15) -> ScenarioReport:
    report = ScenarioReport(name=name, variant=VARIANT)
    t0 = time.time()
    first_event = len(lab.timeline.events)
    schema = f"lab_{name.replace('-', '_')}_{uuid.uuid4().hex[:6]}"
    ledger = tmp / "ledger"
    url = lab.database_url()
    wl = Workload(url, schema, ledger, workflows=workflows, workers=3, worker_env={"KIT_BACKEND": "cockroachdb"})
    run = Run(lab, wl)
    try:
        wl.prepare()
        ids = wl.submit()
        lab.timeline.add(f"{len(ids)} workflows submitted")
        wl.start_workers()
        _wait_progress(wl, start_at)
        fault_t = fault(run)
        report.extra["wait_drained_s"] = round(wl.wait_drained(DRAIN_TIMEOUT), 3)
        report.drain_s = round(time.time() - fault_t, 3)
        lab.timeline.add("workload drained")
        first = wl.first_checkpoint_after(fault_t)
        report.fault_to_first_checkpoint_s = round(first - fault_t, 3) if first is not None else None
    finally:
        wl.stop()
        report.extra["heal_s"] = round(lab.heal(), 3)
    result = check(url, schema, ledger, ids, sync_replication=True)  # Raft: acknowledged means replicated
    report.apply_check(result)
    report.extra.update(run.extra)
    for t, event in lab.timeline.events[first_event:]:
        report.event(t - t0, event)
    report.to_json(reports)
    if result.ok:
        try:
            with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
                conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
        except psycopg.Error:
            pass
    else:
        report.extra["worker_logs"] = wl.worker_logs(1500)
        report.to_json(reports)
    return report


@pytest.mark.parametrize(("name", "fault"), SCENARIOS, ids=[n for n, _ in SCENARIOS])
def test_cockroach_scenario(name: str, fault: Callable[[Run], float], crdb_lab: CockroachLab, lab_workflows: int,
                            lab_reports_dir: Path, tmp_path: Path) -> None:
    """Under the fault every workflow completes and every guarantee holds, G9 strictly (Raft)."""
    report = run_scenario(crdb_lab, name, fault, workflows=lab_workflows, reports=lab_reports_dir, tmp=tmp_path)
    failed = {g: v.get("detail", "") for g, v in report.guarantees.items() if v.get("status") == "fail"}
    assert report.ok and not failed, f"{name}: guarantees failed: {failed}"
    assert report.workflows > 0 and report.lost_acks == 0
