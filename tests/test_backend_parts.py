"""The PostgreSQL backend as parts a subclass can swap: statements as class data, the wake-up hook, the
connection class, and the strategies each capability flag selects (lock-row migrations, conditional
migrations, follower reads, serialization retries of transactional steps).

Subclasses here change capabilities or statements on a real PostgreSQL server; the flags they turn off
select the code paths CockroachDB and Citus backends inherit.
"""

from __future__ import annotations

import dataclasses
import threading
from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar

import psycopg
import psycopg.errors
import pytest
from conformance.helpers import create, step, uid
from kit.backends.postgres import Migration, MigrationSet, PostgresBackend, QuerySet
from psycopg import sql

from kit.errors import TransientStorageError
from kit.storage import Capabilities, ForkRequest, NewWorkflow, ServerInfo


def recording_connection() -> type[psycopg.Connection]:
    """A connection class logging every ``execute`` (query text, params): what the backend sent."""

    class Recording(psycopg.Connection):
        log: ClassVar[list[tuple[str, Any]]] = []

        def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:  # type: ignore[override]
            text = query if isinstance(query, str) else query.as_string(self)
            Recording.log.append((text, params))
            return super().execute(query, params, **kwargs)

    return Recording


def with_caps(**flags: bool) -> Any:
    """A capabilities_for that changes some flags of what the probe gives."""

    @classmethod  # type: ignore[misc]
    def capabilities_for(cls: type[PostgresBackend], info: ServerInfo) -> Capabilities:
        return dataclasses.replace(PostgresBackend.capabilities_for(info), **flags)

    return capabilities_for


def make(cls: type[PostgresBackend], url: str, schema: str) -> PostgresBackend:
    backend = cls(url, schema=schema, pool_size=4, retry_seconds=5)
    backend.open()
    backend.migrate()
    return backend


# -- statements as class data ---------------------------------------------------------------------------


class UpperNames(PostgresBackend):
    """Overrides one statement: workflow_get reports names upper-cased (nothing else changes)."""

    queries = PostgresBackend.queries.with_overrides(QuerySet.parse(
        "-- name: workflow_get\n"
        "SELECT workflow_id, upper(name), status, inputs, output, error, queue, app_version, owner, epoch,\n"
        "       lease_expires_at, created_at, started_at, finished_at, recoveries, parent_id\n"
        "  FROM {schema}.workflows WHERE workflow_id = %(workflow_id)s\n"))


def test_subclass_overrides_one_statement(pg_url, schema):
    assert UpperNames.queries["workflow_get"] != PostgresBackend.queries["workflow_get"]
    assert {k for k in UpperNames.queries if UpperNames.queries[k] != PostgresBackend.queries[k]} == {"workflow_get"}
    backend = make(UpperNames, pg_url, schema)
    try:
        wid, _ = create(backend, name="mixed.Case")
        assert backend.workflow_get(wid).name == "MIXED.CASE"  # the override
        assert backend.workflow_children(wid) == [] and backend.step_list(wid) == []  # the rest as before
        from kit.storage import WorkflowQuery
        assert [w.name for w in backend.workflow_list(WorkflowQuery(name="mixed.Case"))] == ["mixed.Case"]
    finally:
        backend.close()


def test_query_sets_refuse_misspelt_overrides_and_silent_replacements():
    with pytest.raises(KeyError, match="workflow_gett"):
        PostgresBackend.queries.with_overrides({"workflow_gett": "SELECT 1"})
    with pytest.raises(KeyError, match="workflow_get"):
        PostgresBackend.queries.plus({"workflow_get": "SELECT 1"})
    extended = PostgresBackend.queries.plus({"extra": "SELECT 1"})
    assert extended["extra"] == "SELECT 1" and "extra" not in PostgresBackend.queries
    with pytest.raises(ValueError, match="twice"):
        QuerySet.parse("-- name: a\nSELECT 1\n-- name: a\nSELECT 2\n")


def test_migration_sets_replace_and_add_versions():
    base = PostgresBackend.migrations
    changed = base.with_overrides([Migration(2, "observability", "SELECT 2"), Migration(base.newest + 1, "x", "")])
    assert [m.version for m in changed] == [m.version for m in base] + [base.newest + 1]
    assert changed[1].body == "SELECT 2" and base[1].body != "SELECT 2"
    assert isinstance(changed, MigrationSet) and changed.newest == base.newest + 1
    assert [m.requires for m in base if m.requires] == ["sql_enqueue_function"]


