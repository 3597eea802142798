"""`kit monitor`: pure aggregation and rendering at a fixed width and clock, frames from a real database,
the live dashboard in a real terminal (tmux), and a database restart under it."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest
from kit.backends.postgres import PostgresBackend
from psycopg import sql

import kit
from kit.cli.layout import render_plain
from kit.monitor import (
    MonitorSnapshot,
    MonitorSource,
    finished_counts,
    render,
    render_text,
    sparkline,
    throughput_series,
)
from kit.storage import (
    Finish,
    FinishedBucket,
    MonitorQuery,
    MonitorStats,
    NewWorkflow,
    Percentiles,
    QueueStats,
    Status,
    WorkerInfo,
    WorkerStats,
    WorkflowRecord,
)

try:  # works whether or not tests/ is a package
    from .layout_data import assert_golden
    from .servers import DebianPostgres
except ImportError:
    from layout_data import assert_golden
    from servers import DebianPostgres

pytestmark = pytest.mark.all_backends  # also on the extra targets (Citus): tests/targets.py

REPO = Path(__file__).resolve().parent.parent
T = datetime(2026, 1, 31, 12, 0, 0, tzinfo=timezone.utc)
ENDPOINT = "postgresql://kit:***@db.example:5432/app"


def fixed_stats(**overrides) -> MonitorStats:
    base = dict(
        server_time=T,
        primary=True,
        node="10.0.0.5:5432",
        workers=(WorkerStats("worker-a1", "host1", 4242, T - timedelta(minutes=5), T - timedelta(seconds=1.2), True, 3),
                 WorkerStats("worker-old", "host2", 99, T - timedelta(hours=1), T - timedelta(seconds=40), False, 0)),
        queues=(QueueStats("default", 12, 3), QueueStats("emails", 0, 1)),
        # 2 per second for the last minute (12 buckets of 5 s), plus 7 in the bucket still in progress.
        finished=tuple(FinishedBucket(T - timedelta(seconds=5 * i), Status.SUCCESS, 10) for i in range(1, 13))
        + (FinishedBucket(T, Status.SUCCESS, 7), FinishedBucket(T - timedelta(seconds=20), Status.ERROR, 2)),
        workflow_latency=Percentiles(120, 0.0123, 0.25, 1.5),
        step_latency=Percentiles(360, 0.002, 0.01, 0.05),
        recent_failures=(WorkflowRecord("order-17", "shop.checkout", Status.ERROR, finished_at=T - timedelta(seconds=20),
                                        error='{"type": "ValueError", "message": "card declined"}'),),
        oldest_pending=WorkflowRecord("order-99", "shop.checkout", Status.PENDING, queue=None,
                                      created_at=T - timedelta(seconds=75)),
    )
    base.update(overrides)
    return MonitorStats(**base)


def snapshot(**overrides) -> MonitorSnapshot:
    base = dict(backend="postgres", endpoint=ENDPOINT, query=MonitorQuery(), taken_at=T, stats=fixed_stats(),
                refresh_ms=4.0)
    base.update(overrides)
    return MonitorSnapshot(**base)


# -- aggregation ---------------------------------------------------------------------------------------
def test_throughput_series_buckets_per_second_and_skips_the_bucket_in_progress():
    series = throughput_series(fixed_stats(), MonitorQuery(window_seconds=300, bucket_seconds=5))
    assert len(series) == 59
    assert series[-12:] == [2.0] * 8 + [2.4] + [2.0] * 3  # the ERROR bucket 20 s back adds 2 / 5 s
    assert series[:-12] == [0.0] * 47


def test_throughput_series_ignores_buckets_outside_the_window():
    old = FinishedBucket(T - timedelta(hours=1), Status.SUCCESS, 99)
    assert sum(throughput_series(fixed_stats(finished=(old,)), MonitorQuery())) == 0


def test_sparkline_scales_to_the_peak():
    assert sparkline([0, 1, 2, 4]) == "▁▃▅█"
    assert sparkline([0, 0]) == "▁▁"
    assert sparkline([0.001, 10]) == "▂█"  # anything above zero is visible


def test_finished_counts_combine_active_and_window():
    counts = finished_counts(fixed_stats())
    assert counts == {Status.PENDING: 12, Status.RUNNING: 4, Status.SUCCESS: 127, Status.ERROR: 2,
                      Status.CANCELLED: 0}


# -- rendering (golden frames at 80 and 140 columns, fixed clock) --------------------------------------
def frame_lines(snap: MonitorSnapshot, now: datetime, width: int = 120) -> list[str]:
    text = render_text(snap, now, width=width)
    lines = text.rstrip("\n").split("\n")
    assert all(len(line) <= width for line in lines), "frame wider than the console"
    return [line.rstrip() for line in lines]


@pytest.mark.parametrize("width", [80, 140])
def test_render_frame_golden(width):
    text = render_text(snapshot(), T + timedelta(seconds=0.5), width=width)
    assert_golden(f"monitor-{width}.txt", text, width)
    lines = frame_lines(snapshot(), T + timedelta(seconds=0.5), width)
    assert lines[0] == f"kit monitor  postgres  {ENDPOINT}"
    assert lines[1] == "node 10.0.0.5:5432 (primary)  2026-01-31 12:00:00 UTC"
    expected_rows = [  # every value whole: no panel is squeezed to ellipses
        r"│ PENDING\s+12\s+│ │\s+worker\s+host:pid\s+alive\s+heartbeat\s+claims\s+│",
        r"│\s+worker-a1\s+host1:4242\s+yes\s+1\.7s ago\s+3\s+│",
        r"│\s+worker-old\s+host2:99\s+no\s+40\.5s ago\s+0\s+│",
        r"│\s+queue\s+depth\s+running\s+limit\s+│", r"│\s+default\s+12\s+3\s+—\s+│", r"│\s+emails\s+0\s+1\s+—\s+│",
        r"│ ERROR\s+2\s+│",
        r"│ now 2\.0/s\s+avg 0\.4/s\s+peak 2\.4/s\s+│",
        r"│\s+workflow\s+120\s+12ms\s+250ms\s+1\.5s\s+│",
        r"│\s+step\s+360\s+2\.0ms\s+10ms\s+50ms\s+│",
        r"│\s+20\.5s ago\s+order-17\s+shop\.checkout\s+ValueError: card declined\s+│",
    ]
    text = "\n".join(lines)
    for pattern in expected_rows:
        assert any(re.search(pattern, line) for line in lines), f"no line matches {pattern!r}:\n{text}"
    assert "workers: 1 alive / 2" in text and "ended: 5 min" in text
    assert "finished per second, last 5 min" in text and "latency, last 5 min" in text
    assert "▁" * 47 + "▇▇▇▇▇▇▇▇█▇▇▇" in text
    assert lines[-2] == "oldest pending: order-99 (shop.checkout, queue default) waiting 1m15s"
    assert lines[-1] == "last reading 4 ms"  # --once: no key help
    assert len(lines) <= 24


def test_render_live_fits_80x24_by_cutting_long_lists():
    failures = tuple(WorkflowRecord(f"0b9e{i:04d}-1c2d-4e5f-8a9b-0c1d2e3f4a5b", "shop.checkout", Status.ERROR,
                                    finished_at=T - timedelta(seconds=5 * i),
                                    error='{"type": "ValueError", "message": "card declined"}') for i in range(5))
    workers = tuple(WorkerStats(f"web-{i}:{100 + i}:5d9da58d", f"web-{i}", 100 + i, T, T, True, i) for i in range(6))
    snap = snapshot(stats=fixed_stats(recent_failures=failures, workers=workers))
    full = frame_lines(snap, T, 80)
    assert len(full) > 24 and full[-1] == "last reading 4 ms"
    live = render_plain(render(snap, T, height=24, live=True), 80).rstrip("\n").split("\n")
    assert len(live) <= 24, "\n".join(live)
    text = "\n".join(live)
    assert "+4 more" in text and "+5 more" in text and live[-1].startswith("q quit")
    assert "0b9e0000…" in text  # ids cut by the rule when the error would not fit beside them
    assert "web-0:100:5d9da58d" in text and "host:pid" not in text  # default worker ids carry host:pid


def test_render_is_pure_and_follows_the_clock():
    snap = snapshot()
    assert render_text(snap, T) == render_text(snap, T)
    later = "\n".join(frame_lines(snap, T + timedelta(seconds=60)))
    assert "2m15s" in later and "1m01s ago" in later  # oldest pending and worker heartbeat aged by a minute


@pytest.mark.parametrize("width", [80, 120, 160])
def test_render_fits_several_widths(width):
    lines = frame_lines(snapshot(), T, width=width)
    assert lines[0].startswith("kit monitor")
    assert any("order-99" in line for line in lines)


def test_render_reconnecting_keeps_the_last_reading():
    snap = snapshot(query=MonitorQuery(name="shop.checkout", queue="emails"),
                    error="database postgresql://kit:***@db.example:5432/app unavailable: connection refused",
                    failed_at=T + timedelta(seconds=3))
    lines = frame_lines(snap, T + timedelta(seconds=5))
    text = "\n".join(lines)
    assert lines[1] == "node 10.0.0.5:5432 (primary)  filter name=shop.checkout queue=emails  2026-01-31 12:00:05 UTC"
    assert lines[2] == ("reconnecting… (last error 2.0s ago) database postgresql://kit:***@db.example:5432/app "
                        "unavailable: connection refused")
    assert lines[3] == "showing the last reading, 5.0s old"
    assert "PENDING" in text and "order-17" in text


def test_render_before_any_reading():
    lines = frame_lines(snapshot(stats=None, error="cannot connect to PostgreSQL at x: refused", failed_at=T), T)
    assert lines[1] == "2026-01-31 12:00:00 UTC"
    assert lines[2].startswith("reconnecting…") and "refused" in lines[2]
    assert lines[3] == "no data yet"
    assert frame_lines(snapshot(stats=None), T)[-1] == "waiting for the first reading…"


def test_render_empty_system():
    empty = fixed_stats(workers=(), queues=(), finished=(), workflow_latency=Percentiles(),
                        step_latency=Percentiles(), recent_failures=(), oldest_pending=None, primary=False)
    text = "\n".join(frame_lines(snapshot(stats=empty), T))
    for fragment in ("(standby)", "(no workers have heartbeated)", "(no pending or running work)",
                     "(no failures in the last 24h)", "oldest pending: none", "now 0.0/s"):
        assert fragment in text
    assert re.search(r"workflow\s+0\s+—\s+—\s+—", text)


# -- a frame from a seeded database --------------------------------------------------------------------


def test_frame_from_a_seeded_database(backend, pg_url, schema):
    backend.lease_renew("worker-x", 30, WorkerInfo(worker_id="worker-x", hostname="hx", pid=5))
    for i in range(6):
        backend.workflow_create(NewWorkflow(f"done-{i}", "shop.pay", "[]", owner="worker-x"))
        ok = i != 5
        backend.workflow_finish(Finish(f"done-{i}", 1, Status.SUCCESS if ok else Status.ERROR, output="1" if ok else None,
                                       error=None if ok else '{"type": "TimeoutError", "message": "gateway slow"}'))
    backend.workflow_create(NewWorkflow("busy", "shop.pay", "[]", owner="worker-x", queue="payments"))
    backend.workflow_create(NewWorkflow("waiting", "shop.pay", "[]", queue="payments"))
    source = MonitorSource(lambda: backend, backend_name="postgres", endpoint="postgresql://u:hunter2@h/db",
                           query=MonitorQuery())
    snap = source.poll()
    assert snap.error is None and snap.stats is not None
    text = "\n".join(frame_lines(snap, snap.taken_at))
    assert "hunter2" not in text and "postgresql://u:***@h/db" in text
    counts = dict(re.findall(r"(PENDING|RUNNING|SUCCESS|ERROR|CANCELLED)\s+(\d+)", text))
    assert counts == {"PENDING": "1", "RUNNING": "1", "SUCCESS": "5", "ERROR": "1", "CANCELLED": "0"}
    assert re.search(r"worker-x\s+hx:5\s+yes\s+\S+ ago\s+1", text)
    assert re.search(r"payments\s+1\s+1\s+—", text)
    assert "TimeoutError: gateway slow" in text and "oldest pending: waiting (shop.pay, queue payments)" in text
    assert re.search(r"workflow\s+6\s", text)


def test_source_reports_errors_instead_of_raising():
    def refuse():
        raise kit.errors.DatabaseUnavailableError("cannot connect to PostgreSQL at postgresql://u:***@h/db: refused")

    source = MonitorSource(refuse, backend_name="postgres", endpoint="postgresql://u:pw@h/db", query=MonitorQuery())
    snap = source.poll()
    assert snap.stats is None and "refused" in (snap.error or "") and "pw@" not in snap.endpoint


# -- the live dashboard in a real terminal -------------------------------------------------------------
class Tmux:
    """A private tmux server (own socket, so it inherits this environment) running one command."""

    def __init__(self, tmp_path: Path, command: list[str], env: dict[str, str],
                 size: tuple[int, int] = (140, 50)) -> None:
        self.socket = f"kit-mon-{uuid.uuid4().hex[:8]}"
        self.exit_file = tmp_path / "exit"
        exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        # COLUMNS/LINES may be inherited from whoever started tmux: the window size must decide the layout.
        shell = (f"cd {shlex.quote(str(REPO))} && env -u COLUMNS -u LINES {exports} "
                 f"{' '.join(shlex.quote(c) for c in command)}; "
                 f"echo EXIT=$? > {shlex.quote(str(self.exit_file))}; sleep 30")
        self._tmux("new-session", "-d", "-s", "mon", "-x", str(size[0]), "-y", str(size[1]), shell)

    def _tmux(self, *args: str) -> str:
        res = subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=20)
        assert res.returncode == 0, res.stderr
        return res.stdout

    def capture(self) -> str:
        return self._tmux("capture-pane", "-p", "-t", "mon")

    def wait_for(self, predicate, what: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.capture()
            if predicate(screen):
                return screen
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}; screen:\n{screen}")

    def keys(self, *keys: str) -> None:
        self._tmux("send-keys", "-t", "mon", *keys)

    def exit_code(self, timeout: float = 15.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.exit_file.exists() and self.exit_file.read_text().strip():
                return int(self.exit_file.read_text().strip().removeprefix("EXIT="))
            time.sleep(0.1)
        raise AssertionError(f"kit monitor did not exit; screen:\n{self.capture()}")

    def kill(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=20)


def monitor_env() -> dict[str, str]:
    env = {"TERM": "xterm-256color", "PYTHONUNBUFFERED": "1", "NO_COLOR": "1"}
    if os.environ.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return env


def success_count(screen: str) -> int:
    m = re.search(r"SUCCESS\s+(\d+)", screen)
    return int(m.group(1)) if m else -1


needs_tmux = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


@needs_tmux
@pytest.mark.parametrize("size", [(140, 50), (80, 24)], ids=["140x50", "80x24"])
def test_live_monitor_in_tmux_follows_a_workload_and_quits_on_q(pg_url, schema, tmp_path, size):
    app = kit.Kit(database_url=pg_url, schema=schema, lease_seconds=5.0, heartbeat_seconds=0.5, poll_seconds=0.1)

    @app.step()
    def work(i: int) -> int:
        time.sleep(0.01)
        return i

    @app.workflow(name="load.job")
    def job(i: int) -> int:
        return work(i) + work(i + 1)

    app.launch()
    stop = threading.Event()

    def workload() -> None:
        i = 0
        while not stop.is_set():
            app.start(job, i).result(timeout=30)
            i += 1
            time.sleep(0.05)

    runner = threading.Thread(target=workload, daemon=True)
    tmux = Tmux(tmp_path, [sys.executable, "-m", "kit.cli", "monitor", "--database-url", pg_url, "--schema", schema,
                           "--interval", "0.5"], monitor_env(), size)
    try:
        first = tmux.wait_for(lambda s: "SUCCESS" in s, "the first frame")
        assert "kit monitor" in first and "Traceback" not in first
        runner.start()
        first = tmux.wait_for(lambda s: success_count(s) > 0, "finished workflows")
        second = tmux.wait_for(lambda s: success_count(s) > success_count(first), "the count to grow")
        assert re.search(r"alive / [1-9]", second), second
        assert "finished per second" in second and "p95" in second
        # The whole frame is on screen, every header whole: nothing squeezed to an ellipsis, nothing wrapped.
        lines = second.rstrip("\n").split("\n")
        assert len(lines) <= size[1] and all(len(line) <= size[0] for line in lines)
        assert "…" not in second, second
        if size[0] >= 120:  # the extra width is used: panels side by side
            assert re.search(r"workers: .*queues", second), second
        for fragment in ("heartbeat", "claims", "oldest pending", "q quit"):
            assert fragment in second, (fragment, second)
        tmux.keys("q")
        assert tmux.exit_code() == 0
    finally:
        stop.set()
        runner.join(30)
        tmux.kill()
        app.close(grace=2)


@needs_tmux
def test_live_monitor_survives_a_database_restart(tmp_path):
    if not DebianPostgres.available():
        pytest.skip("no restartable server: Debian postgresql-15 binaries are not installed (scripts/setup.sh)")
    server = DebianPostgres().start()
    schema = "kit_restart"
    tmux = None
    try:
        backend = PostgresBackend(server.url, schema=schema, pool_size=2, retry_seconds=5)
        backend.open()
        backend.migrate()
        backend.workflow_create(NewWorkflow("before", "r.flow", "[]"))
        backend.close()
        tmux = Tmux(tmp_path, [sys.executable, "-m", "kit.cli", "monitor", "--database-url", server.url, "--schema",
                               schema, "--interval", "0.5"], monitor_env())
        up = tmux.wait_for(lambda s: "PENDING" in s, "the first frame")
        assert "reconnecting" not in up and server.password not in up
        server._stop_server()
        down = tmux.wait_for(lambda s: "reconnecting…" in s, "the reconnecting banner")
        assert "Traceback" not in down and server.password not in down
        assert re.search(r"PENDING\s+1", down), "the last reading stays on screen"
        server.start()
        with psycopg.connect(server.url, autocommit=True) as conn:
            conn.execute(sql.SQL("INSERT INTO {}.workflows (workflow_id, name, status) VALUES ('after', 'r.flow', "
                                 "'PENDING')").format(sql.Identifier(schema)))
        back = tmux.wait_for(lambda s: "reconnecting" not in s and re.search(r"PENDING\s+2", s), "recovery",
                             timeout=40)
        assert "Traceback" not in back
        tmux.keys("q")
        assert tmux.exit_code() == 0
    finally:
        if tmux is not None:
            tmux.kill()
        server.stop()
