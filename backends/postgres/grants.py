"""Least-privilege grants for kit's PostgreSQL schema, derived from the schema and the queries themselves.

The worker role gets exactly the table privileges the backend's named queries (``queries.sql``) use:
SELECT on every table a query reads, INSERT / UPDATE / DELETE on every table a query writes, UPDATE on
every table a query row-locks (``FOR UPDATE`` / ``FOR KEY SHARE`` need it), plus EXECUTE on kit's
functions and USAGE on its sequences. It gets no CREATE on the schema and nothing outside it. The
monitor role gets SELECT on kit's tables and the observability views (``v_*``), nothing else. Because
both lists are computed from the same files the backend runs, a new query or migration is covered by
the next ``kit migrate --print-grants`` without anyone editing a list by hand.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from psycopg import sql

from kit.errors import UsageError

_REF = r"\{schema\}\.(\w+)"
_CREATE_TABLE = re.compile(r"CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?" + _REF, re.I)
_CREATE_VIEW = re.compile(r"CREATE\s+(?:OR\s+REPLACE\s+)?VIEW\s+" + _REF, re.I)
_DROP = re.compile(r"DROP\s+(?:TABLE|VIEW)\s+(?:IF\s+EXISTS\s+)?" + _REF, re.I)
_INSERT = re.compile(r"INSERT\s+INTO\s+" + _REF, re.I)
_UPDATE = re.compile(r"\bUPDATE\s+" + _REF, re.I)
_DELETE = re.compile(r"DELETE\s+FROM\s+" + _REF, re.I)
_UPSERT = re.compile(r"ON\s+CONFLICT[^;]*?DO\s+UPDATE", re.I)
_LOCKING = re.compile(r"\bFOR\s+(?:NO\s+KEY\s+UPDATE|UPDATE|SHARE|KEY\s+SHARE)\b", re.I)
_ANY = re.compile(_REF)
_COMMENT = re.compile(r"--[^\n]*")

# Read by the backend outside queries.sql (schema version check on open).
_ALWAYS_READ = ("schema_migrations",)


def schema_objects(migrations: Iterable[tuple[int, str, str]]) -> tuple[list[str], list[str]]:
    """The tables and views the migrations leave behind, in creation order."""
    tables: list[str] = ["schema_migrations"]
    views: list[str] = []
    for _version, _name, body in migrations:
        text = _COMMENT.sub("", body)
        for name in _CREATE_TABLE.findall(text):
            if name not in tables:
                tables.append(name)
        for name in _CREATE_VIEW.findall(text):
            if name not in views:
                views.append(name)
        for name in _DROP.findall(text):
            for found in (tables, views):
                if name in found:
                    found.remove(name)
    return tables, views


_FUNCTION_BODY = re.compile(r"CREATE\s+(?:OR\s+REPLACE\s+)?FUNCTION\b.*?\bAS\s+\$\$(.*?)\$\$", re.I | re.S)


def function_bodies(migrations: Iterable[tuple[int, str, str]]) -> dict[str, str]:
    """The bodies of the functions the migrations create, by a made-up name: the worker role executes them
    with its own privileges, so what they read and write counts as its queries."""
    return {f"function {version}.{i}": body for version, _name, text in migrations
            for i, body in enumerate(_FUNCTION_BODY.findall(text))}


def worker_privileges(queries: Mapping[str, str], tables: Iterable[str]) -> dict[str, list[str]]:
    """Table -> privileges (SELECT, INSERT, UPDATE, DELETE) the named queries need on it."""
    known = set(tables)
    need: dict[str, set[str]] = {name: {"SELECT"} for name in _ALWAYS_READ}
    for body in queries.values():
        text = _COMMENT.sub("", body)
        refs = [t for t in _ANY.findall(text) if t in known]
        for table in refs:
            need.setdefault(table, set()).add("SELECT")
        for table in _INSERT.findall(text):
            need.setdefault(table, set()).add("INSERT")
            if _UPSERT.search(text):
                need[table].add("UPDATE")
        for table in _UPDATE.findall(text):
            need.setdefault(table, set()).add("UPDATE")
        for table in _DELETE.findall(text):
            need.setdefault(table, set()).add("DELETE")
        if _LOCKING.search(text):
            for table in refs:
                need[table].add("UPDATE")
    order = ("SELECT", "INSERT", "UPDATE", "DELETE")
    return {t: [p for p in order if p in privs] for t, privs in sorted(need.items()) if t in known}


def _role(what: str, name: str | None) -> sql.Identifier | None:
    if name is None:
        return None
    if not name or len(name.encode("utf-8")) > 63 or "\x00" in name:
        raise UsageError(f"invalid {what} role name {name!r}: use 1-63 bytes (a PostgreSQL role name)")
    return sql.Identifier(name)


def grants_sql(schema: str, queries: Mapping[str, str], migrations: Iterable[tuple[int, str, str]], *,
               worker_role: str | None = None, monitor_role: str | None = None) -> str:
    """GRANT statements for a worker role and/or a read-only monitor role on ``schema``."""
    worker = _role("worker", worker_role)
    monitor = _role("monitor", monitor_role)
    if worker is None and monitor is None:
        raise UsageError("--print-grants needs --worker-role and/or --monitor-role")
    migrations = list(migrations)
    tables, views = schema_objects(migrations)
    s = sql.Identifier(schema)

    def render(stmt: str, **parts: sql.Composable) -> str:
        return sql.SQL(stmt).format(**parts).as_string(None) + ";"

    out = [
        f"-- kit least-privilege grants for schema {schema} (docs/security.md). Run as the schema owner",
        "-- after `kit migrate`, and again after every kit upgrade that adds migrations.",
        render("REVOKE ALL ON SCHEMA {s} FROM PUBLIC", s=s),
        render("REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA {s} FROM PUBLIC", s=s),
    ]
    if worker is not None:
        out.append(f"-- worker role {worker_role}: the DML of kit's queries; no DDL, nothing outside {schema}")
        out.append(render("GRANT USAGE ON SCHEMA {s} TO {r}", s=s, r=worker))
        for table, privs in worker_privileges({**queries, **function_bodies(migrations)}, tables).items():
            out.append(render("GRANT " + ", ".join(privs) + " ON {s}.{t} TO {r}", s=s, t=sql.Identifier(table),
                              r=worker))
        out.append(render("GRANT USAGE ON ALL SEQUENCES IN SCHEMA {s} TO {r}", s=s, r=worker))
        out.append(render("GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA {s} TO {r}", s=s, r=worker))
    if monitor is not None:
        out.append(f"-- monitor role {monitor_role}: read-only (kit monitor, kit workflows, kit workflow show, "
                   "SQL on the v_* views)")
        out.append(render("GRANT USAGE ON SCHEMA {s} TO {r}", s=s, r=monitor))
        for name in [*tables, *views]:
            out.append(render("GRANT SELECT ON {s}.{t} TO {r}", s=s, t=sql.Identifier(name), r=monitor))
    return "\n".join(out) + "\n"
