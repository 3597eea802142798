"""kit.Client and the SQL enqueue function: submit work without the application's code, also inside the
caller's own transaction, and from plain SQL."""

from __future__ import annotations

import shutil
import subprocess
import uuid

import psycopg
import pytest
from test_engine import apps  # noqa: F401 - fixture

import kit
from kit.errors import UnknownQueueError, UsageError, WorkflowDuplicateError

pytestmark = pytest.mark.all_backends  # also on the extra targets (Citus): tests/targets.py

FAST = {"lease_seconds": 5.0, "heartbeat_seconds": 0.5, "poll_seconds": 0.1}


def _worker_app(apps):  # noqa: F811 - the fixture object
    """The application (in this process) that declares the queue and runs the workflows."""
    app = apps(**FAST)
    app.queue("orders", concurrency=4)
    app.queue("tenants", partitioned=True)

    @app.workflow(name="client.total")
    def total(items, *, tax=0):
        return sum(items) + tax

    @app.workflow(name="client.chat")
    def chat():
        app.set_event("ready", True)
        return app.recv("q", timeout=30)

    app.launch()
    return app


def _client(apps) -> kit.Client:  # noqa: F811
    client = kit.Client(apps.url, schema=apps.schema)
    apps.apps.append(client)  # closed with the others
    return client


def test_client_enqueues_by_name_and_reads_results_events_and_sends(apps):  # noqa: F811
    _worker_app(apps)
    client = _client(apps)
    h = client.enqueue("client.total", [1, 2, 3], queue="orders", tax=4)
    assert h.result(timeout=30) == 10
    chat = client.enqueue("client.chat", workflow_id=f"chat-{uuid.uuid4().hex[:6]}")
    assert client.get_event(chat.workflow_id, "ready", timeout=30) is True
    client.send(chat.workflow_id, {"hello": "world"}, topic="q")
    assert client.retrieve(chat.workflow_id).result(timeout=30) == {"hello": "world"}


def test_enqueue_joins_the_callers_transaction(apps):  # noqa: F811
    _worker_app(apps)
    client = _client(apps)
    kept, dropped = f"tx-kept-{uuid.uuid4().hex[:6]}", f"tx-dropped-{uuid.uuid4().hex[:6]}"
    with psycopg.connect(apps.url) as conn:  # not autocommit: an open transaction
        conn.execute(f'CREATE TABLE "{apps.schema}".orders (id text primary key)')
        conn.commit()
        conn.execute(f'INSERT INTO "{apps.schema}".orders VALUES (%s)', (dropped,))
        client.enqueue("client.total", [1], workflow_id=dropped, connection=conn)
        conn.rollback()  # the caller's transaction fails: no order, and no workflow
        conn.execute(f'INSERT INTO "{apps.schema}".orders VALUES (%s)', (kept,))
        client.enqueue("client.total", [2], workflow_id=kept, connection=conn)
        first = client.enqueue("client.total", [3], queue="orders", dedup_id="d", connection=conn)
        with pytest.raises(WorkflowDuplicateError):
            client.enqueue("client.total", [4], queue="orders", dedup_id="d", connection=conn)
        # The duplicate was rolled back to a savepoint: the caller's transaction is still usable.
        conn.execute("SELECT 1")
        conn.commit()
    assert client.retrieve(kept).result(timeout=30) == 2
    assert first.result(timeout=30) == 3
    with pytest.raises(kit.WorkflowNotFoundError):
        client.retrieve(dropped)


def test_client_input_errors(apps):  # noqa: F811
    _worker_app(apps)
    client = _client(apps)
    with pytest.raises(UnknownQueueError):
        client.enqueue("client.total", [1], queue="nope")
    with pytest.raises(UsageError):
        client.enqueue("client.total", [1], queue="orders", priority=1)  # not a priority queue
    with pytest.raises(UsageError):
        client.enqueue("client.total", [1], queue="tenants")  # partitioned: needs a key
    with pytest.raises(UsageError):
        client.start("client.total", [1])
    with pytest.raises(UsageError):
        client.enqueue(print)  # by name only
    with pytest.raises(UsageError):
        client.enqueue("client.total", [1], connection="not a connection")
    with pytest.raises(kit.SerializationError):
        client.enqueue("client.total", object())


def test_sql_function_enqueues_in_one_statement(apps):  # noqa: F811
    _worker_app(apps)
    client = _client(apps)
    with psycopg.connect(apps.url, autocommit=True) as conn:
        wid = conn.execute(f'SELECT "{apps.schema}".enqueue(%s, args => %s, kwargs => %s, queue => %s)',
                           ("client.total", "[[5, 6]]", '{"tax": 1}', "orders")).fetchone()[0]
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="unknown queue"):
            conn.execute(f'SELECT "{apps.schema}".enqueue(%s, queue => %s)', ("client.total", "nope"))
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="partition_key"):
            conn.execute(f'SELECT "{apps.schema}".enqueue(%s, queue => %s)', ("client.total", "tenants"))
    assert client.retrieve(wid).result(timeout=30) == 12
    with psycopg.connect(apps.url) as conn:  # inside a transaction that rolls back: nothing
        rolled = conn.execute(f'SELECT "{apps.schema}".enqueue(%s, args => %s)', ("client.total", "[[1]]")).fetchone()[0]
        conn.rollback()
    with pytest.raises(kit.WorkflowNotFoundError):
        client.retrieve(rolled)


@pytest.mark.skipif(shutil.which("psql") is None, reason="the psql client is not installed")
def test_documented_psql_example_works(apps):  # noqa: F811
    _worker_app(apps)
    client = _client(apps)
    wid = f"psql-{uuid.uuid4().hex[:6]}"
    sql = (f"SELECT \"{apps.schema}\".enqueue('client.total', args => '[[7, 8]]', queue => 'orders', "
           f"workflow_id => '{wid}');")
    res = subprocess.run(["psql", apps.url, "-X", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == wid
    assert client.retrieve(wid).result(timeout=30) == 15


def test_connection_without_an_open_transaction_still_joins_it(apps):  # noqa: F811
    _worker_app(apps)
    client = _client(apps)
    wid = f"idle-{uuid.uuid4().hex[:6]}"
    with psycopg.connect(apps.url) as conn:  # nothing executed yet: no transaction open
        client.enqueue("client.total", [1], workflow_id=wid, connection=conn)
        conn.rollback()
    with pytest.raises(kit.WorkflowNotFoundError):
        client.retrieve(wid)
