"""The CockroachDB backend's own logic on its serializable PostgreSQL profile, on every selected PostgreSQL
server: real serialization failures (40001) retried whole and counted, the retry bound, ambiguous results
(a real 40003 from the server right after a committed statement) resolved by reading back, lock-row
migrations, the plain INSERT other languages enqueue with, and many workers contending for one queue (the
retry counts per operation are printed: run with -s to see them)."""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections import Counter
from typing import Any, ClassVar

import psycopg
import psycopg.errors
import pytest
from kit.backends.cockroachdb import RetryPolicy, SerializableProfileBackend, format_stats
from kit.backends.cockroachdb.backend import build_queries
from kit.backends.cockroachdb.dialect import Dialect
from kit.backends.cockroachdb.retry import OperationStats, ProfileConnection
from psycopg import sql

import kit
from kit.errors import TransientStorageError
from kit.storage import ClaimRequest, Finish, MonitorQuery, NewWorkflow, Status, StepResult, WorkflowQuery

PROFILE = "cockroachdb-profile"


def _open(cls: type[SerializableProfileBackend], url: str, schema: str, **kw: Any) -> SerializableProfileBackend:
    b = cls(url, schema=schema, pool_size=kw.pop("pool_size", 4), retry_seconds=kw.pop("retry_seconds", 10), **kw)
    b.open()
    return b


@pytest.fixture
def profile(pg_url, schema):
    made: list[SerializableProfileBackend] = []

    def make(cls: type[SerializableProfileBackend] = SerializableProfileBackend, *, migrate: bool = True,
             **kw: Any) -> SerializableProfileBackend:
        b = _open(cls, pg_url, schema, **kw)
        made.append(b)
        if migrate:
            b.migrate()
        return b

    yield make
    for b in made:
        b.close()


def _sql(url: str, query: Any, params: Any = ()) -> list[tuple]:
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


def _owned(backend: SerializableProfileBackend, owner: str = "w-a") -> str:
    wid = f"wf-{uuid.uuid4().hex[:10]}"
    backend.workflow_create(NewWorkflow(workflow_id=wid, name="p.wf", inputs='{"args": [], "kwargs": {}}',
                                        owner=owner, lease_seconds=60))
    return wid


def test_every_session_of_the_profile_is_serializable(profile):
    b = profile()
    levels = {b._run(lambda c: c.execute("SHOW transaction_isolation").fetchone()[0]) for _ in range(6)}
    assert levels == {"serializable"}
    assert b.describe()["note"].startswith("serializable PostgreSQL profile")
    assert not b.capabilities.listen_notify and not b.capabilities.advisory_locks
    assert b.capabilities.retry_serialization_failures and b.capabilities.transactional_steps


def test_kit_db_names_the_profile_and_its_capabilities(pg_url, schema, monkeypatch, capsys):
    from kit.cli import main

    monkeypatch.setenv("KIT_BACKEND", PROFILE)
    assert main(["db", "--database-url", pg_url, "--schema", schema]) == 0
    out = " ".join(capsys.readouterr().out.split())  # wrapped lines joined
    assert f"backend {PROFILE} note serializable PostgreSQL profile" in out and "not CockroachDB" in out
    assert "server PostgreSQL " in out and "claims serializable (mode serializable)" in out
    assert "capabilities transactional_steps, retry_serialization_failures" in out


def test_detection_keeps_refusing_cockroachdb_on_a_postgres_server(pg_url, schema):
    from kit.backends.cockroachdb import CockroachBackend

    import kit.registry as registry
    from kit.errors import ConfigError

    b = CockroachBackend(pg_url, schema=schema)
    with pytest.raises(ConfigError, match="set backend='postgres'"):
        b.open()
    assert registry.resolve(pg_url).name == "postgres"  # the profile is never chosen by detection


