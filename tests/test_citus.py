"""The citus backend on a real local Citus cluster (coordinator + 2 workers, tests/citus_cluster.py): what the
conformance suite cannot see from the storage interface.

* every statement the backend sends is a single-shard (router) statement except a short, documented list of
  reads (and the heartbeat), proven by Citus itself: the guarded statements run with
  ``citus.multi_task_query_log_level = error``, which fails any statement that would run on several shards;
* which operations commit with two-phase commit (``pg_dist_transaction``), as docs/backends.md states;
* an enqueue wakes an idle worker by notification (its poll period is an hour);
* the shard-count setting, ``citus://`` URLs and detection, limited queues declared after their work was
  enqueued, the dedup key shared with SQL.
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar

import psycopg
import pytest
from conformance.faults import OneFault, fault_injecting
from conformance.helpers import NAME, args_text, wait_for
from kit.backends.citus import CitusBackend
from kit.backends.citus.lanes import dedup_key
from psycopg import sql

import kit
from kit.registry import register, resolve
from kit.storage import ClaimRequest, Finish, NewWorkflow, QueueSpec, ScheduleSpec, Status, StepResult

try:  # works whether or not tests/ is a package
    from .targets import EXTRA_TARGETS
except ImportError:
    from targets import EXTRA_TARGETS

FAST = {"lease_seconds": 4.0, "heartbeat_seconds": 1.0, "poll_seconds": 0.2}


@pytest.fixture(scope="module")
def citus_url(_pg_pool) -> str:
    why = EXTRA_TARGETS["citus"].unavailable()
    if why is not None:
        pytest.skip(why)
    return _pg_pool.url("citus")


@pytest.fixture
def citus_schema(citus_url: str) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(citus_url, autocommit=True) as conn:
        conn.execute("SET lock_timeout = '10s'")
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


def with_options(url: str, settings: dict[str, str]) -> str:
    """``url`` with server settings for its sessions (libpq ``options``)."""
    opts = "%20".join(f"-c%20{k}%3D{v}" for k, v in settings.items())
    return url + ("&" if "?" in url else "?") + "options=" + opts


# -- every statement is single-shard but a documented few --------------------------------------------------

# The statements that run on several shards by design: reads without locks (candidates, listings), the
# heartbeat's multi-shard UPDATE of the owner's own rows, the walk of a tree's links (pruned to the parents'
# shards), a retried claim's read-back of its token and gc's pruning of old recorded answers (its own
# autocommit statement). docs/backends.md lists them.
MULTI_SHARD = frozenset({
    "owned_scan", "expired_candidates", "limited_expired", "ready_strays", "children_of", "gc_candidates",
    "gc_references", "lease_renew", "lease_renew_no_worker", "workflow_get_many_terminal", "workflow_children",
    "worker_list", "workflow_version_counts", "queue_list", "monitor_workers", "monitor_queues", "monitor_finished",
    "monitor_latency", "monitor_failures", "monitor_oldest_pending", "queue_limited_names", "lane_nodes",
    "claim_read_back", "call_outcomes_gc",
})


def guarded_backend() -> type[CitusBackend]:
    """CitusBackend whose connections run every named statement outside MULTI_SHARD with
    ``citus.multi_task_query_log_level = error``: Citus then fails any of them that would need several shards."""

    class Guarded(psycopg.Connection):
        guarded: ClassVar[dict[str, str]] = {}  # statement text -> name
        ran: ClassVar[Counter[str]] = Counter()
        lock = threading.Lock()

        def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:  # type: ignore[override]
            name = self.guarded.get(query) if isinstance(query, str) else None
            if name is None:
                return super().execute(query, params, **kwargs)
            with self.lock:
                self.ran[name] += 1
            super().execute("SET citus.multi_task_query_log_level = 'error'")
            try:
                cur = super().execute(query, params, **kwargs)
            except psycopg.errors.InternalError_ as exc:  # name the statement in the failure
                raise AssertionError(f"statement {name} ran on several shards: {exc}") from exc
            super().execute("RESET citus.multi_task_query_log_level")
            return cur

    class GuardedCitus(CitusBackend):
        connection_class = Guarded

        def __init__(self, url: str, **kwargs: Any) -> None:
            super().__init__(url, **kwargs)
            Guarded.guarded.update({text: name for name, text in self._q.items() if name not in MULTI_SHARD})

    return GuardedCitus


def test_no_multi_shard_statement_locks_rows_for_a_claim():
    """The statements allowed to span shards take no row locks of their own (no FOR UPDATE / SHARE clause):
    with the guard below, no locking query of the backend ever runs on more than one shard."""
    q = CitusBackend.queries
    for name in sorted(MULTI_SHARD):
        text = " ".join(q[name].split()).upper()  # KeyError: a name in MULTI_SHARD that is no statement
        for clause in ("FOR UPDATE", "FOR NO KEY UPDATE", "FOR SHARE", "FOR KEY SHARE"):
            assert clause not in text, f"multi-shard statement {name} locks rows ({clause})"


def test_every_statement_but_the_documented_reads_runs_on_one_shard(citus_url, citus_schema):
    """A workload over every feature (plain, limited and partitioned queues, steps, events, streams, messages
    from workflows, children, transactional steps, cancel, resume, fork, gc) with the guard on: no statement
    outside MULTI_SHARD ever needs a second shard, claims and checkpoints included."""
    cls = guarded_backend()
    with register(cls):
        app = kit.Kit(citus_url, schema=citus_schema, worker_concurrency=8, **FAST)
        try:
            _workload(app, citus_url, citus_schema)
        finally:
            app.close()
    ran = cls.connection_class.ran  # type: ignore[attr-defined]
    for name in ("ready_take", "ready_claim", "queue_state_lock", "limited_take", "limited_take_partitioned",
                 "limited_claim", "step_record", "workflow_fence", "workflow_lock_row", "message_insert",
                 "message_take", "workflow_cancel_one", "workflow_resume_one", "fork_insert", "gc_delete_workflow",
                 "ready_lane_best"):  # the renewal statements are guarded too, but run only if a beat falls in the workload
        assert ran[name] > 0, f"the workload never ran {name}: the test proves nothing about it ({dict(ran)})"


def _workload(app: kit.Kit, url: str, schema: str) -> None:
    limited = app.queue("limited", concurrency=2)
    tenants = app.queue("tenants", partitioned=True, partition_concurrency=1)
    plain = app.queue("plain")
    table = sql.Identifier(schema, "ledger")

    @app.step()
    def double(x: int) -> int:
        return 2 * x

    @app.transaction(name="citus.record")
    def record(conn, x: int) -> int:
        conn.execute(sql.SQL("INSERT INTO {} (x) VALUES (%s)").format(table), (x,))
        return x

    @app.workflow(name="citus.child")
    def child(x: int) -> int:
        return double(x)

    @app.workflow(name="citus.flow")
    def flow(x: int) -> int:
        y = double(x)
        app.set_event("y", y)
        app.write_stream("s", y)
        app.close_stream("s")
        return y

    @app.workflow(name="citus.parent")
    def parent(x: int) -> int:
        c = app.start(child, x)
        app.send(c.workflow_id, "hello", topic="t")  # a send from workflow code: fenced by our epoch
        return c.result(timeout=60) + record(x)

    @app.workflow(name="citus.waiter")
    def waiter() -> str:
        return app.recv("t", timeout=120)

    app.launch()  # migrates
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE TABLE {} (x int)").format(table))
    handles = [limited.enqueue("citus.flow", i) for i in range(4)]
    handles += [tenants.enqueue("citus.flow", i, partition_key=f"t{i % 2}") for i in range(4)]
    handles += [plain.enqueue("citus.flow", i) for i in range(4)] + [app.enqueue("citus.flow", i) for i in range(4)]
    handles.append(app.start(parent, 5))
    assert sorted(h.result(timeout=120) for h in handles) == sorted([0, 2, 4, 6] * 4 + [15])
    w = app.start(waiter)
    app.send(w.workflow_id, "ping", topic="t")
    assert w.result(timeout=60) == "ping"
    # Cancel and resume a waiting tree; fork a finished workflow; collect what is old enough.
    blocked = app.start(waiter)
    wait_for(lambda: app.backend.step_list(blocked.workflow_id), what="the waiter to wait")
    assert app.cancel(blocked.workflow_id) == [blocked.workflow_id]
    app.resume(blocked.workflow_id)
    app.send(blocked.workflow_id, "again", topic="t")
    assert blocked.result(timeout=60) == "again"
    assert app.fork(handles[0].workflow_id, from_step=1).result(timeout=60) == 0
    assert app.gc(timedelta(0)) > 0


# -- two-phase commits -------------------------------------------------------------------------------------


def _node_of(conn: psycopg.Connection, schema: str, key: str) -> int:
    return conn.execute(
        "SELECT p.groupid FROM pg_dist_placement p "
        "WHERE p.shardid = get_shard_id_for_distribution_column(%s::regclass, %s::text)",
        (f'"{schema}".workflows', key)).fetchone()[0]


def _ids_on(conn: psycopg.Connection, schema: str, group: int, n: int, prefix: str) -> list[str]:
    found: list[str] = []
    for i in range(1000):
        key = f"{prefix}-{i}"
        if _node_of(conn, schema, key) == group:
            found.append(key)
            if len(found) == n:
                return found
    raise AssertionError("no keys on that node")


@pytest.fixture
def no_2pc_recovery(citus_url: str) -> Iterator[None]:
    """Citus' maintenance daemon deletes pg_dist_transaction rows of finished two-phase commits once a minute;
    switched off while a test counts them (nothing fails here, so nothing needs recovering)."""
    with psycopg.connect(citus_url, autocommit=True) as conn:
        conn.execute("ALTER SYSTEM SET citus.recover_2pc_interval = -1")
        conn.execute("SELECT pg_reload_conf()")
    try:
        yield
    finally:
        with psycopg.connect(citus_url, autocommit=True) as conn:
            conn.execute("ALTER SYSTEM RESET citus.recover_2pc_interval")
            conn.execute("SELECT pg_reload_conf()")


def test_which_operations_commit_with_two_phase_commit(citus_url, citus_schema, no_2pc_recovery):
    """Single-workflow operations commit on one node (one-phase); an operation over workflows on two nodes
    prepares on both (two rows of pg_dist_transaction, one per node), as docs/backends.md says."""
    backend = CitusBackend(citus_url, schema=citus_schema, pool_size=2, retry_seconds=5)
    backend.open()
    backend.migrate()
    admin = psycopg.connect(citus_url, autocommit=True)
    try:
        groups = sorted({g for (g,) in admin.execute("SELECT groupid FROM pg_dist_node WHERE groupid > 0")})
        a, b = groups[0], groups[1]
        on_a = _ids_on(admin, citus_schema, a, 4, "a")
        on_b = _ids_on(admin, citus_schema, b, 4, "b")
        inputs = args_text(1)

        def prepared(fn) -> int:
            before = admin.execute("SELECT count(*) FROM pg_dist_transaction").fetchone()[0]
            fn()
            return admin.execute("SELECT count(*) FROM pg_dist_transaction").fetchone()[0] - before

        # One workflow: its rows (workflow, ready row on its lane, steps) live on its node.
        assert prepared(lambda: backend.workflow_create(NewWorkflow(on_a[0], NAME, inputs))) == 0
        assert prepared(lambda: backend.workflow_create(NewWorkflow(on_a[1], NAME, inputs, owner="w1"))) == 0
        claimed = backend.workflow_claim(ClaimRequest("w1", [NAME], 10, 60))
        assert [c.workflow_id for c in claimed] == [on_a[0]]
        assert prepared(lambda: backend.step_record(StepResult(on_a[1], 0, "s", 1, output="1"))) == 0
        assert prepared(lambda: backend.workflow_finish(Finish(on_a[1], 1, Status.SUCCESS, output="1"))) == 0
        # A child on another node than its parent: fenced by the parent's row, linked on its shard.
        assert prepared(lambda: backend.workflow_create(NewWorkflow(
            on_b[0], NAME, inputs, owner="w1", parent_id=on_a[0], parent_epoch=claimed[0].epoch))) == 2
        # A send fenced by a sender on the other node: the sender's node is only read (its row held FOR KEY
        # SHARE until the end), so only the receiver's node writes and Citus commits it in one phase.
        assert prepared(lambda: backend.message_send(on_b[0], "t", "1", "k1", sender=(on_a[0], 1))) == 0
        # Cancel of a tree over two nodes: one transaction, prepared on both.
        assert prepared(lambda: backend.workflow_cancel(on_a[0], '{"type": "X", "message": "stop"}')) == 2
        # A limited queue's claim: the home lane's slot and the workflow on another node.
        queue = next(q for q in (f"q{i}" for i in range(100)) if _node_of(admin, citus_schema, q) == b)
        backend.queue_define(QueueSpec(queue, concurrency=1))
        assert prepared(lambda: backend.workflow_create(NewWorkflow(on_a[2], NAME, inputs, queue=queue))) == 2
        got = backend.queue_claim(ClaimRequest("w1", [NAME], 1, 60), queue)
        assert [c.workflow_id for c in got] == [on_a[2]]
        # A schedule tick: the coordinator's cursor and one node's workflow (no prepare: see the docs).
        spec = ScheduleSpec("nightly", NAME, "* * * * *", "UTC")
        t0 = datetime(2030, 1, 1, tzinfo=timezone.utc)
        backend.schedule_define(spec, t0)
        tick = NewWorkflow(on_a[3], NAME, inputs)
        assert prepared(lambda: backend.schedule_advance("nightly", t0, t0 + timedelta(minutes=1), [tick])) == 0
    finally:
        admin.close()
        backend.close()


# -- wake-ups --------------------------------------------------------------------------------------------


def test_an_enqueue_wakes_an_idle_worker_by_notification(citus_url, citus_schema):
    """The worker polls once an hour: the enqueued workflow can only start because the coordinator session
    that enqueued it notified (SELECT pg_notify inside the transaction) and the worker's listener got it."""
    app = kit.Kit(citus_url, schema=citus_schema, poll_seconds=3600, lease_seconds=30, heartbeat_seconds=5)
    payloads: list[str] = []
    claims = Counter[str]()
    backend = app.backend
    listen, claim = backend.notify_wait, backend.workflow_claim

    def recording_wait(channels, timeout):
        got = listen(channels, timeout)
        payloads.extend(got)
        return got

    def counting_claim(req):
        claims["calls"] += 1
        return claim(req)

    backend.notify_wait = recording_wait  # type: ignore[method-assign]
    backend.workflow_claim = counting_claim  # type: ignore[method-assign]

    @app.workflow(name="citus.hello")
    def hello(x: int) -> int:
        return x + 1

    client = kit.Client(citus_url, schema=citus_schema)
    try:
        app.launch()
        wait_for(lambda: claims["calls"] >= 1, what="the worker's first claim round")  # then it idles an hour
        before = claims["calls"]
        handle = client.enqueue("citus.hello", 41)
        assert handle.result(timeout=60) == 42
        assert "q:" in payloads, f"no wake-up for the default queue reached the listener: {payloads}"
        assert claims["calls"] == before + 1, "one claim round, woken by the notification"
    finally:
        client.close()
        app.close()


