"""Messages on Citus: a send is a router insert on the receiver's shard; a send from workflow code first
holds the sender's row under its epoch (``FOR KEY SHARE`` on the sender's shard), in the same transaction,
so the message exists if and only if the sender's epoch owned it at commit (two-phase commit when the two
workflows live on different nodes). Receive, events and streams are single-shard transactions inherited
from the PostgreSQL backend (their statements are router queries)."""

from __future__ import annotations

import psycopg
from kit.backends.postgres.connection import call_token
from kit.backends.postgres.messaging import MessagingPart

from kit.errors import LeaseLostError

from .lanes import LanesPart


class _NoReceiver(Exception):
    """No workflow to deliver to: the transaction rolls back, nothing is written."""


class CitusMessagingPart(LanesPart, MessagingPart):
    """message_send."""

    def message_send(self, workflow_id: str, topic: str, body: str, sender_key: str | None = None,
                     sender: tuple[str, int] | None = None) -> bool:
        # Without a key the call gets one of its own (as on PostgreSQL): a retry after a lost acknowledgement
        # then finds its own message instead of delivering it twice.
        if sender_key is None:
            sender_key = call_token()
        params = {"workflow_id": workflow_id, "topic": topic, "body": body, "sender_key": sender_key}

        def send(conn: psycopg.Connection) -> bool:
            # One pipeline: the sender's fence, the receiver held, the insert, the wake-up; the fence and the
            # receiver are checked before COMMIT (a failed check rolls everything back).
            with conn.pipeline(), conn.transaction():
                fence = None if sender is None else conn.execute(
                    self._q["workflow_fence"], {"workflow_id": sender[0], "epoch": sender[1]})
                receiver = conn.execute(self._q["workflow_hold"], params)
                conn.execute(self._q["message_insert"], params)
                self._wake_in_tx(conn, "m:" + workflow_id)  # delivered at commit
                if fence is not None and fence.fetchone() is None:
                    raise LeaseLostError(f"workflow {sender[0]}: lease lost (epoch {sender[1]} superseded); "
                                         "message not sent")
                if receiver.fetchone() is None:
                    raise _NoReceiver
            return True

        try:
            return self._run(send)
        except _NoReceiver:
            return False
