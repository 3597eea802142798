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

Extra targets (tests/targets.py)
  citus         a local Citus cluster (coordinator + 2 workers)                  -- if Citus is built
  crdb-profile  the CockroachDB backend's serializable profile on a PostgreSQL server  -- always
  crdb          a real CockroachDB cluster at $KIT_TEST_COCKROACH_URL             -- if set
  Tests marked ``all_backends`` run on them too (their ``pg_url`` is the target's URL), and the modules a
  target lists (``Target.modules``: the CockroachDB targets list the engine and crash modules).

Environment
  KIT_TEST_SERVERS       comma list restricting which of the above run (e.g. ``pgserver16``).
  KIT_TEST_DATABASE_URL  adds the ``external`` server.
  KIT_TEST_TARGETS       comma list of extra targets (``none``: only PostgreSQL servers).
"""

from __future__ import annotations

import atexit
import os
import uuid

import psycopg
import pytest
from psycopg import sql

try:  # works whether or not tests/ is a package
    from .citus_cluster import CitusCluster
    from .servers import DebianPostgres, PgServer
    from .servers import selected_servers as _selected_servers
    from .targets import EXTRA_TARGETS, selected_targets, target_scope, unavailable_report
except ImportError:
    from citus_cluster import CitusCluster
    from servers import DebianPostgres, PgServer
    from servers import selected_servers as _selected_servers
    from targets import EXTRA_TARGETS, selected_targets, target_scope, unavailable_report


def selected_servers() -> list[str]:
    try:
        return _selected_servers()
    except ValueError as e:
        raise pytest.UsageError(str(e)) from None


def extra_targets() -> list[str]:
    try:
        return [t.name for t in selected_targets()]
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
            elif name == "cockroach":  # a real CockroachDB cluster the user runs (tests/targets.py)
                self._urls[name] = os.environ["KIT_TEST_COCKROACH_URL"]
            elif name == "citus":
                handle = CitusCluster(workers=2)
                self._handles.append(handle)
                self._urls[name] = handle.start().url
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
    extra_targets()  # ... and KIT_TEST_TARGETS
    try:
        target_scope()  # ... and KIT_TEST_TARGET_SCOPE
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.addinivalue_line("markers", "all_backends: also run on every extra target (tests/targets.py)")
    config.addinivalue_line("markers", "skip_targets(**reasons): skipped on the named targets, with the reason")


def pytest_report_header(config: pytest.Config) -> list[str]:
    lines = [f"kit test servers: {', '.join(selected_servers())}; extra targets: {', '.join(extra_targets()) or 'none'}"
             f" (scope {target_scope()})"]
    lines += [f"  not available: {line}" for line in unavailable_report()]
    return lines


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "pg_url" in metafunc.fixturenames:
        names = selected_servers()
        marked = metafunc.definition.get_closest_marker("all_backends") is not None
        module = metafunc.module.__name__.rpartition(".")[2]
        names = names + [t for t in extra_targets() if EXTRA_TARGETS[t].runs(module, marked)]
        metafunc.parametrize("pg_url", names, ids=names, indirect=True, scope="session")


def pytest_terminal_summary(terminalreporter) -> None:
    """Print what tests recorded with ``record_property("kit_report", text)`` (e.g. retry counts): shown at the
    end of every run, also under pytest-xdist (user properties travel with the reports)."""
    lines = [value for reports in terminalreporter.stats.values() for rep in reports
             if getattr(rep, "when", None) == "call"
             for name, value in getattr(rep, "user_properties", ()) if name == "kit_report"]
    if lines:
        terminalreporter.write_sep("=", "kit reports")
        for text in lines:
            terminalreporter.write_line(str(text))


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
    target = EXTRA_TARGETS.get(request.param)
    return _pg_pool.url(target.server if target is not None else request.param)


@pytest.fixture(autouse=True)
def _target_backend(request, monkeypatch):
    """On an extra target: skip when the test says it cannot run there, else configure its backend."""
    callspec = getattr(request.node, "callspec", None)
    name = callspec.params.get("pg_url") if callspec is not None else None
    target = EXTRA_TARGETS.get(name) if isinstance(name, str) else None
    if target is None:
        return
    marker = request.node.get_closest_marker("skip_targets")
    if marker is not None and target.name in marker.kwargs:
        pytest.skip(f"not on {target.name}: {marker.kwargs[target.name]}")
    if target.backend is not None:
        monkeypatch.setenv("KIT_BACKEND", target.backend)


@pytest.fixture
def target_name(request) -> str:
    """The server or extra target this test runs on (the ``pg_url`` parameter)."""
    return request.node.callspec.params["pg_url"]


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
    """An opened, migrated backend on the test's schema and server (closed after the test)."""
    from kit.registry import resolve

    cls = resolve(pg_url, os.environ.get("KIT_BACKEND") or None)  # PostgreSQL, or an extra target's backend
    b = cls(pg_url, schema=schema, pool_size=2, retry_seconds=5)
    b.open()
    b.migrate()
    yield b
    b.close()
