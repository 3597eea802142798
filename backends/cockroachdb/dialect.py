"""The small dialect layer: the only SQL that differs between a CockroachDB cluster and the serializable
PostgreSQL profile. Everything else (every data statement, the retry, claim and migration logic) is shared.

* ``hash_sharded``: appended to the column list of indexes whose leading key is a time (``created_at``,
  ``finished_at``, ``lease_expires_at``, ``heartbeat_at``): on CockroachDB ``USING HASH`` spreads
  sequential writes over ranges instead of hot-spotting the last one; PostgreSQL has no such clause (its
  ``USING hash`` is an index method) and needs none.
* ``statements``: statements that exist in one dialect only: CockroachDB's follower read for observability
  (``AS OF SYSTEM TIME follower_read_timestamp()``, used only when the backend is asked for follower
  reads) and the monitor's node line (CockroachDB has no ``inet_server_addr()``: it names its node id).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Dialect:
    name: str
    hash_sharded: str
    statements: Mapping[str, str] = field(default_factory=dict)

    def placeholders(self) -> dict[str, str]:
        """Values of the dialect placeholders of migration files (besides ``{schema}``)."""
        return {"hash_sharded": self.hash_sharded}


COCKROACHDB = Dialect(
    name="cockroachdb",
    hash_sharded=" USING HASH",
    statements={
        "follower_read": "SET TRANSACTION AS OF SYSTEM TIME follower_read_timestamp()",
        "monitor_node": "SELECT now(), false, 'node ' || crdb_internal.node_id()::STRING, NULL::INT8",
    },
)

SERIALIZABLE_POSTGRES = Dialect(
    name="postgresql-serializable",
    hash_sharded="",
    statements={},  # monitor_node: the PostgreSQL backend's statement
)
