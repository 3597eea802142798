"""The conformance suite through the CockroachDB backend: on its serializable PostgreSQL profile
(``cockroachdb-profile``: CockroachDB's statements and retry/claim/migration logic on every selected
PostgreSQL server at SERIALIZABLE), and on a real cluster when ``KIT_TEST_COCKROACH_URL`` is set."""

from __future__ import annotations

import psycopg
import pytest
from kit.backends.cockroachdb import SerializableProfileBackend
from psycopg import sql

try:  # works whether or not tests/ is a package
    from .conformance import *  # noqa: F401,F403
    from .conformance.observability import *  # noqa: F401,F403
except ImportError:
    from conformance import *  # noqa: F401,F403
    from conformance.observability import *  # noqa: F401,F403


class ProfileFactory:
    def __init__(self, url: str, schema: str) -> None:
        self.url = url
        self.secret = psycopg.conninfo.conninfo_to_dict(url).get("password") or "\x00no-password"
        self.schema = schema
        self._made: list[SerializableProfileBackend] = []

    def __call__(self, *, migrate: bool = True) -> SerializableProfileBackend:
        backend = SerializableProfileBackend(self.url, schema=self.schema, pool_size=4, connect_timeout=5,
                                             retry_seconds=5)
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
    factory = ProfileFactory(pg_url, schema)
    yield factory
    factory.close_all()