def _wait_for_lock_wait(url: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _sql(url, "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")[0][0]:
            return
        time.sleep(0.01)
    raise AssertionError("the backend's statement never waited for the row lock")


def test_a_real_serialization_failure_is_retried_whole(profile, pg_url, schema):
    """A concurrent transaction updates the row a finish is waiting to update: PostgreSQL at SERIALIZABLE
    fails the finish with 40001; the backend runs it again and it succeeds (the epoch did not change)."""
    b = profile()
    wid = _owned(b)
    table = sql.Identifier(schema, "workflows")
    got: list[Any] = []
    with psycopg.connect(pg_url, autocommit=False) as other:
        other.execute(sql.SQL("UPDATE {} SET priority = priority + 1 WHERE workflow_id = %s").format(table), (wid,))
        t = threading.Thread(target=lambda: got.append(b.workflow_finish(Finish(wid, 1, Status.SUCCESS, output="1"))))
        t.start()
        _wait_for_lock_wait(pg_url)
        other.commit()
    t.join(30)
    assert got == [True]
    stats = b.retry_stats()["workflow_finish"]
    assert stats.retries >= 1 and stats.exhausted == 0, stats
    assert b.workflow_get(wid).status == Status.SUCCESS


def test_a_transactional_step_rolled_back_by_a_conflict_leaves_nothing_and_runs_again(profile, pg_url, schema):
    """G4 under a real 40001: the step's body writes, a heartbeat-like update of its workflow row commits
    meanwhile, and the checkpoint's read of that row fails the whole transaction. Nothing of the step is
    left; the step is reported transient (the engine runs it again) and its second run commits both."""
    from kit.errors import LeaseLostError

    b = profile()
    wid = _owned(b)
    table = sql.Identifier(schema, "user_rows")
    _sql(pg_url, sql.SQL("CREATE TABLE {} (k text)").format(table))
    with pytest.raises(TransientStorageError):
        with b.step_transaction(StepResult(wid, 0, "tx", 1)) as tx:
            tx.connection.execute(sql.SQL("INSERT INTO {} VALUES ('first run')").format(table))
            _sql(pg_url, sql.SQL("UPDATE {} SET lease_expires_at = now() + interval '1 minute' "
                                 "WHERE workflow_id = %s").format(sql.Identifier(schema, "workflows")), (wid,))
            tx.checkpoint('"one"')
    assert _sql(pg_url, sql.SQL("SELECT k FROM {}").format(table)) == [] and b.step_list(wid) == []
    assert b.retry_stats()["step_transaction"].retries == 1
    with b.step_transaction(StepResult(wid, 0, "tx", 1)) as tx:
        tx.connection.execute(sql.SQL("INSERT INTO {} VALUES ('second run')").format(table))
        tx.checkpoint('"two"')
    assert tx.record is not None and tx.record.output == '"two"'
    assert _sql(pg_url, sql.SQL("SELECT k FROM {}").format(table)) == [("second run",)]
    # A takeover while the body ran is a lost lease, not a reason to run the body again.
    with pytest.raises(LeaseLostError):
        with b.step_transaction(StepResult(wid, 1, "tx2", 1)) as tx:
            tx.connection.execute(sql.SQL("INSERT INTO {} VALUES ('fenced')").format(table))
            assert b.workflow_release(wid, 1)
            tx.checkpoint('"never"')
    assert _sql(pg_url, sql.SQL("SELECT k FROM {}").format(table)) == [("second run",)]


class _StaleReads(SerializableProfileBackend):
    """The follower-read path with a statement PostgreSQL has: every observability read in a transaction that
    starts with it (on a cluster: SET TRANSACTION AS OF SYSTEM TIME follower_read_timestamp())."""

    queries = build_queries(Dialect("stale-reads-on-postgres", "", {"follower_read": "SET TRANSACTION READ ONLY"}))

    def open(self) -> None:
        super().open()
        self._caps = dataclasses.replace(self._caps, follower_reads=True)


def test_observability_reads_run_behind_the_follower_read_statement(profile):
    b = profile(_StaleReads)
    wid = _owned(b)
    b.message_send(wid, "t", '"m"')
    assert b.capabilities.follower_reads
    assert [w.workflow_id for w in b.workflow_list(WorkflowQuery())] == [wid]
    assert b.queue_list() and [m.body for m in b.message_list(wid)] == ['"m"']
    stats = b.monitor_stats(MonitorQuery())
    assert stats.queues and stats.queues[0].in_flight == 1
    assert b.event_list(wid) == [] and b.stream_list(wid) == [] and b.workflow_children(wid) == []
    # ...and each of them really ran in that read-only transaction:
    assert b._observe(lambda c: c.execute("SHOW transaction_read_only").fetchone()[0]) == "on"
    assert b._run(lambda c: c.execute("SHOW transaction_read_only").fetchone()[0]) == "off"


class _Always40001(ProfileConnection):
    """Every UPDATE of the workflows table fails with 40001 (as on a cluster under endless contention)."""

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
        text = query.as_string(self) if isinstance(query, sql.Composable) else str(query)
        if text.lstrip().upper().startswith("UPDATE") and ".workflows" in text:
            raise psycopg.errors.SerializationFailure("restart transaction: injected for the retry bound")
        return super().execute(query, params, **kwargs)


class _Contended(SerializableProfileBackend):
    connection_class = _Always40001
    retry_policy = RetryPolicy(max_attempts=4, base=0.001, cap=0.004)


def test_the_retry_bound_gives_up_with_a_transient_error(profile):
    b = profile(_Contended)
    wid = _owned(b)
    with pytest.raises(TransientStorageError, match="4 serialization failures in a row"):
        b.workflow_release(wid, 1)
    assert b.retry_stats()["workflow_release"] == OperationStats(calls=1, retries=3, lost=0, exhausted=1,
                                                                 max_retries_in_call=4)


class _AmbiguousOnce(ProfileConnection):
    """After the first statement that starts with ``target`` has run (and, in autocommit, committed), the
    server answers the next statement with SQLSTATE 40003, as CockroachDB does when a commit's outcome is
    unknown to the gateway. The backend must not guess: it reads the outcome back."""

    target: ClassVar[str] = ""
    fired: ClassVar[list[str]] = []

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
        text = query.as_string(self) if isinstance(query, sql.Composable) else str(query)
        result = super().execute(query, params, **kwargs)
        if not type(self).fired and " ".join(text.split()).startswith(type(self).target):
            type(self).fired.append(text)
            super().execute("DO $$ BEGIN RAISE EXCEPTION 'result is ambiguous (injected)' "
                            "USING ERRCODE = '40003'; END $$")
        return result


def _ambiguous(target: str) -> type[SerializableProfileBackend]:
    conn = type("AmbiguousConnection", (_AmbiguousOnce,), {"target": target, "fired": []})
    return type("AmbiguousProfile", (SerializableProfileBackend,), {"connection_class": conn})


def test_an_ambiguous_checkpoint_is_read_back(profile, pg_url, schema):
    b = profile()
    wid = _owned(b)
    amb = profile(_ambiguous("INSERT INTO"), migrate=False)
    rec = amb.step_record(StepResult(wid, 0, "s0", 1, output='"x"'))
    assert amb.connection_class.fired, "no ambiguity injected"
    assert (rec.step_id, rec.epoch, rec.output) == (0, 1, '"x"')
    assert [(s.step_id, s.output) for s in b.step_list(wid)] == [(0, '"x"')]
    assert amb.retry_stats()["step_record"].lost == 1


def test_an_ambiguous_finish_is_read_back(profile):
    b = profile()
    wid = _owned(b)
    amb = profile(_ambiguous("UPDATE"), migrate=False)
    assert amb.workflow_finish(Finish(wid, 1, Status.SUCCESS, output="2")) is True
    assert amb.connection_class.fired
    assert b.workflow_get(wid).status == Status.SUCCESS


def test_an_ambiguous_claim_returns_what_it_claimed(profile):
    """The claim committed; its acknowledgement was ambiguous. The retry reads the rows back by the claim's
    token instead of claiming again (or returning nothing while the rows stay leased to us)."""
    b = profile()
    wids = sorted(b.workflow_create(NewWorkflow(workflow_id=f"q-{i}", name="p.wf", inputs="[]")) and f"q-{i}"
                  for i in range(3))
    amb = profile(_ambiguous("WITH candidates"), migrate=False)
    claims = amb.workflow_claim(ClaimRequest(owner="w-amb", names=["p.wf"], limit=2, lease_seconds=60))
    assert amb.connection_class.fired
    assert sorted(c.workflow_id for c in claims) == wids[:2] and all(c.epoch == 1 for c in claims)
    running = {w: b.workflow_get(w) for w in wids}
    assert [w for w, r in running.items() if r.status == Status.RUNNING] == wids[:2]
    assert all(running[w].owner == "w-amb" and running[w].epoch == 1 for w in wids[:2])


@pytest.mark.parametrize("at", ["CREATE INDEX", "INSERT INTO"])  # a schema change; the version's record
def test_lost_ack_of_a_migration_statement_is_read_back(pg_url, schema, at):
    """Each schema change runs in a transaction of its own: an ambiguous acknowledgement of one (it committed,
    the reply was lost) is retried idempotently, and migrate still reports every version it applied."""
    try:
        from .conformance.faults import OneFault, fault_injecting
    except ImportError:
        from conformance.faults import OneFault, fault_injecting

    plan = OneFault("migrate", "ambiguous", at)
    b = _open(fault_injecting(SerializableProfileBackend, plan), pg_url, schema)
    try:
        applied = b.migrate()
    finally:
        b.close()
    assert plan.total == 1, plan.log
    newest = SerializableProfileBackend.migrations.newest
    assert applied == list(range(1, newest + 1))
    assert _sql(pg_url, sql.SQL("SELECT count(*), max(version) FROM {}").format(
        sql.Identifier(schema, "schema_migrations"))) == [(newest, newest)]


def test_concurrent_migrators_take_turns_on_the_lock_row(profile, pg_url, schema):
    backends = [profile(migrate=False) for _ in range(4)]
    barrier = threading.Barrier(4)
    applied: list[list[int]] = []
    errors: list[BaseException] = []

    def run(b: SerializableProfileBackend) -> None:
        try:
            barrier.wait(10)
            applied.append(b.migrate())
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(b,)) for b in backends]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    newest = SerializableProfileBackend.migrations.newest
    assert sorted(v for a in applied for v in a) == list(range(1, newest + 1)), "each version applied once"
    rows = _sql(pg_url, sql.SQL("SELECT version, count(*) FROM {} GROUP BY version ORDER BY version").format(
        sql.Identifier(schema, "schema_migrations")))
    assert rows == [(v, 1) for v in range(1, newest + 1)]
    assert _sql(pg_url, sql.SQL("SELECT holder FROM {}").format(sql.Identifier(schema, "migration_lock"))) == [(None,)]


