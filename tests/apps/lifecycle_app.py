"""A kit app with parent/child workflows and durable timers, for real-process lifecycle tests.

Every step appends ``(workflow_id, step_id, epoch, pid, kind)`` to ``<schema>.ledger`` (the ledger of
tests/apps/ledger_app.py) on its own connection, so tests can count executions per step. ``LC_CODE``
picks the code version a process runs (``v1`` or ``v2``: v2 adds a patched step) and ``KIT_APP_VERSION``
/ ``KIT_COMPATIBLE_VERSIONS`` the versions it records and replays. Workers run ``kit worker
tests.apps.lifecycle_app:app``.
"""

from __future__ import annotations

import os
import threading

import psycopg
from psycopg import sql

import kit
from kit.engine import current_context
from tests.apps.ledger_app import INSERT, ensure_ledger

__all__ = ["app", "ensure_ledger", "make_app"]

SLEEP = float(os.environ.get("LC_SLEEP", "1.0"))


def make_app(**settings) -> kit.Kit:
    app = kit.Kit(**settings)
    code = os.environ.get("LC_CODE", "v1")
    local = threading.local()

    def ledger(kind: str) -> None:
        ctx, info = current_context(), kit.step_info()
        assert ctx is not None and info is not None
        conn = getattr(local, "conn", None)
        if conn is None or conn.closed:
            conn = local.conn = psycopg.connect(app.config.database_url, autocommit=True)
        conn.execute(sql.SQL(INSERT).format(schema=sql.Identifier(app.config.schema)),
                     (info.workflow_id, info.step_id, ctx.epoch, os.getpid(), kind))

    @app.step(name="reserve")
    def reserve(n: int) -> int:
        ledger("reserve")
        return n

    @app.step(name="pack")
    def pack(n: int) -> str:
        ledger("pack")
        return f"box-{n}"

    @app.step(name="ship")
    def ship(box: str) -> str:
        ledger("ship")
        return f"shipped {box}"

    @app.step(name="notify")
    def notify(n: int) -> str:
        ledger("notify")
        return f"notified {n}"

    @app.step(name="notify_v2")
    def notify_v2(n: int) -> str:
        ledger("notify_v2")
        return f"notified {n} (v2)"

    @app.workflow(name="lc.ship")
    def shipment(n: int) -> str:
        box = pack(n)
        app.sleep(SLEEP)
        return ship(box)

    @app.workflow(name="lc.order")
    def order(n: int) -> dict:
        reserve(n)
        shipped = shipment(n)  # a child workflow, awaited
        app.sleep(SLEEP)
        if code == "v2" and app.patched("notify-v2"):
            note = notify_v2(n)
        else:
            note = notify(n)
        return {"n": n, "shipped": shipped, "note": note}

    return app


app = make_app()
