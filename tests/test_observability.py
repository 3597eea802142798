"""Observability: the documented views and queries (index-served on 100k workflows), the monitor's
queries, and the CLI reports (`workflows list --sort`, `workflow show` children, `monitor --once`)."""

from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from kit.backends.postgres.backend import _QUERIES
from psycopg import sql

from kit.registry import resolve
from kit.storage import Finish, MonitorQuery, NewWorkflow, Status, StepResult, WorkerInfo

try:  # works whether or not tests/ is a package
    from .test_cli import UNREACHABLE, assert_ok, assert_usage_error, json_lines, run_kit
except ImportError:
    from test_cli import UNREACHABLE, assert_ok, assert_usage_error, json_lines, run_kit

pytestmark = pytest.mark.all_backends  # also on the extra targets (Citus): tests/targets.py

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "observability.md"
SEED_WORKFLOWS = 100_000


def documented_queries() -> list[str]:
    """Every ```sql block of docs/observability.md (the documented, index-served queries)."""
    return [m.strip().rstrip(";") for m in re.findall(r"```sql\n(.*?)```", DOC.read_text(), flags=re.S)]


def in_schema(query: str, schema: str) -> str:
    return re.sub(r"\bkit\.", sql.Identifier(schema).as_string(None) + ".", query)


def seed(url: str, schema: str, n: int = SEED_WORKFLOWS) -> None:
    """n workflows over the last 30 days (mostly finished, some failed, pending, orphaned), two steps
    each (some retried), and a few workers: one INSERT ... SELECT per table, then ANALYZE."""
    s = sql.Identifier(schema).as_string(None)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"""
            INSERT INTO {s}.workflows (workflow_id, name, status, inputs, output, error, error_type, queue,
                                       owner, epoch, lease_expires_at, created_at, started_at, finished_at)
            SELECT 'seed-' || i,
                   'app.flow' || (i % 7),
                   st,
                   '[[], {{}}]',
                   CASE WHEN st = 'SUCCESS' THEN '1' END,
                   CASE WHEN st = 'ERROR' THEN '{{"type": "ValueError", "message": "bad ' || i || '"}}' END,
                   CASE WHEN st = 'ERROR' THEN 'ValueError' END,
                   CASE i % 3 WHEN 0 THEN NULL WHEN 1 THEN 'mail' ELSE 'billing' END,
                   CASE WHEN st = 'RUNNING' THEN 'worker-' || (i % 4) END,
                   CASE WHEN st = 'PENDING' THEN 0 ELSE 1 END,
                   CASE WHEN st = 'RUNNING' THEN now() - interval '1 minute' END,
                   created,
                   CASE WHEN st <> 'PENDING' THEN created + interval '10 ms' END,
                   CASE WHEN st IN ('SUCCESS', 'ERROR') THEN created + (10 + i % 990) * interval '1 ms' END
              FROM (SELECT i, now() - i * interval '26 seconds' AS created,
                           CASE WHEN i % 500 = 3 THEN 'PENDING' WHEN i % 1000 = 7 THEN 'RUNNING'
                                WHEN i % 20 = 0 THEN 'ERROR' ELSE 'SUCCESS' END AS st
                      FROM generate_series(1, {int(n)}) AS i) g""")
        conn.execute(f"""
            INSERT INTO {s}.steps (workflow_id, step_id, name, output, epoch, attempts, started_at, finished_at)
            SELECT w.workflow_id, k, 'step' || k, '1', 1, CASE WHEN (hashtext(w.workflow_id) + k) % 200 = 0
                                                             THEN 3 ELSE 1 END,
                   w.started_at, w.started_at + interval '5 ms'
              FROM {s}.workflows w CROSS JOIN generate_series(0, 1) AS k
             WHERE w.started_at IS NOT NULL""")
        conn.execute(f"""
            INSERT INTO {s}.workers (worker_id, hostname, pid, heartbeat_at)
            SELECT 'worker-' || i, 'host', 1000 + i, now() - i * interval '5 seconds'
              FROM generate_series(0, 3) AS i""")
        conn.execute(f"ANALYZE {s}.workflows")
        conn.execute(f"ANALYZE {s}.steps")
        conn.execute(f"ANALYZE {s}.workers")


