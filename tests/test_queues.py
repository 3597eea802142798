"""Flow-controlled queues against real PostgreSQL: limits across worker processes (counted from the
database, never from wall-clock assertions), fairness across tenants, priority, delay, deduplication,
bad input, and `kit queues`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from conformance.helpers import wait_for
from test_engine import apps  # noqa: F401 - fixture

import kit
from kit.errors import ConfigError, UsageError, WorkflowDuplicateError

pytestmark = pytest.mark.all_backends  # also on the extra targets (Citus): tests/targets.py

REPO = Path(__file__).resolve().parents[1]
FAST = {"lease_seconds": 5.0, "heartbeat_seconds": 0.5, "poll_seconds": 0.1}




class Workers:
    """Real `kit worker tests.apps.queue_app:app` processes on the test's schema."""

    def __init__(self, url: str, schema: str, tmp: Path) -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("KIT_")}
        self.env.update(KIT_DATABASE_URL=url, KIT_SCHEMA=schema, KIT_LEASE_SECONDS="5", KIT_HEARTBEAT_SECONDS="0.5",
                        KIT_POLL_SECONDS="0.1")
        self.tmp = tmp
        self.procs: list[subprocess.Popen] = []

    def start(self, n: int, concurrency: int = 8) -> None:
        for i in range(n):
            log = open(self.tmp / f"worker-{len(self.procs)}-{i}.log", "w")  # noqa: SIM115 - child's stderr
            self.procs.append(subprocess.Popen(
                [sys.executable, "-m", "kit.cli", "worker", "tests.apps.queue_app:app", "--concurrency",
                 str(concurrency)], cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT))

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


@pytest.fixture
def workers(pg_url, schema, tmp_path):
    from tests.apps.queue_app import ensure_table

    ensure_table(pg_url, schema)
    w = Workers(pg_url, schema, tmp_path)
    yield w
    w.stop()


def _client(pg_url: str, schema: str) -> kit.Kit:
    """The test's own instance of the queue app, used only to enqueue and to read results."""
    os.environ.pop("KIT_CONFIG", None)
    import tests.apps.queue_app as qa

    client = kit.Kit(database_url=pg_url, schema=schema, **FAST)
    client._workflows = dict(qa.app._workflows)
    for q in qa.app.queues():
        client.queue(q.name, concurrency=q.spec.concurrency, worker_concurrency=q.spec.worker_concurrency,
                     rate_limit=(q.spec.rate_count, q.spec.rate_period) if q.spec.rate_count else None)
    return client


def _max_overlap(pg_url: str, schema: str, per_pid: bool = False) -> int:
    same = "AND j.pid = i.pid" if per_pid else ""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        return conn.execute(
            f'SELECT max((SELECT count(*) FROM "{schema}".intervals j WHERE j.started <= i.started '
            f"AND j.ended > i.started {same})) FROM \"{schema}\".intervals i").fetchone()[0]


@pytest.mark.slow
def test_global_concurrency_holds_across_worker_processes(pg_url, schema, workers):
    client = _client(pg_url, schema)
    try:
        q = next(q for q in client.queues() if q.name == "limited")
        # Four processes of one slot each: 4 slots against a limit of 3, so reaching 3 at once takes
        # three processes and exceeding it would take a fourth.
        workers.start(4, concurrency=1)
        wait_for(lambda: len(client.backend.worker_list()) >= 4, timeout=60, what="four workers to heartbeat")
        handles = [q.enqueue("queue_app.job", 0.15) for _ in range(24)]
        pids = {h.result(timeout=120) for h in handles}
    finally:
        client.close()
    peak = _max_overlap(pg_url, schema)
    assert peak <= 3, f"{peak} ran at once under concurrency=3"
    assert peak == 3, f"the limit was never reached ({peak}): the test proved nothing"
    assert len(pids) >= 3


