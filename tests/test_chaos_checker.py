"""The chaos lab's invariant checker: hand-made histories that must fail, a clean one that must pass, and one
real run of the lab workload (worker processes, a SIGKILL, real PostgreSQL) that the checker must accept."""

from __future__ import annotations

import dataclasses
import signal
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from chaos.checker import (  # noqa: E402
    AppRow,
    EventRow,
    History,
    LedgerEntry,
    MessageRow,
    StepRow,
    WorkflowRow,
    check,
    evaluate,
)
from chaos.report import ScenarioReport, load_reports, render_summary  # noqa: E402

W1, W2, W3, W4 = "lab-00001", "lab-00002", "lab-00003", "lab-00004"
OWNER = "host:100:aaaa"


def run(wid: str, step: int, name: str, t: float, epoch: int = 1, worker: str = OWNER, kind: str = "run",
        msg: str | None = None, attempt: int = 1) -> LedgerEntry:
    return LedgerEntry(kind=kind, workflow_id=wid, step_id=step, name=name, epoch=epoch, t=t, attempt=attempt,
                       worker=worker, msg=msg)


def ack(wid: str, step: int, t: float, epoch: int = 1, fresh: bool = True) -> LedgerEntry:
    return LedgerEntry(kind="ack", workflow_id=wid, step_id=step, name=None, epoch=epoch, t=t, worker=OWNER,
                       fresh=fresh)


def clean_history() -> History:
    """Four workflows, each at epoch 1: a limited one reading W4's event, a receiver and its sender, and W4
    publishing an event twice; every step acknowledged."""
    steps = [
        StepRow(W1, 0, "lab.prepare", 1, 101.0, 11),
        StepRow(W1, 1, "lab.limited_work", 1, 102.0, 13),
        StepRow(W1, 2, "lab.record", 1, 103.0, 1000),
        StepRow(W2, 0, "recv.deadline", 1, 101.0, 500.0),
        StepRow(W2, 1, "recv:pair", 1, 105.0, {"msg": f"{W3}->{W2}", "n": 3}),
        StepRow(W2, 2, "lab.got", 1, 106.0, f"{W3}->{W2}"),
        StepRow(W2, 3, "lab.record", 1, 107.0, 2000),
        StepRow(W3, 0, f"send:{W2}", 1, 104.0, None),
        StepRow(W3, 1, "lab.record", 1, 104.5, 3000),
        StepRow(W1, 3, f"get_event:{W4}:progress", 1, 103.5, {"stage": 1}),
        StepRow(W4, 0, "set_event:progress", 1, 101.0, {"stage": 1}),
        StepRow(W4, 1, "set_event:progress", 1, 104.0, {"stage": 2}),
        StepRow(W4, 2, "lab.record", 1, 105.0, 4000),
    ]
    ledger = [
        run(W1, 0, "lab.prepare", 100.5),
        run(W1, 1, "lab.limited_work", 101.1), run(W1, 1, "lab.limited_work", 101.1, kind="begin"),
        run(W1, 1, "lab.limited_work", 101.9, kind="end"),
        run(W1, 2, "lab.record", 102.5),
        run(W2, 2, "lab.got", 105.5, msg=f"{W3}->{W2}"),
        run(W2, 3, "lab.record", 106.5),
        run(W3, 1, "lab.record", 104.2),
        run(W4, 2, "lab.record", 104.8),
    ]
    acks = [ack(s.workflow_id, s.step_id, s.finished_at + 0.01) for s in steps]
    return History(
        expected_ids=[W1, W2, W3, W4],
        workflows=[WorkflowRow(w, "SUCCESS", 1) for w in (W1, W2, W3, W4)],
        steps=steps,
        app_rows=[AppRow(W1, 2, 1), AppRow(W2, 3, 1), AppRow(W3, 1, 1), AppRow(W4, 2, 1)],
        messages=[MessageRow(W2, f"{W3}->{W2}", 1)],
        events=[EventRow(W4, "progress", {"stage": 2}, 1)],
        ledger=ledger,
        acks=acks,
    )


def verdict(h: History, *, sync: bool = True, limit: int | None = 1):
    return evaluate(h, sync_replication=sync, queue_limit=limit)


def failed(h: History, **kw) -> set[str]:
    return set(verdict(h, **kw).failures())


# -- hand-made histories ---------------------------------------------------------------------------------------
def test_clean_history_passes_every_guarantee() -> None:
    r = verdict(clean_history())
    assert r.ok, r.summary()
    assert {k: g.status for k, g in r.guarantees.items()} == {f"G{i}": "pass" for i in range(1, 10)}
    assert (r.duplicates, r.lost_acks, r.workflows) == (0, 0, 4)
    assert r.to_dict()["guarantees"]["G7"]["status"] == "pass"


