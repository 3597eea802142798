"""Conformance: ``workflow_enqueue_in``: enqueue through the caller's own connection, inside the caller's
transaction. The workflow exists if and only if that transaction commits; a duplicate does not abort it."""

from __future__ import annotations

import pytest

from kit.errors import WorkflowDuplicateError
from kit.storage import NewWorkflow, QueueSpec, Status

from .helpers import NAME, args_text, caller_transaction, claim, create, qclaim_now, uid, wait_for


def _wf(wid: str | None = None, **kw) -> NewWorkflow:
    wid = wid or uid()
    return NewWorkflow(workflow_id=wid, name=kw.pop("name", NAME), inputs=args_text(wid), **kw)


def _orders(backend_factory) -> str:
    table = backend_factory.qualify("orders")
    backend_factory.sql(f"CREATE TABLE IF NOT EXISTS {table} (k text PRIMARY KEY)")
    return table


def _insert(conn, table: str, key: str) -> None:
    conn.cursor().execute(f"INSERT INTO {table} (k) VALUES ('{key}')")  # key: test constants only


def _keys(backend_factory, table: str) -> list[str]:
    return [r[0] for r in backend_factory.sql(f"SELECT k FROM {table} ORDER BY k")]


def test_enqueued_workflow_exists_once_the_caller_commits(backend_factory):
    backend, observer = backend_factory(), backend_factory()
    table = _orders(backend_factory)
    wf = _wf(queue="mail", priority=0)
    seen_before_commit: list = []

    def body(conn):
        _insert(conn, table, "order-1")
        created = backend.workflow_enqueue_in(conn, wf)
        seen_before_commit.append(observer.workflow_get(wf.workflow_id))
        return created

    created = caller_transaction(backend_factory, body)
    assert created.created and created.status == Status.PENDING and created.name == NAME
    assert seen_before_commit[-1] is None, "invisible to others until the caller commits"
    rec = observer.workflow_get(wf.workflow_id)
    assert (rec.status, rec.queue, rec.inputs) == (Status.PENDING, "mail", wf.inputs)
    assert _keys(backend_factory, table) == ["order-1"], "committed together with the caller's own write"
    assert [c.workflow_id for c in claim(observer, "w1")] == [wf.workflow_id]


def test_a_rolled_back_caller_leaves_nothing(backend_factory):
    backend = backend_factory()
    table = _orders(backend_factory)
    wf = _wf()

    def body(conn):
        backend.workflow_enqueue_in(conn, wf)  # first thing in the transaction: it opens the caller's
        _insert(conn, table, "order-2")

    caller_transaction(backend_factory, body, commit=False)
    assert backend.workflow_get(wf.workflow_id) is None
    assert _keys(backend_factory, table) == []
    assert claim(backend, "w1") == []


def test_a_duplicate_does_not_abort_the_callers_transaction(backend_factory):
    backend = backend_factory()
    table = _orders(backend_factory)
    holder, _ = create(backend, queue="q", dedup_id="order-3")
    existing, _ = create(backend)
    fresh = _wf()
    outcome: dict = {}

    def body(conn):
        outcome.clear()
        _insert(conn, table, "before")
        with pytest.raises(WorkflowDuplicateError) as info:
            backend.workflow_enqueue_in(conn, _wf(queue="q", dedup_id="order-3"))
        outcome["holder"] = info.value.existing_id
        outcome["same_id"] = backend.workflow_enqueue_in(conn, _wf(existing))  # the id exists: no error
        outcome["fresh"] = backend.workflow_enqueue_in(conn, fresh)
        _insert(conn, table, "after")

    caller_transaction(backend_factory, body)
    assert outcome["holder"] == holder
    assert outcome["same_id"].created is False and outcome["same_id"].status == Status.PENDING
    assert outcome["fresh"].created
    assert _keys(backend_factory, table) == ["after", "before"], "the caller's transaction went on and committed"
    assert backend.workflow_get(fresh.workflow_id).status == Status.PENDING
    assert backend.workflow_get(holder).status == Status.PENDING


def test_enqueue_in_honours_queue_options(backend_factory):
    backend = backend_factory()
    q = uid("q")
    backend.queue_define(QueueSpec(q, partitioned=True, priority=True))
    later = _wf(queue=q, partition_key="t1", delay_seconds=3600.0)
    now = _wf(queue=q, partition_key="t1", priority=3)
    caller_transaction(backend_factory, lambda conn: [backend.workflow_enqueue_in(conn, w) for w in (later, now)])
    got = qclaim_now(backend, "w1", q)
    assert [c.workflow_id for c in got] == [now.workflow_id]
    assert backend.workflow_get(later.workflow_id).status == Status.PENDING


def test_a_commit_wakes_idle_workers(backend_factory):
    backend, waiter = backend_factory(), backend_factory()
    if not waiter.capabilities.listen_notify:
        pytest.skip("backend has no notifications")
    channel = waiter.wake_channel
    assert waiter.notify_wait([channel], 0.01) == ["*"]
    caller_transaction(backend_factory, lambda conn: backend.workflow_enqueue_in(conn, _wf(queue="wake")))
    payloads: list[str] = []
    wait_for(lambda: payloads.extend(waiter.notify_wait([channel], 0.5)) or "q:wake" in payloads,
             what="the wake-up of the committed enqueue")