@pytest.mark.slow
def test_per_worker_concurrency_holds_in_each_process(pg_url, schema, workers):
    client = _client(pg_url, schema)
    try:
        q = next(q for q in client.queues() if q.name == "per_worker")
        handles = [q.enqueue("queue_app.job", 0.1) for _ in range(12)]
        workers.start(2, concurrency=8)
        pids = [h.result(timeout=120) for h in handles]
    finally:
        client.close()
    assert _max_overlap(pg_url, schema, per_pid=True) == 1
    assert len(set(pids)) == 2


@pytest.mark.slow
def test_rate_limit_holds_in_every_window(pg_url, schema, workers):
    client = _client(pg_url, schema)
    try:
        q = next(q for q in client.queues() if q.name == "rated")
        handles = [q.enqueue("queue_app.job", 0.0) for _ in range(12)]
        workers.start(2, concurrency=8)
        for h in handles:
            h.result(timeout=120)
    finally:
        client.close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        starts = [r[0] for r in conn.execute(
            f'SELECT claimed_at FROM "{schema}".workflows WHERE queue = \'rated\'').fetchall()]
    # The most starts inside any 1 s window that opens at a start (counted here: a plain read works on
    # every backend, Citus included).
    worst = max(sum(1 for j in starts if i <= j < i + timedelta(seconds=1)) for i in starts)
    assert worst <= 4, f"{worst} starts inside one 1 s window under rate_limit=(4, 1.0)"


@pytest.mark.slow
def test_a_huge_tenant_backlog_does_not_starve_a_small_tenant(apps):  # noqa: F811
    app = apps(**FAST, worker_concurrency=8)
    q = app.queue("tenants", partitioned=True)

    @app.workflow(name="fair.job")
    def job(tenant, i):
        return i

    with psycopg.connect(apps.url, autocommit=True) as conn:
        app.backend  # noqa: B018 - migrate
        app._ensure_queues()
        # 10,000 queued for the big tenant (one statement), then 10 for the small one, all PENDING.
        conn.execute(
            f'INSERT INTO "{apps.schema}".workflows (workflow_id, name, status, inputs, queue, partition_key, '
            "created_at) SELECT 'big-' || g, 'fair.job', 'PENDING', '{\"args\":[\"big\",' || g || '],\"kwargs\":{}}', "
            "'tenants', 'big', now() - interval '1 hour' + g * interval '1 ms' FROM generate_series(1, 10000) g")
    small = [q.enqueue(job, "small", i, partition_key="small") for i in range(10)]
    app.launch()
    assert [h.result(timeout=60) for h in small] == list(range(10))
    app.close(grace=1)
    with psycopg.connect(apps.url, autocommit=True) as conn:
        big_started = conn.execute(
            f'SELECT count(*) FROM "{apps.schema}".workflows WHERE partition_key = %s AND started_at IS NOT NULL',
            ("big",)).fetchone()[0]
    # The small tenant's 10 ran after at most a few claims' worth of the big tenant's 10,000.
    assert big_started < 200, f"{big_started} big-tenant workflows started before the small tenant's 10 finished"


def test_priority_then_fifo_and_delayed_start(apps):  # noqa: F811
    app = apps(**FAST, worker_concurrency=1)
    q = app.queue("prio", priority=True, concurrency=1)

    @app.workflow(name="prio.job")
    def job(label):
        return label

    handles = [q.enqueue(job, f"low{i}", priority=5) for i in range(3)]
    handles += [q.enqueue(job, "urgent", priority=0)]
    later = q.enqueue(job, "later", priority=0, delay=0.5)
    app.launch()
    for h in handles + [later]:
        h.result(timeout=60)
    order = apps.sql(f'SELECT inputs, started_at, created_at FROM "{apps.schema}".workflows '
                     "WHERE queue = 'prio' ORDER BY started_at")
    labels = [json.loads(r[0])["args"][0] for r in order]
    # "later" joins the queue whenever its delay ends (on a loaded machine possibly before low2 started);
    # the rest keep priority, then FIFO.
    assert [x for x in labels if x != "later"] == ["urgent", "low0", "low1", "low2"]
    delayed = next(r for r in order if json.loads(r[0])["args"][0] == "later")
    assert (delayed[1] - delayed[2]).total_seconds() >= 0.5  # never started before its delay