def test_a_stale_migration_lock_is_taken_over(profile, pg_url, schema):
    b = profile(migrate=False)
    b._run(b._prepare)
    lock = sql.Identifier(schema, "migration_lock")
    _sql(pg_url, sql.SQL("INSERT INTO {} VALUES (1, 'a-dead-migrator', now() - interval '1 hour')").format(lock))
    assert b.migrate() == list(range(1, b.migrations.newest + 1))
    assert _sql(pg_url, sql.SQL("SELECT holder FROM {}").format(lock)) == [(None,)]


def test_a_plain_insert_enqueues_a_workflow(pg_url, schema):
    """The documented way for another language to enqueue on CockroachDB (no SQL function there): one INSERT;
    workers find it at their next poll."""
    app = kit.Kit(database_url=pg_url, backend=PROFILE, schema=schema, poll_seconds=0.05, lease_seconds=5,
                  heartbeat_seconds=1)

    @app.workflow(name="ext.greet")
    def greet(name: str, *, punctuation: str = "!") -> str:
        return f"hello {name}{punctuation}"

    try:
        app.launch()
        _sql(pg_url, sql.SQL(
            "INSERT INTO {}.workflows (workflow_id, name, status, inputs, queue, priority, dedup_id, run_at, "
            "partition_key) VALUES (%s, %s, 'PENDING', %s, NULL, 0, NULL, NULL, NULL) "
            "ON CONFLICT (workflow_id) DO NOTHING").format(sql.Identifier(schema)),
            ("from-sql-1", "ext.greet", '{"args": ["go"], "kwargs": {"punctuation": "?"}}'))
        assert app.retrieve("from-sql-1").result(timeout=30) == "hello go?"
    finally:
        app.close()


