"""Conformance: limited queues: definitions, global and per-worker concurrency, rate limits, takeovers.

Claims of a limited queue go through ``queue_claim`` only; several claimers (threads, each with its own
backend instance like separate worker processes) never start more than the limits allow, counted from
the database.
"""

from __future__ import annotations

import threading
import time

from kit.storage import Finish, QueueSpec, Status, WorkflowQuery

from .helpers import claim, create, qclaim, qclaim_now, run_threads, uid, wait_for


def _queue(backend, **limits) -> str:
    name = uid("q")
    backend.queue_define(QueueSpec(name, **limits))
    return name


def _running(backend, queue: str) -> set[str]:
    rows = backend.workflow_list(WorkflowQuery(statuses=[Status.RUNNING], queue=queue, limit=1000))
    return {r.workflow_id for r in rows}


def _finish(backend, claim_) -> None:
    assert backend.workflow_finish(Finish(claim_.workflow_id, claim_.epoch, Status.SUCCESS, output="1")) is True


def test_queue_definitions_are_stored_and_updated(backend_factory):
    backend = backend_factory()
    spec = QueueSpec("conf-limits", concurrency=3, worker_concurrency=2, rate_count=10, rate_period=60.0,
                     priority=True)
    backend.queue_define(spec)
    assert backend.queue_get("conf-limits") == spec
    assert backend_factory().queue_get("conf-limits") == spec, "every instance sees the definition"
    updated = QueueSpec("conf-limits", concurrency=5)
    backend.queue_define(updated)
    backend.queue_define(updated)  # the same again changes nothing
    assert backend.queue_get("conf-limits") == updated
    backend.queue_define(QueueSpec("conf-plain"))
    backend.queue_define(QueueSpec("conf-tenants", partitioned=True, partition_concurrency=1))
    assert backend.queue_get("conf-plain") == QueueSpec("conf-plain")
    assert backend.queue_get("no-such-queue") is None
    assert backend.queue_get("x' OR '1'='1") is None
    assert backend.queue_limited_names() == {"conf-limits", "conf-tenants"}
    listed = {q.queue: q for q in backend.queue_list()}
    assert {"conf-limits", "conf-plain", "conf-tenants"} <= set(listed)
    assert listed["conf-limits"].concurrency_limit == 5 and listed["conf-limits"].depth == 0
    assert listed["conf-tenants"].partitioned and listed["conf-tenants"].partition_concurrency_limit == 1


def test_queue_list_counts_depth_and_in_flight(backend_factory):
    backend = backend_factory()
    q = _queue(backend, concurrency=2, worker_concurrency=1, rate_count=4, rate_period=2.0)
    for _ in range(3):
        create(backend, queue=q)
    qclaim_now(backend, "w1", q)
    stats = {s.queue: s for s in backend.queue_list()}[q]
    assert (stats.depth, stats.in_flight) == (2, 1)
    assert (stats.concurrency_limit, stats.worker_concurrency_limit) == (2, 1)
    assert stats.rate_limit_per_second == 2.0


def test_limited_queues_are_claimed_only_through_queue_claim(backend_factory):
    backend = backend_factory()
    limited = _queue(backend, concurrency=5)
    plain = uid("q")
    backend.queue_define(QueueSpec(plain))  # declared without limits: an ordinary queue
    lim_wf, _ = create(backend, queue=limited)
    plain_wf, _ = create(backend, queue=plain)
    got = claim(backend, "w1", queues=None)
    assert [c.workflow_id for c in got] == [plain_wf], "the general claim leaves limited queues alone"
    assert claim(backend, "w1", queues=[limited]) == []
    got = qclaim_now(backend, "w1", limited)
    assert [(c.workflow_id, c.queue, c.epoch, c.recovery) for c in got] == [(lim_wf, limited, 1, False)]
    assert backend.workflow_get(lim_wf).owner == "w1"
    assert qclaim(backend, "w1", uid("undeclared")) in (None, []), "no definition: nothing to claim"


def test_global_concurrency_holds_across_claimers(backend_factory):
    backends = [backend_factory() for _ in range(3)]
    q = _queue(backends[0], concurrency=3)
    ids = {create(backends[0], queue=q)[0] for _ in range(12)}

    def grab(i: int) -> list:
        backend = backends[i % 3]
        got = []
        for _ in range(5):
            got.extend(qclaim_now(backend, f"w{i}", q, limit=2))
            assert len(_running(backend, q)) <= 3
        return got

    first = [c for r in run_threads(6, grab) for c in r]
    assert len(first) == 3 and len({c.workflow_id for c in first}) == 3, "the limit is 3 at once, over all claimers"
    assert _running(backends[0], q) == {c.workflow_id for c in first}
    # Capacity comes back as runs finish, one slot per finish, never more.
    _finish(backends[0], first[0])
    more = [c for r in run_threads(6, grab) for c in r]
    assert len(more) == 1
    # Drain: claimers finish what they claim; the database never shows more than 3 running.
    lock = threading.Lock()
    done: list[str] = [c.workflow_id for c in first[:1]]

    def drain(i: int) -> None:
        backend = backends[i % 3]
        idle = 0
        while idle < 20:
            got = qclaim_now(backend, f"d{i}", q, limit=2)
            assert len(_running(backend, q)) <= 3
            if not got:
                idle += 1
                time.sleep(0.01)
                continue
            idle = 0
            for c in got:
                _finish(backend, c)
                with lock:
                    done.append(c.workflow_id)

    for c in first[1:] + more:  # the first claimers finish theirs
        _finish(backends[0], c)
        done.append(c.workflow_id)
    run_threads(4, drain)
    assert sorted(done) == sorted(ids), "every workflow ran exactly once"


