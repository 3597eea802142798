"""Runs the backend conformance suite against a local Citus cluster (coordinator + 2 workers on loopback,
tests/citus_cluster.py): a plain pass and a fault-injected pass (serialization failures, ambiguous commits;
tests/conformance/factory.py). Known differences of the citus backend are in the register,
tests/conformance/differences.py. Citus-specific checks (plans, two-phase commits, wake-ups) are in
tests/test_citus.py."""

from __future__ import annotations

import uuid

import pytest
from kit.backends.citus import CitusBackend

try:  # works whether or not tests/ is a package
    from .conformance import *  # noqa: F401,F403
    from .conformance.factory import SqlFactory, conformance_targets, factory_fixture
    from .targets import EXTRA_TARGETS
except ImportError:
    from conformance import *  # noqa: F401,F403
    from conformance.factory import SqlFactory, conformance_targets, factory_fixture
    from targets import EXTRA_TARGETS

SERVERS = ["citus"]  # the target's server in the session's pool (tests/conftest.py)


class CitusFactory(SqlFactory):
    backend_cls = CitusBackend

    def make(self, cls: type[CitusBackend]) -> CitusBackend:
        return cls(self.url, schema=self.schema, pool_size=4, connect_timeout=5, retry_seconds=5)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "conformance_target" in metafunc.fixturenames:
        metafunc.parametrize("conformance_target", conformance_targets(SERVERS, metafunc.function), indirect=True)


@pytest.fixture
def backend_factory(request, conformance_target, _pg_pool, conformance_fault_totals):
    why = EXTRA_TARGETS["citus"].unavailable()
    if why is not None:
        pytest.skip(why)
    server, faults = conformance_target
    url = _pg_pool.url(server)
    secret = url.partition("://")[2].partition("@")[0].partition(":")[2]  # the cluster's password
    factory = CitusFactory(url, f"t_{uuid.uuid4().hex[:12]}", secret=secret, faults=faults,
                           label=request.node.nodeid)
    yield from factory_fixture(request, factory, conformance_fault_totals)