# -- settings, URLs, detection ----------------------------------------------------------------------------


def test_the_shard_count_of_a_migration_is_the_number_of_lanes(citus_url, citus_schema):
    url = with_options(citus_url, {"citus.shard_count": "2"})
    backend = CitusBackend(url, schema=citus_schema, pool_size=2)
    backend.open()
    try:
        backend.migrate()
        info = backend.describe()
        assert info["backend"] == "citus" and info["lanes"] == 2
        caps = backend.capabilities
        assert caps.listen_notify and not caps.notify_in_statement and caps.skip_locked
        assert not caps.multi_row_locking_claims and caps.transactional_steps and caps.sql_enqueue_function
        with psycopg.connect(citus_url, autocommit=True) as conn:
            shards = conn.execute("SELECT count(*) FROM pg_dist_shard WHERE logicalrelid = %s::regclass",
                                  (f'"{citus_schema}".workflows',)).fetchone()[0]
            lanes = conn.execute(sql.SQL("SELECT count(DISTINCT get_shard_id_for_distribution_column({}, lane_key)) "
                                         "FROM {}").format(sql.Literal(f'"{citus_schema}".workflows'),
                                                           sql.Identifier(citus_schema, "lanes"))).fetchone()[0]
        assert shards == 2 and lanes == 2, "one lane in every shard"
    finally:
        backend.close()


