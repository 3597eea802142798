"""A commit whose wait for synchronous replication is cancelled is not acknowledged.

PostgreSQL then reports success with ``WARNING: canceling wait for synchronous replication``: the commit is
local only and a failover can lose it. The backend must not hand such a checkpoint to the engine as
recorded: it resolves the outcome after a replication barrier, which waits until replication works again.
Here a synchronous standby that never connects (``synchronous_standby_names = 'kit_nobody'``) makes every
commit wait; cancelling the wait from another session must not make ``step_record`` return.
"""

from __future__ import annotations

import threading
import time

import psycopg
import pytest
from conformance.helpers import create, step
from kit.backends.postgres import PostgresBackend


def _wait_for_syncrep(admin: psycopg.Connection, like: str, timeout: float = 30.0) -> int:
    """Pid of a session waiting for synchronous replication whose query matches ``like``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE wait_event = 'SyncRep' AND query LIKE %s AND pid <> "
            "pg_backend_pid() ORDER BY backend_start DESC LIMIT 1", (like,)).fetchone()
        if row:
            return int(row[0])
        time.sleep(0.05)
    raise AssertionError(f"no session waiting for synchronous replication with a query like {like!r}")


def _wait_until_commits_wait(url: str, admin: psycopg.Connection, timeout: float = 30.0) -> None:
    """The reload reaches the checkpointer asynchronously: probe until a commit really waits for the
    standby, then cancel that probe's wait."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with psycopg.connect(url, autocommit=True) as conn:
            probe = threading.Thread(
                target=conn.execute, args=("SELECT pg_logical_emit_message(true, 'kit-test', 'probe')",), daemon=True)
            probe.start()
            while probe.is_alive():
                row = admin.execute("SELECT pid FROM pg_stat_activity WHERE wait_event = 'SyncRep' AND pid = %s",
                                    (conn.info.backend_pid,)).fetchone()
                if row:
                    admin.execute("SELECT pg_cancel_backend(%s)", (row[0],))
                    probe.join(10)
                    return
                time.sleep(0.02)
        time.sleep(0.1)
    raise AssertionError("commits never started waiting for the synchronous standby")


@pytest.fixture
def admin(pg_url):
    conn = psycopg.connect(pg_url, autocommit=True)
    yield conn
    conn.execute("ALTER SYSTEM RESET synchronous_standby_names")
    conn.execute("SELECT pg_reload_conf()")
    conn.close()


def test_cancelled_sync_replication_wait_is_not_an_acknowledgement(pg_url, schema, admin):
    backend = PostgresBackend(pg_url, schema=schema, call_timeout=120.0)
    backend.open()
    try:
        backend.migrate()
        wid, _ = create(backend, owner="worker-a")
        admin.execute("ALTER SYSTEM SET synchronous_standby_names = 'kit_nobody'")
        admin.execute("SELECT pg_reload_conf()")
        _wait_until_commits_wait(pg_url, admin)
        out: dict[str, object] = {}

        def record() -> None:
            try:
                out["rec"] = backend.step_record(step(wid, 0, 1, output='"x"'))
            except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
                out["error"] = exc

        t = threading.Thread(target=record, daemon=True)
        t.start()
        # The checkpoint's commit waits for the standby; cancel that wait (PostgreSQL: success + WARNING).
        pid = _wait_for_syncrep(admin, "%steps%")
        admin.execute("SELECT pg_cancel_backend(%s)", (pid,))
        # The backend does not take it as recorded: it waits on a replication barrier instead.
        _wait_for_syncrep(admin, "%pg_logical_emit_message%")
        assert t.is_alive() and not out, "a commit with a cancelled replication wait was acknowledged"
        # Replication "works" again (no synchronous standby required): the outcome is read back.
        admin.execute("ALTER SYSTEM RESET synchronous_standby_names")
        admin.execute("SELECT pg_reload_conf()")
        t.join(60)
        assert not t.is_alive()
        assert "error" not in out, out.get("error")
        rec = out["rec"]
        assert (rec.workflow_id, rec.step_id, rec.epoch, rec.output) == (wid, 0, 1, '"x"')
        assert [(s.step_id, s.epoch) for s in backend.step_list(wid)] == [(0, 1)]
    finally:
        backend.close()
