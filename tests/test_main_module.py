"""``python -m kit`` is the ``kit`` command: same parser, same output, same exit codes."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), cwd=REPO, capture_output=True, text=True, timeout=120)


def test_python_m_kit_prints_the_same_help_as_the_script():
    module = run(sys.executable, "-m", "kit", "--help")
    assert module.returncode == 0, module.stderr
    assert module.stdout.startswith("usage: kit ")
    script = shutil.which("kit", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip("no kit console script beside this interpreter (package not installed with its scripts)")
    assert run(script, "--help").stdout == module.stdout


def test_python_m_kit_reports_errors_like_the_script():
    out = run(sys.executable, "-m", "kit", "workflows", "list", "--database-url", "mysql://x@127.0.0.1/db")
    assert out.returncode == 2
    assert out.stderr.startswith("kit: error: ") and len(out.stderr.strip().splitlines()) == 1, out.stderr
    bad = run(sys.executable, "-m", "kit", "no-such-command")
    assert bad.returncode == 2 and "invalid choice" in bad.stderr
