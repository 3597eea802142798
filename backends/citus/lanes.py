"""Lanes and the helpers every Citus part shares: where a key's ready rows live, which node holds a lane,
pipelined single-statement transactions, and error names without shard suffixes.

A lane is a key (``lane:<n>``) chosen by migration 0013 so that it hashes into one shard of ``workflows``:
one lane per shard. A workflow's ready row goes to the lane of its own shard, so an enqueue writes one
shard; a limited queue's ready rows and slots go to its *home lane* (the lane of the queue name's shard).
Claims are router statements on one lane. The lane → node map (read from Citus' catalog) only groups claims
of lanes on the same node into one transaction (a one-phase commit); a stale map costs a two-phase commit,
never correctness.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import psycopg
import psycopg.errors
from kit.backends.postgres.connection import PostgresCore

LANE_MAP_SECONDS = 60.0  # how long the lane → node map is trusted before it is read again


def dedup_key(queue: str | None, dedup_id: str) -> str:
    """The distribution key of a (queue, dedup id) pair, as ``dedup_key()`` of migration 0013 computes it:
    the queue's length first, so no two pairs share a key."""
    q = queue or ""
    return f"{len(q)}:{q}{dedup_id}"


def run_each(conn: psycopg.Connection, statements: Sequence[tuple[str, dict[str, Any]]]) -> list[list[tuple]]:
    """Run statements on an autocommit connection, pipelined (one round trip), each in its own implicit
    transaction (a Sync after each: without it a pipeline is one transaction, a multi-shard one on Citus).
    Returns each statement's rows; any error propagates (callers' statements are idempotent or read back)."""
    if len(statements) == 1:
        stmt, params = statements[0]
        cur = conn.execute(stmt, params)
        return [cur.fetchall() if cur.description else []]
    cursors = []
    with conn.pipeline() as pipeline:
        for stmt, params in statements:
            cursors.append(conn.execute(stmt, params))
            pipeline.sync()
    return [cur.fetchall() if cur.description else [] for cur in cursors]


class LanesPart(PostgresCore):
    """The lane map of this schema (read once, refreshed now and then) and the home lanes of queues."""

    def __init__(self, url: str, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self._lane_lock = threading.Lock()
        self._lane_nodes: dict[str, int] = {}
        self._lane_map_at = 0.0
        self._homes: dict[str, str] = {}

    def _lanes_by_node(self, conn: psycopg.Connection, lanes: Sequence[str]) -> list[list[str]]:
        """``lanes`` grouped by the node holding their shards (unknown lanes each in a group of their own), in
        the order of their first lane."""
        nodes = self._lane_map(conn)
        groups: dict[Any, list[str]] = {}
        for lane in lanes:
            groups.setdefault(nodes.get(lane, ("?", lane)), []).append(lane)
        return list(groups.values())

    def _lane_map(self, conn: psycopg.Connection) -> dict[str, int]:
        """Lane → node group, read on ``conn`` when older than LANE_MAP_SECONDS (shards move rarely)."""
        with self._lane_lock:
            if self._lane_nodes and time.monotonic() - self._lane_map_at < LANE_MAP_SECONDS:
                return self._lane_nodes
        found = conn.execute(self._q["lane_nodes"]).fetchall()
        with self._lane_lock:
            self._lane_nodes = {lane: group for lane, group in found}
            self._lane_map_at = time.monotonic()
            return self._lane_nodes

    def _home_lane(self, queue: str) -> str:
        """The lane of a queue name's shard: where a limited queue's ready rows, slots and lock live (fixed for
        the life of the schema, so cached)."""
        home = self._homes.get(queue)
        if home is None:
            home = self._run(lambda c: c.execute(self._q["lane_of"], {"key": queue}).fetchone()[0])
            self._homes[queue] = home
        return home

    def _limited_names(self, conn: psycopg.Connection) -> list[str]:
        return [r[0] for r in conn.execute(self._q["queue_limited_names"]).fetchall()]