@pytest.fixture(scope="module")
def seeded(pg_url: str):
    """A schema migrated and seeded with 100k workflows, shared by this module's read-only tests."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    backend = resolve(pg_url)(pg_url, schema=schema, pool_size=2, retry_seconds=5)  # the server's backend
    backend.open()
    backend.migrate()
    seed(pg_url, schema)
    yield pg_url, schema, backend
    backend.close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def seq_scans(plan: dict) -> list[str]:
    """Relations read by a Seq Scan anywhere in an EXPLAIN (FORMAT JSON) plan."""
    found = []
    if plan.get("Node Type") == "Seq Scan":
        found.append(plan.get("Relation Name", "?"))
    for child in plan.get("Plans", []):
        found += seq_scans(child)
    return found


def explain(url: str, query: str, params: dict | None = None) -> dict:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("EXPLAIN (FORMAT JSON) " + query, params).fetchone()
    return row[0][0]["Plan"]


def test_seed_is_large_enough(seeded):
    url, schema, _ = seeded
    with psycopg.connect(url, autocommit=True) as conn:
        s = sql.Identifier(schema).as_string(None)
        assert conn.execute(f"SELECT count(*) FROM {s}.workflows").fetchone()[0] == SEED_WORKFLOWS
        assert conn.execute(f"SELECT count(*) FROM {s}.steps").fetchone()[0] > SEED_WORKFLOWS


@pytest.mark.skip_targets(citus="a PostgreSQL plan property; on Citus every query is a distributed plan (its shard "
                                "queries are index-served, the coordinator's plan has no scans to inspect)")
def test_documented_queries_are_index_served(seeded):
    url, schema, _ = seeded
    queries = documented_queries()
    assert len(queries) >= 7, "docs/observability.md lost its documented queries"
    for query in queries:
        plan = explain(url, in_schema(query, schema))
        scans = [r for r in seq_scans(plan) if r in ("workflows", "steps")]
        assert not scans, f"sequential scan of {scans} for documented query:\n{query}\nplan: {plan}"


@pytest.mark.skip_targets(citus="a PostgreSQL plan property (see test_documented_queries_are_index_served)")
@pytest.mark.parametrize("filters", [{"name": None, "queue": None}, {"name": "app.flow3", "queue": "mail"},
                                     {"name": None, "queue": "default"}], ids=["all", "name+queue", "default"])
def test_monitor_queries_are_index_served(seeded, filters):
    url, schema, _ = seeded
    params = {**filters, "alive": 7.5, "limit": 20, "bucket": 5, "window": 300, "rows": 2000}
    names = [n for n in _QUERIES if n.startswith("monitor_")]
    assert len(names) == 7
    for name in names:
        query = sql.SQL(_QUERIES[name]).format(schema=sql.Identifier(schema)).as_string(None)
        plan = explain(url, query, params)
        scans = [r for r in seq_scans(plan) if r in ("workflows", "steps")]
        assert not scans, f"sequential scan of {scans} in {name}: {plan}"


def test_documented_queries_answer_on_the_seed(seeded):
    url, schema, _ = seeded
    results = {}
    with psycopg.connect(url, autocommit=True) as conn:
        for query in documented_queries():
            results[query.split("FROM")[0][:60]] = conn.execute(in_schema(query, schema)).fetchall()
    rows = list(results.values())
    errors, latency, slowest, stuck, hotspots, queues, workers = rows[:7]
    assert len(errors) == 1000 and all(r[2] == "ValueError" and r[3].startswith("bad ") for r in errors)
    assert {r[0] for r in latency} == {"step0", "step1"} and all(r[2] == pytest.approx(5.0) for r in latency)
    assert slowest and all(slowest[i][3] >= slowest[i + 1][3] for i in range(len(slowest) - 1))
    reasons = {r[-1] for r in stuck}
    assert reasons == {"lease expired", "pending too long"} and len(stuck) == 100
    assert hotspots and all(r[3] == 3 for r in hotspots)
    assert {r[0] for r in queues} == {"default", "mail", "billing"}
    assert sum(r[1] for r in queues) == SEED_WORKFLOWS // 500 and sum(r[2] for r in queues) == 100
    assert len(workers) == 4 and sum(r[5] for r in workers) == 100


def test_monitor_load_on_100k_workflows(seeded, capsys):
    """One refresh = one monitor_stats call: count its statements and time it (reported, not asserted)."""
    url, schema, backend = seeded
    query = MonitorQuery()
    stats = backend.monitor_stats(query)
    assert sum(q.depth for q in stats.queues) == SEED_WORKFLOWS // 500
    assert len(stats.workers) == 4 and sum(w.claims for w in stats.workers) == 100
    assert len(stats.recent_failures) == 5
    assert stats.oldest_pending is not None and stats.oldest_pending.status == Status.PENDING
    with psycopg.connect(url, autocommit=True) as conn:
        has_pss = conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'pg_stat_statements'"
                               ).fetchone()[0] == 1
        if has_pss:
            conn.execute("SELECT pg_stat_statements_reset()")
    rounds = 20
    begun = time.perf_counter()
    for _ in range(rounds):
        backend.monitor_stats(query)
    client_ms = (time.perf_counter() - begun) * 1000 / rounds
    report = {"client_ms_per_refresh": round(client_ms, 2)}
    if has_pss:
        with psycopg.connect(url, autocommit=True) as conn:
            calls, total = conn.execute(
                "SELECT sum(calls), sum(total_exec_time) FROM pg_stat_statements WHERE query LIKE %s",
                (f"%{schema}%",)).fetchone()
        report.update(statements_per_refresh=float(calls) / rounds, server_ms_per_refresh=float(total) / rounds)
        assert float(calls) / rounds == 6  # the 7 statements but monitor_node, which names no table
    with capsys.disabled():
        print(f"\nmonitor load on {SEED_WORKFLOWS} workflows: {json.dumps(report)}")


# -- views on a small, exactly known store -------------------------------------------------------------


def test_views_expose_documented_columns(backend, pg_url, schema):
    backend.lease_renew("w-1", 30, WorkerInfo(worker_id="w-1", hostname="hostA", pid=7))
    backend.workflow_create(NewWorkflow("ok", "app.ok", "[]", owner="w-1", queue="mail"))
    backend.step_record(StepResult("ok", 0, "fetch", 1, output="1", attempts=2))
    backend.workflow_finish(Finish("ok", 1, Status.SUCCESS, output="1"))
    backend.workflow_create(NewWorkflow("bad", "app.bad", "[]", owner="w-1"))
    backend.workflow_finish(Finish("bad", 1, Status.ERROR,
                                   error='{"type": "KeyError", "message": "no such key", "traceback": ""}'))
    backend.workflow_create(NewWorkflow("run", "app.ok", "[]", owner="w-1", queue="mail"))
    backend.workflow_create(NewWorkflow("wait", "app.ok", "[]"))
    s = sql.Identifier(schema).as_string(None)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        def rows(q: str) -> list[tuple]:
            return conn.execute(q.replace("kit.", s + ".")).fetchall()

        wf = {r[0]: r for r in rows("SELECT workflow_id, status, queue, owner, duration_ms, error_type, "
                                    "error_message, duration FROM kit.v_workflows")}
        assert wf["bad"][1:7:4] == ("ERROR", "KeyError") and wf["bad"][6] == "no such key"
        assert wf["ok"][4] is not None and wf["ok"][4] >= 0 and wf["ok"][5] is None
        assert wf["run"][3] == "w-1" and wf["run"][4] is None and wf["wait"][3] is None
        steps = rows("SELECT workflow_id, name, attempts, failed, duration_ms FROM kit.v_steps")
        assert steps == [("ok", "fetch", 2, False, None)]  # recorded without a start time
        queues = dict((r[0], r[1:]) for r in rows("SELECT queue, depth, in_flight, concurrency_limit FROM kit.v_queues"))
        assert queues == {"default": (1, 0, None), "mail": (0, 1, None)}
        workers = rows("SELECT worker_id, hostname, pid, alive, claims FROM kit.v_workers")
        assert workers == [("w-1", "hostA", 7, True, 1)]


# -- CLI reports ---------------------------------------------------------------------------------------
@pytest.fixture
def db_args(pg_url: str, schema: str) -> list[str]:
    return ["--database-url", pg_url, "--schema", schema]


def test_workflows_list_sort_orders(backend, db_args):
    for wid, pause in (("a-fast", 0.0), ("b-slow", 0.3), ("c-mid", 0.1)):
        backend.workflow_create(NewWorkflow(wid, "app.ok", "[]", owner="w"))
        time.sleep(pause)
        backend.workflow_finish(Finish(wid, 1, Status.SUCCESS, output="1"))
    backend.workflow_create(NewWorkflow("d-pending", "app.ok", "[]"))

    def ids(*extra: str) -> list[str]:
        return [r["workflow_id"] for r in json_lines(assert_ok(run_kit("workflows", "list", "--json", *db_args,
                                                                         *extra)))]

    assert ids() == ["d-pending", "c-mid", "b-slow", "a-fast"]
    assert ids("--sort", "oldest") == ids("--oldest-first") == ["a-fast", "b-slow", "c-mid", "d-pending"]
    assert ids("--sort", "slowest") == ["b-slow", "c-mid", "a-fast", "d-pending"]
    assert ids("--sort", "finished", "--limit", "2") == ["c-mid", "b-slow"]
    assert ids("--sort", "slowest", "--status", "PENDING") == ["d-pending"]
    table = assert_ok(run_kit("workflows", "list", "--sort", "slowest", *db_args))
    assert table.index("b-slow") < table.index("a-fast")
    assert_usage_error(run_kit("workflows", "list", "--sort", "fastest", *db_args), "--sort")
    assert_usage_error(run_kit("workflows", "list", "--sort", "slowest", "--oldest-first", *db_args), "--sort")


def test_workflow_show_lists_children(backend, db_args):
    backend.workflow_create(NewWorkflow("parent-1", "app.parent", "[]", owner="w"))
    backend.step_record(StepResult("parent-1", 0, "spawn", 1, output='"child-1"'))
    backend.workflow_create(NewWorkflow("child-1", "app.child", "[]", parent_id="parent-1", owner="w"))
    backend.workflow_finish(Finish("child-1", 1, Status.ERROR, error='{"type": "OSError", "message": "disk full"}'))
    backend.workflow_create(NewWorkflow("child-2", "app.child", "[]", parent_id="parent-1"))
    data = json.loads(assert_ok(run_kit("workflow", "show", "parent-1", "--json", *db_args)))
    assert [c["workflow_id"] for c in data["children"]] == ["child-1", "child-2"]
    assert [c["status"] for c in data["children"]] == ["ERROR", "PENDING"]
    assert [s["name"] for s in data["steps"]] == ["spawn"]
    text = assert_ok(run_kit("workflow", "show", "parent-1", *db_args))
    assert "children (2)" in text and "child-2" in text and "OSError: disk full" in text
    leaf = assert_ok(run_kit("workflow", "show", "child-2", *db_args))
    assert "children: none" in leaf
    assert json.loads(assert_ok(run_kit("workflow", "show", "child-2", "--json", *db_args)))["children"] == []


def test_monitor_once_prints_a_frame(backend, db_args):
    backend.lease_renew("w-9", 30, WorkerInfo(worker_id="w-9", hostname="hostZ", pid=99))
    backend.workflow_create(NewWorkflow("m-ok", "app.ok", "[]", owner="w-9"))
    backend.workflow_finish(Finish("m-ok", 1, Status.SUCCESS, output="1"))
    backend.workflow_create(NewWorkflow("m-bad", "app.bad", "[]", owner="w-9"))
    backend.workflow_finish(Finish("m-bad", 1, Status.ERROR, error='{"type": "ValueError", "message": "nope"}'))
    backend.workflow_create(NewWorkflow("m-wait", "app.ok", "[]", queue="mail"))
    out = assert_ok(run_kit("monitor", "--once", *db_args))
    for fragment in ("kit monitor", "postgres", "(primary)", "w-9", "hostZ:99", "mail", "m-wait",
                     "ValueError: nope", "m-bad", "p50", "finished per second"):
        assert fragment in out, f"{fragment!r} missing from:\n{out}"
    counts = dict(re.findall(r"(PENDING|RUNNING|SUCCESS|ERROR|CANCELLED)\s+(\d+)", out))
    assert counts == {"PENDING": "1", "RUNNING": "0", "SUCCESS": "1", "ERROR": "1", "CANCELLED": "0"}
    filtered = assert_ok(run_kit("monitor", "--once", "--name", "app.ok", *db_args))
    assert "name=app.ok" in filtered and "ValueError: nope" not in filtered
    assert dict(re.findall(r"(ERROR|SUCCESS)\s+(\d+)", filtered)) == {"SUCCESS": "1", "ERROR": "0"}


def test_monitor_usage_errors(db_args):
    assert_usage_error(run_kit("monitor", "--once", "--database-url", UNREACHABLE), "127.0.0.1")
    assert_usage_error(run_kit("monitor", "--interval", "0", *db_args), "--interval")
    assert_usage_error(run_kit("monitor", "--once", *db_args), "kit migrate")  # schema not migrated
