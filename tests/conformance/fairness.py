"""Conformance: tenant fairness of partitioned queues, partition concurrency, priority order.

A claim of a partitioned queue takes the head of each tenant's backlog in turn: every tenant's first
ready workflow before anyone's second, so a huge backlog of one tenant never holds another's back.
"""

from __future__ import annotations

from kit.storage import Finish, QueueSpec, Status

from .helpers import create, qclaim_now, run_threads, uid


def _tenants(backend, q: str, counts: dict[str, int]) -> dict[str, list[str]]:
    """Create each tenant's backlog, tenant after tenant (the first tenant's items are the oldest)."""
    return {t: [create(backend, queue=q, partition_key=t)[0] for _ in range(n)] for t, n in counts.items()}


def _ids(claims) -> list[str]:
    return [c.workflow_id for c in claims]


def test_each_tenants_head_is_served_before_anyones_second(backend_factory):
    backend = backend_factory()
    q = uid("q")
    backend.queue_define(QueueSpec(q, partitioned=True))
    ids = _tenants(backend, q, {"a": 5, "b": 2, "c": 2})
    first = qclaim_now(backend, "w1", q, limit=3)
    assert set(_ids(first)) == {ids["a"][0], ids["b"][0], ids["c"][0]}
    assert all(c.queue == q and c.epoch == 1 and not c.recovery for c in first)
    second = qclaim_now(backend, "w1", q, limit=3)
    assert set(_ids(second)) == {ids["a"][1], ids["b"][1], ids["c"][1]}
    rest = [qclaim_now(backend, "w1", q, limit=1)[0].workflow_id for _ in range(3)]
    assert rest == ids["a"][2:], "within a tenant: oldest first"
    assert qclaim_now(backend, "w1", q, limit=10) == []


def test_a_huge_backlog_does_not_hold_back_a_small_tenant(backend_factory):
    backend = backend_factory()
    q = uid("q")
    backend.queue_define(QueueSpec(q, partitioned=True))
    ids = _tenants(backend, q, {"big": 40, "small": 1})
    got = qclaim_now(backend, "w1", q, limit=2)
    assert set(_ids(got)) == {ids["big"][0], ids["small"][0]}


def test_partition_concurrency_holds_per_tenant(backend_factory):
    backends = [backend_factory() for _ in range(2)]
    q = uid("q")
    backends[0].queue_define(QueueSpec(q, partitioned=True, partition_concurrency=1))
    ids = _tenants(backends[0], q, {"a": 3, "b": 3, "c": 1})
    tenant_of = {w: t for t, ws in ids.items() for w in ws}

    def grab(i: int) -> list:
        got = []
        for _ in range(3):
            got.extend(qclaim_now(backends[i % 2], f"w{i}", q, limit=5))
        return got

    claims = [c for r in run_threads(4, grab) for c in r]
    assert sorted(tenant_of[c.workflow_id] for c in claims) == ["a", "b", "c"], "one running per tenant"
    assert set(_ids(claims)) == {ids["a"][0], ids["b"][0], ids["c"][0]}
    # A finish frees its tenant's slot only.
    a_claim = next(c for c in claims if tenant_of[c.workflow_id] == "a")
    assert backends[0].workflow_finish(Finish(a_claim.workflow_id, a_claim.epoch, Status.SUCCESS, output="1"))
    assert _ids(qclaim_now(backends[1], "w9", q, limit=5)) == [ids["a"][1]]
    assert qclaim_now(backends[1], "w9", q, limit=5) == []


def test_partitioned_queue_with_a_global_limit(backend_factory):
    backend = backend_factory()
    q = uid("q")
    backend.queue_define(QueueSpec(q, partitioned=True, concurrency=2))
    ids = _tenants(backend, q, {"a": 2, "b": 2, "c": 2})
    got = qclaim_now(backend, "w1", q, limit=10)
    assert len(got) == 2 and len({c.workflow_id for c in got}) == 2
    assert set(_ids(got)) <= {ids[t][0] for t in ids}, "heads first, two at most"
    assert qclaim_now(backend, "w2", q, limit=10) == []


def test_priority_then_age_orders_a_queue(backend_factory):
    backend = backend_factory()
    q = uid("q")
    backend.queue_define(QueueSpec(q, priority=True, concurrency=10))
    low, _ = create(backend, queue=q, priority=5)
    old, _ = create(backend, queue=q)
    urgent, _ = create(backend, queue=q, priority=-1)
    young, _ = create(backend, queue=q)
    got = [qclaim_now(backend, "w1", q, limit=1)[0].workflow_id for _ in range(4)]
    assert got == [urgent, old, young, low], "lower priority value first, then oldest first"
