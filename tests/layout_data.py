"""Fixed records and a fixed clock for the golden layout tests (tests/test_layouts.py)."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

from kit.storage import (
    EventInfo,
    MessageInfo,
    QueueStats,
    ScheduleSpec,
    ScheduleState,
    Status,
    StepRecord,
    StreamInfo,
    WorkflowRecord,
)

NOW = datetime(2026, 3, 14, 15, 9, 26, tzinfo=timezone.utc)


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


def err(type_name: str, message: str) -> str:
    return json.dumps({"type": type_name, "message": message, "traceback": ""})


WORKFLOWS = [
    WorkflowRecord("5f0c9a8e-3b1d-4c2a-9e7f-1a2b3c4d5e6f", "shop.checkout", Status.SUCCESS,
                   inputs='{"args": ["order-1041", 1999], "kwargs": {}}', output='"ch_3PqR8s"',
                   created_at=ago(42), started_at=ago(41.9), finished_at=ago(40.62), epoch=1),
    WorkflowRecord("order-1040", "shop.checkout", Status.ERROR, inputs='{"args": ["order-1040", 4999], "kwargs": {"express": true}}', created_at=ago(95), started_at=ago(94.5),
                   finished_at=ago(93.1), epoch=2, recoveries=1,
                   error=err("ValueError", "card declined: insufficient funds on the card ending 4242")),
    WorkflowRecord("9d4e2f71-8a6b-4c3d-b5e9-0f1a2b3c4d5e", "reports.nightly_export", Status.RUNNING,
                   created_at=ago(3 * 3600 + 120), started_at=ago(3 * 3600 + 100), epoch=3, recoveries=2),
    WorkflowRecord("c2b7e1d0-6f5a-4e3b-8c9d-2e3f4a5b6c7d", "mail.welcome", Status.PENDING, queue="mail",
                   created_at=ago(86400 * 3)),
    WorkflowRecord("retry-7", "shop.refund", Status.CANCELLED, created_at=ago(86400 * 400),
                   started_at=ago(86400 * 400 - 1), finished_at=ago(86400 * 400 - 130)),
]

STEPS = [
    StepRecord("order-1040", 0, "reserve_inventory", output='{"sku": "sku-1", "held": 2}', epoch=1,
               started_at=ago(94.4), finished_at=ago(94.38)),
    StepRecord("order-1040", 1, "charge_card", error=err("ValueError", "card declined: insufficient funds on "
                                                         "the card ending 4242"), epoch=2, attempts=3,
               started_at=ago(94.0), finished_at=ago(93.2)),
]
CHILDREN = [
    WorkflowRecord("7a6b5c4d-3e2f-4a1b-9c8d-7e6f5a4b3c2d", "shop.notify", Status.SUCCESS, created_at=ago(94.2),
                   started_at=ago(94.1), finished_at=ago(94.0), parent_id="order-1040"),
]
MESSAGES = [
    MessageInfo(1, "approval", '{"ok": true, "by": "ops@example.com"}', created_at=ago(94.3), consumed_at=ago(94.2),
                consumed_step=1),
    MessageInfo(2, "approval", '"too late"', created_at=ago(20)),
]
EVENTS = [EventInfo("state", '"charging"', 1, updated_at=ago(94.1))]
STREAMS = [StreamInfo("progress", 3, True, last_write_at=ago(93.5))]

QUEUES = [
    QueueStats("default", 12, 3),
    QueueStats("mail", 0, 1, concurrency_limit=4, worker_concurrency_limit=2, rate_limit_per_second=10.0),
    QueueStats("tenants", 250, 16, partition_concurrency_limit=2, partitioned=True),
]

SCHEDULES = [
    ScheduleState(ScheduleSpec("nightly-export", "reports.nightly_export", "0 2 * * *", "Europe/Berlin"),
                  cursor_at=ago(3 * 3600 + 120), last_tick=ago(3 * 3600 + 120), last_workflow_id="x"),
    ScheduleState(ScheduleSpec("digest", "mail.digest", "*/15 * * * *", "UTC"), cursor_at=ago(9 * 60 + 26),
                  last_tick=ago(9 * 60 + 26)),
    ScheduleState(ScheduleSpec("new-schedule", "mail.digest", "30 9 * * 1-5", "America/New_York"),
                  cursor_at=ago(60)),
]

GOLDEN = Path(__file__).resolve().parent / "golden"


def assert_golden(name: str, text: str, width: int) -> None:
    """``text`` (trailing spaces stripped) equals tests/golden/``name``; no line is wider than ``width``.
    KIT_UPDATE_GOLDEN=1 rewrites the file instead (review the diff before committing it)."""
    lines = [line.rstrip() for line in text.rstrip("\n").split("\n")]
    too_wide = [line for line in lines if len(line) > width]
    assert not too_wide, f"{len(too_wide)} line(s) wider than {width} columns:\n" + "\n".join(too_wide)
    got = "\n".join(lines) + "\n"
    path = GOLDEN / name
    if os.environ.get("KIT_UPDATE_GOLDEN") == "1":
        path.write_text(got, encoding="utf-8")
    assert path.exists(), f"no golden file {path}: run with KIT_UPDATE_GOLDEN=1 and review it"
    expected = path.read_text(encoding="utf-8")
    assert got == expected, f"{name} changed; run with KIT_UPDATE_GOLDEN=1 to accept:\n{got}"
