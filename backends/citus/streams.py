"""Streams on Citus: appends and closes are the PostgreSQL backend's fenced single-shard transactions; a read
is one router query joining the workflow row with its stream rows (overrides.sql ``stream_read``), which
returns no row at all for a workflow that does not exist."""

from __future__ import annotations

from kit.backends.postgres.streams import StreamsPart

from kit.storage import Status, StreamChunk


class CitusStreamsPart(StreamsPart):
    """stream_read."""

    def stream_read(self, workflow_id: str, key: str, after_seq: int, limit: int) -> StreamChunk:
        limit = max(1, min(int(limit), 100_000))
        params = {"workflow_id": workflow_id, "key": key, "after_seq": int(after_seq), "limit": limit}
        found = self._run(lambda c: c.execute(self._q["stream_read"], params).fetchall())
        if not found:
            return StreamChunk((), False, None)
        status = Status(found[0][0])
        elements = tuple((r[1], r[2]) for r in found if r[1] is not None and not r[3])
        closed = found[-1][1] is not None and bool(found[-1][3])  # the close row is always the last one
        return StreamChunk(elements[:limit], closed, status)