def test_citus_urls_and_detection(citus_url, citus_schema):
    citus = "citus://" + citus_url.split("://", 1)[1]
    assert resolve(citus, probe=False) is CitusBackend, "the citus:// scheme is the citus backend's alone"
    assert resolve(citus_url) is CitusBackend, "a postgresql:// URL of a coordinator is detected"
    app = kit.Kit(citus, schema=citus_schema, **FAST)
    try:
        @app.workflow(name="citus.url")
        def add(x: int) -> int:
            return x + 1

        app.launch()
        assert app.start(add, 1).result(timeout=60) == 2
        assert app.backend.describe()["url"].startswith("citus://")
    finally:
        app.close()


# -- limited queues declared late, dedup keys, a schedule tick's serialization failure -----------------------


def test_work_enqueued_before_its_queue_is_limited_is_moved_to_the_home_lane(citus_url, citus_schema):
    backend = CitusBackend(citus_url, schema=citus_schema, pool_size=2)
    backend.open()
    try:
        backend.migrate()
        ids = [backend.workflow_create(NewWorkflow(f"early-{i}", NAME, args_text(i), queue="late")) and f"early-{i}"
               for i in range(6)]
        backend.queue_define(QueueSpec("late", concurrency=2))
        home = backend._home_lane("late")
        with psycopg.connect(citus_url, autocommit=True) as conn:
            lanes = {r[0] for r in conn.execute(sql.SQL("SELECT lane_key FROM {}").format(
                sql.Identifier(citus_schema, "ready")))}
        assert lanes == {home}
        got = backend.queue_claim(ClaimRequest("w1", [NAME], 10, 60), "late")
        assert len(got) == 2 and {c.workflow_id for c in got} <= set(ids)
        assert backend.workflow_claim(ClaimRequest("w2", [NAME], 10, 60)) == [], "limited work stays limited"
    finally:
        backend.close()


