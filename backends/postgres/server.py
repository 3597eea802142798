"""What a PostgreSQL-protocol server is: probing it, telling the servers apart, and its capabilities.

:func:`probe_connection` reads a :class:`~kit.storage.ServerInfo` (version text and number, installed
extensions, the settings and functions capabilities depend on) over any connection; on a server that lacks
part of the catalog (CockroachDB) the missing parts stay empty. :func:`server_capabilities` is pure and
table-tested with real server strings (tests/test_capabilities.py).
"""

from __future__ import annotations

import psycopg

from kit.storage import Capabilities, ServerInfo

# Settings and optional functions the capabilities depend on.
SETTINGS = ("server_version_num", "default_transaction_isolation")
FUNCTIONS = ("pg_logical_emit_message",)


def probe_connection(conn: psycopg.Connection) -> ServerInfo:
    """Describe the server behind an autocommit connection (a few catalog reads, each allowed to fail)."""
    version = str(conn.execute("SELECT version()").fetchone()[0])
    settings: dict[str, str] = {}
    extensions: dict[str, str] = {}
    functions: frozenset[str] = frozenset()
    try:
        for name, value in conn.execute(
                "SELECT s, current_setting(s, true) FROM unnest(%s::text[]) s", (list(SETTINGS),)).fetchall():
            if value is not None:
                settings[name] = value
    except psycopg.Error:
        pass
    try:
        extensions = {r[0]: r[1] for r in conn.execute("SELECT extname::text, extversion::text FROM pg_extension")}
    except psycopg.Error:
        pass
    try:
        functions = frozenset(r[0] for r in conn.execute(
            "SELECT DISTINCT proname::text FROM pg_catalog.pg_proc WHERE proname = ANY(%s::text[])",
            (list(FUNCTIONS),)))
    except psycopg.Error:
        pass
    num = settings.get("server_version_num", "")
    return ServerInfo(version=version, version_num=int(num) if num.isdigit() else None, extensions=extensions,
                      settings=settings, functions=functions)


def is_cockroachdb(info: ServerInfo) -> bool:
    """CockroachDB speaks the protocol; it says so in its version text."""
    return "cockroachdb" in info.version.lower()


def is_citus(info: ServerInfo) -> bool:
    """Citus is an extension: version() is the PostgreSQL text of its build, so only the catalog tells."""
    return "citus" in info.extensions


def server_capabilities(info: ServerInfo) -> Capabilities:
    """What kit can do on a PostgreSQL-protocol server (PostgreSQL, Citus, CockroachDB), from the probe."""
    crdb = is_cockroachdb(info)
    citus = is_citus(info)
    serializable = info.settings.get("default_transaction_isolation", "").lower() == "serializable"
    notify = not crdb  # LISTEN/NOTIFY: an open CockroachDB issue since 2019
    return Capabilities(
        listen_notify=notify,
        # A shard's NOTIFY never reaches the coordinator's listeners (and fails a 2PC commit).
        notify_in_statement=notify and not citus,
        # CockroachDB has SKIP LOCKED, but its locks are best-effort under SERIALIZABLE: not trusted.
        skip_locked=not crdb,
        # Row locks work on Citus only in single-shard queries; CockroachDB claims by conditional updates.
        multi_row_locking_claims=not (crdb or citus),
        # On CockroachDB too: the step's writes and checkpoint commit in one SERIALIZABLE transaction, run
        # again whole on 40001 (kit.backends.cockroachdb).
        transactional_steps=True,
        advisory_locks=not crdb,  # no-ops on CockroachDB
        retry_serialization_failures=crdb or serializable,
        replication_barrier="pg_logical_emit_message" in info.functions,
        sql_enqueue_function="plpgsql" in info.extensions and notify,
        follower_reads=crdb,
        server_version=info.version,
    )
