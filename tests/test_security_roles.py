"""Least-privilege roles on a real PostgreSQL: an owner migrates, a worker runs with DML only, a monitor
only reads. The grants are the ones ``kit migrate --print-grants`` prints (docs/security.md)."""

from __future__ import annotations

import re
import uuid

import psycopg
import pytest
from psycopg import sql
from security_helpers import denied, roles, run_cli

import kit
from kit.errors import SchemaError, StorageError
from kit.registry import resolve

pytestmark = pytest.mark.all_backends  # also on the extra targets (Citus): tests/targets.py


def _setup(pg_url: str, schema: str, made: dict[str, tuple[str, str]]) -> tuple[str, str]:
    """Owner migrates the schema and runs the printed grants; an app table is granted to the worker and a
    secret one is not. Returns the two application table names."""
    owner, owner_url = made["owner"]
    worker, _ = made["worker"]
    monitor, _ = made["monitor"]
    with psycopg.connect(pg_url, autocommit=True) as conn:
        dbname = conn.info.dbname
        conn.execute(sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(sql.Identifier(dbname),
                                                                         sql.Identifier(owner)))
    code, out, err = run_cli(["migrate", "--database-url", owner_url, "--schema", schema])
    assert code == 0, err
    code, grants, err = run_cli(["migrate", "--print-grants", "--worker-role", worker, "--monitor-role", monitor,
                                 "--database-url", owner_url, "--schema", schema])  # the server's backend
    assert code == 0, err
    statements = [ln for ln in grants.splitlines() if ln and not ln.startswith("--")]
    assert all(ln.startswith(("GRANT SELECT", "GRANT USAGE", "GRANT EXECUTE", "REVOKE")) for ln in statements)
    assert not any("CREATE" in ln or "ALL PRIVILEGES" in ln or "TRUNCATE" in ln for ln in statements)
    sales, secret = f"{schema}_sales", f"{schema}_secret"
    with psycopg.connect(owner_url, autocommit=True) as conn:
        conn.execute(grants)
        conn.execute(sql.SQL("CREATE TABLE {s}.{t} (order_id text PRIMARY KEY, cents int)").format(
            s=sql.Identifier(schema), t=sql.Identifier(sales)))
        conn.execute(sql.SQL("CREATE TABLE {s}.{t} (card text)").format(
            s=sql.Identifier(schema), t=sql.Identifier(secret)))
        conn.execute(sql.SQL("INSERT INTO {s}.{t} VALUES ('4111-1111')").format(
            s=sql.Identifier(schema), t=sql.Identifier(secret)))
        conn.execute(sql.SQL("GRANT SELECT, INSERT ON {s}.{t} TO {r}").format(
            s=sql.Identifier(schema), t=sql.Identifier(sales), r=sql.Identifier(worker)))
    return sales, secret