def test_deduplication_rejects_or_returns_the_live_workflow(apps):  # noqa: F811
    app = apps(**FAST)
    q = app.queue("dedup")

    @app.workflow(name="dedup.job")
    def job(x):
        return x

    first = q.enqueue(job, 1, dedup_id="order-7")
    with pytest.raises(WorkflowDuplicateError) as info:
        q.enqueue(job, 2, dedup_id="order-7")
    assert info.value.existing_id == first.workflow_id
    assert q.enqueue(job, 3, dedup_id="order-7", if_duplicate="existing").workflow_id == first.workflow_id
    app.launch()
    assert first.result(timeout=30) == 1
    again = q.enqueue(job, 4, dedup_id="order-7")  # the first one finished: the id is free again
    assert again.workflow_id != first.workflow_id and again.result(timeout=30) == 4
    assert apps.sql(f'SELECT count(*) FROM "{apps.schema}".workflows')[0][0] == 2


def test_bad_queue_input_is_a_clear_error_and_writes_nothing(apps):  # noqa: F811
    app = apps(**FAST)

    @app.workflow(name="bad.job")
    def job():
        return 1

    app.backend  # noqa: B018 - the schema exists, so "nothing written" below is a real check
    for kwargs in ({"concurrency": 0}, {"concurrency": -1}, {"worker_concurrency": 1.5},
                   {"rate_limit": (0, 1)}, {"rate_limit": (5, 0)}, {"rate_limit": (5, -2)}, {"rate_limit": 5},
                   {"partition_concurrency": 2}):
        with pytest.raises(ConfigError):
            app.queue(f"q{uuid.uuid4().hex[:6]}", **kwargs)
    for name in ("", "has space", "x" * 101, "default", None):
        with pytest.raises(ConfigError):
            app.queue(name)
    plain = app.queue("plain")
    parted = app.queue("parted", partitioned=True)
    with pytest.raises(UsageError):
        plain.enqueue(job, priority=1)  # declared without priority
    with pytest.raises(UsageError):
        plain.enqueue(job, partition_key="t")
    with pytest.raises(UsageError):
        parted.enqueue(job)  # partitioned: needs a key
    with pytest.raises(UsageError):
        plain.enqueue(job, delay=-1)
    with pytest.raises(UsageError):
        plain.enqueue(job, dedup_id="")
    with pytest.raises(kit.SerializationError):
        plain.enqueue(job, object())
    with pytest.raises(ConfigError):
        app.queue("plain", concurrency=2)  # redeclared differently
    assert apps.sql(f'SELECT count(*) FROM "{apps.schema}".workflows')[0][0] == 0