def test_lost_workflow_fails_g5() -> None:
    h = clean_history()
    h.workflows = [w for w in h.workflows if w.workflow_id != W1]
    assert failed(h) == {"G5"}
    h = clean_history()
    h.workflows[0] = dataclasses.replace(h.workflows[0], status="RUNNING")
    assert failed(h) == {"G5"}


def test_workflow_completed_twice_fails_g1() -> None:
    h = clean_history()
    h.workflows.append(WorkflowRow(W1, "SUCCESS", 2))
    assert "G1" in failed(h)
    h = clean_history()
    h.expected_outputs = {W1: {"n": 1}}
    h.workflows[0] = dataclasses.replace(h.workflows[0], output={"n": 1, "second run": True})
    assert failed(h) == {"G1"}


def test_crash_window_rerun_is_counted_not_failed() -> None:
    h = clean_history()
    # The epoch-1 owner of W1 ran step 0 and died before its checkpoint; epoch 2 (another worker, from
    # 109.0 on) ran every step of W1 and checkpointed them.
    new_owner = "host:200:bbbb"
    h.steps = [dataclasses.replace(s, epoch=2, finished_at=s.finished_at + 10) if s.workflow_id == W1 else s
               for s in h.steps]
    h.app_rows[0] = AppRow(W1, 2, 2)
    h.workflows[0] = WorkflowRow(W1, "SUCCESS", 2, recoveries=1)
    old_run = [e for e in h.ledger if e.workflow_id == W1 and e.step_id == 0]
    h.ledger = [dataclasses.replace(e, epoch=2, t=e.t + 10, worker=new_owner) if e.workflow_id == W1 else e
                for e in h.ledger] + old_run
    h.acks = [dataclasses.replace(a, epoch=2, t=a.t + 10, worker=new_owner) if a.workflow_id == W1 else a
              for a in h.acks]
    r = verdict(h)
    assert r.ok, r.summary()
    assert r.duplicates == 1 and r.stats["takeovers"] == 1 and r.takeovers == 1
    assert r.stats["duplicate_kinds"] == {"older_epoch": 1}


def test_duplicate_execution_outside_the_crash_window_fails() -> None:
    h = clean_history()  # the same owner ran a checkpointed ordinary step twice in one epoch and attempt
    h.ledger.append(run(W1, 0, "lab.prepare", 100.7))
    assert "G2" in failed(h)
    h = clean_history()  # a newer epoch ran a step whose checkpoint had committed
    h.ledger.append(run(W1, 0, "lab.prepare", 120.0, epoch=2, worker="host:200:bbbb"))
    assert "G2" in failed(h)
    h = clean_history()  # two owners under one epoch: a lost claim, a fencing failure unless asynchronous
    h.ledger.append(run(W1, 0, "lab.prepare", 100.6, worker="host:300:cccc"))
    assert failed(h, sync=True) == {"G6"}
    r = verdict(h, sync=False)
    assert r.ok and r.duplicates == 1 and r.stats["reused_epochs"] == 1, r.summary()


def test_exceeded_concurrency_limit_fails_g7() -> None:
    h = clean_history()
    other = "lab-00009"  # a limited workflow whose run overlaps W1's
    h.ledger += [run(other, 1, "lab.limited_work", 101.5, kind="begin"),
                 run(other, 1, "lab.limited_work", 101.8, kind="end")]
    r = verdict(h, limit=1)
    assert set(r.failures()) == {"G7"}
    assert r.stats["max_overlap"] == 2
    assert verdict(h, limit=2).ok
    # The same two overlapping executions by one worker process break a per-worker limit of 1.
    assert set(evaluate(h, sync_replication=True, queue_limit=2, worker_queue_limit=1).failures()) == {"G7"}
    h.ledger[-2:] = [dataclasses.replace(e, worker="host:200:bbbb") for e in h.ledger[-2:]]
    assert evaluate(h, sync_replication=True, queue_limit=2, worker_queue_limit=1).ok


def test_zombie_execution_past_takeover_does_not_hold_a_slot() -> None:
    h = clean_history()
    # W2's epoch-1 owner froze inside the limited step; epoch 2 started at 101.5, before the zombie's end mark.
    h.ledger += [run(W2, 9, "lab.limited_work", 100.0, kind="begin"), run(W2, 9, "lab.limited_work", 103.0, kind="end")]
    h.acks.append(ack(W2, 0, 100.9, epoch=2, fresh=False))
    r = verdict(h, limit=1)
    assert r.stats["max_overlap"] == 1, r.summary()
    assert "G7" not in r.failures()