def test_worker_and_monitor_roles_run_with_least_privilege(pg_url: str, schema: str) -> None:
    with roles(pg_url, "owner", "worker", "monitor", "viewer") as made:
        sales, secret = _setup(pg_url, schema, made)
        worker_url, monitor_url = made["worker"][1], made["monitor"][1]
        s = sql.Identifier(schema)

        # A real worker under the worker role (migrate=True by default: an up-to-date schema needs no DDL).
        app = kit.Kit(worker_url, schema=schema, lease_seconds=4, heartbeat_seconds=1, poll_seconds=0.2)
        orders = app.queue("orders", concurrency=2)

        @app.transaction(name="sec.record")
        def record(conn, order_id: str, cents: int) -> int:
            conn.execute(sql.SQL("INSERT INTO {s}.{t} VALUES (%s, %s)").format(s=s, t=sql.Identifier(sales)),
                         (order_id, cents))
            return cents

        @app.workflow(name="sec.checkout")
        def checkout(order_id: str) -> dict:
            app.sleep(0.05)
            approval = app.recv("approve", timeout=30)
            cents = record(order_id, approval["cents"])
            app.set_event("state", "recorded")
            app.write_stream("log", order_id)
            app.close_stream("log")
            return {"order": order_id, "cents": cents}

        try:
            app.launch()
            queued = orders.enqueue(checkout, "o-1", workflow_id=f"sec-{uuid.uuid4().hex[:8]}")
            local = app.start(checkout, "o-2", workflow_id=f"sec-{uuid.uuid4().hex[:8]}")
            for handle, cents in ((queued, 100), (local, 250)):
                app.send(handle.workflow_id, {"cents": cents}, topic="approve")
            assert queued.result(timeout=60) == {"order": "o-1", "cents": 100}
            assert local.result(timeout=60) == {"order": "o-2", "cents": 250}
            assert app.get_event(queued.workflow_id, "state", timeout=5) == "recorded"
            assert list(app.read_stream(queued.workflow_id, "log", timeout=5)) == ["o-1"]
        finally:
            app.close()

        # The worker role cannot change the schema, create anything, or read what it was not granted.
        for statement in (
            sql.SQL("ALTER TABLE {}.workflows ADD COLUMN x int").format(s),
            sql.SQL("CREATE TABLE {}.evil (x int)").format(s),
            sql.SQL("DROP TABLE {}.steps").format(s),
            sql.SQL("CREATE INDEX ON {}.workflows (name)").format(s),
            sql.SQL("TRUNCATE {}.workflows").format(s),
            sql.SQL("SELECT * FROM {}.{}").format(s, sql.Identifier(secret)),
            sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema + "_x")),
            "CREATE TABLE public.kit_worker_evil (x int)",
        ):
            assert denied(worker_url, statement), statement
        probe = kit.Kit(worker_url, schema=schema, migrate=False)
        try:
            with pytest.raises(StorageError, match="lacks a privilege kit needs.*--print-grants"):
                probe.backend._run(lambda c: c.execute(
                    sql.SQL("SELECT * FROM {}.{}").format(s, sql.Identifier(secret))).fetchall())
        finally:
            probe.close()

        # The monitor role: kit monitor, kit workflows list, kit workflow show all work ...
        args = ["--database-url", monitor_url, "--schema", schema]
        code, out, err = run_cli(["monitor", "--once", *args])
        assert code == 0, err
        assert re.search(r"SUCCESS\s+2\b", out) and re.search(r"ERROR\s+0\b", out), out
        code, out, err = run_cli(["workflows", "list", "--json", *args])
        assert code == 0, err
        assert out.count("sec.checkout") == 2
        code, out, err = run_cli(["workflow", "show", queued.workflow_id, *args])
        assert code == 0, err
        assert "sec.record" in out and "approve" in out
        with psycopg.connect(monitor_url) as conn:
            assert conn.execute(sql.SQL("SELECT count(*) FROM {}.v_workflows").format(s)).fetchone()[0] == 2
        # ... and it writes nothing: no DML, no kit.enqueue, no application tables.
        for statement in (
            sql.SQL("UPDATE {}.workflows SET status = 'CANCELLED'").format(s),
            sql.SQL("DELETE FROM {}.steps").format(s),
            sql.SQL("INSERT INTO {}.queues (name) VALUES ('x')").format(s),
            sql.SQL("SELECT {}.enqueue('sec.checkout')").format(s),
            sql.SQL("SELECT * FROM {}.{}").format(s, sql.Identifier(sales)),
            sql.SQL("CREATE TABLE {}.evil (x int)").format(s),
        ):
            assert denied(monitor_url, statement), statement
        with psycopg.connect(pg_url) as conn:
            statuses = conn.execute(sql.SQL("SELECT status FROM {}.workflows").format(s)).fetchall()
        assert sorted(statuses) == [("SUCCESS",), ("SUCCESS",)]

        # A views-only role for SQL dashboards (docs/security.md): the views, not the payload tables.
        viewer, viewer_url = made["viewer"]
        with psycopg.connect(made["owner"][1], autocommit=True) as conn:
            conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(s, sql.Identifier(viewer)))
            conn.execute(sql.SQL("GRANT SELECT ON {}.v_workflows, {}.v_queues, {}.v_workers TO {}").format(
                s, s, s, sql.Identifier(viewer)))
        views_only = sql.SQL("SELECT status, count(*) FROM {}.v_workflows GROUP BY 1").format(s)
        if resolve(pg_url).name == "citus":
            # Citus runs a view's shard queries with the querying role's privileges, not the view owner's:
            # a views-only role cannot read views over distributed tables (docs/backends.md, limits).
            assert denied(viewer_url, views_only)
        else:
            with psycopg.connect(viewer_url) as conn:
                assert conn.execute(views_only).fetchall() == [("SUCCESS", 2)]
        assert denied(viewer_url, sql.SQL("SELECT inputs FROM {}.workflows").format(s))
        assert denied(viewer_url, sql.SQL("SELECT * FROM {}.v_steps").format(s))


def test_worker_role_on_a_missing_or_outdated_schema_gets_a_clear_error(pg_url: str, schema: str) -> None:
    with roles(pg_url, "owner", "worker", "monitor") as made:
        _setup(pg_url, schema, made)
        worker_url = made["worker"][1]
        other = schema + "_none"
        with pytest.raises(SchemaError, match=r"has no kit tables.*run `kit migrate` as the schema owner"):
            kit.Kit(worker_url, schema=other).backend  # noqa: B018
        with psycopg.connect(made["owner"][1], autocommit=True) as conn:
            conn.execute(sql.SQL("DELETE FROM {}.schema_migrations WHERE version = "
                                 "(SELECT max(version) FROM {}.schema_migrations)").format(
                sql.Identifier(schema), sql.Identifier(schema)))
            version = conn.execute(sql.SQL("SELECT max(version) FROM {}.schema_migrations").format(
                sql.Identifier(schema))).fetchone()[0]
        with pytest.raises(SchemaError, match=rf"is at version {version} .*as the schema owner"):
            kit.Kit(worker_url, schema=schema).backend  # noqa: B018
        code, _out, err = run_cli(["migrate", "--database-url", worker_url, "--schema", schema])
        assert code == 2 and len(err.strip().splitlines()) == 1 and "schema owner" in err
        with psycopg.connect(pg_url) as conn:
            assert conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = %s", (other,)).fetchone()[0] == 0