def test_kit_queues_shows_depth_in_flight_and_limits(apps):  # noqa: F811
    app = apps(**FAST)
    q = app.queue("emails", concurrency=5, rate_limit=(10, 2))

    @app.workflow(name="emails.job")
    def job():
        return 1

    for _ in range(3):
        q.enqueue(job)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIT_")}
    res = subprocess.run([sys.executable, "-m", "kit.cli", "queues", "--database-url", apps.url, "--schema",
                          apps.schema, "--json"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    rows = {r["queue"]: r for r in map(json.loads, res.stdout.splitlines())}
    assert rows["emails"]["depth"] == 3 and rows["emails"]["in_flight"] == 0
    assert rows["emails"]["concurrency_limit"] == 5 and rows["emails"]["rate_limit_per_second"] == 5.0
    table = subprocess.run([sys.executable, "-m", "kit.cli", "queues", "--database-url", apps.url, "--schema",
                            apps.schema], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert table.returncode == 0 and "emails" in table.stdout and "5/s" in table.stdout


def test_partition_concurrency_holds_per_tenant(apps):  # noqa: F811
    app = apps(**FAST, worker_concurrency=8)
    q = app.queue("per_tenant", partitioned=True, partition_concurrency=1)
    import threading

    lock = threading.Lock()
    running: dict[str, int] = {}
    peak: dict[str, int] = {}
    together = {"max": 0}

    @app.step(name="tenant.work")
    def work(tenant):
        with lock:
            running[tenant] = running.get(tenant, 0) + 1
            peak[tenant] = max(peak.get(tenant, 0), running[tenant])
            together["max"] = max(together["max"], sum(running.values()))
        time.sleep(0.05)
        with lock:
            running[tenant] -= 1
        return tenant

    @app.workflow(name="tenant.job")
    def job(tenant):
        return work(tenant)

    handles = [q.enqueue(job, t, partition_key=t) for t in ("a", "b", "c") for _ in range(5)]
    app.launch()
    assert sorted(h.result(timeout=60) for h in handles) == sorted(["a", "b", "c"] * 5)
    assert peak == {"a": 1, "b": 1, "c": 1}  # never two of one tenant at once
    assert together["max"] >= 2  # while tenants ran side by side


def test_expired_leases_of_a_limited_queue_are_taken_over_within_worker_concurrency(apps):  # noqa: F811
    from kit.storage import ClaimRequest

    app = apps(**FAST)
    app.queue("limq", worker_concurrency=1)

    @app.workflow(name="limq.job")
    def job():
        return 1

    q = next(q for q in app.queues() if q.name == "limq")
    for _ in range(3):
        q.enqueue(job)
    backend = app.backend
    for dead in ("w1", "w2", "w3"):  # three workers each claim one, with a lease that expires at once
        assert len(backend.queue_claim(ClaimRequest(dead, ["limq.job"], 5, 0.01), "limq")) == 1
    time.sleep(0.05)
    assert backend.workflow_claim(ClaimRequest("w4", ["limq.job"], 5, 30, queues=["", "limq"])) == []
    got = backend.queue_claim(ClaimRequest("w4", ["limq.job"], 5, 30), "limq")
    assert len(got) == 1 and got[0].recovery  # one takeover: w4 may hold only one of this queue's runs


def test_limited_queue_is_not_starved_by_an_unlimited_backlog(apps):  # noqa: F811
    app = apps(**FAST, worker_concurrency=2)
    lim = app.queue("lim1", concurrency=1)

    @app.workflow(name="starve.job")
    def job(x):
        time.sleep(0.01)
        return x

    backlog = [app.enqueue(job, i) for i in range(150)]
    special = lim.enqueue(job, "limited")
    app.launch()
    assert special.result(timeout=60) == "limited"
    pending = apps.sql(f'SELECT count(*) FROM "{apps.schema}".workflows WHERE status = %s', ("PENDING",))[0][0]
    assert pending > 50, "the limited queue's work waited for most of the unlimited backlog"
    for h in backlog:
        h.result(timeout=120)


def test_stored_limits_bind_workers_whose_app_declares_none(apps):  # noqa: F811
    strict = apps(**FAST)
    strict.queue("mail", concurrency=1)
    strict._ensure_queues()  # the stored declaration: concurrency=1
    loose = apps(**FAST, worker_concurrency=8)
    loose.queue("mail")  # this app's own declaration has no limits ...

    @loose.workflow(name="mail.job")
    def job():
        return 1

    # ... and it started first, so the stored declaration is strict's; loose must still obey it.
    loose._queues_defined = True
    q = next(q for q in loose.queues() if q.name == "mail")
    handles = [q.enqueue(job) for _ in range(6)]
    loose.launch()
    for h in handles:
        h.result(timeout=60)
    rows = apps.sql(f'SELECT started_at, finished_at FROM "{apps.schema}".workflows ORDER BY started_at')
    overlap = max(sum(1 for s2, f2 in rows if s2 <= s1 < f2) for s1, _ in rows)
    assert overlap == 1
