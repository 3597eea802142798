"""SIGKILL a real worker process while messages and timers are in flight: every message is received
exactly once, in order, and the workflow finishes on another worker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

import kit

pytestmark = pytest.mark.all_backends  # also on the extra targets (Citus): tests/targets.py

REPO = Path(__file__).resolve().parents[1]


def _spawn(env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "kit.cli", "worker", "tests.apps.messaging_app:app"],
                            cwd=REPO, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)  # noqa: SIM115


@pytest.mark.slow
def test_sigkill_with_messages_and_timers_in_flight(pg_url, schema, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIT_") or k == "KIT_BACKEND"}
    env.update(KIT_DATABASE_URL=pg_url, KIT_SCHEMA=schema, KIT_LEASE_SECONDS="1.5", KIT_HEARTBEAT_SECONDS="0.4",
               KIT_POLL_SECONDS="0.2")
    client = kit.Client(pg_url, schema=schema)
    procs: list[subprocess.Popen] = []
    try:
        count = 16
        h = client.enqueue("messaging_app.consume", count, 0.1, workflow_id="consumer")
        procs.append(_spawn(env, tmp_path / "a.log"))
        kills = 0
        owners: list[str] = []
        for i in range(count):
            client.send("consumer", i, topic="in")
            time.sleep(0.08)
            if i in (5, 11):  # kill whoever runs it, mid-stream; a fresh worker takes over after the lease
                # Only once the newest worker holds the workflow (start-up can be slow on a busy machine).
                deadline = time.monotonic() + 60
                while True:
                    owner = client.backend.workflow_get("consumer").owner
                    if owner and owner not in owners:
                        owners.append(owner)
                        break
                    assert time.monotonic() < deadline, "no new worker took the workflow over"
                    time.sleep(0.05)
                victim = procs[-1]
                victim.send_signal(signal.SIGKILL)
                victim.wait(10)
                kills += 1
                procs.append(_spawn(env, tmp_path / f"w{i}.log"))
        assert h.result(timeout=120) == list(range(count))
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
        client.close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        consumed = conn.execute(f'SELECT count(*), count(DISTINCT consumed_step) FROM "{schema}".messages '
                                "WHERE consumed_at IS NOT NULL").fetchone()
        recoveries = conn.execute(f'SELECT recoveries FROM "{schema}".workflows WHERE workflow_id = %s',
                                  ("consumer",)).fetchone()[0]
        sleeps = conn.execute(f'SELECT count(*) FROM "{schema}".steps WHERE workflow_id = %s AND name = %s',
                              ("consumer", "sleep")).fetchone()[0]
    assert consumed == (count, count)  # each message consumed once, each by its own recv step
    assert sleeps == count  # every timer recorded once, none re-recorded by a successor
    assert kills == 2 and recoveries >= 1
