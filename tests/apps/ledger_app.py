"""A kit app whose steps write side effects to a ledger table, for crash and fencing tests.

Every ordinary step appends ``(workflow_id, step_id, epoch, pid, kind)`` to ``<schema>.ledger`` through
its own autocommit connection, *not* in the checkpoint's transaction: a step that ran but whose
checkpoint never committed (the worker died in between) leaves a ledger row from an older epoch
(an allowed G3 re-run), while a step that ran again after its checkpoint committed would leave a row
from a newer epoch than its checkpoint (a G2 violation). The transactional step writes its ledger row
through the connection kit gives it, so that row commits if and only if its checkpoint does (G4).

Workers run it with ``kit worker tests.apps.ledger_app:app`` (configured by KIT_* variables). Tests build
their own instance with :func:`make_app`. ``python -m tests.apps.ledger_app start-same ...`` starts one
workflow id from a process, synchronized with other processes through files (see :func:`_start_same`).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import threading
import time
from typing import Any

import psycopg
from psycopg import sql

import kit
from kit.engine import current_context

LEDGER_DDL = """
CREATE TABLE IF NOT EXISTS {schema}.ledger (
    id          bigserial   PRIMARY KEY,
    workflow_id text        NOT NULL,
    step_id     integer     NOT NULL,
    epoch       bigint      NOT NULL,
    pid         integer     NOT NULL,
    kind        text        NOT NULL,
    at          timestamptz NOT NULL DEFAULT clock_timestamp()
)
"""
INSERT = "INSERT INTO {schema}.ledger (workflow_id, step_id, epoch, pid, kind) VALUES (%s, %s, %s, %s, %s)"


def ensure_ledger(url: str, schema: str) -> None:
    """Create the schema (if needed) and its ledger table."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        conn.execute(sql.SQL(LEDGER_DDL).format(schema=sql.Identifier(schema)))


def step_value(n: int, i: int) -> int:
    return n * 10 + i


def tx_value(n: int) -> int:
    return n * 1000


def expected_result(n: int, steps: int = 5) -> dict[str, Any]:
    """What ``ledger_workflow(n, steps)`` returns."""
    values = [step_value(n, i) for i in range(steps)]
    return {"n": n, "values": values, "tx": tx_value(n), "total": sum(values) + tx_value(n)}


def make_app(**settings: Any) -> kit.Kit:
    """A Kit with the ledger workflows registered; ``settings`` override KIT_* variables."""
    app = kit.Kit(**settings)
    local = threading.local()

    def ledger_insert(kind: str) -> tuple[int, int]:
        """Append this step's side effect on a separate autocommit connection; returns (step_id, epoch)."""
        ctx = current_context()
        info = kit.step_info()
        assert ctx is not None and info is not None, "ledger_insert must run inside a step"
        stmt = sql.SQL(INSERT).format(schema=sql.Identifier(app.config.schema))
        params = (info.workflow_id, info.step_id, ctx.epoch, os.getpid(), kind)
        for attempt in range(2):
            conn = getattr(local, "conn", None)
            if conn is None or conn.closed:
                conn = local.conn = psycopg.connect(app.config.database_url, autocommit=True)
            try:
                conn.execute(stmt, params)
                break
            except psycopg.OperationalError:
                local.conn = None
                if attempt:
                    raise
        return info.step_id, ctx.epoch

    @app.step(name="ledger_work")
    def work(n: int, i: int, delay: float | None) -> int:
        ledger_insert("step")
        # The pause after the side effect is the G3 window: a kill here leaves a ledger row without a
        # checkpoint, and the step runs again after recovery.
        time.sleep(delay if delay is not None else random.uniform(0.03, 0.2))
        return step_value(n, i)

    @app.transaction(name="ledger_tx")
    def record_tx(conn: psycopg.Connection, n: int) -> int:
        ctx = current_context()
        info = kit.step_info()
        assert ctx is not None and info is not None
        conn.execute(sql.SQL(INSERT).format(schema=sql.Identifier(app.config.schema)),
                     (info.workflow_id, info.step_id, ctx.epoch, os.getpid(), "tx"))
        time.sleep(random.uniform(0.0, 0.05))
        return tx_value(n)

    @app.workflow(name="ledger_workflow")
    def ledger_workflow(n: int, steps: int = 5, delay: float | None = None) -> dict[str, Any]:
        values = [work(n, i, delay) for i in range(steps)]
        tx = record_tx(n)
        return {"n": n, "values": values, "tx": tx, "total": sum(values) + tx}

    @app.step(name="ledger_slow")
    def slow(seconds: float) -> str:
        ledger_insert("slow")
        time.sleep(seconds)
        return "slow done"

    @app.step(name="ledger_whoami")
    def whoami() -> dict[str, int]:
        step_id, epoch = ledger_insert("whoami")
        return {"pid": os.getpid(), "epoch": epoch}

    @app.workflow(name="slow_workflow")
    def slow_workflow(n: int, seconds: float) -> dict[str, Any]:
        first = work(n, 0, 0.0)
        middle = slow(seconds)
        last = work(n, 2, 0.0)
        return {"values": [first, middle, last], "finisher": whoami()}

    app.ledger_workflow = ledger_workflow  # type: ignore[attr-defined]
    app.slow_workflow = slow_workflow  # type: ignore[attr-defined]
    return app


app = make_app()


def _start_same(argv: list[str]) -> int:
    """Start ``ledger_workflow(n)`` under a fixed id once ``--go`` exists; print the result as JSON.

    Writes ``--ready`` after the database is open, then waits for ``--go`` so that several processes
    call ``app.start`` at the same moment.
    """
    p = argparse.ArgumentParser(prog="ledger_app start-same")
    p.add_argument("--id", required=True)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--ready", required=True)
    p.add_argument("--go", required=True)
    args = p.parse_args(argv)
    mine = make_app()
    try:
        mine.backend  # noqa: B018 - connect and migrate before signalling readiness
        with open(args.ready, "w") as f:
            f.write(str(os.getpid()))
        deadline = time.monotonic() + 60
        while not os.path.exists(args.go):
            if time.monotonic() > deadline:
                print("never got the go signal", file=sys.stderr)
                return 1
            time.sleep(0.001)
        handle = mine.start(mine.ledger_workflow, args.n, workflow_id=args.id)  # type: ignore[attr-defined]
        result = handle.result(timeout=60)
        print(json.dumps({"pid": os.getpid(), "result": result}), flush=True)
        return 0
    finally:
        mine.close()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "start-same":
        sys.exit(_start_same(sys.argv[2:]))
    print("usage: python -m tests.apps.ledger_app start-same --id ID --n N --ready FILE --go FILE", file=sys.stderr)
    sys.exit(2)