def test_the_dedup_key_is_the_same_in_python_and_sql(citus_url, citus_schema):
    backend = CitusBackend(citus_url, schema=citus_schema, pool_size=2)
    backend.open()
    try:
        backend.migrate()
        cases = [(None, "d"), ("", "d"), ("q", "d"), ("q1", "2d"), ("q12", "d"), ("é", "ü"), ("a:b", ":")]
        with psycopg.connect(citus_url, autocommit=True) as conn:
            for queue, dedup in cases:
                in_sql = conn.execute(sql.SQL("SELECT {}(%s, %s)").format(
                    sql.Identifier(citus_schema, "dedup_key")), (queue, dedup)).fetchone()[0]
                assert in_sql == dedup_key(queue, dedup)
        assert len({dedup_key(q, d) for q, d in cases}) == len(cases) - 1  # None and "" are the default queue
    finally:
        backend.close()


def test_a_serialization_failure_in_a_schedule_tick_is_retried(citus_url, citus_schema):
    """As the conformance test of the same name, with the fault at the Citus enqueue's INSERT."""
    backend = CitusBackend(citus_url, schema=citus_schema, pool_size=2, retry_seconds=5)
    backend.open()
    try:
        backend.migrate()
        spec = ScheduleSpec("s", NAME, "* * * * *", "UTC")
        t0 = datetime(2030, 1, 1, tzinfo=timezone.utc)
        backend.schedule_define(spec, t0)
        tick = t0 + timedelta(minutes=1)
        wf = NewWorkflow(f"sched:s:{tick.isoformat()}", NAME, args_text(1))
        plan = OneFault("schedule_advance", "serialization", at="INSERT INTO")
        faulty = fault_injecting(CitusBackend, plan)(citus_url, schema=citus_schema, pool_size=2, retry_seconds=5)
        faulty.open()
        try:
            assert faulty.schedule_advance("s", t0, tick, [wf]) is True
        finally:
            faulty.close()
        assert plan.total == 1, plan.log
        state = backend.schedule_get("s")
        assert state.cursor_at == tick and state.last_workflow_id == wf.workflow_id
        assert backend.workflow_get(wf.workflow_id).status == Status.PENDING
    finally:
        backend.close()


