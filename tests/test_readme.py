"""The README as a newcomer uses it: its example saved to a file and run exactly as written (the Python block
and every command of the shell block after it, in an empty directory, on the embedded PostgreSQL), its
command table listing every command, and every document linked."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from kit.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")


def example_blocks() -> tuple[str, list[str]]:
    """The ``## Example`` section's Python block and the command lines of the shell block after it."""
    section = README.split("## Example", 1)[1].split("\n## ", 1)[0]
    python = re.search(r"```python\n(.*?)```", section, re.S)
    shell = re.search(r"```bash\n(.*?)```", section, re.S)
    assert python and shell, "the Example section needs a ```python block and a ```bash block"
    commands = [line for line in shell.group(1).splitlines() if line.strip()]
    return python.group(1), commands


def argv_of(line: str) -> list[str]:
    """A README command line as argv: `python` and `kit` are the ones of this checkout's environment."""
    words = shlex.split(line, comments=True)
    if words[0] == "python":
        return [sys.executable, *words[1:]]
    if words[0] == "kit":
        return [sys.executable, "-m", "kit.cli", *words[1:]]
    raise AssertionError(f"unexpected command in the README example: {line}")


@pytest.fixture
def project(tmp_path: Path):
    """An empty directory with the example as shop.py; its embedded server is stopped afterwards."""
    code, _ = example_blocks()
    (tmp_path / "shop.py").write_text(code)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KIT_", "PG"))}
    env.update(PYTHONUNBUFFERED="1", NO_COLOR="1", COLUMNS="80")
    env.pop("PYTHONPATH", None)  # `kit worker shop:app` must find shop.py in the current directory by itself
    yield tmp_path, env
    subprocess.run([sys.executable, "-m", "kit.cli", "db", "stop"], cwd=tmp_path, env=env, capture_output=True,
                   timeout=120)


@pytest.mark.slow
def test_the_example_runs_as_written(project) -> None:
    cwd, env = project
    _, commands = example_blocks()
    worker: subprocess.Popen | None = None
    outputs: list[str] = []
    try:
        for line in commands:
            argv = argv_of(line)
            if argv[3:5] == ["worker", "shop:app"]:
                worker = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                          text=True, stdin=subprocess.DEVNULL)
                assert worker.stdout is not None
                first = worker.stdout.readline()
                assert "running checkout" in first, first
                continue
            if argv[3:4] == ["monitor"]:
                argv.append("--once")  # the live dashboard needs a terminal; one frame shows the same panels
            if argv[3:5] == ["db", "stop"] and worker is not None:
                stop_worker(worker)
                worker = None
            res = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
                                 stdin=subprocess.DEVNULL)
            assert res.returncode == 0, f"{line}\nstdout: {res.stdout}\nstderr: {res.stderr}"
            assert "Traceback" not in res.stderr, res.stderr
            outputs.append(res.stdout)
    finally:
        if worker is not None:
            worker.kill()
    run1, run2, show, enqueued, monitor, stopped = outputs
    assert run1.strip() == "ch_order-42:0" and run2 == run1
    assert "order-42" in show and "charge" in show and "record_sale" in show and "SUCCESS" in show
    assert enqueued.strip() == "ch_order-43:0"  # run by the worker
    assert "kit monitor" in monitor and "finished per second" in monitor and "SUCCESS" in monitor, monitor
    assert stopped.startswith("stopped the embedded PostgreSQL")


def stop_worker(worker: subprocess.Popen) -> None:
    """Ctrl-C, as the README says: the worker says what it did and exits 0."""
    worker.send_signal(signal.SIGINT)
    out, _ = worker.communicate(timeout=60)
    assert worker.returncode == 0, out
    assert "stopping (Ctrl-C) after claiming 1 workflow(s)" in out and "stopped" in out, out


def test_the_command_table_lists_every_command() -> None:
    table = README.split("## Command line", 1)[1].split("\n## ", 1)[0]
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, p in sub.choices.items():
        assert f"`kit {name}" in table, f"kit {name} is missing from the README's command table"
        nested = [a for a in p._actions if a.__class__.__name__ == "_SubParsersAction"]
        for child in (nested[0].choices if nested else {}):
            assert re.search(rf"`kit {name}[^`]*\b{child}\b", table), f"kit {name} {child} is missing"


def test_every_document_is_linked() -> None:
    for doc in sorted((REPO / "docs").glob("*.md")):
        assert f"(docs/{doc.name})" in README, f"README does not link docs/{doc.name}"


def test_the_readme_commands_use_the_project_environment() -> None:
    """scripts/demo.sh and scripts/test.sh install into .venv of the checkout, never a global interpreter."""
    venv = (REPO / "scripts" / "venv.sh").read_text()
    assert 'KIT_VENV="${KIT_VENV:-.venv}"' in venv and "-m venv" in venv
    for script in ("setup.sh", "demo.sh", "test.sh", "lab-setup.sh"):
        text = (REPO / "scripts" / script).read_text()
        assert "pip install" not in re.sub(r"#.*", "", text), f"{script} runs pip itself instead of scripts/venv.sh"
    assert ".venv/bin/python -m kit.cli demo" in (REPO / "scripts" / "demo.sh").read_text()


def test_venv_setup_creates_and_reuses_the_environment(tmp_path: Path) -> None:
    """scripts/venv.sh in an empty project: it makes .venv with the base interpreter, says so once, and a
    second run reuses it (the base interpreter's packages are never touched)."""
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "venv.sh").write_text((REPO / "scripts" / "venv.sh").read_text())
    script = ". scripts/venv.sh && kit_venv && echo PY=$PY"
    env = {**os.environ, "PYTHON": sys.executable}
    env.pop("KIT_VENV", None)
    first = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=300)
    assert first.returncode == 0, first.stderr
    assert "created the project virtual environment .venv" in first.stderr and "PY=.venv/bin/python" in first.stdout
    assert (tmp_path / ".venv" / "bin" / "python").exists()
    second = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert second.returncode == 0 and "created" not in second.stderr, second.stderr
