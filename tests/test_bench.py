"""`kit bench` end to end with tiny sizes against real PostgreSQL servers.

Only the shape of the JSON results and the counts are checked, never timings.
"""

from __future__ import annotations

import json
import pstats

import psycopg
import pytest
from psycopg import sql

from kit.cli import main

pytestmark = pytest.mark.all_backends  # also on the extra targets (Citus): tests/targets.py

TOP_KEYS = {"kit_bench_version", "workload", "started_at", "finished_at", "machine", "database", "parameters",
            "targets", "floor", "results", "json_path"}
FLOOR_KEYS = {"insert", "fenced_insert", "fenced_key_share_insert", "concurrent", "iterations"}
INPROCESS_KEYS = {"workflows", "steps_per_workflow", "completed", "checkpoints", "workflows_per_s", "steps_per_s",
                  "ms_per_step", "client_cpu_ms_per_step", "floor_ms", "ratio_to_floor", "marginal_ms_per_step"}


def _bench(pg_url: str, schema: str, tmp_path, workload: str, *extra: str) -> dict:
    out = tmp_path / f"{workload}.json"
    rc = main(["bench", workload, "--database-url", pg_url, "--schema", schema, "--floor-iterations", "20",
               "--concurrency", "2", "--json", str(out), *extra])
    assert rc == 0
    data = json.loads(out.read_text())
    assert TOP_KEYS <= set(data)
    assert data["workload"] == workload
    assert data["machine"]["cpu_count"] >= 1 and data["machine"]["python"]
    assert data["database"]["server_version"].startswith("PostgreSQL")
    assert data["database"]["schema"] == schema
    assert FLOOR_KEYS <= set(data["floor"])
    assert data["floor"]["insert"]["ms"] > 0
    assert data["floor"]["concurrent"]["connections"] == 2
    return data


@pytest.mark.parametrize("workload", ["seq", "par"])
def test_inprocess_workloads(pg_url, schema, tmp_path, workload, capsys):
    data = _bench(pg_url, schema, tmp_path, workload, "--workflows", "4", "--steps", "3")
    r = data["results"][workload]
    assert INPROCESS_KEYS <= set(r)
    assert (r["workflows"], r["steps_per_workflow"], r["completed"], r["checkpoints"]) == (4, 3, 4, 12)
    assert r["concurrency"] == (1 if workload == "seq" else 2)
    assert data["parameters"][workload]["workflows"] == 4
    assert "in-process workflows" in capsys.readouterr().out


def test_queue_drain(pg_url, schema, tmp_path):
    data = _bench(pg_url, schema, tmp_path, "queue-drain", "--workflows", "6")
    r = data["results"]["queue-drain"]
    assert (r["workflows"], r["steps_per_workflow"], r["workers"], r["completed"], r["checkpoints"]) == (6, 1, 1, 6, 6)
    for key in ("enqueue_per_s", "drain_s", "workflows_per_s", "workflows_per_s_per_worker", "ratio_to_target",
                "speedup_vs_peer", "worker_cpu_ms_per_workflow"):
        assert key in r


def test_recovery(pg_url, schema, tmp_path):
    data = _bench(pg_url, schema, tmp_path, "recovery", "--workflows", "2", "--steps", "4", "--step-seconds", "0.1",
                  "--lease-seconds", "0.5")
    r = data["results"]["recovery"]
    assert (r["workflows"], r["completed"], r["checkpoints"]) == (2, 2, 8)
    assert r["recovered_workflows"] >= 1
    assert r["checkpoints_at_kill"] < 8
    for key in ("kill_to_first_reclaim_s", "kill_to_first_recovered_checkpoint_s", "kill_to_all_done_s"):
        assert r[key] is not None and r[key] >= 0


def test_profile_writes_pstats(pg_url, schema, tmp_path, capsys):
    prof = tmp_path / "seq.pstats"
    data = _bench(pg_url, schema, tmp_path, "seq", "--workflows", "2", "--steps", "2", "--profile", str(prof))
    assert data["results"]["seq"]["profile"]["path"] == str(prof)
    names = {fn[2] for fn in pstats.Stats(str(prof)).stats}  # type: ignore[attr-defined]
    assert "step_record" in names  # the checkpoint runs in a kit thread: every thread is profiled


def test_lanes_distribute_the_bench_schema_on_citus_only(pg_url, schema, tmp_path, capsys):
    """--lanes N: on Citus the bench schema gets N shards, i.e. N ready lanes; elsewhere a usage error."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        citus = conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'citus'").fetchone()[0] == 1
    out = tmp_path / "drain.json"
    rc = main(["bench", "queue-drain", "--database-url", pg_url, "--schema", schema, "--floor-iterations", "20",
               "--concurrency", "2", "--workflows", "6", "--lanes", "3", "--json", str(out)])
    if not citus:
        assert rc == 2
        assert "--lanes applies to a backend with lanes" in capsys.readouterr().err
        return
    assert rc == 0
    data = json.loads(out.read_text())
    assert data["parameters"]["lanes"] == 3
    assert data["results"]["queue-drain"]["completed"] == 6
    with psycopg.connect(pg_url, autocommit=True) as conn:
        shards = conn.execute("SELECT count(*) FROM pg_dist_shard WHERE logicalrelid = %s::regclass",
                              (f"{schema}.workflows",)).fetchone()[0]
        lanes = conn.execute(sql.SQL("SELECT count(*) FROM {}.lanes").format(sql.Identifier(schema))).fetchone()[0]
    assert (shards, lanes) == (3, 3)


def test_refuses_a_schema_it_did_not_create(pg_url, schema, tmp_path, capsys):
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        conn.execute(sql.SQL("CREATE TABLE {}.precious (x int)").format(sql.Identifier(schema)))
    rc = main(["bench", "seq", "--database-url", pg_url, "--schema", schema, "--json", str(tmp_path / "x.json")])
    assert rc == 2
    assert "refusing to drop" in capsys.readouterr().err
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"{schema}.precious",)).fetchone()[0]


@pytest.mark.parametrize("argv, message", [
    (["--workflows", "0"], "--workflows must be between"),
    (["--steps", "x"], "--steps expects an integer"),
    (["--concurrency", "1000"], "--concurrency must be between"),
    (["--lease-seconds", "nan"], "--lease-seconds must be between"),
    (["--profile", "p.out"], "--profile works with the seq and par"),
    (["--lanes", "0"], "--lanes must be between"),
])
def test_bad_values_are_one_line_usage_errors(argv, message, capsys):
    workload = "recovery" if "--profile" in argv else "seq"
    assert main(["bench", workload, *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_bench_app_is_lazy_and_configured_from_the_environment(monkeypatch):
    import kit.bench
    from kit.cli import load_app_object

    monkeypatch.setattr(kit.bench, "_bench_app", None)
    monkeypatch.setenv("KIT_SCHEMA", "bench_env_schema")
    app = load_app_object("kit.bench:bench_app")
    assert app.config.schema == "bench_env_schema"
    assert {"bench.steps", "bench.slow"} <= set(app.workflow_names())
