"""The conformance suite through the PostgreSQL backend's restricted strategies: a deliberate test profile
that turns off what Citus and CockroachDB lack (notifying inside data statements, SKIP LOCKED and
multi-row locking claims, advisory locks) and turns on serialization retries, on a real PostgreSQL.

The paths these flags select (the wake-up hook sending every wake-up itself, row-by-row claims with an
epoch compare-and-set, one statement per grouped checkpoint and finish, lock-row migrations) are the ones
backends for those servers inherit; here they must pass the same contract as the default paths.
"""

from __future__ import annotations

import dataclasses
import uuid

import psycopg
import pytest
from kit.backends.postgres import PostgresBackend

from kit.storage import Capabilities, ServerInfo

try:  # works whether or not tests/ is a package
    from .conformance import *  # noqa: F401,F403
    from .conformance.factory import SqlFactory, factory_fixture
    from .servers import selected_servers
except ImportError:
    from conformance import *  # noqa: F401,F403
    from conformance.factory import SqlFactory, factory_fixture
    from servers import selected_servers


class RestrictedPostgres(PostgresBackend):
    """PostgreSQL driven with Citus' and CockroachDB's restrictions."""

    @classmethod
    def capabilities_for(cls, info: ServerInfo) -> Capabilities:
        return dataclasses.replace(PostgresBackend.capabilities_for(info), notify_in_statement=False,
                                   skip_locked=False, multi_row_locking_claims=False, advisory_locks=False,
                                   retry_serialization_failures=True)


class RestrictedFactory(SqlFactory):
    backend_cls = RestrictedPostgres

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.name = "postgres-restricted"  # its own entries in the register of known differences

    def make(self, cls: type[PostgresBackend]) -> PostgresBackend:
        return cls(self.url, schema=self.schema, pool_size=4, connect_timeout=5, retry_seconds=5)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "conformance_target" in metafunc.fixturenames:  # the plain pass on every server (no fault pass)
        metafunc.parametrize("conformance_target", [pytest.param((s, False), id=s) for s in selected_servers()],
                             indirect=True)


@pytest.fixture
def backend_factory(request, conformance_target, pg_servers, conformance_fault_totals):
    server, _ = conformance_target
    url = pg_servers[server]
    secret = psycopg.conninfo.conninfo_to_dict(url).get("password") or "\x00no-password"
    factory = RestrictedFactory(url, f"t_{uuid.uuid4().hex[:12]}", secret=secret, label=request.node.nodeid)
    yield from factory_fixture(request, factory, conformance_fault_totals)


def test_the_profile_is_in_effect(backend_factory):
    caps = backend_factory().capabilities
    assert caps.listen_notify and not caps.notify_in_statement
    assert not caps.skip_locked and not caps.multi_row_locking_claims and not caps.advisory_locks
