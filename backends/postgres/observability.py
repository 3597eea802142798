"""Observability (read-only): workers, children, the monitor reading, messages / events / streams of a
workflow. Every read is bounded and index-served, and goes through ``_observe`` (follower reads where the
server has them)."""

from __future__ import annotations

from typing import Any

import psycopg

from kit.storage import (
    EventInfo,
    FinishedBucket,
    MessageInfo,
    MonitorQuery,
    MonitorStats,
    Percentiles,
    QueueStats,
    Status,
    StreamInfo,
    WorkerInfo,
    WorkerStats,
    WorkflowRecord,
)

from . import rows
from .connection import PostgresCore


def _limit(limit: int) -> int:
    return max(1, min(int(limit), 100_000))


class ObservabilityPart(PostgresCore):
    """worker_list / workflow_children / monitor_stats / message_list / event_list / stream_list."""

    def worker_list(self) -> list[WorkerInfo]:
        found = self._observe(lambda c: c.execute(self._q["worker_list"]).fetchall())
        return [WorkerInfo(worker_id=r[0], hostname=r[1], pid=r[2], started_at=r[3], heartbeat_at=r[4]) for r in found]

    def workflow_children(self, workflow_id: str, limit: int = 1000) -> list[WorkflowRecord]:
        params = {"workflow_id": workflow_id, "limit": _limit(limit)}
        return [rows.wf(r) for r in self._observe(lambda c: c.execute(self._q["workflow_children"], params).fetchall())]

    def monitor_stats(self, query: MonitorQuery) -> MonitorStats:
        """Seven bounded statements sent in one pipeline (one round trip) on one pooled connection."""
        f = {"name": query.name, "queue": query.queue}
        plan: list[tuple[str, dict[str, Any]]] = [
            ("monitor_node", {}),
            ("monitor_workers", {"alive": float(query.alive_seconds), "limit": int(query.workers)}),
            ("monitor_queues", f),
            ("monitor_finished", {**f, "bucket": int(query.bucket_seconds), "window": int(query.window_seconds)}),
            ("monitor_latency", {**f, "window": int(query.latency_window_seconds), "rows": int(query.latency_rows)}),
            ("monitor_failures", {**f, "limit": int(query.failures)}),
            ("monitor_oldest_pending", f),
        ]

        def read(conn: psycopg.Connection) -> list[list[tuple]]:
            cursors = []
            with conn.pipeline():
                for name, params in plan:
                    cur = conn.cursor()
                    cur.execute(self._q[name], params)
                    cursors.append(cur)
            return [cur.fetchall() for cur in cursors]

        node, workers, queues, finished, latency, failures, oldest = self._observe(read)
        now, in_recovery, addr, port = node[0]
        where = f"{addr}:{port}" if addr else "local socket"

        def pct(n: int, p: list[float] | None) -> Percentiles:
            if not n or not p:
                return Percentiles(count=int(n or 0))
            return Percentiles(count=int(n), p50=p[0], p95=p[1], p99=p[2])

        lat = latency[0]
        return MonitorStats(
            server_time=now,
            primary=not in_recovery,
            node=where,
            workers=tuple(WorkerStats(worker_id=r[0], hostname=r[1], pid=r[2], started_at=r[3], heartbeat_at=r[4],
                                      alive=bool(r[5]), claims=int(r[6])) for r in workers),
            queues=tuple(QueueStats(queue=r[0], depth=int(r[1]), in_flight=int(r[2]), concurrency_limit=r[3],
                                    rate_limit_per_second=r[4]) for r in queues),
            finished=tuple(FinishedBucket(start=r[0], status=Status(r[1]), count=int(r[2])) for r in finished),
            workflow_latency=pct(lat[0], lat[1]),
            step_latency=pct(lat[2], lat[3]),
            recent_failures=tuple(rows.wf(r) for r in failures),
            oldest_pending=rows.wf(oldest[0]) if oldest else None,
        )

    def message_list(self, workflow_id: str, limit: int = 1000) -> list[MessageInfo]:
        params = {"workflow_id": workflow_id, "limit": _limit(limit)}
        found = self._observe(lambda c: c.execute(self._q["message_list"], params).fetchall())
        return [MessageInfo(message_id=r[0], topic=r[1], body=r[2], sender_key=r[3], created_at=r[4],
                            consumed_at=r[5], consumed_step=r[6]) for r in found]

    def event_list(self, workflow_id: str, limit: int = 1000) -> list[EventInfo]:
        params = {"workflow_id": workflow_id, "limit": _limit(limit)}
        found = self._observe(lambda c: c.execute(self._q["event_list"], params).fetchall())
        return [EventInfo(key=r[0], value=r[1], step_id=r[2], updated_at=r[3]) for r in found]

    def stream_list(self, workflow_id: str, limit: int = 1000) -> list[StreamInfo]:
        params = {"workflow_id": workflow_id, "limit": _limit(limit)}
        found = self._observe(lambda c: c.execute(self._q["stream_list"], params).fetchall())
        return [StreamInfo(key=r[0], count=int(r[1]), closed=bool(r[2]), last_write_at=r[3]) for r in found]
