"""pytest wiring of the chaos lab: options, one cluster for the whole session, reports and the summary table.

``pytest chaos/`` brings the Patroni cluster up (or reuses a running one), runs the scenarios against it,
writes one JSON report per scenario and ends with the rich table of all of them. Without a Docker engine
every scenario is skipped with the reason (never passed silently).
"""

from __future__ import annotations

import io
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kit.lab import Lab, LabUnavailable, Timeline, engine_problem

REPO = Path(__file__).resolve().parent.parent


def pytest_addoption(parser: pytest.Parser) -> None:
    """Lab options (each also settable by an environment variable)."""
    group = parser.getgroup("kit-lab")
    group.addoption("--lab-workflows", type=int, default=int(os.environ.get("KIT_LAB_WORKFLOWS", "1000")),
                    help="workflows per scenario (env KIT_LAB_WORKFLOWS; default 1000)")
    group.addoption("--lab-reports", default=os.environ.get("KIT_LAB_REPORTS", str(REPO / ".kit" / "lab-reports")),
                    help="directory of the JSON scenario reports (env KIT_LAB_REPORTS)")
    group.addoption("--lab-keep", action="store_true", default=os.environ.get("KIT_LAB_KEEP", "") == "1",
                    help="leave the cluster running after the session (env KIT_LAB_KEEP=1)")


def _slug(text: str) -> str:
    """The file-name form of a scenario or variant name (as chaos/report.py writes it)."""
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text).strip("-") or "scenario"


def _log(msg: str) -> None:
    print(f"[lab {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@pytest.fixture(scope="session")
def lab_reports_dir(pytestconfig: pytest.Config) -> Path:
    """This session's report directory (emptied of earlier reports first)."""
    d = Path(pytestconfig.getoption("--lab-reports"))
    d.mkdir(parents=True, exist_ok=True)
    for old in d.glob("*.json"):
        old.unlink()
    return d


@pytest.fixture(scope="session")
def lab_workflows(pytestconfig: pytest.Config) -> int:
    """Workflows per scenario."""
    return max(8, int(pytestconfig.getoption("--lab-workflows")))


@pytest.fixture(scope="session")
def lab_cluster(pytestconfig: pytest.Config) -> Iterator[Lab]:
    """The session's cluster: brought up from nothing (or reused when already running), down at the end."""
    problem = engine_problem()
    if problem:
        pytest.skip(f"chaos lab unavailable: {problem}")
    lab = Lab("async", timeline=Timeline(log=_log))
    try:
        if lab.is_up():
            _log("reusing the running lab cluster")
            lab.heal()
            lab.set_variant("async")
        else:
            lab.up()
    except LabUnavailable as exc:
        pytest.skip(f"chaos lab unavailable: {exc}")
    yield lab
    if not pytestconfig.getoption("--lab-keep"):
        lab.down()
    lab.close()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int,
                            config: pytest.Config) -> None:
    """End the run with the rich table of every scenario report written in this session."""
    from rich.console import Console

    from chaos.report import load_reports, render_summary

    d = Path(config.getoption("--lab-reports", default=str(REPO / ".kit" / "lab-reports")))
    reports = load_reports(d) if d.is_dir() else []
    # In the order the scenarios ran (report files are written when a scenario ends).
    order = {p.name: p.stat().st_mtime for p in d.glob("*.json")} if d.is_dir() else {}
    reports.sort(key=lambda r: order.get(f"{_slug(r.name)}-{_slug(r.variant)}.json", 0.0))
    if not reports:
        return
    buf = io.StringIO()
    Console(file=buf, width=max(140, terminalreporter._tw.fullwidth), force_terminal=terminalreporter.hasmarkup,
            color_system="standard" if terminalreporter.hasmarkup else None).print(render_summary(reports))
    terminalreporter.write_sep("=", "chaos lab summary")
    terminalreporter.write(buf.getvalue())
    terminalreporter.write_line(f"JSON reports: {d}")
