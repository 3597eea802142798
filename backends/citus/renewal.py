"""Lease renewal on Citus, node group by node group.

PostgreSQL renews every lease of an owner with one UPDATE. On Citus that is a multi-shard UPDATE: it fails
as a whole when one worker group is unreachable (no lease renewed anywhere), and a fresh coordinator session
opens connections to every shard for it (slow right when a failover has dropped the sessions). Here the
backend remembers the workflows it handed to each owner (claims, owned creates; a multi-shard read without
locks now and then finds any other, as PostgreSQL's owner-wide UPDATE would), and a renewal is:

1. on the coordinator, one statement: the worker's heartbeat row, and the shard and node group of the
   workflows whose shard is not known yet (Citus metadata);
2. per node group, on a connection of its own and in parallel with the other groups, one pipeline of router
   ``UPDATE ... WHERE workflow_id = ANY(<ids of one shard>)``, one per shard (one round trip per group).

A group that fails is logged and left out: its workflows are reported not renewed (the worker stops them at
their next step; the database fences them anyway), the other groups' leases are renewed. Only when nothing
could be renewed does the call fail, as on PostgreSQL.
"""

from __future__ import annotations

import concurrent.futures
import logging
import random
import threading
import time
from collections.abc import Sequence
from typing import Any

import psycopg
from kit.backends.postgres.connection import PostgresCore, is_connection_error, scrub
from kit.backends.postgres.lease_connection import LeaseConnection
from psycopg import sql

from kit.config import redact_url
from kit.errors import DatabaseUnavailableError, SchemaError, StorageError
from kit.storage import WorkerInfo

from .faults import node_fault

log = logging.getLogger("kit.citus")
OWNED_SCAN_SECONDS = 30.0  # how often a renewal also looks for leases of the owner it was not told about


def _transient(exc: BaseException) -> bool:
    return is_connection_error(exc) or node_fault(exc)


class _GroupLease(LeaseConnection):
    """A lease connection that runs a pipeline of statements (each its own implicit transaction)."""

    def execute_many(self, statements: Sequence[tuple[str, dict[str, Any]]], budget: float) -> list[list[tuple]]:
        """As :meth:`LeaseConnection.execute`, for several statements in one round trip."""
        deadline = time.monotonic() + budget
        delay = 0.05
        with self._lock:
            while True:
                conn = self._conn
                reused = conn is not None
                try:
                    if conn is None:
                        if self._closed:
                            raise psycopg.OperationalError("the backend is closed")
                        conn = self._conn = self._connect()
                    self._watchdog.enter(conn)
                    try:
                        cursors = []
                        with conn.pipeline() as pipeline:
                            for stmt, params in statements:
                                cursors.append(conn.execute(stmt, params))
                                pipeline.sync()
                        found = [cur.fetchall() for cur in cursors]
                    finally:
                        self._watchdog.leave(conn)
                    if self._unacknowledged(conn):
                        self._conn = None
                        raise psycopg.OperationalError("lease renewal not acknowledged by synchronous replication")
                    return found
                except psycopg.Error as exc:
                    if not self._transient(exc) or self._closed:
                        self._drop()
                        raise
                    died_before = reused and conn is not None and conn.broken
                    if conn is not None and conn.broken:
                        self._drop()
                    if died_before:
                        continue
                    if time.monotonic() + delay > deadline:
                        raise
                    time.sleep(delay * (0.5 + random.random()))
                    delay = min(delay * 2, 0.5)


