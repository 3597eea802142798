"""Runs the backend conformance suite against PostgreSQL: a plain pass on every selected server, and a
fault-injected pass (serialization failures, ambiguous commits) on one (tests/conformance/factory.py)."""

from __future__ import annotations

import uuid
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from kit.backends.postgres import PostgresBackend

try:  # works whether or not tests/ is a package
    from .conformance import *  # noqa: F401,F403
    from .conformance.factory import SqlFactory, conformance_targets, factory_fixture
    from .conformance.helpers import create, step
    from .servers import selected_servers
except ImportError:
    from conformance import *  # noqa: F401,F403
    from conformance.factory import SqlFactory, conformance_targets, factory_fixture
    from conformance.helpers import create, step
    from servers import selected_servers

FAKE_PASSWORD = "conformance-Secret-77"


def _with_password(url: str) -> tuple[str, str]:
    """The URL and a password in it: the server's own, or a dummy one for trust-auth servers."""
    parts = urlsplit(url)
    if parts.password:
        return url, parts.password
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:{FAKE_PASSWORD}@{host}")), FAKE_PASSWORD


class PostgresFactory(SqlFactory):
    backend_cls = PostgresBackend

    def make(self, cls: type[PostgresBackend]) -> PostgresBackend:
        return cls(self.url, schema=self.schema, pool_size=4, connect_timeout=5, retry_seconds=5)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "conformance_target" in metafunc.fixturenames:
        metafunc.parametrize("conformance_target", conformance_targets(selected_servers(), metafunc.function),
                             indirect=True)


@pytest.fixture
def backend_factory(request, conformance_target, pg_servers, conformance_fault_totals):
    server, faults = conformance_target
    url, secret = _with_password(pg_servers[server])
    factory = PostgresFactory(url, f"t_{uuid.uuid4().hex[:12]}", secret=secret, faults=faults,
                              label=request.node.nodeid)
    yield from factory_fixture(request, factory, conformance_fault_totals)


# -- PostgreSQL-specific checks beyond the generic suite ---------------------------------------------


def test_concurrent_migrate_leaves_one_row_per_version(backend_factory):
    import threading

    backends = [backend_factory(migrate=False) for _ in range(4)]
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def run(b: PostgresBackend) -> None:
        try:
            barrier.wait(10)
            b.migrate()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(b,)) for b in backends]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    rows = backend_factory.sql(f"SELECT version, count(*) FROM {backend_factory.qualify('schema_migrations')} "
                               "GROUP BY version ORDER BY version")
    assert rows and all(count == 1 for _, count in rows), rows
    assert [v for v, _ in rows] == list(range(1, len(rows) + 1))


def test_steps_table_rejects_duplicate_checkpoints(backend_factory):
    """The unique (workflow_id, step_id) key is the last line of defence, even against raw SQL."""
    backend = backend_factory()
    wid, _ = create(backend, owner="worker-a")
    backend.step_record(step(wid, 0, 1, output="1"))
    with pytest.raises(psycopg.errors.UniqueViolation):
        backend_factory.sql(
            f"INSERT INTO {backend_factory.qualify('steps')} (workflow_id, step_id, name, epoch) "
            "VALUES (%s, 0, 'dup', 1)", (wid,))


def test_describe_reports_postgres(backend_factory):
    info = backend_factory().describe()
    assert info["backend"] == "postgres"
    assert info["schema"] == backend_factory.schema
    assert info["server_version"].startswith("PostgreSQL ")
    assert backend_factory.secret not in info["url"]
    assert "***" in info["url"]


def test_capabilities_of_a_real_server(backend_factory):
    caps = backend_factory().capabilities
    assert caps.listen_notify and caps.skip_locked and caps.transactional_steps and caps.advisory_locks
    assert not caps.retry_serialization_failures
    assert caps.server_version.startswith("PostgreSQL ")


def test_concurrent_checkpoints_share_round_trips(backend_factory):
    """Group commit: checkpoints of workflows running at once go out in shared statements."""
    import threading

    backend = backend_factory()
    wids = [create(backend, owner="worker-a")[0] for _ in range(16)]
    barrier = threading.Barrier(len(wids))

    def run(wid: str) -> None:
        barrier.wait(10)
        for k in range(20):
            assert backend.step_record(step(wid, k, 1, output=str(k))).epoch == 1

    threads = [threading.Thread(target=run, args=(w,)) for w in wids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    gc = backend._steps_gc
    assert gc.items == 16 * 20
    assert gc.batches < gc.items  # some round trips carried several checkpoints
    total = backend_factory.sql(f"SELECT count(*) FROM {backend_factory.qualify('steps')}")[0][0]
    assert total == 16 * 20
