"""Golden output of every table at 80 and 140 columns (fixed clock, fixed data): the ids, times and names a
newcomer needs are whole at 80 columns, and the extra width of 140 is used (tests/golden/*.txt).

Regenerate after an intended change with ``KIT_UPDATE_GOLDEN=1`` and review the diff.
"""

from __future__ import annotations

import re

import pytest
from layout_data import (
    CHILDREN,
    EVENTS,
    MESSAGES,
    NOW,
    QUEUES,
    SCHEDULES,
    STEPS,
    STREAMS,
    WORKFLOWS,
    assert_golden,
)

from kit.cli.layout import clock, render_plain, short_id, span
from kit.cli.views import (
    db_view,
    queues_table,
    schedule_rows,
    schedules_table,
    workflow_view,
    workflows_table,
)
from kit.demo import _render as demo_view
from kit.storage import Status, StepRecord, WorkflowRecord

WIDTHS = [80, 140]


@pytest.mark.parametrize("width", WIDTHS)
def test_workflows_list(width: int) -> None:
    text = render_plain(workflows_table(WORKFLOWS, now=NOW, width=width), width)
    assert_golden(f"workflows-list-{width}.txt", text, width)
    for rec in WORKFLOWS:  # every name whole; every id whole or cut by the stated rule
        assert rec.name in text
        assert rec.workflow_id in text or (short_id(rec.workflow_id) in text and "cut to 8 characters" in text)
    if width >= 140:
        assert all(rec.workflow_id in text for rec in WORKFLOWS) and "card declined" in text


def test_workflows_list_wide_shows_everything_whole() -> None:
    text = render_plain(workflows_table(WORKFLOWS, now=NOW, width=80, wide=True), 200)
    for rec in WORKFLOWS:
        assert rec.workflow_id in text
    assert "2026-03-14 15:08:44" in text and "insufficient funds on the card ending 4242" in text


@pytest.mark.parametrize("width", WIDTHS)
def test_workflow_show(width: int) -> None:
    rec = WORKFLOWS[1]
    text = render_plain(workflow_view(rec, STEPS, CHILDREN, MESSAGES, EVENTS, STREAMS, now=NOW, width=width), width)
    assert_golden(f"workflow-show-{width}.txt", text, width)
    assert "reserve_inventory" in text and "charge_card" in text and "order-1040" in text


@pytest.mark.parametrize("width", WIDTHS)
def test_queues(width: int) -> None:
    text = render_plain(queues_table(QUEUES, width=width), width)
    assert_golden(f"queues-{width}.txt", text, width)


@pytest.mark.parametrize("width", WIDTHS)
def test_schedules(width: int) -> None:
    text = render_plain(schedules_table(schedule_rows(SCHEDULES, NOW), now=NOW, width=width), width)
    assert_golden(f"schedules-{width}.txt", text, width)
    assert "America/New_York" in text and "*/15 * * * *" in text


DB_INFO = {
    "backend": "postgres", "url": "postgresql://postgres:***@/postgres?host=/home/ada/shop/.kit/pgdata",
    "schema": "kit", "schema_version": 7,
    "server_version": "PostgreSQL 16.2 on x86_64-pc-linux-gnu, compiled by gcc (GCC) 10.2.1, 64-bit",
    "capabilities": {"listen_notify": True, "notify_in_statement": True, "skip_locked": True,
                     "multi_row_locking_claims": True, "transactional_steps": True, "advisory_locks": True,
                     "retry_serialization_failures": False, "replication_barrier": True,
                     "sql_enqueue_function": True, "follower_reads": False},
    "embedded": {"running": True, "pid": 4242, "data_dir": "/home/ada/shop/.kit",
                 "pgdata": "/home/ada/shop/.kit/pgdata", "log": "/home/ada/shop/.kit/pgdata/log",
                 "socket_dir": "/home/ada/shop/.kit/pgdata", "started_at": "2026-03-14T09:00:00+00:00"},
}


@pytest.mark.parametrize("width", WIDTHS)
def test_db(width: int) -> None:
    text = render_plain(db_view(DB_INFO, width=width), width)
    assert_golden(f"db-{width}.txt", text, width)
    assert "running (pid 4242)" in text and "kit db stop" in text and "/home/ada/shop/.kit/pgdata" in text


def test_db_when_the_embedded_server_is_stopped() -> None:
    info = {"backend": None, "embedded": {**DB_INFO["embedded"], "running": False, "pid": None}}
    text = render_plain(db_view(info, width=80), 80)
    assert text.startswith("embedded server  not running") and "kit db start" in text
    assert "backend" not in text


def demo_state(finished: int) -> tuple:
    """The demo's view after the crash: order-001 done by A, two mid-flight, the rest waiting."""
    oids = [f"order-{i:03d}" for i in range(1, 7)]
    rows = {o: WorkflowRecord(o, "process_order", Status.RUNNING if i < 3 else Status.PENDING)
            for i, o in enumerate(oids)}
    rows["order-001"] = WorkflowRecord("order-001", "process_order", Status.SUCCESS)
    done = {"order-001": finished, "order-002": 2, "order-003": 2}
    steps = {o: [StepRecord(o, j, "x") for j in range(done.get(o, 0))] for o in oids}
    owners = {("order-001", j): 100 for j in range(5)}
    owners.update({("order-002", 0): 100, ("order-002", 1): 100, ("order-002", 2): 200,
                   ("order-003", 0): 100, ("order-003", 1): 200, ("order-003", 2): 100})
    events = ["worker A started (pid 100)", "[red]SIGKILL worker A[/red] (pid 100) after 9 checkpointed steps",
              "  A was mid-step in: order-002/pack_parcel", "worker B started (pid 200); A's leases expire within 3s"]
    return oids, rows, steps, {100: "A", 200: "B"}, events, owners


@pytest.mark.parametrize("width", WIDTHS)
def test_demo_table(width: int) -> None:
    text = render_plain(demo_view(*demo_state(5), width), width)
    assert_golden(f"demo-{width}.txt", text, width)
    flat = re.sub(r"\s+", " ", text)
    for word in ("reserve", "inventory", "charge", "card", "pack", "parcel", "ship", "email", "customer"):
        assert word in flat  # no step name is cut


def test_compact_values() -> None:
    assert [span(s) for s in (0.0004, 0.012, 1.74, 123, 7322, 3 * 86400 + 4 * 3600)] == [
        "0.4ms", "12ms", "1.7s", "2m03s", "2h02m", "3d04h"]
    assert clock(NOW.replace(hour=1), NOW) == "01:09:26"
    assert clock(NOW.replace(month=1, day=2), NOW) == "Jan 02 15:09"
    assert clock(NOW.replace(year=2025), NOW) == "2025-03-14"
    assert short_id("order-1040") == "order-1040" and short_id("5f0c9a8e-3b1d-4c2a") == "5f0c9a8e…"
