"""The conformance suite against a real CockroachDB cluster: a plain pass and a fault-injected pass on the
cluster at ``KIT_TEST_COCKROACH_URL`` (a libpq URL, e.g. ``postgresql://root@host:26257/defaultdb?sslmode=disable``).
Without it the module is skipped with that reason: nothing here downloads or starts CockroachDB."""

from __future__ import annotations

import os
import uuid

import psycopg
import pytest

URL_ENV = "KIT_TEST_COCKROACH_URL"
URL = os.environ.get(URL_ENV, "").strip()
if not URL:
    pytest.skip(f"no CockroachDB cluster: set {URL_ENV} to a libpq URL of one (kit never downloads or starts "
                "CockroachDB)", allow_module_level=True)

from kit.backends.cockroachdb import CockroachBackend  # noqa: E402

try:  # works whether or not tests/ is a package
    from .conformance import *  # noqa: E402,F401,F403
    from .conformance.factory import SqlFactory, conformance_targets, factory_fixture  # noqa: E402
except ImportError:
    from conformance import *  # noqa: E402,F401,F403
    from conformance.factory import SqlFactory, conformance_targets, factory_fixture  # noqa: E402


class CockroachFactory(SqlFactory):
    backend_cls = CockroachBackend

    def make(self, cls: type[CockroachBackend]) -> CockroachBackend:
        return cls(self.url, schema=self.schema, pool_size=4, connect_timeout=5, retry_seconds=10)

    @staticmethod
    def claim_write_at(backend: CockroachBackend) -> str | None:
        """Where its claims commit: one conditional UPDATE at SERIALIZABLE, the COMMIT at READ COMMITTED."""
        return "COMMIT" if backend.claim_isolation == "read committed" else None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "conformance_target" in metafunc.fixturenames:  # "crdb": the plain pass, and the fault pass unless
        # KIT_TEST_FAULT_SERVERS names other servers only
        metafunc.parametrize("conformance_target", conformance_targets(["crdb"], metafunc.function), indirect=True)


@pytest.fixture
def backend_factory(request, conformance_target, conformance_fault_totals):
    _, faults = conformance_target
    secret = psycopg.conninfo.conninfo_to_dict(URL).get("password") or "\x00no-password"
    factory = CockroachFactory(URL, f"t_{uuid.uuid4().hex[:12]}", secret=secret, faults=faults,
                               label=request.node.nodeid)
    yield from factory_fixture(request, factory, conformance_fault_totals)


def test_the_cluster_is_cockroachdb(backend_factory):
    backend = backend_factory()
    assert backend.describe()["backend"] == "cockroachdb"
    assert backend.capabilities.retry_serialization_failures and not backend.capabilities.listen_notify