# -- contention -------------------------------------------------------------------------------------------


WORKERS = 6
PER_WORKER = 4
WORKFLOWS = 120
CAPPED = 24


@pytest.mark.parametrize("claims", ["serializable", "read_committed"])
def test_many_workers_contending_for_one_queue(pg_url, schema, claims, monkeypatch, record_property, target_name):
    """Six worker processes' worth of apps claim from one queue at once, each workflow with a plain step, a
    transactional step writing a ledger row and a second plain step, plus a queue capped at 2 running. At
    SERIALIZABLE, PostgreSQL fails conflicting claims, checkpoints and finishes with 40001; every one is
    retried whole. Afterwards: every workflow succeeded once, each plain step ran once, the ledger holds one
    row per workflow (G4: the step's write committed iff its checkpoint did), the cap held (G7)."""
    monkeypatch.setenv("KIT_COCKROACH_CLAIMS", claims)
    _sql(pg_url, sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
    ledger = sql.Identifier(schema, "ledger")
    _sql(pg_url, sql.SQL("CREATE TABLE {} (workflow_id text NOT NULL, step text NOT NULL)").format(ledger))
    runs: Counter[tuple[str, str]] = Counter()
    lock = threading.Lock()
    capped_now = [0, 0]  # running, max seen

    def make_app() -> kit.Kit:
        app = kit.Kit(database_url=pg_url, backend=PROFILE, schema=schema, worker_concurrency=PER_WORKER,
                      poll_seconds=0.05, lease_seconds=30, heartbeat_seconds=2)

        @app.step(name="c.first")
        def first(wid: str) -> str:
            with lock:
                runs[(wid, "first")] += 1
            return wid

        @app.transaction(name="c.write")
        def write(conn: psycopg.Connection, wid: str) -> int:
            conn.execute(sql.SQL("INSERT INTO {} (workflow_id, step) VALUES (%s, 'write')").format(ledger), (wid,))
            return 1

        @app.step(name="c.last")
        def last(wid: str) -> str:
            with lock:
                runs[(wid, "last")] += 1
            return wid

        @app.workflow(name="c.wf")
        def wf(wid: str) -> str:
            first(wid)
            write(wid)
            return last(wid)

        @app.step(name="c.slow")
        def slow() -> None:
            with lock:
                capped_now[0] += 1
                capped_now[1] = max(capped_now[1], capped_now[0])
            time.sleep(0.02)
            with lock:
                capped_now[0] -= 1

        @app.workflow(name="c.capped")
        def capped() -> None:
            slow()

        app.queue("capped", concurrency=2)
        return app

    producer = make_app()
    apps = [make_app() for _ in range(WORKERS)]
    try:
        handles = [producer.enqueue("c.wf", f"w{i:03d}", workflow_id=f"w{i:03d}") for i in range(WORKFLOWS)]
        capped_q = next(q for q in producer.queues() if q.name == "capped")
        handles += [capped_q.enqueue("c.capped") for _ in range(CAPPED)]
        for app in apps:
            app.launch()
        for h in handles[:WORKFLOWS]:
            assert h.result(timeout=120) == h.workflow_id
        for h in handles[WORKFLOWS:]:
            h.result(timeout=120)
    finally:
        backends = [app.backend for app in [producer, *apps]]
        for app in apps:
            app.close()
        producer.close()
        stats: dict[str, OperationStats] = {}
        for backend in backends:
            for op, s in backend.retry_stats().items():
                t = stats.setdefault(op, OperationStats())
                t.calls += s.calls
                t.retries += s.retries
                t.lost += s.lost
                t.exhausted += s.exhausted
                t.max_retries_in_call = max(t.max_retries_in_call, s.max_retries_in_call)
        report = (f"[{target_name}, {claims} claims, {WORKERS} workers x {PER_WORKER}, {WORKFLOWS} + {CAPPED} "
                  f"workflows] " + format_stats(stats))
        print("\n" + report)
        record_property("kit_report", report)  # printed in the terminal summary (tests/conftest.py)
    wids = [f"w{i:03d}" for i in range(WORKFLOWS)]
    assert all(runs[(w, "first")] == 1 and runs[(w, "last")] == 1 for w in wids), "a plain step ran twice"
    rows = Counter(r[0] for r in _sql(pg_url, sql.SQL("SELECT workflow_id FROM {}").format(ledger)))
    assert rows == Counter({w: 1 for w in wids}), "a transactional step's write committed without its checkpoint"
    assert capped_now[1] <= 2, f"queue cap exceeded: {capped_now[1]} running at once"
    steps = _sql(pg_url, sql.SQL("SELECT workflow_id, count(*) FROM {} WHERE workflow_id LIKE 'w%%' "
                                 "GROUP BY workflow_id").format(sql.Identifier(schema, "steps")))
    assert sorted(steps) == [(w, 3) for w in wids]
    assert sum(s.exhausted for s in stats.values()) == 0, "a retry budget ran out"
    assert sum(s.retries for s in stats.values()) > 0, "no serialization failure at all: the test did not contend"
