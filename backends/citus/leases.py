"""Claims of ordinary queues on Citus, lane by lane, and the recovery of expired leases.

A claim never sends a multi-shard locking statement:

1. reads without locks: the limited queues (coordinator), the expired leases this claimer may take (one
   multi-shard read; a node that fails it only postpones takeovers) and, per node in one round trip, each
   lane's best ready rows (router reads), merged into one order (priority, then age);
2. expired leases are taken over one by one, each a compare-and-set of the epoch seen (a router statement, its
   own transaction), so of two claimers exactly one wins;
3. ready rows are taken lane by lane: per lane a router ``DELETE ... IN (SELECT ... FOR UPDATE SKIP LOCKED)``
   and a router ``UPDATE`` of those workflows (same shard), lanes of one node in one transaction (one-phase
   commit), one transaction per node. A node that fails (faults.py) is skipped for this round; a lost
   coordinator connection retries the whole call, whose read-back returns every unit committed under its
   token.

Every claim statement stamps its rows with the call's token (``claim_token``, ``claim_recovery``); when the
whole call is retried after a lost connection, the retry reads back what earlier attempts committed
(``claim_read_back``, a multi-shard read without locks) and returns it with any new claims.

Lease renewal goes by node group (renewal.py).
"""

from __future__ import annotations

import functools
import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

import psycopg
from kit.backends.postgres.connection import call_token
from kit.backends.postgres.leases import LeasesPart

from kit.storage import Claim, ClaimRequest

from .faults import node_fault
from .lanes import LanesPart, run_each

log = logging.getLogger("kit.citus")
UNIT_ATTEMPTS = 3  # a takeover or a node's lanes rolled back by a serialization failure or deadlock: tries


