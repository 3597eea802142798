"""The conformance suite through the PostgreSQL backend's restricted strategies: a deliberate test profile
that turns off what Citus and CockroachDB lack (notifying inside data statements, SKIP LOCKED and
multi-row locking claims, advisory locks) and turns on serialization retries, on a real PostgreSQL.

The paths these flags select (the wake-up hook sending every wake-up itself, row-by-row claims with an
epoch compare-and-set, one statement per grouped checkpoint and finish, lock-row migrations) are the ones
backends for those servers inherit; here they must pass the same contract as the default paths.
"""

from __future__ import annotations

import dataclasses

import psycopg
import pytest
from kit.backends.postgres import PostgresBackend
from psycopg import sql

from kit.storage import Capabilities, ServerInfo

try:  # works whether or not tests/ is a package
    from .conformance import *  # noqa: F401,F403
    from .conformance.observability import *  # noqa: F401,F403
except ImportError:
    from conformance import *  # noqa: F401,F403
    from conformance.observability import *  # noqa: F401,F403


class RestrictedPostgres(PostgresBackend):
    """PostgreSQL driven with Citus' and CockroachDB's restrictions."""

    @classmethod
    def capabilities_for(cls, info: ServerInfo) -> Capabilities:
        return dataclasses.replace(PostgresBackend.capabilities_for(info), notify_in_statement=False,
                                   skip_locked=False, multi_row_locking_claims=False, advisory_locks=False,
                                   retry_serialization_failures=True)


class RestrictedFactory:
    def __init__(self, url: str, schema: str) -> None:
        self.url = url
        self.secret = psycopg.conninfo.conninfo_to_dict(url).get("password") or "\x00no-password"
        self.schema = schema
        self._made: list[PostgresBackend] = []

    def __call__(self, *, migrate: bool = True) -> PostgresBackend:
        backend = RestrictedPostgres(self.url, schema=self.schema, pool_size=4, connect_timeout=5, retry_seconds=5)
        backend.open()
        self._made.append(backend)
        if migrate:
            backend.migrate()
        return backend

    def qualify(self, table: str) -> str:
        return f"{sql.Identifier(self.schema).as_string(None)}.{sql.Identifier(table).as_string(None)}"

    def sql(self, query: str, params: tuple = ()) -> list[tuple]:
        with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else []

    def close_all(self) -> None:
        for backend in self._made:
            backend.close()


@pytest.fixture
def backend_factory(pg_url, schema):
    factory = RestrictedFactory(pg_url, schema)
    yield factory
    factory.close_all()


def test_the_profile_is_in_effect(backend_factory):
    caps = backend_factory().capabilities
    assert caps.listen_notify and not caps.notify_in_statement
    assert not caps.skip_locked and not caps.multi_row_locking_claims and not caps.advisory_locks
