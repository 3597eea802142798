"""The Citus chaos scenarios: the lab workload (chaos/lab_app.py) on kit's Citus backend against the Citus HA
lab (compose/citus-ha), one fault each, then G1-G9 from the database and the ledger (chaos/checker.py) and a
JSON report, through the PostgreSQL scenarios' machinery (chaos/test_scenarios.run_scenario).

The lab replicates synchronously in every group, so every scenario runs the "sync" variant: no acknowledged
checkpoint may be lost (G9 strictly). Worker-group faults also measure **partial availability**: each
workflow's shard is mapped to its worker group (``pg_dist_shard`` / ``pg_dist_placement`` through
``CitusLab.groups_of``), and the report gives, per side (the faulted group, the healthy groups), how many
workflows finished and checkpoints committed per second while the fault lasted, next to the same rates in
the window of equal length before it. Rates go to the reports, never into pass/fail.

Lab facts the scenarios are built around (docs/lab.md, "The Citus lab"): a killed worker primary stops its
group for ≈ 15 s (promotion + Patroni's citus_update_node cooldown); a *paused* worker primary stops its group
until it is thawed (a coordinator backend caught mid-statement on it cancels that statement with a blocking
PQcancel, which holds citus_update_node's lock): the pause scenario therefore holds the freeze a bounded
time past the promotion and reports the group's unavailability as the freeze, not the failover.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from chaos.test_scenarios import Run, _assert_ok, kill_workers, run_scenario, zombie_worker
from kit.lab.citus import CITUS_GROUPS, COORDINATOR_GROUP, CitusLab
from kit.lab.controller import Timeline
from kit.lab.host import LabError, LabUnavailable, engine_problem

WORKER_GROUPS = tuple(g for g in CITUS_GROUPS if g != COORDINATOR_GROUP)
# Shards per distributed table (= lanes): 4 per worker group. With Citus's default 32, kit's heartbeat (one
# multi-shard lease UPDATE, two-phase commit over both groups) took 90 ms idle on this lab and over a second
# under the workload on 2 loaded cores (docs/lab.md).
SHARD_COUNT = int(os.environ.get("KIT_CITUS_LAB_SHARDS", "8"))
# The workers run on the Citus backend with kit's default lease (10 s, heartbeat 2.5 s): the lab's 4 s lease
# leaves the heartbeat's multi-shard renewal a 1 s budget, which it misses on this cluster under load.
WORKER_ENV = {"KIT_BACKEND": "citus", "KIT_LEASE_SECONDS": "10", "KIT_HEARTBEAT_SECONDS": "2.5"}
PAUSE_HOLD_S = 5.0  # how long a frozen worker primary stays frozen after its standby was promoted
CUT_S = 15.0  # how long a worker group stays cut off from the coordinator (longer than the lease)


def _log(msg: str) -> None:
    print(f"[citus-lab {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@pytest.fixture(scope="module")
def citus_cluster(pytestconfig: pytest.Config) -> Iterator[CitusLab]:
    """The Citus lab for this module (brought up, or healed when already running), down at the end unless
    --lab-keep."""
    problem = engine_problem()
    if problem:
        pytest.skip(f"chaos lab unavailable: {problem}")
    lab = CitusLab(timeline=Timeline(log=_log), shard_count=SHARD_COUNT)
    try:
        if lab.is_up():
            _log("reusing the running Citus lab cluster")
            lab.heal()
        else:
            lab.up()
    except LabUnavailable as exc:
        pytest.skip(f"Citus lab unavailable: {exc}")
    yield lab
    if not pytestconfig.getoption("--lab-keep"):
        lab.down()
    lab.close()


# -- partial availability ------------------------------------------------------------------------------------
def _finish_times(url: str, schema: str) -> tuple[dict[str, float], list[tuple[str, float]]]:
    """Each workflow's finish time, and every checkpoint's (workflow, commit time), as UNIX seconds."""
    s = sql.Identifier(schema)
    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        wf = conn.execute(sql.SQL("SELECT workflow_id, extract(epoch FROM finished_at)::float8 FROM {}.workflows"
                                  " WHERE finished_at IS NOT NULL").format(s)).fetchall()
        steps = conn.execute(sql.SQL("SELECT workflow_id, extract(epoch FROM finished_at)::float8 FROM {}.steps")
                             .format(s)).fetchall()
    return dict(wf), list(steps)


def partial_availability(lab: CitusLab, run: Run, fault_t: float, faulted: set[int]) -> dict[str, Any]:
    """Finish and checkpoint rates of the workflows on the faulted and on the healthy worker groups, during the
    fault (from ``fault_t`` to ``run.extra["fault_end_t"]``: the faulted group writable again) and in the window
    of the same length before it (cut at the workers' start); why: a sharded database should keep serving the
    shards whose group is healthy while another group fails over."""
    wl = run.workload
    url = lab.database_url()
    groups = lab.groups_of(f"{sql.Identifier(wl.schema).as_string(None)}.workflows", list(wl.ids))
    finished, checkpoints = _finish_times(url, wl.schema)
    end = float(run.extra.get("fault_end_t") or fault_t)
    during = max(0.1, end - fault_t)
    start = max(float(run.extra.get("workers_started_t") or 0.0), fault_t - during)
    before = max(0.1, fault_t - start)
    out: dict[str, Any] = {"faulted_groups": sorted(faulted), "fault_window_s": round(during, 2),
                           "before_window_s": round(before, 2)}
    for side, members in (("faulted", faulted), ("healthy", set(WORKER_GROUPS) - faulted)):
        ids = {w for w, g in groups.items() if g in members}
        fin = [t for w, t in finished.items() if w in ids]
        cps = [t for w, t in checkpoints if w in ids and t is not None]
        out[side] = {
            "groups": sorted(members), "workflows": len(ids),
            "finished_before": sum(1 for t in fin if start <= t < fault_t),
            "finished_during": sum(1 for t in fin if fault_t <= t < end),
            "checkpoints_before": sum(1 for t in cps if start <= t < fault_t),
            "checkpoints_during": sum(1 for t in cps if fault_t <= t < end),
        }
        o = out[side]
        o["finish_rate_before"] = round(o["finished_before"] / before, 2)
        o["finish_rate_during"] = round(o["finished_during"] / during, 2)
        o["checkpoint_rate_before"] = round(o["checkpoints_before"] / before, 2)
        o["checkpoint_rate_during"] = round(o["checkpoints_during"] / during, 2)
    return out


# -- the faults ----------------------------------------------------------------------------------------------
def _sample_stuck(run: Run, key: str, older_than_s: float = 2.0) -> None:
    """Note which coordinator statements have been waiting longer than ``older_than_s`` (counted by wait
    event and the statement's first words): what holds up the healthy groups' work during a fault."""
    lab: CitusLab = run.lab  # type: ignore[assignment]
    stuck = lab.stuck_backends(older_than_s)
    if stuck is None:
        run.extra[key] = None
        return
    kinds: dict[str, int] = {}
    for b in stuck:
        what = f"{b['wait_event_type'] or '-'}/{b['wait_event'] or '-'}: {' '.join((b['query'] or '').split())[:70]}"
        kinds[what] = kinds.get(what, 0) + 1
    run.extra[key] = {"count": len(stuck), "by_kind": dict(sorted(kinds.items(), key=lambda kv: -kv[1])[:8])}


def kill_group_primary(run: Run, group: int = 1) -> float:
    """SIGKILL worker group ``group``'s primary mid-workflow; Patroni promotes its standby and rewrites
    pg_dist_node; the old primary is started again (it rejoins as the standby)."""
    lab: CitusLab = run.lab  # type: ignore[assignment]
    old = lab.kill_primary(group)
    t = lab.timeline.events[-1][0]
    time.sleep(6.0)
    _sample_stuck(run, "stuck_coordinator_backends")
    new = lab.wait_new_primary(group, old)
    run.extra["failover_s"] = round(time.time() - t, 3)
    lab.wait_registered(group, new)
    run.extra["fault_end_t"] = time.time()
    run.extra["pg_dist_node_s"] = round(run.extra["fault_end_t"] - t, 3)
    run.extra["faulted_groups"] = [group]
    lab.start(old)
    return t


def pause_group_primary(run: Run, group: int = 2) -> float:
    """Freeze worker group ``group``'s primary mid-workflow; Patroni promotes its standby, but pg_dist_node
    follows only once the frozen node thaws (see the module docstring): the freeze is held ``PAUSE_HOLD_S``
    past the promotion, then thawed; the old primary demotes itself and rejoins."""
    lab: CitusLab = run.lab  # type: ignore[assignment]
    old = lab.pause_primary(group)
    t = lab.timeline.events[-1][0]
    new = lab.wait_new_primary(group, old)
    run.extra["failover_s"] = round(time.time() - t, 3)
    time.sleep(PAUSE_HOLD_S)
    _sample_stuck(run, "stuck_coordinator_backends")
    run.extra["frozen_s"] = round(time.time() - t, 3)
    lab.unpause(old)
    lab.wait_registered(group, new)
    run.extra["fault_end_t"] = time.time()
    run.extra["pg_dist_node_s"] = round(run.extra["fault_end_t"] - t, 3)
    run.extra["faulted_groups"] = [group]
    return t


def kill_coordinator_primary(run: Run) -> float:
    """SIGKILL the coordinator group's primary; clients and workers find the promoted standby through the
    multi-host URL; the old primary is started again."""
    lab: CitusLab = run.lab  # type: ignore[assignment]
    old = lab.kill_coordinator_primary()
    t = lab.timeline.events[-1][0]
    new = lab.wait_new_primary(COORDINATOR_GROUP, old)
    run.extra["failover_s"] = round(time.time() - t, 3)
    lab.wait_registered(COORDINATOR_GROUP, new)
    run.extra["pg_dist_node_s"] = round(time.time() - t, 3)
    lab.start(old)
    return t


def cut_group(run: Run, group: int = 1) -> float:
    """Cut worker group ``group`` off from the coordinator (its toxiproxy links refuse) for ``CUT_S``, longer
    than the lease, then restore it; no failover happens (Patroni's traffic does not pass toxiproxy)."""
    lab: CitusLab = run.lab  # type: ignore[assignment]
    primaries = lab.primaries()
    lab.cut_group(group, "disable")
    t = lab.timeline.events[-1][0]
    time.sleep(CUT_S / 2)
    _sample_stuck(run, "stuck_coordinator_backends")
    time.sleep(CUT_S / 2)
    lab.restore_group(group)
    run.extra["fault_end_t"] = time.time()
    run.extra["cut_s"] = round(run.extra["fault_end_t"] - t, 3)
    run.extra["faulted_groups"] = [group]
    run.extra["failover_happened"] = lab.primaries() != primaries
    return t


# -- the scenarios -------------------------------------------------------------------------------------------
SCENARIOS: list[tuple[str, Callable[[Run], float]]] = [
    ("citus-kill-workers", kill_workers),
    ("citus-zombie-worker", zombie_worker),
    ("citus-kill-group1-primary", kill_group_primary),
    ("citus-pause-group2-primary", pause_group_primary),
    ("citus-cut-group1", cut_group),
    ("citus-kill-coordinator-primary", kill_coordinator_primary),
]
# Workflows per scenario: the Citus scenarios share the chaos run's time budget with the PostgreSQL lab.
CITUS_WORKFLOWS = int(os.environ.get("KIT_CITUS_LAB_WORKFLOWS", "200"))


@pytest.mark.parametrize(("name", "fault"), SCENARIOS, ids=[n for n, _ in SCENARIOS])
def test_citus_scenario(name: str, fault: Callable[[Run], float], citus_cluster: CitusLab, lab_reports_dir: Path,
                        tmp_path: Path) -> None:
    """Under the fault every workflow completes and every guarantee holds, synchronously replicated (no
    acknowledged checkpoint lost); worker-group faults report partial availability."""
    analysis: dict[str, Any] = {}

    def after(run: Run, fault_t: float) -> None:
        faulted = set(run.extra.get("faulted_groups") or ())
        try:
            groups = citus_cluster.groups_of(f"{sql.Identifier(run.workload.schema).as_string(None)}.workflows",
                                             list(run.workload.ids))
            run.extra["workflows_by_group"] = {str(g): sum(1 for v in groups.values() if v == g)
                                               for g in WORKER_GROUPS}
            if faulted:
                analysis.update(partial_availability(citus_cluster, run, fault_t, faulted))
                run.extra["partial_availability"] = analysis
        except (LabError, psycopg.Error) as exc:
            run.extra["partial_availability_error"] = f"{type(exc).__name__}: {exc}"

    report = run_scenario(citus_cluster, name, "sync", fault, workflows=CITUS_WORKFLOWS,
                          reports=lab_reports_dir, tmp=tmp_path, worker_env=WORKER_ENV, after=after)
    _assert_ok(report)
    assert "partial_availability_error" not in report.extra, report.extra["partial_availability_error"]
    if report.extra.get("faulted_groups"):
        pa = report.extra["partial_availability"]
        # Both sides hold workflows (8 shards over two groups): the measure compares something.
        assert pa["faulted"]["workflows"] > 0 and pa["healthy"]["workflows"] > 0, pa
    if name == "citus-cut-group1":
        assert not report.extra["failover_happened"], "a cut from the coordinator must not cause a failover"