class CitusRenewalPart(PostgresCore):
    """lease_renew by node group; the workflows held per owner."""

    def __init__(self, url: str, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self._held_lock = threading.Lock()
        self._held: dict[str, dict[str, int]] = {}  # owner -> workflow id -> generation of its entry
        self._generation = 0
        self._placement: dict[str, tuple[int, int]] = {}  # workflow id -> (shard, node group)
        self._scanned: dict[str, float] = {}  # owner -> when its leases were last looked for
        self._group_leases: dict[int, _GroupLease] = {}
        self._renewers: concurrent.futures.ThreadPoolExecutor | None = None
        self._failed_groups: set[int] = set()

    def _hold(self, owner: str, workflow_ids: Sequence[str]) -> None:
        """These workflows were handed to ``owner`` (a claim, an owned create): renew them from now on."""
        if not workflow_ids:
            return
        with self._held_lock:
            held = self._held.setdefault(owner, {})
            for wid in workflow_ids:
                self._generation += 1
                held[wid] = self._generation

    def lease_renew(self, owner: str, lease_seconds: float, worker: WorkerInfo | None = None) -> dict[str, int]:
        if self._pool is None:
            raise StorageError("backend is not open")
        budget = max(0.5, min(self.retry_seconds, lease_seconds / 4))
        self._lease_budget = self._lease_watchdog.limit = budget
        started = time.monotonic()
        if owner not in self._scanned:  # the first renewal of an owner renews whatever it holds already
            self._scan_owned(owner, budget)
        try:
            return self._renew(owner, lease_seconds, worker, budget, started)
        finally:
            # Later scans after the renewal, off its critical path: what they find is renewed from the next on.
            if started - self._scanned.get(owner, started) >= OWNED_SCAN_SECONDS and not self._closed:
                self._scan_owned(owner, budget)

    def _renew(self, owner: str, lease_seconds: float, worker: WorkerInfo | None, budget: float,
               started: float) -> dict[str, int]:
        with self._held_lock:
            snapshot = dict(self._held.get(owner, {}))
        unknown = [wid for wid in snapshot if wid not in self._placement]
        params = {"owner": owner, "hostname": worker.hostname if worker else None,
                  "pid": worker.pid if worker else None, "ids": unknown, "table": self._workflows_table()}
        try:
            for wid, shard, group in self._leases.execute(self._q["lease_beat"], params, budget):
                self._placement[wid] = (shard, group)
        except psycopg.errors.UndefinedTable as exc:
            raise SchemaError(f"kit tables are missing in schema '{self.schema}': run `kit migrate`") from exc
        except psycopg.Error as exc:
            kind = DatabaseUnavailableError if _transient(exc) else StorageError
            raise kind(scrub(f"lease renewal failed: database {redact_url(self.url)}: {exc}", self.url)) from exc
        by_group: dict[int, dict[int, list[str]]] = {}
        for wid in snapshot:
            place = self._placement.get(wid)
            if place is not None:
                by_group.setdefault(place[1], {}).setdefault(place[0], []).append(wid)
        if not by_group:
            return {}
        remaining = max(0.2, budget - (time.monotonic() - started))
        results = self._renew_groups(owner, lease_seconds, by_group, remaining)
        renewed: dict[str, int] = {}
        gone: list[str] = []
        failures: list[BaseException] = []
        for group, shards in by_group.items():
            got = results[group]
            if isinstance(got, BaseException):
                failures.append(got)
                continue
            renewed.update(got)
            gone += [wid for ids in shards.values() for wid in ids if wid not in got]
        if failures and not renewed and len(failures) == len(by_group):
            exc = failures[0]
            kind = DatabaseUnavailableError if _transient(exc) else StorageError
            raise kind(scrub(f"lease renewal failed: database {redact_url(self.url)}: {exc}", self.url)) from exc
        with self._held_lock:  # no longer ours (finished, released, taken over): unless handed out again since
            held = self._held.get(owner, {})
            for wid in gone:
                if held.get(wid) == snapshot[wid]:
                    del held[wid]
                    self._placement.pop(wid, None)
        return renewed

    def _renew_groups(self, owner: str, lease_seconds: float, by_group: dict[int, dict[int, list[str]]],
                      budget: float) -> dict[int, dict[str, int] | BaseException]:
        """Each group's pipeline on its own connection, the groups in parallel."""
        stmt = self._q["lease_renew_shard"]

        def renew(group: int, shards: dict[int, list[str]]) -> dict[str, int]:
            lease = self._group_leases.get(group)
            if lease is None:
                lease = self._group_leases[group] = _GroupLease(
                    self._group_connect, self._lease_watchdog, _transient, self._commit_unacknowledged)
            found = lease.execute_many([(stmt, {"owner": owner, "lease": lease_seconds, "ids": ids})
                                        for ids in shards.values()], budget)
            return {r[0]: r[1] for rows in found for r in rows}

        out: dict[int, dict[str, int] | BaseException] = {}
        if len(by_group) == 1:
            futures = None
            (group, shards), = by_group.items()
            try:
                out[group] = renew(group, shards)
            except psycopg.Error as exc:
                out[group] = exc
        else:
            if self._renewers is None:
                self._renewers = concurrent.futures.ThreadPoolExecutor(8, thread_name_prefix="kit-lease")
            futures = {group: self._renewers.submit(renew, group, shards) for group, shards in by_group.items()}
            for group, future in futures.items():
                try:
                    out[group] = future.result()
                except psycopg.Error as exc:
                    out[group] = exc
        for group, got in out.items():
            if isinstance(got, BaseException):
                if group not in self._failed_groups:
                    self._failed_groups.add(group)
                    log.warning("lease renewal: node group %d failed, its workflows are not renewed (the other "
                                "groups' are): %s", group, scrub(str(got).strip(), self.url))
            elif group in self._failed_groups:
                self._failed_groups.discard(group)
                log.warning("lease renewal: node group %d renewed again", group)
        return out

    def _group_connect(self) -> psycopg.Connection:
        """A lease connection for one node group: a node that does not answer fails within the renewal's
        budget (citus.node_connection_timeout), not Citus' 30 s default."""
        conn = self._lease_connect()
        ms = int(max(500, self._lease_budget * 1000))
        conn.execute(sql.SQL("SET citus.node_connection_timeout = {}").format(sql.Literal(ms)))
        return conn

    def _scan_owned(self, owner: str, budget: float) -> None:
        """Leases of ``owner`` the backend was not told about (one multi-shard read without locks); a node
        that fails it only postpones the scan."""
        try:
            found = self._leases.execute(self._q["owned_scan"], {"owner": owner}, budget)
        except psycopg.Error as exc:
            if not _transient(exc):
                raise
            log.debug("lease renewal: scan of the owner's leases postponed: %s", exc)
            return
        self._scanned[owner] = time.monotonic()
        with self._held_lock:
            held = self._held.setdefault(owner, {})
            for (wid,) in found:
                if wid not in held:
                    self._generation += 1
                    held[wid] = self._generation

    def _workflows_table(self) -> str:
        return sql.Identifier(self.schema, "workflows").as_string(None)

    def close(self) -> None:
        super().close()
        for lease in list(self._group_leases.values()):
            lease.close()
        if self._renewers is not None:
            self._renewers.shutdown(wait=False)
            self._renewers = None
