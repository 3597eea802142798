"""Conformance: lifecycle, schema migrations, drop_schema, describe() and capabilities."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from kit.errors import SchemaError
from kit.storage import Capabilities, QueueSpec, ScheduleSpec, Status

from .helpers import create, run_threads, step


def test_open_backend_is_usable_and_close_is_idempotent(backend_factory):
    backend = backend_factory()
    wid, created = create(backend)
    assert created.created is True
    assert backend.workflow_get(wid) is not None
    backend.close()
    backend.close()  # idempotent


def test_migrate_is_idempotent(backend_factory):
    backend = backend_factory()  # migrated once already
    version = backend.schema_version()
    assert isinstance(version, int) and version >= 1
    assert backend.migrate() == []
    assert backend.migrate() == []
    assert backend.schema_version() == version
    # Data survives a re-run of migrate.
    wid, _ = create(backend)
    assert backend.migrate() == []
    assert backend.workflow_get(wid) is not None


def test_schema_version_is_none_before_migrate(backend_factory):
    backend = backend_factory(migrate=False)
    assert backend.schema_version() is None
    applied = backend.migrate()
    assert applied, "the first migrate of an empty namespace applies at least one version"
    assert applied == sorted(applied)
    assert len(set(applied)) == len(applied)
    assert backend.schema_version() == max(applied)


def test_concurrent_migrate_applies_each_version_once(backend_factory):
    backends = [backend_factory(migrate=False) for _ in range(4)]
    assert all(b.schema_version() is None for b in backends)
    results = run_threads(4, lambda i: backends[i].migrate())
    applied = [v for r in results for v in r]
    assert applied, "no migrate call applied anything"
    assert len(applied) == len(set(applied)), f"a version was applied twice: {results}"
    expected = max(applied)
    assert sorted(applied) == sorted(set(applied))
    for b in backends:
        assert b.schema_version() == expected
        assert b.migrate() == []
    # All four instances see one consistent store.
    wid, _ = create(backends[0])
    assert all(b.workflow_get(wid) is not None for b in backends)


def test_migration_sql_is_reviewable_ddl(backend_factory):
    backend = backend_factory(migrate=False)
    text = backend.migration_sql()
    assert isinstance(text, str)
    assert "CREATE TABLE" in text.upper()
    assert backend.schema_version() is None, "migration_sql must not apply anything"


def test_describe_hides_the_password(backend_factory):
    backend = backend_factory()
    info = backend.describe()
    assert isinstance(info, dict)
    assert info.get("backend") == backend.name
    text = json.dumps(info, default=str)
    secret = backend_factory.secret
    assert secret and secret not in text, f"describe() leaks the password: {text}"
    assert info.get("schema_version") == backend.schema_version()
    assert info.get("server_version")


def test_capabilities_are_declared(backend_factory):
    backend = backend_factory()
    caps = backend.capabilities
    assert isinstance(caps, Capabilities)
    assert caps.server_version, "capabilities must carry the server version after open()"
    for field in ("listen_notify", "skip_locked", "transactional_steps", "advisory_locks", "follower_reads",
                  "retry_serialization_failures"):
        assert isinstance(getattr(caps, field), bool), field


def test_status_terminal_flags():
    assert not Status.PENDING.terminal and not Status.RUNNING.terminal
    assert Status.SUCCESS.terminal and Status.ERROR.terminal and Status.CANCELLED.terminal


def test_drop_schema_deletes_everything_and_migrate_starts_afresh(backend_factory):
    backend, other = backend_factory(), backend_factory()
    wid, _ = create(backend, owner="worker-a", queue="q1")
    backend.step_record(step(wid, 0, 1, output="1"))
    backend.queue_define(QueueSpec("q1", concurrency=2))
    backend.schedule_define(ScheduleSpec("s1", "conf.wf", "* * * * *", "UTC"), datetime(2030, 1, 1, tzinfo=timezone.utc))
    backend.drop_schema()
    assert backend.schema_version() is None and other.schema_version() is None
    with pytest.raises(SchemaError):  # a clear error naming the fix, not a driver error
        other.workflow_get(wid)
    backend.drop_schema()  # idempotent: nothing left to drop
    assert other.migrate(), "a dropped schema migrates from scratch"
    assert backend.schema_version() == other.schema_version()
    assert backend.workflow_get(wid) is None and backend.step_list(wid) == []
    assert backend.queue_get("q1") is None and backend.schedule_list() == []
    fresh, created = create(backend)
    assert created.created and other.workflow_get(fresh) is not None


def test_drop_schema_of_a_namespace_never_migrated(backend_factory):
    backend = backend_factory(migrate=False)
    backend.drop_schema()
    assert backend.schema_version() is None
    assert backend.migrate()