# -- takeovers and checkpoints in flight -------------------------------------------------------------------


def test_a_takeover_never_passes_a_checkpoint_in_flight(citus_url, citus_schema):
    """A checkpoint holds the workflow row FOR KEY SHARE at its fence until it commits. A takeover of the
    expired lease must conflict with it (skip the row this round), never commit under it: otherwise the new
    owner reads the steps without that checkpoint and runs the step again, and the old owner's checkpoint
    commits after all (a committed step run twice, G2). The checkpoint's transaction is held open here."""
    backend = CitusBackend(citus_url, schema=citus_schema, pool_size=2, retry_seconds=5)
    backend.open()
    try:
        backend.migrate()
        wid = f"wf-{uuid.uuid4().hex[:8]}"
        backend.workflow_create(NewWorkflow(wid, NAME, args_text(1)))
        first = backend.workflow_claim(ClaimRequest("old", [NAME], 1, 0.5))
        assert [c.workflow_id for c in first] == [wid]
        step = StepResult(wid, 1, "s", first[0].epoch, output="1")
        from kit.backends.postgres import rows

        with psycopg.connect(citus_url) as held:  # a transaction: the checkpoint stays at its fence
            got = held.execute(backend._q["step_record"], rows.step_params(step)).fetchall()
            assert len(got) == 1  # fenced in, not committed
            wait_for(lambda: backend.workflow_get(wid).lease_expires_at < datetime.now(timezone.utc), timeout=10)
            taken = backend.workflow_claim(ClaimRequest("new", [NAME], 1, 30.0))
            assert taken == []  # skipped while the checkpoint is in flight
            held.commit()
        taken = backend.workflow_claim(ClaimRequest("new", [NAME], 1, 30.0))
        assert [(c.workflow_id, c.epoch, c.recovery) for c in taken] == [(wid, first[0].epoch + 1, True)]
        # the new owner sees the old owner's checkpoint: it replays the step instead of running it again
        assert [s.step_id for s in backend.step_list(wid)] == [1]
    finally:
        backend.close()


