"""Messages and events: send (fenced by the sender's epoch), receive exactly once, set and read events."""

from __future__ import annotations

from dataclasses import replace

import psycopg

from kit.errors import LeaseLostError
from kit.storage import StepRecord, StepResult

from . import rows
from .connection import call_token
from .notifications import NotificationsPart
from .steps import StepsPart


class MessagingPart(StepsPart, NotificationsPart):
    """message_send / message_receive / event_set / event_get."""

    def message_send(self, workflow_id: str, topic: str, body: str, sender_key: str | None = None,
                     sender: tuple[str, int] | None = None) -> bool:
        # Without a key the call gets one of its own: a retry after a lost acknowledgement then finds its
        # own message (ON CONFLICT) instead of delivering it twice. Two calls are still two messages.
        if sender_key is None:
            sender_key = call_token()
        params = {"workflow_id": workflow_id, "topic": topic, "body": body, "sender_key": sender_key,
                  "channel": self._statement_channel,
                  "sender_id": sender[0] if sender else None, "sender_epoch": sender[1] if sender else None}

        def send(conn: psycopg.Connection) -> tuple:
            row = conn.execute(self._q["message_send"], params).fetchone()
            if row[0] and row[3]:
                self._wake_in_tx(conn, "m:" + workflow_id, sent_by_statement=True)
            return row

        exists, _inserted, _, sender_ok = self._run(send)
        if not sender_ok:
            raise LeaseLostError(f"workflow {sender[0] if sender else '?'}: lease lost (epoch "
                                 f"{sender[1] if sender else '?'} superseded); message not sent")
        return bool(exists)

    def message_receive(self, step: StepResult, topic: str) -> StepRecord | None:
        waiting = self._run(lambda c: c.execute(self._q["message_waiting"], {
            "workflow_id": step.workflow_id, "topic": topic, "step_id": step.step_id}).fetchone()[0])
        if not waiting:  # nothing to take: no transaction, no locks (a waiting recv re-checks often)
            return None

        def take(conn: psycopg.Connection) -> StepRecord | None:
            row = conn.execute(self._q["message_take"], {"workflow_id": step.workflow_id, "topic": topic,
                                                         "step_id": step.step_id}).fetchone()
            if row is None:
                return None
            taken = replace(step, output=row[0])
            finished = conn.execute(self._q["step_insert"], rows.step_params(taken)).fetchone()[0]
            return rows.recorded(taken, finished)

        return self._fenced_transaction(step, take)

    def event_set(self, step: StepResult, key: str) -> StepRecord:
        def upsert(conn: psycopg.Connection) -> StepRecord:
            conn.execute(self._q["event_upsert"], {"workflow_id": step.workflow_id, "key": key,
                                                   "value": step.output, "step_id": step.step_id})
            finished = conn.execute(self._q["step_insert"], rows.step_params(step)).fetchone()[0]
            self._wake_in_tx(conn, "e:" + step.workflow_id)  # inside the transaction: delivered at commit
            return rows.recorded(step, finished)

        record = self._fenced_transaction(step, upsert)
        assert record is not None
        return record

    def event_get(self, workflow_id: str, key: str) -> str | None:
        row = self._run(lambda c: c.execute(self._q["event_get"], {"workflow_id": workflow_id, "key": key}).fetchone())
        return row[0] if row else None
