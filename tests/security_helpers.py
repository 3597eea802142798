"""Helpers of the security tests: database roles with their own URLs, and the CLI run in-process."""

from __future__ import annotations

import contextlib
import io
import logging
import secrets
import uuid
from collections.abc import Iterator, Sequence
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
from psycopg import sql


def url_for(url: str, user: str, password: str | None) -> str:
    """``url`` with its user and password replaced (host, port, database and parameters kept)."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    auth = quote(user, safe="") + (":" + quote(password, safe="") if password is not None else "")
    return urlunsplit((parts.scheme, f"{auth}@{host}", parts.path, parts.query, parts.fragment))


def let_nodes_connect(conn: psycopg.Connection, role: str, password: str | None) -> None:
    """On a Citus coordinator: let the coordinator reach the worker nodes as ``role`` (its password in
    ``pg_dist_authinfo``, as the test cluster does for its own superuser). Nothing on plain PostgreSQL."""
    if conn.execute("SELECT to_regclass('pg_dist_authinfo') IS NOT NULL").fetchone()[0]:
        conn.execute("DELETE FROM pg_dist_authinfo WHERE nodeid = 0 AND rolename = %s", (role,))
        if password is not None:
            conn.execute("INSERT INTO pg_dist_authinfo (nodeid, rolename, authinfo) VALUES (0, %s, %s)",
                         (role, f"password={password}"))


@contextlib.contextmanager
def roles(admin_url: str, *kinds: str) -> Iterator[dict[str, tuple[str, str]]]:
    """Create one LOGIN role per kind (random name and password); yield kind -> (name, url); drop them."""
    made: dict[str, tuple[str, str]] = {}
    with psycopg.connect(admin_url, autocommit=True) as conn:
        for kind in kinds:
            name = f"kit_{kind}_{uuid.uuid4().hex[:8]}"
            password = secrets.token_hex(12)
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(name),
                                                                         sql.Literal(password)))
            let_nodes_connect(conn, name, password)
            made[kind] = (name, url_for(admin_url, name, password))
    try:
        yield made
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute("SET lock_timeout = '10s'")
            for name, _ in made.values():
                with contextlib.suppress(psycopg.Error):
                    let_nodes_connect(conn, name, None)
                with contextlib.suppress(psycopg.Error):
                    conn.execute(sql.SQL("DROP OWNED BY {} CASCADE").format(sql.Identifier(name)))
                with contextlib.suppress(psycopg.Error):
                    conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def run_cli(argv: Sequence[str]) -> tuple[int, str, str]:
    """Run ``kit.cli.main(argv)`` in this process; return (exit code, stdout, stderr)."""
    from kit.cli import main

    out, err = io.StringIO(), io.StringIO()
    loggers = [logging.getLogger(name) for name in ("kit", "psycopg", "psycopg.pool")]
    levels = [lg.level for lg in loggers]  # the CLI quiets some loggers; keep that out of other tests
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(argv))
            except SystemExit as exc:  # argparse: --help, usage errors
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
    return code, out.getvalue(), err.getvalue()


def denied(url: str, statement: str | sql.Composable) -> bool:
    """True if running ``statement`` on ``url`` fails with insufficient privilege (42501)."""
    with psycopg.connect(url, autocommit=True) as conn:
        try:
            conn.execute(statement)
        except psycopg.errors.InsufficientPrivilege:
            return True
    return False