# -- a worker node's failure inside a transactional step ----------------------------------------------------


def _cut_worker_connections(url: str, conn: psycopg.Connection) -> int:
    """Terminate, on every worker, the connections the coordinator opened for ``conn``'s session (Citus names
    them ``citus_internal gpid=<gpid>``): the session's next use of them fails as a cut or a failover would
    (a real error relayed by the coordinator; nothing else of the cluster is touched). Returns how many."""
    gpid = conn.execute("SELECT citus_backend_gpid()").fetchone()[0]
    with psycopg.connect(url, autocommit=True) as admin:
        nodes = admin.execute("SELECT nodeport FROM pg_dist_node WHERE groupid > 0 AND noderole = 'primary'"
                              ).fetchall()
    parts = psycopg.conninfo.conninfo_to_dict(url)
    killed = 0
    for (port,) in nodes:
        with psycopg.connect(**{**parts, "port": port}, autocommit=True) as worker:
            killed += worker.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = %s",
                (f"citus_internal gpid={gpid}",)).fetchone()[0]
    return killed


def test_a_worker_failure_in_a_transactional_step_is_a_storage_fault(citus_url, citus_schema):
    """A worker connection lost inside a transactional step (the body's SQL gets 08006 "connection to the remote
    node ... failed" relayed by a healthy coordinator; a COMMIT gets "could not commit transaction ..."): a
    TransientStorageError, so the engine runs the step again, never the step's own failure. The COMMIT case is
    resolved by reading the checkpoint back (here: not committed)."""
    from kit.errors import TransientStorageError

    backend = CitusBackend(citus_url, schema=citus_schema, pool_size=2, retry_seconds=10)
    backend.open()
    try:
        backend.migrate()
        wid = f"wf-{uuid.uuid4().hex[:8]}"
        backend.workflow_create(NewWorkflow(wid, NAME, args_text(1)))
        (claim,) = backend.workflow_claim(ClaimRequest("w", [NAME], 1, 60.0))
        read = sql.SQL("SELECT count(*) FROM {} WHERE workflow_id = %s").format(
            sql.Identifier(citus_schema, "steps"))

        # 1. the body's own statement fails: nothing committed
        with pytest.raises(TransientStorageError) as caught:
            with backend.step_transaction(StepResult(wid, 1, "s", claim.epoch)) as tx:
                tx.connection.execute(read, (wid,))  # the session now holds a connection to the shard's node
                assert _cut_worker_connections(citus_url, tx.connection) >= 1
                tx.connection.execute(read, (wid,))
                tx.checkpoint("1")
        cause = caught.value.__cause__
        print("body:", type(cause).__name__, getattr(cause, "sqlstate", None), cause)
        assert isinstance(cause, psycopg.Error)

        # 2. the COMMIT fails after the checkpoint was written: read back, absent, so it runs again
        with pytest.raises(TransientStorageError) as caught:
            with backend.step_transaction(StepResult(wid, 1, "s", claim.epoch)) as tx:
                tx.checkpoint("1")
                assert _cut_worker_connections(citus_url, tx.connection) >= 1
        cause = caught.value.__cause__
        print("commit:", type(cause).__name__, getattr(cause, "sqlstate", None), cause)
        assert backend.step_list(wid) == []

        # 3. run again, it commits once
        with backend.step_transaction(StepResult(wid, 1, "s", claim.epoch)) as tx:
            tx.checkpoint("1")
        assert tx.record is not None and [(s.step_id, s.output) for s in backend.step_list(wid)] == [(1, "1")]
    finally:
        backend.close()


