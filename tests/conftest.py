"""Shared fixtures: real PostgreSQL servers, started lazily once per session.

Fixtures
  pg_servers  (session)  dict name -> URL of every selected server (starts them all).
  pg_url      (session, parametrized by server name)  URL of one server; any test that uses
              it (directly or through another fixture) runs once per selected server, with the
              server name as test id, e.g. ``test_x[pgserver16]``, ``test_x[debian15]``.
  schema      (function)  fresh schema name ``t_<12 hex>``; dropped (CASCADE) afterwards on the
              ``pg_url`` server when the test also uses ``pg_url``.

Servers
  pgserver16  PostgreSQL 16 from the ``pgserver`` wheel (unix socket, trust)       -- always
  debian15    Debian ``postgresql-15`` on 127.0.0.1, password auth              -- if installed
  external    the URL in $KIT_TEST_DATABASE_URL                                 -- if set

Environment
  KIT_TEST_SERVERS       comma list restricting which of the above run (e.g. ``pgserver16``).
  KIT_TEST_DATABASE_URL  adds the ``external`` server.
"""

from __future__ import annotations

import atexit
import os
import uuid

import psycopg
import pytest
from psycopg import sql

try:  # works whether or not tests/ is a package
    from .servers import DebianPostgres, PgServer
    from .servers import selected_servers as _selected_servers
except ImportError:
    from servers import DebianPostgres, PgServer
    from servers import selected_servers as _selected_servers


def selected_servers() -> list[str]:
    try:
        return _selected_servers()
    except ValueError as e:
        raise pytest.UsageError(str(e)) from None


class _ServerPool:
    """Starts servers on first use and stops everything it started at session end."""

    def __init__(self) -> None:
        self._urls: dict[str, str] = {}
        self._handles: list = []
        atexit.register(self.stop_all)  # safety net if session teardown is skipped

    def url(self, name: str) -> str:
        if name not in self._urls:
            if name == "pgserver16":
                handle = PgServer()
                self._handles.append(handle)
                self._urls[name] = handle.start().url
            elif name == "debian15":
                handle = DebianPostgres()
                self._handles.append(handle)
                self._urls[name] = handle.start().url
            elif name == "external":
                self._urls[name] = os.environ["KIT_TEST_DATABASE_URL"]
            else:
                raise KeyError(f"unknown test server {name!r}")
        return self._urls[name]

    def stop_all(self) -> None:
        handles, self._handles = self._handles, []
        self._urls.clear()
        for h in reversed(handles):
            try:
                h.stop()
            except Exception as e:  # keep stopping the others
                print(f"warning: failed to stop test server {h!r}: {e}")


def pytest_configure(config: pytest.Config) -> None:
    selected_servers()  # fail fast on a bad KIT_TEST_SERVERS


def pytest_report_header(config: pytest.Config) -> str:
    return f"kit test servers: {', '.join(selected_servers())}"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "pg_url" in metafunc.fixturenames:
        names = selected_servers()
        metafunc.parametrize("pg_url", names, ids=names, indirect=True, scope="session")


@pytest.fixture(scope="session")
def _pg_pool():
    pool = _ServerPool()
    yield pool
    pool.stop_all()


@pytest.fixture(scope="session")
def pg_servers(_pg_pool) -> dict[str, str]:
    return {name: _pg_pool.url(name) for name in selected_servers()}


@pytest.fixture(scope="session")
def pg_url(request, _pg_pool) -> str:
    return _pg_pool.url(request.param)


@pytest.fixture
def schema(request):
    name = f"t_{uuid.uuid4().hex[:12]}"
    url = request.getfixturevalue("pg_url") if "pg_url" in request.fixturenames else None
    yield name
    if url is None:
        return
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
            conn.execute("SET lock_timeout = '10s'")
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))
    except Exception:
        pass


@pytest.fixture
def backend(pg_url: str, schema: str):
    """An opened, migrated PostgreSQL backend on the test's schema (closed after the test)."""
    from kit.backends.postgres import PostgresBackend

    b = PostgresBackend(pg_url, schema=schema, pool_size=2, retry_seconds=5)
    b.open()
    b.migrate()
    yield b
    b.close()
