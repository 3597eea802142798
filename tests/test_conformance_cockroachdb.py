"""The conformance suite through the CockroachDB backend's serializable PostgreSQL profile
(``cockroachdb-profile``: CockroachDB's statements and retry/claim/migration logic on PostgreSQL at
SERIALIZABLE): a plain pass on every selected PostgreSQL server and a fault-injected pass (40001 and lost
COMMIT acknowledgements at statement boundaries) on one (tests/conformance/factory.py). Known differences of
the backend are declared in tests/conformance/differences.py under ``cockroachdb-profile``.

A real cluster runs the same suite in tests/test_conformance_cockroachdb_cluster.py."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from kit.backends.cockroachdb import SerializableProfileBackend

try:  # works whether or not tests/ is a package
    from .conformance import *  # noqa: F401,F403
    from .conformance.factory import SqlFactory, conformance_targets, factory_fixture
    from .servers import selected_servers
except ImportError:
    from conformance import *  # noqa: F401,F403
    from conformance.factory import SqlFactory, conformance_targets, factory_fixture
    from servers import selected_servers


class ProfileFactory(SqlFactory):
    backend_cls = SerializableProfileBackend

    def make(self, cls: type[SerializableProfileBackend]) -> SerializableProfileBackend:
        return cls(self.url, schema=self.schema, pool_size=4, connect_timeout=5, retry_seconds=5)

    @staticmethod
    def claim_write_at(backend: SerializableProfileBackend) -> str | None:
        """Where its claims commit (tests/conformance/ambiguity.py): at SERIALIZABLE one conditional UPDATE
        (the first boundary), at READ COMMITTED the COMMIT after the SKIP LOCKED read and the update."""
        return "COMMIT" if backend.claim_isolation == "read committed" else None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "conformance_target" in metafunc.fixturenames:
        metafunc.parametrize("conformance_target", conformance_targets(selected_servers(), metafunc.function),
                             indirect=True)


@pytest.fixture
def backend_factory(request, conformance_target, pg_servers, conformance_fault_totals):
    server, faults = conformance_target
    url = pg_servers[server]
    secret = psycopg.conninfo.conninfo_to_dict(url).get("password") or "\x00no-password"
    factory = ProfileFactory(url, f"t_{uuid.uuid4().hex[:12]}", secret=secret, faults=faults,
                             label=request.node.nodeid)
    yield from factory_fixture(request, factory, conformance_fault_totals)


def test_the_profile_is_in_effect(backend_factory):
    backend = backend_factory()
    caps = backend.capabilities
    assert not caps.listen_notify and not caps.advisory_locks and not caps.multi_row_locking_claims
    assert caps.retry_serialization_failures and caps.transactional_steps
    assert backend._run(lambda c: c.execute("SHOW transaction_isolation").fetchone()[0]) == "serializable"