# -- the wake-up hook -------------------------------------------------------------------------------------


class NotifyOutsideStatements(PostgresBackend):
    """A server where data statements must not notify (Citus): the hook sends every wake-up itself."""

    capabilities_for = with_caps(notify_in_statement=False)
    connection_class = recording_connection()


class Plain(PostgresBackend):
    connection_class = recording_connection()


def _wake_everything(backend: PostgresBackend, user_url: str) -> set[str]:
    """Every kind of write that wakes someone; returns the payloads a listener received."""
    with psycopg.connect(user_url, autocommit=True) as listener:
        listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(backend.wake_channel)))
        running, created = create(backend, owner="w1")
        enqueued, _ = create(backend)
        create(backend, queue="mail")
        backend.message_send(running, "topic", "1")
        backend.event_set(step(running, 0, created.epoch, output="1"), "k")
        backend.stream_write(step(running, 1, created.epoch, output=None), "s", "1")
        released, c2 = create(backend, owner="w2")
        assert backend.workflow_release(released, c2.epoch)
        backend.workflow_cancel(enqueued, '{"type": "X"}')
        assert backend.workflow_resume(enqueued) == [enqueued]
        backend.workflow_fork(ForkRequest(source_id=running, new_id=uid("fork"), from_step=0))
        now = datetime.now(timezone.utc)
        from kit.storage import ScheduleSpec
        backend.schedule_define(ScheduleSpec("tick", "conf.wf", "* * * * *", "UTC", queue="cron"), now)
        assert backend.schedule_advance("tick", now, now + timedelta(minutes=1),
                                        [NewWorkflow(uid("tick"), "conf.wf", "[[], {}]", queue="cron")])
        with psycopg.connect(user_url) as user:
            backend.workflow_enqueue_in(user, NewWorkflow(uid("in-tx"), "conf.wf", "[[], {}]", queue="txq"))
            user.commit()
        got: set[str] = set()
        for note in listener.notifies(timeout=2.0):
            got.add(note.payload)
    return got


EXPECTED_KINDS = {"q:", "q:mail", "q:cron", "q:txq", "m:", "e:", "s:"}


def _kinds(payloads: set[str]) -> set[str]:
    return {p if p.startswith("q:") else p[:2] for p in payloads}


@pytest.mark.parametrize("cls", [Plain, NotifyOutsideStatements], ids=["in-statement", "hook-only"])
def test_every_wake_up_is_delivered_either_way(pg_url, schema, cls):
    backend = make(cls, pg_url, schema)
    cls.connection_class.log.clear()
    try:
        assert _kinds(_wake_everything(backend, pg_url)) == EXPECTED_KINDS
    finally:
        backend.close()
    log = cls.connection_class.log
    channels = [p["channel"] for q, p in log if isinstance(p, dict) and "channel" in p and "pg_notify" in q
                and not q.lstrip().startswith("SELECT pg_notify")]
    hook = [q for q, _ in log if q.lstrip().startswith("SELECT pg_notify")]
    assert channels, "the data statements that can notify ran"
    if cls is Plain:
        assert set(channels) == {backend.wake_channel}  # they notified themselves
        assert len(hook) == 2  # event set and stream append notify inside their transactions
    else:
        assert set(channels) == {None}  # never from inside a data statement
        assert len(hook) >= 9  # every wake-up went through the hook


def test_no_wake_ups_when_notifications_are_off(pg_url, schema):
    backend = Plain(pg_url, schema=schema, pool_size=4, retry_seconds=5, notify=False)
    backend.open()
    backend.migrate()
    Plain.connection_class.log.clear()
    try:
        assert _wake_everything(backend, pg_url) == set()
    finally:
        backend.close()
    assert not [q for q, _ in Plain.connection_class.log if q.lstrip().startswith("SELECT pg_notify")]


def test_connection_class_is_used_for_pool_listener_and_probe(pg_url, schema):
    cls = Plain
    cls.connection_class.log.clear()
    info = cls.probe(pg_url, connect_timeout=5)
    assert info.version.startswith("PostgreSQL") and "plpgsql" in info.extensions
    backend = make(cls, pg_url, schema)
    try:
        assert backend.notify_wait([backend.wake_channel], 0.01) == ["*"]
        assert isinstance(backend._listen_conn, cls.connection_class)
        with backend._pool.connection() as conn:
            assert isinstance(conn, cls.connection_class)
    finally:
        backend.close()
    assert any("version()" in q for q, _ in cls.connection_class.log)


