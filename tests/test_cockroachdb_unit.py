"""The CockroachDB backend without a server: detection and capabilities (table-tested with the version strings
CockroachDB reports), the registry's choice, the dialect layer, the statement set's hygiene (nothing
PostgreSQL-only reaches a cluster), the retry policy and the migration splitter."""

from __future__ import annotations

import dataclasses
import random
import re

import pytest
from kit.backends.cockroachdb import (
    CockroachBackend,
    RetryPolicy,
    SerializableProfileBackend,
    cockroach_capabilities,
)
from kit.backends.cockroachdb.migrations import split_statements
from kit.backends.cockroachdb.retry import OperationStats, OperationTracker, format_stats
from kit.backends.cockroachdb.server import READ_COMMITTED_SETTING, claim_isolation, cockroach_version
from kit.backends.postgres import PostgresBackend
from kit.backends.postgres.connection import PostgresCore

import kit.registry as registry
from kit.errors import ConfigError
from kit.storage import Capabilities, ServerInfo

RC_ON = {"default_transaction_isolation": "serializable", READ_COMMITTED_SETTING: "true"}
RC_OFF = {"default_transaction_isolation": "serializable", READ_COMMITTED_SETTING: "false"}

COCKROACH = [
    ServerInfo("CockroachDB CCL v24.1.0 (x86_64-pc-linux-gnu, built 2024/05/15 21:28:29, go1.22.2 "
               "X:nocoverageredesign)", 130000, {}, RC_ON),
    ServerInfo("CockroachDB CCL v23.2.4 (aarch64-unknown-linux-gnu, built 2024/04/08 17:47:07, go1.21.9 "
               "X:nocoverageredesign)", 130000, {}, RC_OFF),
    ServerInfo("CockroachDB CCL v25.2.1 (x86_64-pc-linux-gnu, built 2025/06/02 12:00:00, go1.23.7 "
               "X:nocoverageredesign)", 180000, {}, RC_ON),
]
POSTGRES_16 = ServerInfo("PostgreSQL 16.2 on x86_64-pc-linux-gnu, compiled by gcc (GCC) 10.2.1 20210130 (Red Hat "
                         "10.2.1-11), 64-bit", 160002, {"plpgsql": "1.0"},
                         {"default_transaction_isolation": "serializable", READ_COMMITTED_SETTING: "true"},
                         frozenset({"pg_logical_emit_message"}))
CITUS = dataclasses.replace(POSTGRES_16, extensions={"plpgsql": "1.0", "citus": "13.2-1"})

BASE = dict(listen_notify=False, notify_in_statement=False, multi_row_locking_claims=False, transactional_steps=True,
            advisory_locks=False, retry_serialization_failures=True, replication_barrier=False,
            sql_enqueue_function=False)


@pytest.mark.parametrize("info, claims, follower, expected", [
    (COCKROACH[0], "auto", False, Capabilities(**BASE, skip_locked=True, server_version=COCKROACH[0].version)),
    (COCKROACH[1], "auto", False, Capabilities(**BASE, skip_locked=False, server_version=COCKROACH[1].version)),
    (COCKROACH[0], "serializable", True,
     Capabilities(**BASE, skip_locked=False, follower_reads=True, server_version=COCKROACH[0].version)),
    (COCKROACH[1], "read_committed", False,  # asked for, not granted: serializable claims
     Capabilities(**BASE, skip_locked=False, server_version=COCKROACH[1].version)),
    # the profile: PostgreSQL never gets follower reads, whatever the option says
    (POSTGRES_16, "serializable", True, Capabilities(**BASE, skip_locked=False, server_version=POSTGRES_16.version)),
    (POSTGRES_16, "read_committed", False, Capabilities(**BASE, skip_locked=True, server_version=POSTGRES_16.version)),
], ids=["24.1-rc", "23.2-no-rc", "24.1-serializable-follower", "23.2-rc-refused", "profile", "profile-rc"])
def test_capabilities_table(info, claims, follower, expected):
    assert cockroach_capabilities(info, follower_reads=follower, claims=claims) == expected


def test_claim_isolation():
    assert claim_isolation(COCKROACH[0]) == "read committed"
    assert claim_isolation(COCKROACH[1]) == "serializable"
    assert claim_isolation(COCKROACH[0], "serializable") == "serializable"
    assert claim_isolation(dataclasses.replace(COCKROACH[0], settings={})) == "serializable"  # not probed: safe
    with pytest.raises(ValueError):
        claim_isolation(COCKROACH[0], "skip_locked")


def test_versions():
    assert [cockroach_version(i) for i in COCKROACH] == [(24, 1, 0), (23, 2, 4), (25, 2, 1)]
    assert cockroach_version(POSTGRES_16) is None


