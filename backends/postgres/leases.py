"""Claims and leases: claiming ready or orphaned workflows, renewing every lease a worker holds.

A claim call stamps the rows it takes with a per-call token (``claim_token``, and ``claim_recovery``: was
it a takeover); a retry after a lost acknowledgement reads them back (``claim_read_back``) before claiming
anything new. A subclass with its own claim statements must set both columns from ``%(token)s`` and the
recovery flag, and keep calling ``_claims_read_back`` first on a retry (as
:meth:`LeasesPart.workflow_claim` does), so the read-back keeps working.
"""

from __future__ import annotations

import psycopg
import psycopg.errors

from kit.config import redact_url
from kit.errors import DatabaseUnavailableError, SchemaError, StorageError
from kit.storage import Claim, ClaimRequest, WorkerInfo

from .connection import PostgresCore, call_token, is_connection_error, scrub


class LeasesPart(PostgresCore):
    """workflow_claim / lease_renew."""

    def workflow_claim(self, req: ClaimRequest) -> list[Claim]:
        """One statement on the fresh path. Every attempt stamps what it claims with this call's token; a
        retry (an earlier attempt may have committed, its acknowledgement lost) first reads back the rows
        held under the token and returns them, claiming new work only for the rest of ``limit``."""
        if not req.names or req.limit <= 0:
            return []
        params = {
            "owner": req.owner, "names": list(req.names), "limit": req.limit, "lease": req.lease_seconds,
            "any_queue": req.queues is None, "queues": list(req.queues or []),
            "versions": None if req.versions is None else list(req.versions), "token": call_token(),
        }
        caps = self._caps
        one_statement = caps.skip_locked and caps.multi_row_locking_claims
        attempts = 0

        def claim(conn: psycopg.Connection) -> list[tuple]:
            nonlocal attempts
            attempts += 1
            found: list[tuple] = self._claims_read_back(conn, params) if attempts > 1 else []
            if found:
                if len(found) >= req.limit:
                    return found
                rest = {**params, "limit": req.limit - len(found)}
            else:
                rest = params
            if one_statement:
                # Candidates locked with SKIP LOCKED, then claimed (one round trip).
                return found + conn.execute(self._q["workflow_claim"], rest).fetchall()
            return found + self._claim_row_by_row(conn, rest)

        return [Claim(workflow_id=r[0], name=r[1], inputs=r[2], epoch=r[3], recovery=r[4], deadline=r[5])
                for r in self._run(claim)]

    def _claim_row_by_row(self, conn: psycopg.Connection, params: dict) -> list[tuple]:
        """Read candidates without locks, then claim each with a single-row compare-and-set of its epoch
        (statements pipelined: one round trip). A candidate another claimer took first is skipped."""
        candidates = conn.execute(self._q["workflow_claim_candidates"], params).fetchall()
        if not candidates:
            return []
        stmt = self._q["workflow_claim_row"]
        base = {"owner": params["owner"], "lease": params["lease"], "token": params["token"]}
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