def test_per_worker_concurrency_holds_for_each_claimer(backend_factory):
    backends = [backend_factory() for _ in range(3)]
    q = _queue(backends[0], worker_concurrency=2)
    for _ in range(10):
        create(backends[0], queue=q)
    owners = ["w0", "w1", "w2"]

    def grab(i: int) -> list:
        backend, owner = backends[i % 3], owners[i % 3]
        got = []
        for _ in range(4):
            got.extend(qclaim_now(backend, owner, q, limit=1))
        return got

    results = run_threads(6, grab)  # two threads per owner
    per_owner = {o: [c for i, r in enumerate(results) if owners[i % 3] == o for c in r] for o in owners}
    assert {o: len(c) for o, c in per_owner.items()} == {"w0": 2, "w1": 2, "w2": 2}
    for owner in owners:
        assert len({c.workflow_id for c in per_owner[owner]}) == 2
        assert {r.owner for r in backends[0].workflow_list(WorkflowQuery(statuses=[Status.RUNNING], queue=q))
                if r.workflow_id in {c.workflow_id for c in per_owner[owner]}} == {owner}
    # A finish gives its worker one slot back; the others stay full.
    _finish(backends[0], per_owner["w0"][0])
    assert qclaim_now(backends[1], "w1", q) == []
    assert len(qclaim_now(backends[0], "w0", q)) == 1
    assert qclaim_now(backends[0], "w0", q) == []
    # A new worker has its own room.
    assert len(qclaim_now(backends[2], "w3", q)) == 2


def test_rate_limit_counts_starts_in_the_window(backend_factory):
    backends = [backend_factory() for _ in range(2)]
    q = _queue(backends[0], rate_count=3, rate_period=3600.0)
    ids = {create(backends[0], queue=q)[0] for _ in range(8)}

    def grab(i: int) -> list:
        backend = backends[i % 2]
        got = []
        for _ in range(4):
            claims = qclaim_now(backend, f"w{i}", q, limit=2)
            for c in claims:
                _finish(backend, c)  # finishing frees no rate: starts are counted
            got.extend(claims)
        return got

    started = [c for r in run_threads(4, grab) for c in r]
    assert len(started) == 3 and len({c.workflow_id for c in started}) == 3
    rest = sorted(ids - {c.workflow_id for c in started})
    assert all(backends[0].workflow_get(w).status == Status.PENDING for w in rest)
    # A shorter window: once it has passed, starts resume (up to the limit again).
    backends[0].queue_define(QueueSpec(q, rate_count=3, rate_period=0.2))
    time.sleep(0.4)
    assert len(qclaim_now(backends[1], "w9", q, limit=10)) == 3


def test_expired_leases_are_taken_over_within_the_limits(backend_factory):
    backend = backend_factory()
    q = _queue(backend, concurrency=2, worker_concurrency=1)
    orphans = {create(backend, queue=q)[0] for _ in range(2)}
    fresh = [create(backend, queue=q)[0] for _ in range(2)]
    # Leases long enough that the second claim never takes over the first one's, short enough to wait for.
    got = qclaim_now(backend, "w-dead-1", q, lease=1.0) + qclaim_now(backend, "w-dead-2", q, lease=1.0)
    assert {c.workflow_id for c in got} == orphans
    taken: list = []
    # Each live worker has room for one run: one takeover each, and no new start (the queue holds 2).
    for owner in ("w1", "w2"):
        taken += wait_for(lambda owner=owner: qclaim_now(backend, owner, q), what="a takeover")  # once expired
    assert {c.workflow_id for c in taken} == orphans
    assert all(c.recovery and c.epoch == 2 for c in taken)
    assert qclaim_now(backend, "w3", q) == [], "two running: the queue is full"
    assert {backend.workflow_get(w).status for w in fresh} == {Status.PENDING}
    rec = backend.workflow_get(taken[0].workflow_id)
    assert rec.recoveries == 1 and rec.owner == "w1"
    # The old owners are fenced off.
    assert backend.workflow_finish(Finish(got[0].workflow_id, 1, Status.SUCCESS, output="1")) is False


def test_a_takeover_ignores_the_rate_limit(backend_factory):
    """Recovering an expired lease is not a new start: it uses no rate and is not held back by it."""
    backend = backend_factory()
    q = _queue(backend, rate_count=1, rate_period=3600.0)
    wid, _ = create(backend, queue=q)
    create(backend, queue=q)
    (first,) = qclaim_now(backend, "w-dead", q, lease=0.2)
    assert first.workflow_id == wid
    time.sleep(0.3)
    got = wait_for(lambda: qclaim_now(backend, "w1", q), what="the takeover")
    assert [(c.workflow_id, c.recovery) for c in got] == [(wid, True)], "the takeover only, no new start"
    assert qclaim_now(backend, "w2", q) == []


def test_queue_claim_respects_names_versions_and_limit(backend_factory):
    backend = backend_factory()
    q = _queue(backend, concurrency=10)
    other, _ = create(backend, queue=q, name="conf.other")
    v2, _ = create(backend, queue=q, app_version="v2")
    plain = [create(backend, queue=q)[0] for _ in range(3)]
    assert qclaim_now(backend, "w1", q, names=["conf.none"]) == []
    got = qclaim_now(backend, "w1", q, versions=["v1"], limit=2)
    assert {c.workflow_id for c in got} == set(plain[:2]), "oldest first, unversioned work for any version"
    got = qclaim_now(backend, "w1", q, versions=["v2"], limit=10)
    assert {c.workflow_id for c in got} == {v2, plain[2]}
    assert backend.workflow_get(other).status == Status.PENDING
    assert qclaim_now(backend, "w1", q, limit=0) == []
