"""What a CockroachDB cluster (or the serializable PostgreSQL profile) can do: probing, detection, capabilities.

The probe is the PostgreSQL backend's (version text, settings, extensions, functions, each read allowed to
fail) plus one question only a transaction can answer: does ``SET TRANSACTION ISOLATION LEVEL READ
COMMITTED`` take effect? On CockroachDB it does when the cluster setting
``sql.txn.read_committed_isolation.enabled`` is on (v23.2 as a preview, on by default since v24.1); when it
is off the transaction silently runs as SERIALIZABLE. Asking the transaction needs no privilege, where
``SHOW CLUSTER SETTING`` would. The answer is kept in ``ServerInfo.settings`` under that setting's name.

:func:`cockroach_capabilities` is pure and table-tested (tests/test_cockroachdb_unit.py).
"""

from __future__ import annotations

import re

import psycopg
from kit.backends.postgres.server import is_citus, is_cockroachdb, probe_connection

from kit.storage import Capabilities, ServerInfo

READ_COMMITTED_SETTING = "sql.txn.read_committed_isolation.enabled"
_VERSION = re.compile(r"\bv(\d+)\.(\d+)(?:\.(\d+))?")

__all__ = ["CLAIM_MODES", "READ_COMMITTED_SETTING", "claim_isolation", "cockroach_capabilities", "cockroach_version", "is_cockroachdb",
           "is_plain_postgres", "probe_cockroach"]


def cockroach_version(info: ServerInfo) -> tuple[int, int, int] | None:
    """(major, minor, patch) from a CockroachDB version text (``CockroachDB CCL v24.1.0 (...)``), else None."""
    if not is_cockroachdb(info):
        return None
    m = _VERSION.search(info.version)
    if m is None:
        return None
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def is_plain_postgres(info: ServerInfo) -> bool:
    """A PostgreSQL server the serializable profile may run on: neither CockroachDB nor a Citus database."""
    return not (is_cockroachdb(info) or is_citus(info))


def read_committed_available(conn: psycopg.Connection) -> bool:
    """True when a transaction that asks for READ COMMITTED gets it (a CockroachDB cluster upgrades it to
    SERIALIZABLE when the cluster setting is off). One short transaction, rolled back."""
    try:
        with conn.transaction(force_rollback=True):
            conn.execute("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
            level = conn.execute("SHOW transaction_isolation").fetchone()[0]
    except psycopg.Error:
        return False
    return str(level).strip().lower() == "read committed"


def probe_cockroach(conn: psycopg.Connection) -> ServerInfo:
    """The PostgreSQL probe plus whether READ COMMITTED transactions are available."""
    info = probe_connection(conn)
    settings = dict(info.settings)
    settings[READ_COMMITTED_SETTING] = "true" if read_committed_available(conn) else "false"
    return ServerInfo(version=info.version, version_num=info.version_num, extensions=info.extensions,
                      settings=settings, functions=info.functions)


CLAIM_MODES = ("auto", "serializable", "read_committed")


def claim_isolation(info: ServerInfo, requested: str = "auto") -> str:
    """The isolation level claims run at: ``"read committed"`` when asked for (or ``auto``) and the server
    grants it (:data:`READ_COMMITTED_SETTING` in the probe), else ``"serializable"``."""
    if requested not in CLAIM_MODES:
        raise ValueError(f"claim mode must be one of {', '.join(CLAIM_MODES)}, got {requested!r}")
    available = info.settings.get(READ_COMMITTED_SETTING, "false") == "true"
    return "read committed" if requested != "serializable" and available else "serializable"


def cockroach_capabilities(info: ServerInfo, *, follower_reads: bool = False, claims: str = "auto") -> Capabilities:
    """What kit does on a CockroachDB cluster, and on the serializable PostgreSQL profile (which runs the
    same statements and strategies on PostgreSQL): no notifications (polling), no multi-row locking, SKIP
    LOCKED only in READ COMMITTED claim transactions (``claims``, see :func:`claim_isolation`; under
    SERIALIZABLE claims are epoch-guarded conditional updates), no advisory locks
    (lock-row migrations), every transaction retried whole on 40001, transactional steps (their writes and
    checkpoint in one transaction, run again whole on 40001), no replication barrier (Raft replicates every
    commit before it is acknowledged), no SQL ``enqueue()`` function (producers use a plain INSERT), and
    follower reads for observability only when asked for (``follower_reads``) on a real cluster."""
    crdb = is_cockroachdb(info)
    return Capabilities(
        listen_notify=False,
        notify_in_statement=False,
        skip_locked=claim_isolation(info, claims) == "read committed",
        multi_row_locking_claims=False,
        transactional_steps=True,
        advisory_locks=False,
        retry_serialization_failures=True,
        replication_barrier=False,
        sql_enqueue_function=False,
        follower_reads=crdb and follower_reads,
        server_version=info.version,
    )