class CitusLeasesPart(LanesPart, LeasesPart):
    """workflow_claim by lanes."""

    def __init__(self, url: str, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self._node_faults_logged: set[tuple[str, str]] = set()

    def workflow_claim(self, req: ClaimRequest) -> list[Claim]:
        """Every unit stamps what it claims with this call's token (claim_token, claim_recovery); a retry of the
        call (an earlier attempt may have committed units, its acknowledgement lost) first reads back the rows
        held under the token (``_claims_read_back``: a multi-shard read without locks) and claims new work only
        for the rest of ``limit``."""
        if not req.names or req.limit <= 0:
            return []
        params: dict[str, Any] = {
            "owner": req.owner, "names": list(req.names), "limit": req.limit, "lease": req.lease_seconds,
            "any_queue": req.queues is None, "queues": list(req.queues or []),
            "versions": None if req.versions is None else list(req.versions), "token": call_token(),
        }
        attempts = 0

        def claim(conn: psycopg.Connection) -> list[tuple]:
            nonlocal attempts
            attempts += 1
            found: list[tuple] = self._claims_read_back(conn, params) if attempts > 1 else []
            if len(found) >= req.limit:
                return found
            return found + self._claim_lanes(conn, {**params, "limit": req.limit - len(found)})

        return [Claim(workflow_id=r[0], name=r[1], inputs=r[2], epoch=r[3], recovery=r[4], deadline=r[5])
                for r in self._run(claim)]

    def _claim_lanes(self, conn: psycopg.Connection, params: dict[str, Any]) -> list[tuple]:
        """Takeovers of expired leases, then the lanes node by node. A unit whose node fails (a worker group
        failing over or cut off: faults.py) is skipped for this round, the others go on; only a failure of
        the coordinator connection itself ends the call (retried whole, with read-back)."""
        params = {**params, "limited": self._limited_names(conn)}
        units: list[Callable[[int], list[tuple]]] = [
            functools.partial(self._take_over, conn, params, row) for row in self._expired(conn, params)]
        units += self._lane_units(conn, params)
        out: list[tuple] = []
        for unit in units:
            for attempt in range(UNIT_ATTEMPTS):
                room = params["limit"] - len(out)
                if room <= 0:
                    return out
                try:
                    out += unit(room)
                    break
                except psycopg.Error as exc:
                    if node_fault(exc) and not conn.broken:
                        # This node's lanes wait for the next round. (A COMMIT that failed on the node may
                        # have committed: such claims are found by the renewal's scan of the owner's leases
                        # and given back by the worker, as any lease it does not run.)
                        self._node_failed("claim", exc)
                        break
                    rolled_back = getattr(exc, "sqlstate", None) in ("40001", "40P01") and not conn.broken
                    if rolled_back and attempt + 1 < UNIT_ATTEMPTS:
                        continue
                    # The whole call is retried; its read-back returns what earlier units (and this one, if
                    # its COMMIT's acknowledgement was lost) committed under the call's token.
                    raise
        return out

    def _expired(self, conn: psycopg.Connection, params: dict[str, Any]) -> list[tuple]:
        """Expired leases this claimer may take over (one multi-shard read without locks). A node that fails
        the read postpones takeovers to a later round; claims of ready work go on."""
        try:
            return conn.execute(self._q["expired_candidates"], params).fetchall()
        except psycopg.Error as exc:
            if not node_fault(exc) or conn.broken:
                raise
            self._node_failed("takeover candidates", exc)
            return []

    def _node_failed(self, what: str, exc: BaseException) -> None:
        """Log a node failure once per kind of work and message (not every claim round)."""
        key = (what, str(exc).split("\n", 1)[0][:120])
        if key not in self._node_faults_logged:
            if len(self._node_faults_logged) > 100:
                self._node_faults_logged.clear()
            self._node_faults_logged.add(key)
            log.warning("%s: a node failed, its lanes are skipped until it is back: %s", what, exc)

    def _lane_units(self, conn: psycopg.Connection, params: dict[str, Any]) -> list[Callable[[int], list[tuple]]]:
        """Read each lane's best candidates (router reads, one round trip per node; a node that fails is
        skipped), merge them into one order and return, per node, the take of the lanes holding the best
        ``limit`` of them (each lane asked for what it showed), the node with the best candidate first."""
        best: list[tuple[Any, Any, str]] = []
        for group in self._lanes_by_node(conn, list(self._lane_map(conn))):
            try:
                found = run_each(conn, [(self._q["ready_lane_best"], {**params, "lane": lane}) for lane in group])
            except psycopg.Error as exc:
                if not node_fault(exc) or conn.broken:
                    raise
                self._node_failed("claim", exc)
                continue
            best += [(r[0], r[1], lane) for lane, rows in zip(group, found, strict=True) for r in rows]
        best.sort(key=lambda c: (c[0], c[1]))
        shown = Counter(lane for _, _, lane in best[:params["limit"]])
        order = list(dict.fromkeys(lane for _, _, lane in best if lane in shown))
        return [functools.partial(self._take_ready, conn, params, group, shown)
                for group in self._lanes_by_node(conn, order)]

    def _take_over(self, conn: psycopg.Connection, params: dict[str, Any], expired: tuple, _room: int) -> list[tuple]:
        """Compare-and-set one expired lease (epoch seen); a workflow still holding the slot of a queue that is no
        longer limited gives it back in the same transaction."""
        wid, epoch, held = expired
        claim = {"owner": params["owner"], "lease": params["lease"], "keep_slot": False, "workflow_id": wid,
                 "epoch": epoch, "token": params["token"]}
        if held is None:
            return conn.execute(self._q["expired_claim"], claim).fetchall()
        with conn.transaction():
            row = conn.execute(self._q["expired_claim"], claim).fetchone()
            if row is None:
                return []
            conn.execute(self._q["slot_release"], {"lane": held, "workflow_id": wid})
        return [row]

    def _take_ready(self, conn: psycopg.Connection, params: dict[str, Any], group: list[str],
                    shown: Counter[str], room: int) -> list[tuple]:
        """One transaction over lanes of one node: per lane, take ready rows (SKIP LOCKED, as many as the
        candidates showed there, ``room`` at most in all) and start their workflows under a new epoch."""
        lanes = []
        for lane in group:
            n = min(room - sum(k for _, k in lanes), shown[lane])
            if n > 0:
                lanes.append((lane, n))
        if not lanes:
            return []
        out: list[tuple] = []
        with conn.transaction():
            with conn.pipeline():
                taken = [conn.execute(self._q["ready_take"], {**params, "lane": lane, "n": n}) for lane, n in lanes]
            ids = [[r[0] for r in cur.fetchall()] for cur in taken]
            if not any(ids):
                return []
            with conn.pipeline():
                claimed = [conn.execute(self._q["ready_claim"], {**params, "ids": lane_ids})
                           for lane_ids in ids if lane_ids]
            for cur in claimed:
                out += cur.fetchall()
        return out
