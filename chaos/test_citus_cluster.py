"""The Citus HA lab cluster (compose/citus-ha) on its own, checked with SQL through the coordinator.

No kit backend is involved (the Citus backend comes later): the cluster comes up with both worker groups
registered in pg_dist_node at their primaries' toxiproxy endpoints, a distributed table works through the
coordinator, and under each fault (kill or freeze a worker group's primary, kill the coordinator's primary,
cut a worker group off from the coordinator) Patroni's Citus mode fails over and rewrites pg_dist_node while
autocommit INSERT loops through the coordinator keep writing, one loop per worker group. Assertions are on
states and counts; with synchronous replication in every group, no acknowledged row may be missing. Times go
to the JSON report (``<lab reports>/citus-ha-cluster.json``) and the terminal, never into pass/fail.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from kit.backends.postgres.backend import break_connection
from psycopg import sql

from kit.lab.citus import CITUS_GROUPS, COORDINATOR_GROUP, CitusLab, citus_node_address
from kit.lab.controller import Timeline
from kit.lab.host import LabError, LabUnavailable, engine_problem

TABLE = "citus_lab_acks"
WORKER_GROUPS = tuple(g for g in CITUS_GROUPS if g != COORDINATOR_GROUP)
SYNC_CANCEL = "canceling wait for synchronous replication"
HANG_S = 10.0  # a statement unanswered this long gets its socket broken (a frozen node never answers)


def _log(msg: str) -> None:
    print(f"[citus-lab {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- the write loop ------------------------------------------------------------------------------------------
@dataclass
class Attempt:
    seq: int
    start: float
    end: float
    ok: bool
    error: str = ""


@dataclass
class AckLoop:
    """Autocommit INSERTs of (key, seq) through the coordinator URL, all into the one shard that ``key`` hashes
    to (on worker ``group``), one at a time. An INSERT counts as acknowledged when it returned without error and
    without PostgreSQL's "canceling wait for synchronous replication" warning (a commit that is local only)."""

    url: str
    key: int
    group: int
    first_seq: int
    attempts: list[Attempt] = field(default_factory=list)
    acked: set[int] = field(default_factory=set)
    doubtful: set[int] = field(default_factory=set)
    watchdog_breaks: int = 0

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._conn: psycopg.Connection | None = None
        self._in_flight_since: float | None = None
        self._notices: list[str] = []
        self._threads = [threading.Thread(target=self._run, name=f"ackloop-{self.group}", daemon=True),
                         threading.Thread(target=self._watchdog, name=f"ackwatch-{self.group}", daemon=True)]

    def start(self) -> AckLoop:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=HANG_S + 15)
        if self._conn is not None:
            self._conn.close()

    def _watchdog(self) -> None:
        while not self._stop.wait(0.5):
            with self._lock:
                since, conn = self._in_flight_since, self._conn
            if since is not None and conn is not None and time.time() - since > HANG_S:
                break_connection(conn)
                self.watchdog_breaks += 1
                time.sleep(1.0)

    def _on_notice(self, diag: psycopg.errors.Diagnostic) -> None:
        self._notices.append(diag.message_primary or "")

    def _run(self) -> None:
        seq = self.first_seq
        while not self._stop.is_set():
            seq += 1
            self._notices = []
            start = time.time()
            with self._lock:
                self._in_flight_since = start
            try:
                conn = self._conn
                if conn is None or conn.closed:
                    conn = psycopg.connect(self.url, autocommit=True)
                    conn.add_notice_handler(self._on_notice)
                    with self._lock:
                        self._conn = conn
                conn.execute(f"INSERT INTO {TABLE} (k, seq) VALUES (%s, %s)", (self.key, seq))
                ok, error = True, ""
            except psycopg.Error as exc:
                ok, error = False, (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            end = time.time()
            with self._lock:
                self._in_flight_since = None
            self.attempts.append(Attempt(seq, start, end, ok, error))
            if ok and not any(SYNC_CANCEL in n for n in self._notices):
                self.acked.add(seq)
            elif ok:
                self.doubtful.add(seq)
            else:
                with self._lock:
                    conn, self._conn = self._conn, None
                if conn is not None:
                    conn.close()
                self._stop.wait(0.05)

    # -- what happened ----------------------------------------------------------------------------------------
    def acks_after(self, t: float) -> int:
        return sum(1 for a in list(self.attempts) if a.ok and a.start >= t)

    def first_ok_after(self, t: float) -> float | None:
        """Seconds from ``t`` to the end of the first acknowledged INSERT that started at or after ``t``."""
        for a in list(self.attempts):
            if a.ok and a.start >= t:
                return a.end - t
        return None

    def wait_ok_after(self, t: float, timeout: float = 120.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.first_ok_after(t)
            if got is not None:
                return got
            time.sleep(0.1)
        raise AssertionError(f"group {self.group}: no acknowledged write within {timeout:.0f}s after the fault; "
                             f"last errors: {self.errors_since(t)[-3:]}")

    def max_gap(self, t0: float, t1: float) -> float:
        """The longest time without an acknowledged INSERT within [t0, t1]."""
        ends = [t0] + [a.end for a in list(self.attempts) if a.ok and t0 <= a.end <= t1] + [t1]
        return max(b - a for a, b in zip(ends, ends[1:], strict=False))

    def errors_since(self, t: float) -> list[str]:
        """The distinct errors of the attempts that ended at or after ``t``, first seen first."""
        seen: list[str] = []
        for a in list(self.attempts):
            if not a.ok and a.end >= t and a.error not in seen:
                seen.append(a.error)
        return seen

    def failures(self, t: float, limit: int = 8) -> list[list[Any]]:
        """[start, end, error] (seconds relative to ``t``) of the first failed attempts that ended after ``t``."""
        out = [[round(a.start - t, 2), round(a.end - t, 2), a.error] for a in list(self.attempts)
               if not a.ok and a.end >= t]
        return out[:limit]

    def failed_between(self, t0: float, t1: float) -> int:
        return sum(1 for a in list(self.attempts) if not a.ok and t0 <= a.start <= t1)

    def acked_within(self, t0: float, t1: float) -> int:
        """Acknowledged INSERTs that started and ended within [t0, t1]."""
        return sum(1 for a in list(self.attempts) if a.ok and t0 <= a.start and a.end <= t1)


# -- fixtures ------------------------------------------------------------------------------------------------
REPORT: dict[str, Any] = {"lab": "citus-ha", "faults": {}}
LOOPS: list[AckLoop] = []


@pytest.fixture(scope="module")
def citus_lab(pytestconfig: pytest.Config, lab_reports_dir: Path) -> Iterator[CitusLab]:
    """The Citus lab cluster for this module: brought up from nothing (or healed when already running), down
    at the end unless --lab-keep; the JSON report and a summary are written at the end either way."""
    problem = engine_problem()
    if problem:
        pytest.skip(f"chaos lab unavailable: {problem}")
    lab = CitusLab(timeline=Timeline(log=_log))
    try:
        if lab.is_up():
            _log("reusing the running Citus lab cluster")
            REPORT["heal_s"] = round(lab.heal(), 2)
        else:
            REPORT["bring_up_s"] = round(lab.up(), 2)
    except LabUnavailable as exc:
        pytest.skip(f"Citus lab unavailable: {exc}")
    t0 = time.time()
    try:
        yield lab
    finally:
        for loop in LOOPS:
            loop.stop()
        REPORT["timeline"] = [[round(t - t0, 3), e] for t, e in lab.timeline.events if t >= t0]
        out = lab_reports_dir / "citus-ha-cluster.json"
        out.write_text(json.dumps(REPORT, indent=2, default=str) + "\n")
        _summary(pytestconfig, out)
        if not pytestconfig.getoption("--lab-keep"):
            lab.down()
        lab.close()


def _summary(pytestconfig: pytest.Config, path: Path) -> None:
    """Print the measurements on the terminal (past pytest's output capture)."""
    tr = pytestconfig.pluginmanager.get_plugin("terminalreporter")
    capture = pytestconfig.pluginmanager.get_plugin("capturemanager")
    if tr is None:
        return
    if capture is not None:
        with capture.global_and_fixture_disabled():
            _write_summary(tr, path)
    else:
        _write_summary(tr, path)


def _write_summary(tr: Any, path: Path) -> None:
    tr.write_line("")
    tr.write_sep("-", "Citus lab cluster: measured (not asserted)")
    for key in ("bring_up_s", "heal_s"):
        if key in REPORT:
            tr.write_line(f"{key}: {REPORT[key]}")
    for name, f in REPORT["faults"].items():
        keys = ("patroni_new_primary_s", "pg_dist_node_updated_while_frozen", "frozen_s", "pg_dist_node_updated_s",
                "first_write_faulted_group_s", "faulted_group_write_gap_s", "first_write_s", "write_gap_s",
                "group1_write_gap_s", "first_write_after_restore_s", "other_group_max_gap_s",
                "stuck_coordinator_backends_after_restore", "healthy_again_s", "acked", "lost")
        tr.write_line(f"{name}: " + ", ".join(f"{k}={f[k]}" for k in keys if k in f))
    tr.write_line(f"report: {path}")


@pytest.fixture(scope="module")
def keys(citus_lab: CitusLab) -> dict[int, int]:
    """The distributed test table, and for each worker group a key whose shard lives there."""
    with psycopg.connect(citus_lab.coordinator_url(), autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
        conn.execute(f"CREATE TABLE {TABLE} (k int NOT NULL, seq bigint NOT NULL, at timestamptz NOT NULL"
                     " DEFAULT now(), PRIMARY KEY (k, seq))")
        conn.execute("SELECT create_distributed_table(%s, 'k')", (TABLE,))
    groups = citus_lab.groups_of(TABLE, list(range(1, 101)))
    return {g: min(k for k, kg in groups.items() if kg == g) for g in WORKER_GROUPS}


@pytest.fixture
def lab(citus_lab: CitusLab) -> Iterator[CitusLab]:
    """The cluster for one fault test: afterwards, whatever happened, its write loops are stopped and every
    fault is undone (so a failed test leaves no frozen node or cut link to the next one)."""
    yield citus_lab
    for loop in LOOPS:
        loop.stop()
    citus_lab.heal()


_seq_base = iter(range(1_000_000, 1_000_000_000, 1_000_000))


def _start_loops(lab: CitusLab, keys: dict[int, int]) -> dict[int, AckLoop]:
    loops = {g: AckLoop(lab.coordinator_url(), keys[g], g, next(_seq_base)).start() for g in WORKER_GROUPS}
    LOOPS.extend(loops.values())
    deadline = time.monotonic() + 30
    while not all(loop.acked for loop in loops.values()):
        assert time.monotonic() < deadline, {g: loop.errors_since(0)[-3:] for g, loop in loops.items()}
        time.sleep(0.1)
    time.sleep(1.0)
    return loops


def _present(lab: CitusLab, loop: AckLoop) -> set[int]:
    with psycopg.connect(lab.coordinator_url(connect_timeout=5), autocommit=True) as conn:
        rows = conn.execute(f"SELECT seq FROM {TABLE} WHERE k = %s AND seq > %s AND seq <= %s",
                            (loop.key, loop.first_seq, loop.first_seq + 999_999)).fetchall()
    return {r[0] for r in rows}


def _stop_and_check(lab: CitusLab, loops: dict[int, AckLoop], fact: dict[str, Any]) -> None:
    """Stop the loops and compare what they were told with what the cluster has: no acknowledged row missing."""
    for loop in loops.values():
        loop.stop()
    lost_total = 0
    for g, loop in loops.items():
        present = _present(lab, loop)
        lost = sorted(loop.acked - present)
        lost_total += len(lost)
        fact[f"group{g}"] = {"attempts": len(loop.attempts), "acked": len(loop.acked), "present": len(present),
                             "committed_unacknowledged": len(present - loop.acked - loop.doubtful),
                             "doubtful_sync_cancel": len(loop.doubtful), "lost": len(lost), "lost_seqs": lost[:20],
                             "watchdog_breaks": loop.watchdog_breaks}
        assert not (present - {a.seq for a in loop.attempts}), "rows the loop never tried to write"
    fact["acked"] = sum(len(loop.acked) for loop in loops.values())
    fact["lost"] = lost_total
    assert lost_total == 0, f"acknowledged rows missing after the failover (synchronous replication): {fact}"


def _dist_node(lab: CitusLab) -> list[dict[str, Any]]:
    rows = lab.pg_dist_node()
    assert rows is not None, "the coordinator primary can't be reached"
    return rows


def _routes_to(rows: list[dict[str, Any]], group: int) -> tuple[str, int, str | None]:
    r = next(r for r in rows if r["groupid"] == group and r["noderole"] == "primary")
    return r["nodename"], r["nodeport"], r["member"]


# -- the tests -----------------------------------------------------------------------------------------------
def test_cluster_up_with_both_worker_groups_registered(citus_lab: CitusLab) -> None:
    """Every group has a leader and a streaming synchronous standby, and pg_dist_node routes each group to its
    primary's toxiproxy endpoint (what Patroni registered)."""
    status = citus_lab.status()
    for g, ms in CITUS_GROUPS.items():
        grp = status["groups"][str(g)]
        roles = sorted(m["role"] for m in grp["members"])
        assert roles == ["leader", "sync_standby"], (g, grp)
        assert {m["name"] for m in grp["members"]} == set(ms)
        assert grp["synchronous_mode"] is True
    rows = _dist_node(citus_lab)
    assert sorted(r["groupid"] for r in rows) == sorted(CITUS_GROUPS), rows
    for g in CITUS_GROUPS:
        primary = status["groups"][str(g)]["primary"]
        host, port, member = _routes_to(rows, g)
        assert (host, port) == citus_node_address(primary), (g, rows)
        assert member == primary
    assert all(r["isactive"] and r["hasmetadata"] and r["metadatasynced"] for r in rows), rows
    REPORT["pg_dist_node_at_start"] = rows


def test_distributed_table_through_the_coordinator(citus_lab: CitusLab, keys: dict[int, int]) -> None:
    """Shards spread over both worker groups; single-shard writes land on the key's group; a transaction over
    both groups commits atomically (two-phase commit) or not at all."""
    url = citus_lab.coordinator_url()
    with psycopg.connect(url, autocommit=True) as conn:
        shards = dict(conn.execute(
            "SELECT p.groupid, count(*) FROM pg_dist_shard s JOIN pg_dist_placement p USING (shardid)"
            " WHERE s.logicalrelid = %s::regclass GROUP BY 1", (TABLE,)).fetchall())
        assert set(shards) == set(WORKER_GROUPS) and all(n > 0 for n in shards.values()), shards
        for g, k in keys.items():
            conn.execute(f"INSERT INTO {TABLE} (k, seq) VALUES (%s, 1)", (k,))
            assert citus_lab.groups_of(TABLE, [k]) == {k: g}
        with conn.transaction():
            for k in keys.values():
                conn.execute(f"INSERT INTO {TABLE} (k, seq) VALUES (%s, 2)", (k,))
        with pytest.raises(psycopg.errors.UniqueViolation):
            with conn.transaction():
                conn.execute(f"INSERT INTO {TABLE} (k, seq) VALUES (%s, 3)", (keys[1],))
                conn.execute(f"INSERT INTO {TABLE} (k, seq) VALUES (%s, 2)", (keys[2],))  # exists: all rolls back
        got = conn.execute(f"SELECT k, seq FROM {TABLE} WHERE seq <= 3 ORDER BY k, seq").fetchall()
        assert got == sorted((k, s) for k in keys.values() for s in (1, 2))
        plan = "\n".join(r[0] for r in conn.execute(
            sql.SQL("EXPLAIN SELECT * FROM {} WHERE k = {}").format(sql.Identifier(TABLE), sql.Literal(keys[1])))
            .fetchall())
        assert "Task Count: 1" in plan, plan


FREEZE_HOLD_S = 20.0  # how long a frozen primary stays frozen after Patroni promoted its standby


def _worker_failover(lab: CitusLab, keys: dict[int, int], group: int, how: str) -> None:
    loops = _start_loops(lab, keys)
    other = next(g for g in WORKER_GROUPS if g != group)
    fact: dict[str, Any] = {"group": group, "pg_dist_node_before": _routes_to(_dist_node(lab), group)}
    t0 = time.time()
    old = lab.kill_primary(group) if how == "kill" else lab.pause_primary(group)
    t = lab.timeline.events[-1][0]  # the fault is in effect (the container is dead or frozen)
    new = lab.wait_new_primary(group, old)
    fact["patroni_new_primary_s"] = round(time.time() - t, 2)
    if how == "pause":
        # Keep the old primary frozen a while: does pg_dist_node follow the promotion while it is frozen?
        try:
            lab.wait_registered(group, new, timeout=FREEZE_HOLD_S)
            fact["pg_dist_node_updated_while_frozen"] = True
            fact["pg_dist_node_updated_s"] = round(time.time() - t, 2)
            time.sleep(2.0)  # then thaw: it must find it lost its leader key, demote and rejoin
        except LabError:
            fact["pg_dist_node_updated_while_frozen"] = False
            fact["stuck_coordinator_backends_while_frozen"] = [
                {k: b[k] for k in ("pid", "wait_event_type", "wait_event", "seconds", "query")}
                for b in lab.stuck_backends(5.0) or []]
        fact["first_write_while_frozen_s"] = (None if loops[group].first_ok_after(t) is None
                                              else round(loops[group].first_ok_after(t), 2))
        t_thaw = time.time()
        fact["frozen_s"] = round(t_thaw - t, 2)
        lab.unpause(old)
        if not fact["pg_dist_node_updated_while_frozen"]:
            lab.wait_registered(group, new)
            fact["pg_dist_node_updated_s"] = round(time.time() - t, 2)
            fact["pg_dist_node_updated_after_thaw_s"] = round(time.time() - t_thaw, 2)
    else:
        lab.wait_registered(group, new)
        fact["pg_dist_node_updated_s"] = round(time.time() - t, 2)
        lab.start(old)
    fact["first_write_faulted_group_s"] = round(loops[group].wait_ok_after(t), 2)
    t_ok = time.time()
    fact["faulted_group_write_gap_s"] = round(loops[group].max_gap(t0, t_ok), 2)
    fact["other_group_max_gap_s"] = round(loops[other].max_gap(t0, t_ok), 2)
    host, port, member = _routes_to(_dist_node(lab), group)
    assert (member, (host, port)) == (new, citus_node_address(new)) and new != old
    fact["pg_dist_node_after"] = (host, port, member)
    lab.wait_healthy(timeout=180)
    fact["healthy_again_s"] = round(time.time() - t, 2)
    assert lab.primary(group) == new, "the old primary took the group back"
    assert loops[other].acks_after(t) > 0 and loops[group].acks_after(t_ok) > 0
    fact["errors_seen"] = loops[group].errors_since(t0)[:6]
    fact["failed_attempts"] = loops[group].failures(t0)
    _stop_and_check(lab, loops, fact)
    REPORT["faults"][f"{how}-group{group}-primary"] = fact


def test_kill_worker_primary_fails_over_and_rewrites_pg_dist_node(lab: CitusLab, keys: dict[int, int]) -> None:
    """SIGKILL group 1's primary: Patroni promotes its standby and points pg_dist_node at it; group 2 keeps
    taking writes; no acknowledged row is lost."""
    _worker_failover(lab, keys, 1, "kill")


def test_pause_worker_primary_fails_over_and_rewrites_pg_dist_node(lab: CitusLab, keys: dict[int, int]) -> None:
    """Freeze group 2's primary: Patroni promotes its standby; pg_dist_node points at it (if a coordinator
    backend was mid-statement on the frozen node, only once it thaws: Citus cancels that statement with a
    blocking PQcancel, see docs/lab.md); the thawed old primary rejoins as a standby; nothing acked is lost."""
    _worker_failover(lab, keys, 2, "pause")


def test_kill_coordinator_primary(lab: CitusLab, keys: dict[int, int]) -> None:
    """SIGKILL the coordinator's primary: its standby is promoted, pg_dist_node's coordinator row follows, and
    the loops' multi-host URL finds the new primary; no acknowledged row is lost."""
    loops = _start_loops(lab, keys)
    fact: dict[str, Any] = {"pg_dist_node_before": _routes_to(_dist_node(lab), COORDINATOR_GROUP)}
    t0 = time.time()
    old = lab.kill_coordinator_primary()
    t = lab.timeline.events[-1][0]
    new = lab.wait_new_primary(COORDINATOR_GROUP, old)
    fact["patroni_new_primary_s"] = round(time.time() - t, 2)
    for g in WORKER_GROUPS:
        fact[f"first_write_group{g}_s"] = round(loops[g].wait_ok_after(t), 2)
    fact["first_write_s"] = min(fact[f"first_write_group{g}_s"] for g in WORKER_GROUPS)
    t_ok = time.time()
    fact["write_gap_s"] = round(min(loops[g].max_gap(t0, t_ok) for g in WORKER_GROUPS), 2)
    lab.wait_registered(COORDINATOR_GROUP, new)
    fact["pg_dist_node_updated_s"] = round(time.time() - t, 2)
    host, port, member = _routes_to(_dist_node(lab), COORDINATOR_GROUP)
    assert (member, (host, port)) == (new, citus_node_address(new)) and new != old
    fact["pg_dist_node_after"] = (host, port, member)
    lab.start(old)
    lab.wait_healthy(timeout=180)
    fact["healthy_again_s"] = round(time.time() - t, 2)
    assert lab.primary(COORDINATOR_GROUP) == new
    fact["errors_seen"] = loops[1].errors_since(t0)[:6]
    fact["failed_attempts"] = {g: loops[g].failures(t0) for g in WORKER_GROUPS}
    _stop_and_check(lab, loops, fact)
    REPORT["faults"]["kill-coordinator-primary"] = fact


@pytest.mark.parametrize("mode", ["disable", "timeout"])
def test_cut_worker_group_off_from_the_coordinator(lab: CitusLab, keys: dict[int, int], mode: str) -> None:
    """Cut group 1's toxiproxy links (refused, or hanging): its writes fail while group 2's continue, Patroni
    does not fail over, and group 1 takes writes again once restored; no acknowledged row is lost."""
    loops = _start_loops(lab, keys)
    primaries = lab.primaries()
    fact: dict[str, Any] = {"mode": mode, "cut_s": 10.0}
    t = time.time()
    lab.cut_group(1, mode)
    time.sleep(3.0)  # writes already in flight finish or fail
    t_cut = time.time()
    time.sleep(7.0)
    t_restore = time.time()
    assert loops[1].acked_within(t_cut, t_restore) == 0, "a write reached the cut-off group"
    fact["group1_failed_attempts_during_cut"] = loops[1].failed_between(t, t_restore)
    fact["other_group_max_gap_s"] = round(loops[2].max_gap(t, t_restore), 2)
    fact["other_group_acks_during_cut"] = sum(1 for a in loops[2].attempts if a.ok and t <= a.start <= t_restore)
    assert fact["other_group_acks_during_cut"] > 0
    lab.restore_group(1)
    fact["first_write_after_restore_s"] = round(loops[1].wait_ok_after(t_restore), 2)
    fact["group1_write_gap_s"] = round(loops[1].max_gap(t, time.time()), 2)
    fact["stuck_coordinator_backends_after_restore"] = len(lab.stuck_backends(5.0) or [])
    lab.wait_healthy(timeout=180)
    fact["healthy_again_s"] = round(time.time() - t_restore, 2)
    assert lab.primaries() == primaries, "a cut from the coordinator must not cause a failover"
    fact["errors_seen"] = loops[1].errors_since(t)[:6]
    fact["failed_attempts"] = loops[1].failures(t)
    _stop_and_check(lab, loops, fact)
    REPORT["faults"][f"cut-group1-{mode}"] = fact


def test_no_acknowledged_row_lost_across_all_faults(citus_lab: CitusLab, keys: dict[int, int]) -> None:
    """After every fault above, every row any loop was told was committed is still there."""
    if not LOOPS:
        pytest.skip("no fault test ran in this session (run the module, not this test alone)")
    for loop in LOOPS:
        loop.stop()
    missing = {f"group{loop.group}@{loop.first_seq}": len(loop.acked - _present(citus_lab, loop)) for loop in LOOPS}
    REPORT["acked_total"] = sum(len(loop.acked) for loop in LOOPS)
    REPORT["lost_total"] = sum(missing.values())
    assert REPORT["lost_total"] == 0, missing
    assert REPORT["acked_total"] > 0
