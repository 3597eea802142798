"""What a server is (:class:`ServerInfo`, probed once) and what a backend can do on it (:class:`Capabilities`).

A backend probes its server when it opens (and the registry probes when several installed backends claim
the same URL scheme). Capabilities are a pure function of that probe, computed by the backend and
table-tested with real server strings; the engine branches on capabilities, never on a backend's name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ServerInfo:
    """A server as probed: enough to tell which backend serves it and what it can do.

    ``version`` is the server's own version text (``SELECT version()`` on PostgreSQL-protocol servers);
    ``extensions`` maps installed extension names to their versions; ``settings`` holds the server
    settings a backend's capabilities depend on (e.g. ``default_transaction_isolation``); ``functions``
    names the optional server functions the probe found (e.g. ``pg_logical_emit_message``).
    """

    version: str
    version_num: int | None = None
    extensions: Mapping[str, str] = field(default_factory=dict)
    settings: Mapping[str, str] = field(default_factory=dict)
    functions: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do on its server; each flag is read where the strategy differs.

    Defaults promise nothing. docs/backends.md has the table of who reads each flag and what happens when
    it is false.
    """

    # Wake-ups pushed by the database (LISTEN/NOTIFY). False: every waiter polls with adaptive backoff
    # (kit.notifier), quick after activity, up to ``poll_seconds`` when idle.
    listen_notify: bool = False
    # A notification may be sent from inside a data statement or any statement of a transaction (it is
    # delivered at commit). False (Citus: a shard's NOTIFY never reaches the coordinator's listeners, and
    # PREPARE refuses a transaction that notified on a shard): wake-ups are sent by a separate
    # ``SELECT pg_notify(...)`` on the coordinator session.
    notify_in_statement: bool = False
    # Claims skip rows that other claimers hold (SELECT ... FOR UPDATE SKIP LOCKED). False: claims are
    # conditional per-row updates and the lease epoch decides races.
    skip_locked: bool = False
    # One statement may lock rows of many workflows anywhere in the table (claims, grouped checkpoints and
    # finishes). False on Citus (multi-shard row locks fail) and CockroachDB: per-row statements.
    multi_row_locking_claims: bool = False
    # A step's own writes can commit in the same transaction as its checkpoint (@app.transaction()).
    transactional_steps: bool = False
    # Migrations may serialise on an advisory lock. False (CockroachDB: no-ops): on a lock row.
    advisory_locks: bool = False
    # Every transaction may fail with SQLSTATE 40001 and is then retried whole (CockroachDB; PostgreSQL set
    # to default SERIALIZABLE): a transactional step's body runs again instead of failing the step.
    retry_serialization_failures: bool = False
    # A write that returns only once every earlier commit is replicated (pg_logical_emit_message under
    # synchronous replication): resolves a commit the replication wait was cancelled for.
    replication_barrier: bool = False
    # The SQL function ``enqueue()`` (enqueue from SQL, triggers, other languages) is installed by migrate.
    sql_enqueue_function: bool = False
    # Observability reads may come from a slightly stale replica snapshot (CockroachDB follower reads).
    follower_reads: bool = False
    server_version: str = ""