def test_message_received_twice_fails_g8() -> None:
    h = clean_history()
    h.steps.append(StepRow(W1, 7, "recv:pair", 1, 108.0, {"msg": f"{W3}->{W2}", "n": 3}))
    assert "G8" in failed(h)
    h = clean_history()
    h.ledger.append(run(W2, 5, "lab.got", 107.0, msg=f"{W3}->{W2}"))
    assert "G8" in failed(h)
    h = clean_history()
    h.messages.append(MessageRow(W2, f"{W3}->{W2}", None))  # the sender delivered it twice
    assert failed(h) == {"G8"}


def test_event_not_holding_the_latest_committed_value_fails_g8() -> None:
    h = clean_history()
    h.events = [EventRow(W4, "progress", {"stage": 1}, 0)]  # an older value won
    assert failed(h) == {"G8"}
    h = clean_history()
    h.events = []  # a committed set_event without its row
    assert failed(h) == {"G8"}
    h = clean_history()
    h.steps[9] = dataclasses.replace(h.steps[9], output={"stage": 3})  # read a value nobody committed
    assert failed(h) == {"G8"}


def test_stale_epoch_write_after_takeover_fails_g6() -> None:
    h = clean_history()
    # Epoch 2 took W3 over at 104.1 (its first ledger entry), yet a checkpoint of epoch 1 committed at 104.5.
    h.ledger.append(run(W3, 0, "lab.other", 104.1, epoch=2, worker="host:200:bbbb"))
    assert "G6" in failed(h)
    h = clean_history()  # a stale owner acknowledged a checkpoint after the takeover
    h.steps[0] = dataclasses.replace(h.steps[0], epoch=2, finished_at=101.5)
    h.ledger.append(run(W1, 0, "lab.prepare", 101.2, epoch=2, worker="host:200:bbbb"))
    h.acks.append(ack(W1, 0, 101.8, epoch=1))
    assert "G6" in failed(h)


def test_transactional_row_without_checkpoint_fails_g4() -> None:
    h = clean_history()
    h.app_rows.append(AppRow(W1, 5, 1))
    assert failed(h) == {"G4"}
    h = clean_history()
    h.app_rows = h.app_rows[1:]  # a checkpoint without its row
    assert failed(h) == {"G4"}
    h = clean_history()
    h.app_rows.append(AppRow(W1, 2, 1))  # two rows for one checkpoint
    assert failed(h) == {"G4"}


def test_lost_acknowledged_checkpoint_fails_only_under_sync_replication() -> None:
    h = clean_history()
    h.acks.append(ack(W1, 7, 104.0))  # acknowledged, never in the database
    sync = verdict(h, sync=True)
    assert set(sync.failures()) == {"G9"} and sync.lost_acks == 1
    async_ = verdict(h, sync=False)
    assert async_.ok, async_.summary()
    assert async_.guarantees["G9"].status == "n-a" and async_.lost_acks == 1
    assert "lost" in async_.guarantees["G9"].detail


def test_lost_checkpoint_that_was_executed_and_acknowledged_is_a_lost_ack_not_a_g3_failure() -> None:
    h = clean_history()
    # Asynchronous failover: W1's step 0 ran and was acknowledged at epoch 1, the promoted replica never got
    # it, and the owner carried on (its lease survived): the workflow finished with a hole at step 0.
    h.steps = [s for s in h.steps if (s.workflow_id, s.step_id) != (W1, 0)]
    async_ = verdict(h, sync=False)
    assert async_.ok, async_.summary()
    assert async_.lost_acks == 1 and async_.duplicates == 1
    assert set(verdict(h, sync=True).failures()) == {"G9"}


def test_lost_checkpoint_acknowledged_only_by_a_later_epochs_replay_is_a_lost_ack() -> None:
    h = clean_history()
    # W1's step 0 ran and committed at epoch 1, whose worker was killed before acknowledging it; epoch 2
    # replayed (acknowledged) the checkpoint, which a failover then lost.
    h.steps = [s for s in h.steps if (s.workflow_id, s.step_id) != (W1, 0)]
    h.acks = [a for a in h.acks if (a.workflow_id, a.step_id) != (W1, 0)] + [ack(W1, 0, 110.0, 2, fresh=False)]
    h.workflows[0] = dataclasses.replace(h.workflows[0], epoch=2)
    sync = verdict(h, sync=True)
    assert set(sync.failures()) == {"G9"} and sync.lost_acks == 1, sync.summary()
    assert verdict(h, sync=False).ok