# -- capability-selected strategies -------------------------------------------------------------------------


class LockRowMigrations(PostgresBackend):
    capabilities_for = with_caps(advisory_locks=False)
    connection_class = recording_connection()


def test_migrations_serialise_on_a_lock_row_without_advisory_locks(pg_url, schema):
    backends = [LockRowMigrations(pg_url, schema=schema, pool_size=2, retry_seconds=5) for _ in range(4)]
    for b in backends:
        b.open()
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
    try:
        assert not errors, errors
        with psycopg.connect(pg_url, autocommit=True) as conn:
            counts = conn.execute(sql.SQL("SELECT version, count(*) FROM {}.schema_migrations GROUP BY 1 ORDER BY 1")
                                  .format(sql.Identifier(schema))).fetchall()
            assert [v for v, _ in counts] == [m.version for m in PostgresBackend.migrations]
            assert all(n == 1 for _, n in counts)
            assert conn.execute(sql.SQL("SELECT count(*) FROM {}.schema_lock").format(
                sql.Identifier(schema))).fetchone()[0] == 1
        texts = [q for q, _ in LockRowMigrations.connection_class.log]
        assert not any("pg_advisory" in q for q in texts) and any("FOR UPDATE" in q and "schema_lock" in q
                                                                  for q in texts)
    finally:
        for b in backends:
            b.close()


class NoEnqueueFunction(PostgresBackend):
    capabilities_for = with_caps(sql_enqueue_function=False)


def test_a_migration_requiring_a_missing_capability_is_recorded_not_run(pg_url, schema):
    backend = make(NoEnqueueFunction, pg_url, schema)
    try:
        assert backend.schema_version() == PostgresBackend.migrations.newest
        with psycopg.connect(pg_url, autocommit=True) as conn:
            found = conn.execute("SELECT to_regproc(%s)", (f"{schema}.enqueue",)).fetchone()[0]
        assert found is None
    finally:
        backend.close()
    plain = make(PostgresBackend, pg_url, schema + "_f")
    try:
        assert plain.capabilities.sql_enqueue_function
        with psycopg.connect(pg_url, autocommit=True) as conn:
            assert conn.execute("SELECT to_regproc(%s)", (f"{schema}_f.enqueue",)).fetchone()[0] is not None
    finally:
        plain.drop_schema()
        plain.close()


class FollowerReads(PostgresBackend):
    """Observability reads start with the server's follower-read statement (here a stand-in)."""

    capabilities_for = with_caps(follower_reads=True)
    queries = PostgresBackend.queries.plus({"follower_read": "SET TRANSACTION READ ONLY"})
    connection_class = recording_connection()


def test_follower_reads_wrap_observability_reads(pg_url, schema):
    from kit.storage import MonitorQuery, WorkflowQuery

    backend = make(FollowerReads, pg_url, schema)
    FollowerReads.connection_class.log.clear()
    try:
        wid, _ = create(backend)
        assert [w.workflow_id for w in backend.workflow_list(WorkflowQuery())] == [wid]
        assert backend.monitor_stats(MonitorQuery()).queues
        assert backend.workflow_get(wid) is not None  # engine reads stay on the primary path
    finally:
        backend.close()
    texts = [q for q, _ in FollowerReads.connection_class.log]
    assert texts.count("SET TRANSACTION READ ONLY") == 2


class SerializableRetries(PostgresBackend):
    capabilities_for = with_caps(retry_serialization_failures=True)


RAISE_40001 = "DO $$ BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = '40001'; END $$"


@pytest.mark.parametrize("cls, expected", [(PostgresBackend, TransientStorageError),
                                           (SerializableRetries, TransientStorageError)])
def test_serialization_failure_in_a_transactional_step(pg_url, schema, cls, expected):
    """A 40001 in a transactional step rolled the whole transaction back: the engine runs the step again
    (TransientStorageError), whatever isolation the server defaults to."""
    backend = make(cls, pg_url, schema)
    try:
        wid, created = create(backend, owner="w1")
        with pytest.raises(expected):
            with backend.step_transaction(step(wid, 0, created.epoch)) as tx:
                tx.connection.execute(RAISE_40001)
        with backend.step_transaction(step(wid, 0, created.epoch)) as tx:  # the retry commits
            tx.checkpoint('"ok"')
        assert tx.record is not None and backend.step_list(wid)[0].output == '"ok"'
    finally:
        backend.close()
