"""The server fixtures give real, working PostgreSQL servers."""

from __future__ import annotations

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

try:
    from .servers import DebianPostgres, selected_servers
except ImportError:
    from servers import DebianPostgres, selected_servers

EXPECTED_VERSION = {"pgserver16": "PostgreSQL 16", "debian15": "PostgreSQL 15"}


def test_pg_url_is_real_postgres(pg_url, pg_servers, request):
    name = request.node.callspec.id
    assert pg_servers[name] == pg_url
    with psycopg.connect(pg_url, autocommit=True) as conn:
        version = conn.execute("select version()").fetchone()[0]
        assert version.startswith("PostgreSQL"), version
        if name in EXPECTED_VERSION:
            assert EXPECTED_VERSION[name] in version, version
        # a real server: transactions, DDL, server-side functions
        assert conn.execute(
            "select pg_backend_pid() > 0, current_setting('server_version_num')::int"
        ).fetchone()[0]


def test_schema_isolation_and_cleanup(pg_url, schema):
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"create schema {schema}")
        conn.execute(f"create table {schema}.t (x int)")
        conn.execute(f"insert into {schema}.t values (1), (2)")
        assert conn.execute(f"select sum(x) from {schema}.t").fetchone()[0] == 3


def test_schema_name_is_unique(schema):
    assert schema.startswith("t_") and len(schema) == 14


needs_debian15 = pytest.mark.skipif(
    "debian15" not in selected_servers(), reason="debian15 not available or not selected (KIT_TEST_SERVERS)"
)


@needs_debian15
def test_debian15_requires_password(pg_servers):
    url = pg_servers["debian15"]
    params = conninfo_to_dict(url)
    assert params["host"] == "127.0.0.1" and params["user"] == "kit"
    with psycopg.connect(url) as conn:  # correct password works
        assert conn.execute("select current_user").fetchone()[0] == "kit"
        assert conn.execute("show fsync").fetchone()[0] == "off"
        assert conn.execute("show max_connections").fetchone()[0] == "200"
    for bad in ({**params, "password": "wrong"}, {k: v for k, v in params.items() if k != "password"}):
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(make_conninfo(**bad), connect_timeout=5)


@needs_debian15
def test_debian15_restart_and_kill_keep_committed_data():
    with DebianPostgres() as pg:
        url, port = pg.url, pg.port
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("create table crash (x int)")
            conn.execute("insert into crash values (1)")
        pg.restart()
        assert pg.url == url and pg.port == port
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("insert into crash values (2)")
        old_pid = pg.pid
        victim = psycopg.connect(url, autocommit=True)
        pg.kill()
        assert pg.pid is None
        with pytest.raises(psycopg.OperationalError):
            victim.execute("select 1")
        victim.close()
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(url, connect_timeout=2)
        pg.restart()  # crash recovery
        assert pg.pid not in (None, old_pid)
        with psycopg.connect(url) as conn:
            assert conn.execute("select array_agg(x order by x) from crash").fetchone()[0] == [1, 2]
        data_dir = pg.dir
    assert data_dir is not None and not data_dir.exists()
