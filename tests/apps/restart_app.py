"""A kit app for the database-restart and graceful-stop tests: a ledger that outlives the database.

Ordinary steps write a ``start`` mark before their work and an ``end`` mark after it to a ledger *file*
(one JSON-lines file per process in ``$RESTART_LEDGER_DIR``), so the marks survive the database outages
the tests cause and show every execution of every step: a step with two ``start`` marks ran twice, and one
whose first execution has an ``end`` mark was re-run although its body had finished. The transactional
step inserts a row into ``<schema>.restart_effects`` through kit's connection, so that row commits if and
only if its checkpoint does (G4).

Workers run it with ``kit worker tests.apps.restart_app:app`` (configured by ``KIT_*`` variables).
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

import kit
from kit.engine import current_context

EFFECTS_DDL = """
CREATE TABLE IF NOT EXISTS {schema}.restart_effects (
    id          bigserial   PRIMARY KEY,
    workflow_id text        NOT NULL,
    step_id     integer     NOT NULL,
    epoch       bigint      NOT NULL,
    pid         integer     NOT NULL
)
"""
# Deliberately no unique constraint: a G4 violation (two committed rows) must be visible, not refused.


def ensure_effects(url: str, schema: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        conn.execute(sql.SQL(EFFECTS_DDL).format(schema=sql.Identifier(schema)))


def expected_result(n: int, steps: int) -> dict[str, Any]:
    values = [n * 100 + i for i in range(steps)]
    return {"n": n, "values": values, "tx": n * 1000}


def read_ledger(folder: Path) -> list[dict[str, Any]]:
    """Every mark of every process, in file order per process."""
    marks: list[dict[str, Any]] = []
    for path in sorted(folder.glob("ledger-*.jsonl")):
        for line in path.read_text().splitlines():
            if line.strip():
                marks.append(json.loads(line))
    return marks


def make_app(**settings: Any) -> kit.Kit:
    app = kit.Kit(**settings)
    lock = threading.Lock()
    files: dict[int, Any] = {}

    def mark(kind: str) -> None:
        ctx = current_context()
        info = kit.step_info()
        assert ctx is not None and info is not None, "mark() runs inside a step"
        line = json.dumps({"kind": kind, "wf": info.workflow_id, "step": info.step_id, "epoch": ctx.epoch,
                           "pid": os.getpid(), "t": time.time()})
        with lock:
            out = files.get(os.getpid())
            if out is None:
                folder = Path(os.environ["RESTART_LEDGER_DIR"])
                out = files[os.getpid()] = open(folder / f"ledger-{os.getpid()}.jsonl", "a", buffering=1)
            out.write(line + "\n")  # line-buffered: in the kernel before the step goes on

    @app.step(name="rs.work")
    def work(n: int, i: int, seconds: float) -> int:
        mark("start")
        time.sleep(seconds)
        mark("end")
        return n * 100 + i

    @app.transaction(name="rs.record")
    def record(conn: psycopg.Connection, n: int) -> int:
        ctx = current_context()
        info = kit.step_info()
        assert ctx is not None and info is not None
        conn.execute(sql.SQL("INSERT INTO {}.restart_effects (workflow_id, step_id, epoch, pid) "
                             "VALUES (%s, %s, %s, %s)").format(sql.Identifier(app.config.schema)),
                     (info.workflow_id, info.step_id, ctx.epoch, os.getpid()))
        return n * 1000

    @app.workflow(name="rs.flow")
    def flow(n: int, steps: int = 3, seconds: float = 0.25) -> dict[str, Any]:
        values = [work(n, i, seconds) for i in range(steps)]
        return {"n": n, "values": values, "tx": record(n)}

    app.flow = flow  # type: ignore[attr-defined]
    return app


app = make_app()