def test_grants_cover_every_table_the_queries_touch() -> None:
    from kit.backends.postgres.backend import _MIGRATIONS, _QUERIES
    from kit.backends.postgres.grants import schema_objects, worker_privileges

    tables, views = schema_objects(_MIGRATIONS)
    assert {"workflows", "steps", "workers", "messages", "events", "queues", "streams"} <= set(tables)
    assert {"v_workflows", "v_steps", "v_queues", "v_workers"} <= set(views)
    privs = worker_privileges(_QUERIES, tables)
    assert privs["schema_migrations"] == ["SELECT"]
    assert {"SELECT", "INSERT", "UPDATE"} <= set(privs["workflows"])
    assert {"SELECT", "INSERT"} <= set(privs["steps"])
    for table in set(tables) - {"schema_migrations"}:
        assert table in privs, f"no query uses table {table}: is it still needed?"


@pytest.mark.parametrize("argv, fragment", [
    (["migrate", "--print-grants"], "--worker-role"),
    (["migrate", "--worker-role", "w"], "--print-grants"),
    (["migrate", "--print-grants", "--worker-role", ""], "role name"),
    (["migrate", "--print-grants", "--monitor-role", "x" * 64], "role name"),
])
def test_print_grants_argument_errors(argv: list[str], fragment: str) -> None:
    code, _out, err = run_cli(argv)
    assert code == 2 and len(err.strip().splitlines()) == 1 and fragment in err


def test_role_names_are_quoted_not_interpolated() -> None:
    code, out, _err = run_cli(["migrate", "--print-grants", "--worker-role", 'w"; DROP TABLE x; --'])
    assert code == 0
    assert 'TO "w""; DROP TABLE x; --"' in out


def _catalog(url: str, schema: str) -> dict[str, list[tuple]]:
    """Everything a schema holds, with the schema name written as SCHEMA."""
    queries = {
        "relations": "SELECT c.relname, c.relkind FROM pg_class c WHERE c.relnamespace = %(s)s::regnamespace",
        "columns": "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, "
                   "pg_get_expr(d.adbin, d.adrelid), a.attidentity FROM pg_attribute a "
                   "JOIN pg_class c ON c.oid = a.attrelid LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid "
                   "AND d.adnum = a.attnum WHERE c.relnamespace = %(s)s::regnamespace AND a.attnum > 0 "
                   "AND NOT a.attisdropped",
        "indexes": "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %(s)s",
        "constraints": "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                       "WHERE connamespace = %(s)s::regnamespace",
        "views": "SELECT viewname, definition FROM pg_views WHERE schemaname = %(s)s",
        "functions": "SELECT proname, pg_get_function_arguments(oid), prosrc FROM pg_proc "
                     "WHERE pronamespace = %(s)s::regnamespace",
        "versions": "SELECT version, name FROM {}.schema_migrations",
    }
    out = {}
    with psycopg.connect(url) as conn:
        for key, query in queries.items():
            stmt = sql.SQL(query).format(sql.Identifier(schema)) if "{}" in query else query
            rows = conn.execute(stmt, {"s": schema}).fetchall()
            out[key] = sorted(tuple(str(v).replace(schema, "SCHEMA") for v in row) for row in rows)
    return out


def test_print_sql_is_the_complete_schema(pg_url: str, schema: str) -> None:
    """Applying `kit migrate --print-sql` by hand builds exactly what `kit migrate` builds, at its version."""
    backend = resolve(pg_url).name  # the DDL of the server's backend (printing it needs no server)
    code, ddl, err = run_cli(["migrate", "--print-sql", "--backend", backend, "--schema", schema])
    assert code == 0, err
    reference = schema + "_ref"
    try:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            with conn.transaction():
                conn.execute(ddl)
        code, _out, err = run_cli(["migrate", "--database-url", pg_url, "--schema", reference])
        assert code == 0, err
        mine = _catalog(pg_url, schema)
        theirs = {k: [tuple(str(v).replace(reference, "SCHEMA") for v in row) for row in rows]
                  for k, rows in _catalog(pg_url, reference).items()}
        theirs = {k: sorted(v) for k, v in theirs.items()}
        assert mine["relations"] and mine["functions"] and mine["versions"]
        assert mine == theirs
        code, out, err = run_cli(["migrate", "--database-url", pg_url, "--schema", schema])
        assert code == 0 and "up to date" in out, err
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(reference)))
