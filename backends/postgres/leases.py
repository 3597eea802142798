"""Claims and leases: claiming ready or orphaned workflows, renewing every lease a worker holds."""

from __future__ import annotations

import psycopg
import psycopg.errors

from kit.config import redact_url
from kit.errors import DatabaseUnavailableError, SchemaError, StorageError
from kit.storage import Claim, ClaimRequest, WorkerInfo

from .connection import PostgresCore, is_connection_error, scrub


class LeasesPart(PostgresCore):
    """workflow_claim / lease_renew."""

    def workflow_claim(self, req: ClaimRequest) -> list[Claim]:
        if not req.names or req.limit <= 0:
            return []
        params = {
            "owner": req.owner, "names": list(req.names), "limit": req.limit, "lease": req.lease_seconds,
            "any_queue": req.queues is None, "queues": list(req.queues or []),
            "versions": None if req.versions is None else list(req.versions),
        }
        caps = self._caps
        if caps.skip_locked and caps.multi_row_locking_claims:
            # One statement: candidates locked with SKIP LOCKED, then claimed (one round trip).
            found = self._run(lambda c: c.execute(self._q["workflow_claim"], params).fetchall())
        else:
            found = self._run(lambda c: self._claim_row_by_row(c, params))
        return [Claim(workflow_id=r[0], name=r[1], inputs=r[2], epoch=r[3], recovery=r[4], deadline=r[5])
                for r in found]

    def _claim_row_by_row(self, conn: psycopg.Connection, params: dict) -> list[tuple]:
        """Read candidates without locks, then claim each with a single-row compare-and-set of its epoch
        (statements pipelined: one round trip). A candidate another claimer took first is skipped."""
        candidates = conn.execute(self._q["workflow_claim_candidates"], params).fetchall()
        if not candidates:
            return []
        stmt = self._q["workflow_claim_row"]
        base = {"owner": params["owner"], "lease": params["lease"]}
        with conn.pipeline():
            cursors = [conn.execute(stmt, {**base, "workflow_id": wid, "epoch": epoch, "recovery": recovery})
                       for wid, epoch, recovery in candidates]
        out = []
        for cur in cursors:
            row = cur.fetchone()
            if row is not None:
                out.append(row)
        return out

    def lease_renew(self, owner: str, lease_seconds: float, worker: WorkerInfo | None = None) -> dict[str, int]:
        """On the heartbeat's own connection (never queued behind step traffic), retried within a quarter
        of the lease; a connection that died with the server is replaced at once."""
        if worker is not None:
            params = {"owner": owner, "lease": lease_seconds, "hostname": worker.hostname, "pid": worker.pid}
            stmt = self._q["lease_renew"]
        else:
            params = {"owner": owner, "lease": lease_seconds}
            stmt = self._q["lease_renew_no_worker"]
        if self._pool is None:
            raise StorageError("backend is not open")
        budget = max(0.5, min(self.retry_seconds, lease_seconds / 4))
        self._lease_budget = self._lease_watchdog.limit = budget
        try:
            rows = self._leases.execute(stmt, params, budget)
        except psycopg.errors.UndefinedTable as exc:
            raise SchemaError(f"kit tables are missing in schema '{self.schema}': run `kit migrate`") from exc
        except psycopg.Error as exc:
            kind = DatabaseUnavailableError if is_connection_error(exc) else StorageError
            raise kind(scrub(f"lease renewal failed: database {redact_url(self.url)}: {exc}", self.url)) from exc
        return {r[0]: r[1] for r in rows}
