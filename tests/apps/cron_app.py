"""A kit app with an every-second cron schedule, for the multi-process exactly-once tick test.

Workers run it with ``kit worker tests.apps.cron_app:app`` (configured by KIT_* variables). Each tick's
workflow runs a slow plain step (so a SIGKILL lands mid-run) and then a transactional step that writes
one row to ``<schema>.cron_ledger`` in the same transaction as its checkpoint: one row per tick that ran.
"""

from __future__ import annotations

import os
import time
from datetime import datetime

import psycopg
from psycopg import sql

import kit

LEDGER_DDL = """
CREATE TABLE IF NOT EXISTS {schema}.cron_ledger (
    workflow_id text        NOT NULL,
    tick        timestamptz NOT NULL,
    pid         integer     NOT NULL,
    at          timestamptz NOT NULL DEFAULT clock_timestamp()
)
"""

app = kit.Kit()


def ensure_ledger(url: str, schema: str) -> None:
    """Create the schema (if needed) and the ledger table."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        conn.execute(sql.SQL(LEDGER_DDL).format(schema=sql.Identifier(schema)))


@app.step()
def work(tick: str) -> str:
    time.sleep(0.4)  # long enough that a worker killed at a random moment is often mid-step
    return tick


@app.transaction()
def record(conn: psycopg.Connection, workflow_id: str, tick: datetime) -> None:
    conn.execute(sql.SQL("INSERT INTO {}.cron_ledger (workflow_id, tick, pid) VALUES (%s, %s, %s)").format(
        sql.Identifier(app.config.schema)), (workflow_id, tick, os.getpid()))


@app.scheduled("* * * * * *", name="race", catch_up="all", max_catch_up=1000)
def race(tick: datetime) -> str:
    from kit.schedules import tick_workflow_id

    work(tick.isoformat())
    record(tick_workflow_id("race", tick), tick)
    return tick.isoformat()
