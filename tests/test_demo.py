"""The main job: `kit demo` on the embedded default crashes a worker and proves recovery from its ledger."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kit.embedded import embedded_status

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def data_dir(tmp_path):
    path = tmp_path / "kitdata"
    yield path
    # The embedded server outlives `kit demo` on purpose (the next run reuses it); `kit db stop` stops it.
    res = subprocess.run([sys.executable, "-m", "kit.cli", "db", "stop", "--data-dir", str(path)], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert not embedded_status(path).running


@pytest.mark.slow
def test_kit_demo_crashes_a_worker_and_recovers_on_the_embedded_database(data_dir):
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIT_")}
    res = subprocess.run(
        [sys.executable, "-m", "kit.cli", "demo", "--data-dir", str(data_dir), "--orders", "4",
         "--step-seconds", "0.15", "--lease-seconds", "2"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=180,
    )
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert out.count("started the embedded PostgreSQL") == 1  # said once, by the process that started it
    assert "kit db stop" in out
    assert "SIGKILL worker A" in out
    assert "orders completed" in out and "4/4" in out
    assert "no step whose checkpoint committed ran again" in out
    assert "VIOLATION" not in out and "Traceback" not in out
    # Worker B did some of the work after the crash.
    assert "B:" in out
    ledger = data_dir / "demo" / "ledger.jsonl"
    assert ledger.exists() and len(ledger.read_text().splitlines()) >= 4 * 5