def test_the_node_failures_the_chaos_lab_saw_are_storage_faults():
    """The exact errors of the Citus lab's worker-group failover and cut (docs/lab.md), and errors that are not
    node failures (the statement's own: kept as they are)."""
    from kit.backends.citus.faults import node_fault

    assert node_fault(psycopg.errors.InternalError_(
        "could not commit transaction for shard 102010 on at least one active node"))
    assert node_fault(psycopg.errors.ConnectionFailure(
        'connection to the remote node kit@citus-w1:5432 failed with the following error: Connection refused'))
    assert node_fault(psycopg.errors.AdminShutdown(
        "terminating connection due to administrator command\nCONTEXT:  while executing command on 127.0.0.1:1"))
    assert not node_fault(psycopg.errors.InternalError_("cache lookup failed for relation 1234"))
    assert not node_fault(psycopg.errors.UniqueViolation("duplicate key value violates unique constraint"))
    assert not node_fault(psycopg.errors.QueryCanceled("canceling statement due to statement timeout"))
    assert not node_fault(ValueError("connection to the remote node failed"))


# -- fault isolation: one node group does not hold the others up ------------------------------------------


def test_a_node_group_that_does_not_answer_holds_up_only_its_own_lease_renewals(citus_url, citus_schema):
    """Leases are renewed per node group, each on its own connection: while one group's renewal cannot get
    through (here: a row of that group locked by another transaction, so its UPDATE waits past the renewal's
    budget), the other group's leases are renewed and reported, the stuck group's are not; once it answers
    again, all are. (One multi-shard UPDATE renewed nothing anywhere in that case.)"""
    backend = CitusBackend(citus_url, schema=citus_schema, pool_size=2, retry_seconds=5)
    backend.open()
    try:
        backend.migrate()
        with psycopg.connect(citus_url, autocommit=True) as conn:
            groups = [g for (g,) in conn.execute(
                "SELECT DISTINCT groupid FROM pg_dist_node WHERE groupid > 0 ORDER BY 1").fetchall()]
            ids = {g: _ids_on(conn, citus_schema, g, 3, f"hb{g}") for g in groups}
        for wids in ids.values():
            for wid in wids:
                backend.workflow_create(NewWorkflow(wid, NAME, args_text(1), owner="w"))
        everything = {wid for wids in ids.values() for wid in wids}
        assert set(backend.lease_renew("w", 30.0)) == everything
        stuck, healthy = groups[0], groups[1:]
        with psycopg.connect(citus_url) as blocker:
            blocker.execute(sql.SQL("SELECT 1 FROM {} WHERE workflow_id = %s FOR UPDATE").format(
                sql.Identifier(citus_schema, "workflows")), (ids[stuck][0],))
            renewed = backend.lease_renew("w", 2.0)  # a budget of 0.5 s
            assert set(renewed) == {wid for g in healthy for wid in ids[g]}
            blocker.rollback()
        assert set(backend.lease_renew("w", 30.0)) == everything
    finally:
        backend.close()
