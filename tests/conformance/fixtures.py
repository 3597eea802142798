"""Fixtures the suite defines for itself; the package exports them with the tests (``from conformance
import *`` brings them into the adapter module, where pytest finds them)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from . import differences
from .factory import FaultTotals


@pytest.fixture(autouse=True)
def _known_differences(request: pytest.FixtureRequest) -> None:
    """Apply the register of known differences to every test that uses ``backend_factory``."""
    if "backend_factory" in request.fixturenames:
        differences.check_whole_test(request, request.getfixturevalue("backend_factory"))


@pytest.fixture(scope="session")
def conformance_fault_totals(request: pytest.FixtureRequest) -> Iterator[FaultTotals]:
    """Counts what the fault-injected pass injected; reported at the end of the session."""
    totals = FaultTotals()
    yield totals
    if totals.tests:
        reporter = request.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line("")
            reporter.write_line(totals.summary())
