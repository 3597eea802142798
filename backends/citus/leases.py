"""Claims of ordinary queues on Citus, lane by lane, and the recovery of expired leases.

A claim never sends a multi-shard locking statement:

1. one round trip reads, without locks, the limited queues (coordinator), the lanes of the best ready rows
   and the expired leases this claimer may take (two multi-shard reads, each shard answering from its index);
2. expired leases are taken over one by one, each a compare-and-set of the epoch seen (router statements,
   pipelined, each its own transaction), so of two claimers exactly one wins;
3. ready rows are taken lane by lane: per lane a router ``DELETE ... IN (SELECT ... FOR UPDATE SKIP LOCKED)``
   and a router ``UPDATE`` of those workflows (same shard), lanes of one node in one transaction (one-phase
   commit), one transaction per node.

Lease renewal is the ``lease_renew`` statement (``heartbeat()``: the worker upsert on the coordinator and one
multi-shard UPDATE that locks only the rows it extends).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import psycopg
from kit.backends.postgres.leases import LeasesPart

from kit.storage import Claim, ClaimRequest

from .lanes import LanesPart, run_each


class CitusLeasesPart(LanesPart, LeasesPart):
    """workflow_claim by lanes."""

    def workflow_claim(self, req: ClaimRequest) -> list[Claim]:
        if not req.names or req.limit <= 0:
            return []
        params: dict[str, Any] = {
            "owner": req.owner, "names": list(req.names), "limit": req.limit, "lease": req.lease_seconds,
            "any_queue": req.queues is None, "queues": list(req.queues or []),
            "versions": None if req.versions is None else list(req.versions),
        }
        found = self._run(lambda conn: self._claim_lanes(conn, params))
        return [Claim(workflow_id=r[0], name=r[1], inputs=r[2], epoch=r[3], recovery=r[4], deadline=r[5])
                for r in found]

    def _claim_lanes(self, conn: psycopg.Connection, params: dict[str, Any]) -> list[tuple]:
        with conn.pipeline():
            limited_cur = conn.execute(self._q["queue_limited_names"])
            limited = [r[0] for r in limited_cur.fetchall()]
            params = {**params, "limited": limited}
            ready_cur = conn.execute(self._q["ready_candidates"], params)
            expired_cur = conn.execute(self._q["expired_candidates"], params)
        lanes = Counter(r[0] for r in ready_cur.fetchall())
        expired = expired_cur.fetchall()
        out = self._take_over(conn, params, expired) if expired else []
        room = params["limit"] - len(out)
        if room <= 0 or not lanes:
            return out
        # The best candidates' lanes, most promising first; each lane asked for what it showed (up to room).
        for group in self._lanes_by_node([lane for lane, _ in lanes.most_common()]):
            if room <= 0:
                break
            got = self._take_ready(conn, params, [(lane, min(room, lanes[lane])) for lane in group])
            out += got
            room -= len(got)
        return out

    def _take_over(self, conn: psycopg.Connection, params: dict[str, Any], expired: list[tuple]) -> list[tuple]:
        """Compare-and-set each expired lease (epoch seen); a workflow still holding the slot of a queue that is
        no longer limited gives it back in the same transaction."""
        base = {"owner": params["owner"], "lease": params["lease"], "keep_slot": False}
        plain = [(wid, epoch) for wid, epoch, held in expired if held is None]
        out = [r for rows_ in run_each(conn, [(self._q["expired_claim"], {**base, "workflow_id": wid, "epoch": epoch})
                                              for wid, epoch in plain]) for r in rows_] if plain else []
        for wid, epoch, held in expired:
            if held is None:
                continue
            with conn.transaction():
                row = conn.execute(self._q["expired_claim"], {**base, "workflow_id": wid, "epoch": epoch}).fetchone()
                if row is not None:
                    conn.execute(self._q["slot_release"], {"lane": held, "workflow_id": wid})
                    out.append(row)
        return out

    def _take_ready(self, conn: psycopg.Connection, params: dict[str, Any], lanes: list[tuple[str, int]]) -> list[tuple]:
        """One transaction over lanes of one node: per lane, take ready rows (SKIP LOCKED) and start their
        workflows under a new epoch."""
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
