"""Fixtures the suite defines for itself; the package exports them with the tests (``from conformance
import *`` brings them into the adapter module, where pytest finds them)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from . import differences
from .factory import FaultTotals


@pytest.fixture
def conformance_target(request: pytest.FixtureRequest) -> tuple[str, bool]:
    """(server, faults): parametrized by the adapter with :func:`conformance.factory.conformance_targets`."""
    return request.param


@pytest.fixture(autouse=True)
def _known_differences(request: pytest.FixtureRequest) -> None:
    """Apply the register of known differences to every test that uses ``backend_factory``."""
    if "backend_factory" in request.fixturenames:
        differences.check_whole_test(request, request.getfixturevalue("backend_factory"))


class _FaultSummary:
    """A plugin registered by the session fixture: prints the totals in pytest's terminal summary."""

    def __init__(self, totals: FaultTotals) -> None:
        self.totals = totals

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.totals.tests:
            terminalreporter.write_line(self.totals.summary())


@pytest.fixture(scope="session")
def conformance_fault_totals(request: pytest.FixtureRequest) -> Iterator[FaultTotals]:
    """Counts what the fault-injected pass injected; reported in the terminal summary."""
    totals = FaultTotals()
    name = "conformance-fault-summary"
    if not request.config.pluginmanager.has_plugin(name):
        request.config.pluginmanager.register(_FaultSummary(totals), name)
    yield totals
