"""Streams: append and close (fenced, exactly once per step), read in one snapshot."""

from __future__ import annotations

from dataclasses import replace

import psycopg

from kit.errors import UsageError
from kit.storage import Status, StepRecord, StepResult, StreamChunk

from . import rows
from .notifications import NotificationsPart
from .steps import StepsPart


class StreamsPart(StepsPart, NotificationsPart):
    """stream_write / stream_close / stream_read."""

    def _stream_append(self, step: StepResult, key: str, value: str | None, closed: bool) -> StepRecord:
        """Append an element (or the close row) and its checkpoint in one fenced transaction; the wake-up
        (``s:<id>``) is sent inside it, so it is delivered at commit, never before."""
        where = {"workflow_id": step.workflow_id, "key": key}

        def append(conn: psycopg.Connection) -> StepRecord:
            row = conn.execute(self._q["stream_append"], {**where, "value": value, "closed": closed,
                                                          "step_id": step.step_id}).fetchone()
            if row is None:  # the stream is closed
                if not closed:
                    raise UsageError(f"stream {key!r} of workflow {step.workflow_id} is closed: "
                                     "write_stream after close_stream")
                row = conn.execute(self._q["stream_closed_at"], where).fetchone()
            written = replace(step, output=str(int(row[0])))
            finished = conn.execute(self._q["step_insert"], rows.step_params(written)).fetchone()[0]
            self._wake_in_tx(conn, "s:" + step.workflow_id)
            return rows.recorded(written, finished)

        record = self._fenced_transaction(step, append)
        assert record is not None
        return record

    def stream_write(self, step: StepResult, key: str, value: str) -> StepRecord:
        return self._stream_append(step, key, value, False)

    def stream_close(self, step: StepResult, key: str) -> StepRecord:
        return self._stream_append(step, key, None, True)

    def stream_read(self, workflow_id: str, key: str, after_seq: int, limit: int) -> StreamChunk:
        limit = max(1, min(int(limit), 100_000))
        params = {"workflow_id": workflow_id, "key": key, "after_seq": int(after_seq), "limit": limit}
        found = self._run(lambda c: c.execute(self._q["stream_read"], params).fetchall())
        status = Status(found[0][0]) if found[0][0] is not None else None
        elements = tuple((r[1], r[2]) for r in found if r[1] is not None and not r[3])
        closed = found[-1][1] is not None and bool(found[-1][3])  # the close row is always the last one
        return StreamChunk(elements[:limit], closed, status)
