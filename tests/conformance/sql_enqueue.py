"""Conformance: the SQL ``enqueue()`` function (any language, any client enqueues with one statement).

Gated by the capability ``sql_enqueue_function`` (backends without the function skip this area). Calls go
through the factory's ``sql()`` helper, as a client would send them.
"""

from __future__ import annotations

import json

import pytest

from kit import serialization as ser
from kit.storage import Finish, QueueSpec, Status, WorkflowQuery

from .helpers import NAME, claim, qclaim_now, uid


def _gate(backend) -> None:
    if not getattr(backend.capabilities, "sql_enqueue_function", True):
        pytest.skip("backend has no SQL enqueue function (capability sql_enqueue_function)")


def _enqueue(backend_factory, name: str = NAME, **kw) -> str:
    """``SELECT <schema>.enqueue(name, arg => value, ...)``; jsonb for args and kwargs."""
    parts, params = ["%s"], [name]
    for key, value in kw.items():
        cast = "::jsonb" if key in ("args", "kwargs") else ""
        parts.append(f"{key} => %s{cast}")
        params.append(json.dumps(value) if key in ("args", "kwargs") else value)
    rows = backend_factory.sql(f"SELECT {backend_factory.qualify('enqueue')}({', '.join(parts)})", tuple(params))
    return rows[0][0]


def _sqlstate(exc: BaseException) -> str | None:
    return getattr(exc, "sqlstate", None)


def test_sql_enqueue_creates_a_claimable_workflow(backend_factory):
    backend = backend_factory()
    _gate(backend)
    wid = _enqueue(backend_factory, args=["order-42", 1999], kwargs={"express": True})
    rec = backend.workflow_get(wid)
    assert rec is not None and (rec.name, rec.status, rec.queue) == (NAME, Status.PENDING, None)
    assert ser.decode_args(rec.inputs) == (("order-42", 1999), {"express": True})
    named = _enqueue(backend_factory, workflow_id="from-sql-1")
    assert named == "from-sql-1" and ser.decode_args(backend.workflow_get(named).inputs) == ((), {})
    assert {c.workflow_id for c in claim(backend, "w1")} == {wid, named}


def test_sql_enqueue_is_idempotent_by_id(backend_factory):
    backend = backend_factory()
    _gate(backend)
    assert _enqueue(backend_factory, workflow_id="same", args=[1]) == "same"
    assert _enqueue(backend_factory, workflow_id="same", args=[2]) == "same"
    assert ser.decode_args(backend.workflow_get("same").inputs) == ((1,), {}), "the first one stays"
    with pytest.raises(Exception, match="already belongs") as info:
        _enqueue(backend_factory, name="conf.other", workflow_id="same")
    assert _sqlstate(info.value) == "22023"
    assert len(backend.workflow_list(WorkflowQuery())) == 1


def test_sql_enqueue_deduplicates_and_names_the_holder(backend_factory):
    backend = backend_factory()
    _gate(backend)
    backend.queue_define(QueueSpec("mail"))
    holder = _enqueue(backend_factory, queue="mail", dedup_id="order-9")
    with pytest.raises(Exception, match=holder) as info:
        _enqueue(backend_factory, queue="mail", dedup_id="order-9")
    assert _sqlstate(info.value) == "23505"
    assert _enqueue(backend_factory, dedup_id="order-9"), "the default queue is another queue"
    (c,) = claim(backend, "w1", queues=["mail"])
    assert backend.workflow_finish(Finish(holder, c.epoch, Status.SUCCESS, output="1"))
    assert _enqueue(backend_factory, queue="mail", dedup_id="order-9") != holder, "a finished holder frees it"


@pytest.mark.parametrize("kwargs, message", [
    ({"queue": "undeclared"}, "unknown queue"),
    ({"queue": "tenants"}, "partition_key"),
    ({"queue": "plain", "partition_key": "t1"}, "not partitioned"),
    ({"partition_key": "t1"}, "not partitioned"),
    ({"queue": "plain", "priority": 2}, "without priority"),
    ({"args": {"not": "a list"}}, "JSON array"),
    ({"kwargs": [1]}, "JSON object"),
    ({"delay_seconds": -1.0}, "delay_seconds"),
    ({"workflow_id": "has space"}, "workflow_id"),
    ({"args": [{"__kit__": "x"}]}, "reserved"),
    ({"dedup_id": ""}, "dedup_id"),
])
def test_sql_enqueue_refuses_bad_input_and_writes_nothing(backend_factory, kwargs, message):
    backend = backend_factory()
    _gate(backend)
    backend.queue_define(QueueSpec("tenants", partitioned=True))
    backend.queue_define(QueueSpec("plain"))
    with pytest.raises(Exception, match=message) as info:
        _enqueue(backend_factory, **kwargs)
    assert _sqlstate(info.value) == "22023"
    assert backend.workflow_list(WorkflowQuery()) == []
    with pytest.raises(Exception, match="workflow_name"):
        _enqueue(backend_factory, name="")


def test_sql_enqueue_honours_delay_and_partitions(backend_factory):
    backend = backend_factory()
    _gate(backend)
    q = uid("q")
    backend.queue_define(QueueSpec(q, partitioned=True, priority=True))
    later = _enqueue(backend_factory, queue=q, partition_key="t1", delay_seconds=3600.0)
    now = _enqueue(backend_factory, queue=q, partition_key="t2", priority=1)
    assert [c.workflow_id for c in qclaim_now(backend, "w1", q)] == [now]
    assert backend.workflow_get(later).status == Status.PENDING


def test_sql_enqueue_exists_iff_the_calling_transaction_commits(backend_factory):
    backend = backend_factory()
    _gate(backend)
    statement = f"SELECT {backend_factory.qualify('enqueue')}(%s, workflow_id => %s)"
    conn = backend_factory.connect()
    conn.cursor().execute(statement, (NAME, "rolled-back"))
    conn.rollback()
    assert backend.workflow_get("rolled-back") is None
    conn.cursor().execute(statement, (NAME, "committed"))
    assert backend.workflow_get("committed") is None, "invisible before the commit"
    conn.commit()
    assert backend.workflow_get("committed").status == Status.PENDING
