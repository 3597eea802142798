"""Conformance: delayed starts: a workflow is not claimable before its delay (database clock), and is
claimable after it, by every kind of claim. States are asserted, never timings."""

from __future__ import annotations

from kit.storage import QueueSpec, Status

from .helpers import claim, create, qclaim_now, uid, wait_for

LONG = 3600.0  # never reached during a test
SHORT = 0.2


def test_a_delayed_workflow_waits_for_its_delay(backend_factory):
    backend = backend_factory()
    later, _ = create(backend, delay_seconds=LONG)
    soon, created = create(backend, delay_seconds=SHORT)
    assert created.created and created.status == Status.PENDING
    got = wait_for(lambda: claim(backend, "w1"), what="the short delay to pass")
    assert [c.workflow_id for c in got] == [soon]
    assert claim(backend, "w1") == []
    assert backend.workflow_get(later).status == Status.PENDING


def test_no_delay_is_claimable_at_once(backend_factory):
    backend = backend_factory()
    wid, _ = create(backend, delay_seconds=0.0)
    assert [c.workflow_id for c in claim(backend, "w1")] == [wid]


def test_limited_queues_honour_delays(backend_factory):
    backend = backend_factory()
    q = uid("q")
    backend.queue_define(QueueSpec(q, concurrency=5))
    later, _ = create(backend, queue=q, delay_seconds=LONG)
    soon, _ = create(backend, queue=q, delay_seconds=SHORT)
    got = wait_for(lambda: qclaim_now(backend, "w1", q), what="the short delay to pass")
    assert [c.workflow_id for c in got] == [soon]
    assert qclaim_now(backend, "w1", q) == []
    assert backend.workflow_get(later).status == Status.PENDING


def test_partitioned_queues_honour_delays(backend_factory):
    backend = backend_factory()
    q = uid("q")
    backend.queue_define(QueueSpec(q, partitioned=True))
    later, _ = create(backend, queue=q, partition_key="a", delay_seconds=LONG)
    soon, _ = create(backend, queue=q, partition_key="a", delay_seconds=SHORT)
    other, _ = create(backend, queue=q, partition_key="b", delay_seconds=LONG)
    got = wait_for(lambda: qclaim_now(backend, "w1", q), what="the short delay to pass")
    assert [c.workflow_id for c in got] == [soon], "a tenant's delayed head does not block its ready work"
    assert qclaim_now(backend, "w1", q) == []
    assert {backend.workflow_get(w).status for w in (later, other)} == {Status.PENDING}