def test_step_run_under_a_claim_a_deposed_primary_lost_is_a_lost_write_only_when_asynchronous() -> None:
    h = clean_history()
    # A thawed old primary acknowledged a claim of W1 at epoch 2 and lost it (it lacked step 0's checkpoint,
    # so that worker ran step 0 again); the new primary's epoch 2 went to another worker, which replayed.
    other = "host:200:bbbb"
    h.ledger.append(run(W1, 0, "lab.prepare", 110.0, epoch=2, worker=other))
    h.acks.append(ack(W1, 0, 111.0, epoch=2, fresh=False))
    h.workflows[0] = dataclasses.replace(h.workflows[0], epoch=2)
    async_ = verdict(h, sync=False)
    assert async_.ok, async_.summary()
    assert async_.stats["duplicate_kinds"] == {"lost_claim": 1}
    assert {"G2", "G6"} <= set(verdict(h, sync=True).failures())


def test_report_round_trip_and_summary(tmp_path: Path) -> None:
    r = ScenarioReport("kill-primary", "sync")
    r.event(0.0, "start on postgresql://lab:secret@10.0.0.1:5432/lab")
    r.event(3.2, "fault")
    r.apply_check(verdict(clean_history()))
    path = r.to_json(tmp_path)
    assert "secret" not in path.read_text()
    loaded = load_reports(tmp_path)
    assert [(x.name, x.variant, x.ok, x.workflows) for x in loaded] == [("kill-primary", "sync", True, 4)]
    assert loaded[0].timeline[1] == (3.2, "fault")
    table = render_summary(loaded)
    assert table.row_count == 1
    legend = str(table.caption)  # every column is explained under the table
    for column in ("wf:", "fault→ckpt s:", "drain s:", "dup:", "lost ack:", "G1–G9:", "result:"):
        assert column in legend


# -- one real run ---------------------------------------------------------------------------------------------------
def _owner_pids(url: str, schema: str) -> dict[int, int]:
    import psycopg
    from psycopg import sql

    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(sql.SQL("SELECT owner FROM {}.workflows WHERE status = 'RUNNING' AND owner IS NOT NULL")
                            .format(sql.Identifier(schema))).fetchall()
    out: dict[int, int] = {}
    for (owner,) in rows:
        pid = int(owner.rsplit(":", 2)[1])
        out[pid] = out.get(pid, 0) + 1
    return out


@pytest.mark.slow
def test_workload_with_a_sigkilled_and_a_frozen_worker_passes_the_checker(pg_url: str, schema: str, tmp_path: Path) -> None:
    from chaos.workload import Workload

    env = {"KIT_LEASE_SECONDS": "1.5", "KIT_HEARTBEAT_SECONDS": "0.4", "KIT_POLL_SECONDS": "0.2",
           "LAB_SLEEP_SECONDS": "0.1", "LAB_WORK_SECONDS": "0.1"}
    wl = Workload(pg_url, schema, tmp_path / "ledger", workflows=60, workers=2, worker_env=env, concurrency=6)
    try:
        wl.prepare()
        ids = wl.submit()
        assert wl.submit() == ids  # idempotent
        assert wl.progress()["PENDING"] == 60
        wl.start_workers()
        victim = wl.worker_pids()[0]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and _owner_pids(pg_url, schema).get(victim, 0) == 0:
            time.sleep(0.05)
        assert _owner_pids(pg_url, schema).get(victim, 0) > 0, wl.worker_logs()
        killed_at = time.time()
        wl.kill_worker(0, signal.SIGKILL)
        wl.restart_worker(0)
        # A zombie: freeze the other worker while it holds work, past its lease, then let it go on.
        zombie = wl.worker_pids()[1]
        while time.monotonic() < deadline and _owner_pids(pg_url, schema).get(zombie, 0) == 0:
            time.sleep(0.05)
        wl.pause_worker(1)
        time.sleep(3.0)  # two leases: the restarted worker takes its workflows over
        wl.resume_worker(1)
        wl.wait_drained(120)
        assert wl.first_checkpoint_after(killed_at) is not None
        assert wl.progress()["SUCCESS"] == 60
    finally:
        wl.stop()
    result = check(pg_url, schema, tmp_path / "ledger", ids, sync_replication=True)
    print(f"\n{result.summary()}\nduplicates={result.duplicates} stats={result.stats}")
    assert result.ok, result.summary() + "\n" + wl.worker_logs()
    assert {k: g.status for k, g in result.guarantees.items()} == {f"G{i}": "pass" for i in range(1, 10)}, \
        result.summary()
    assert result.lost_acks == 0
    assert result.stats["recoveries"] > 0, "the SIGKILL never landed on a workflow in flight"

    # The same run with one acknowledged checkpoint removed from the database: a lost acknowledgement.
    import psycopg
    from psycopg import sql

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DELETE FROM {}.steps WHERE workflow_id = %s AND step_id = 0")
                     .format(sql.Identifier(schema)), [ids[0]])
    tampered = check(pg_url, schema, tmp_path / "ledger", ids, sync_replication=True)
    assert set(tampered.failures()) == {"G9"} and tampered.lost_acks == 1, tampered.summary()
