"""Runs the backend conformance suite against a local Citus cluster (coordinator + 2 workers)."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from kit.backends.citus import CitusBackend
from psycopg import sql

try:  # works whether or not tests/ is a package
    from .conformance import *  # noqa: F401,F403
    from .conformance.observability import *  # noqa: F401,F403
    from .targets import EXTRA_TARGETS
except ImportError:
    from conformance import *  # noqa: F401,F403
    from conformance.observability import *  # noqa: F401,F403
    from targets import EXTRA_TARGETS



class CitusFactory:
    def __init__(self, url: str, schema: str) -> None:
        self.url = url
        self.secret = psycopg.conninfo.conninfo_to_dict(url).get("password") or "\x00"
        self.schema = schema
        self._made: list[CitusBackend] = []

    def __call__(self, *, migrate: bool = True) -> CitusBackend:
        backend = CitusBackend(self.url, schema=self.schema,
                               pool_size=4, connect_timeout=5, retry_seconds=5)
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
        with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(self.schema)))


@pytest.fixture
def backend_factory(_pg_pool):
    why = EXTRA_TARGETS["citus"].unavailable()
    if why:
        pytest.skip(why)
    factory = CitusFactory(_pg_pool.url("citus"), f"t_{uuid.uuid4().hex[:12]}")
    yield factory
    factory.close_all()