def test_detection():
    assert all(CockroachBackend.detect(i) for i in COCKROACH)
    assert not CockroachBackend.detect(POSTGRES_16) and not CockroachBackend.detect(CITUS)
    # The profile is never detected: it is chosen by name, and serves plain PostgreSQL only.
    assert not any(SerializableProfileBackend.detect(i) for i in [*COCKROACH, POSTGRES_16, CITUS])
    profile = SerializableProfileBackend("postgresql://kit@db.example/app")
    assert profile._serves(POSTGRES_16)
    assert not profile._serves(COCKROACH[0]) and not profile._serves(CITUS)


@pytest.fixture
def probes(monkeypatch):
    class Probes:
        info: ServerInfo = POSTGRES_16
        calls = 0

    def probe(cls, url, *, connect_timeout):
        Probes.calls += 1
        return Probes.info

    monkeypatch.setattr(PostgresCore, "probe", classmethod(probe))
    return Probes


def test_registry_choices(probes):
    assert registry.resolve("cockroachdb://root@db.example:26257/defaultdb") is CockroachBackend
    assert probes.calls == 0, "cockroachdb:// is claimed by one backend: no probe"
    probes.info = COCKROACH[0]
    assert registry.resolve("postgresql://root@db.example:26257/defaultdb") is CockroachBackend
    probes.info = POSTGRES_16
    assert registry.resolve("postgresql://kit@db.example/app") is PostgresBackend
    assert registry.resolve("postgresql://kit@db.example/app", probe=False) is PostgresBackend
    assert registry.resolve("postgresql://kit@db.example/app", "cockroachdb-profile") is SerializableProfileBackend


def test_a_cockroachdb_backend_named_for_a_postgres_server_says_what_to_set():
    msg = str(registry.server_mismatch(CockroachBackend, POSTGRES_16, "postgresql://kit:pw@db/app"))
    assert "it is PostgreSQL 16.2" in msg and "set backend='postgres'" in msg and "pw" not in msg
    msg = str(registry.server_mismatch(PostgresBackend, COCKROACH[0], "postgresql://root@db:26257/defaultdb"))
    assert "it is CockroachDB CCL v24.1.0; set backend='cockroachdb'" in msg
    assert "cockroachdb-profile" not in msg


def test_options_from_the_environment(monkeypatch):
    monkeypatch.setenv("KIT_COCKROACH_CLAIMS", "bogus")
    with pytest.raises(ConfigError, match="KIT_COCKROACH_CLAIMS"):
        CockroachBackend("cockroachdb://root@db:26257/defaultdb")
    monkeypatch.setenv("KIT_COCKROACH_CLAIMS", "serializable")
    monkeypatch.setenv("KIT_COCKROACH_FOLLOWER_READS", "maybe")
    with pytest.raises(ConfigError, match="KIT_COCKROACH_FOLLOWER_READS"):
        CockroachBackend("cockroachdb://root@db:26257/defaultdb")
    monkeypatch.setenv("KIT_COCKROACH_FOLLOWER_READS", "true")
    b = CockroachBackend("cockroachdb://root@db:26257/defaultdb")
    assert b._claim_mode == "serializable" and b._follower_reads
    assert b.dsn.startswith("postgresql://")


# -- the statements -----------------------------------------------------------------------------------------

POSTGRES_ONLY = {
    "pg_notify": re.compile(r"\bpg_notify\b", re.I),
    "make_interval": re.compile(r"\bmake_interval\b", re.I),
    "FOR KEY SHARE": re.compile(r"\bFOR\s+KEY\s+SHARE\b", re.I),
    "FOR NO KEY UPDATE": re.compile(r"\bFOR\s+NO\s+KEY\s+UPDATE\b", re.I),
    "advisory lock": re.compile(r"\bpg_\w*advisory", re.I),
    "inet_server_addr": re.compile(r"\binet_server_(addr|port)\b", re.I),
}


@pytest.mark.parametrize("cls", [CockroachBackend, SerializableProfileBackend])
def test_no_postgresql_only_sql_in_the_statements(cls):
    for name, text in cls.queries.items():
        body = re.sub(r"--[^\n]*", "", text)
        for what, pattern in POSTGRES_ONLY.items():
            if cls is SerializableProfileBackend and what == "inet_server_addr" and name == "monitor_node":
                continue  # the profile's dialect: PostgreSQL's node line
            assert not pattern.search(body), f"{cls.name}: statement {name} uses {what}"
        if re.search(r"\bSKIP\s+LOCKED\b", body, re.I):
            assert name == "workflow_claim_lock", f"SKIP LOCKED outside the READ COMMITTED claim: {name}"


