"""A kit app with flow-controlled queues whose steps log their execution intervals, for limit tests.

Each run of ``timed`` inserts a row with the database clock at its start and its end (its own
autocommit connection), so a test can compute, from the database alone, the maximum number of
executions that overlapped, per queue and per worker process. Run with
``kit worker tests.apps.queue_app:app`` (configured by KIT_* variables).
"""

from __future__ import annotations

import os
import threading
import time

import psycopg
from psycopg import sql

import kit

app = kit.Kit()
limited = app.queue("limited", concurrency=3)
per_worker = app.queue("per_worker", worker_concurrency=1)
rated = app.queue("rated", rate_limit=(4, 1.0))

_local = threading.local()

DDL = """CREATE TABLE IF NOT EXISTS {schema}.intervals (
    workflow_id text NOT NULL, pid integer NOT NULL,
    started timestamptz NOT NULL, ended timestamptz)"""


def ensure_table(url: str, schema: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        conn.execute(sql.SQL(DDL).format(schema=sql.Identifier(schema)))


def _conn() -> psycopg.Connection:
    conn = getattr(_local, "conn", None)
    if conn is None or conn.closed:
        conn = psycopg.connect(os.environ["KIT_DATABASE_URL"], autocommit=True)
        _local.conn = conn
    return conn


@app.step(name="queue_app.timed")
def timed(seconds: float) -> int:
    schema = sql.Identifier(os.environ.get("KIT_SCHEMA", "kit"))
    wid = kit.step_info().workflow_id
    conn = _conn()
    conn.execute(sql.SQL("INSERT INTO {}.intervals (workflow_id, pid, started) VALUES (%s, %s, clock_timestamp())")
                 .format(schema), (wid, os.getpid()))
    time.sleep(seconds)
    conn.execute(sql.SQL("UPDATE {}.intervals SET ended = clock_timestamp() WHERE workflow_id = %s AND pid = %s "
                         "AND ended IS NULL").format(schema), (wid, os.getpid()))
    return os.getpid()


@app.workflow(name="queue_app.job")
def job(seconds: float) -> int:
    return timed(seconds)