def test_the_two_dialects_share_every_data_statement():
    crdb, profile = CockroachBackend.queries, SerializableProfileBackend.queries
    assert set(crdb) - set(profile) == {"follower_read"}
    differ = sorted(k for k in profile if crdb[k] != profile[k])
    assert differ == ["monitor_node"], differ
    assert "crdb_internal.node_id()" in crdb["monitor_node"]
    assert "AS OF SYSTEM TIME follower_read_timestamp()" in crdb["follower_read"]


def test_hash_sharded_indexes_only_on_a_cluster():
    crdb = CockroachBackend("cockroachdb://root@db:26257/defaultdb", schema="kit").migration_sql()
    profile = SerializableProfileBackend("postgresql://kit@db/app", schema="kit").migration_sql()
    assert "USING HASH" not in profile
    sharded = re.findall(r"CREATE INDEX IF NOT EXISTS (\w+) ON [^;]*?\) USING HASH", crdb)
    assert {"workflows_created_idx", "workflows_finished_idx", "workflows_lease_idx", "workers_heartbeat_idx",
            "workflows_pending_idx"} <= set(sharded)
    assert "workflows_owner_idx" not in sharded and "workflows_parent_idx" not in sharded
    # Only the dialect placeholder differs: the same statements otherwise.
    assert crdb.replace(" USING HASH", "") == profile
    assert "CREATE FUNCTION" not in crdb and "plpgsql" not in crdb.lower()


def test_every_migration_statement_is_idempotent():
    for migration in CockroachBackend.migrations:
        for stmt in split_statements(migration.body):
            assert re.match(r"(CREATE (UNIQUE )?INDEX IF NOT EXISTS|CREATE TABLE IF NOT EXISTS|CREATE OR REPLACE VIEW|"
                            r"ALTER TABLE \S+ ADD COLUMN IF NOT EXISTS)", stmt), (migration.version, stmt[:60])
    assert [m.version for m in CockroachBackend.migrations] == [m.version for m in PostgresBackend.migrations]


def test_split_statements():
    body = "-- a comment; with a semicolon\nCREATE TABLE a (x int);\n\nCREATE INDEX i ON a (x)\n    WHERE x > 0;\n"
    assert split_statements(body) == ["CREATE TABLE a (x int)", "CREATE INDEX i ON a (x)\n    WHERE x > 0"]
    assert split_statements("-- only a comment\n") == []


# -- retries -------------------------------------------------------------------------------------------------

def test_retry_policy_is_full_jitter_and_capped():
    policy = RetryPolicy(max_attempts=5, base=0.01, cap=0.05)
    rng = random.Random(7)
    delays = [policy.delay(n, rng) for n in range(1, 40)]
    assert all(0 <= d <= 0.05 for d in delays)
    assert max(delays[:1]) <= 0.02 and len(set(delays)) == len(delays)


def test_operation_tracker_counts_the_outermost_operation():
    t = OperationTracker()
    with t.operation("schedule_advance"):
        with t.operation("workflow_enqueue_in"):
            assert t.current() == "schedule_advance"
            t.add(t.current(), retries=2, in_call=2)
    assert t.current() == "(internal)"
    snap = t.snapshot()
    assert snap["schedule_advance"] == OperationStats(calls=1, retries=2, max_retries_in_call=2)
    assert "workflow_enqueue_in" not in snap
    text = format_stats(snap)
    assert "schedule_advance" in text and "total" in text


def test_sqlalchemy_steps_use_cockroachdbs_dialect_or_say_what_to_install():
    """On a cluster, SQLAlchemy in transactional steps needs CockroachDB's dialect (package
    sqlalchemy-cockroachdb); the profile runs on PostgreSQL and keeps PostgreSQL's."""
    pytest.importorskip("sqlalchemy", reason="the [sqlalchemy] extra is not installed")
    from kit.errors import UsageError
    from kit.integrations.sqlalchemy import _engine_for

    assert SerializableProfileBackend.sqlalchemy_url == PostgresBackend.sqlalchemy_url == "postgresql+psycopg://"
    backend = CockroachBackend("cockroachdb://root@db.example:26257/defaultdb")  # never connects here
    try:
        import sqlalchemy_cockroachdb  # noqa: F401
    except ModuleNotFoundError:
        with pytest.raises(UsageError) as info:
            _engine_for(backend)
        msg = str(info.value)
        assert msg == ("backend 'cockroachdb' uses the SQLAlchemy dialect cockroachdb+psycopg, which is not "
                       "installed: pip install sqlalchemy-cockroachdb")
    else:
        engine = _engine_for(backend)
        assert (engine.dialect.name, engine.dialect.driver) == ("cockroachdb", "psycopg")
