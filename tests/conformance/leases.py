"""Conformance: claiming ready and orphaned workflows, renewing leases, worker heartbeats."""

from __future__ import annotations

from kit.storage import Finish, Status, WorkerInfo

from .helpers import NAME, args_text, claim, claim_when_expired, create, run_threads, take_over


def test_claim_pending_sets_owner_epoch_and_lease(backend_factory):
    backend = backend_factory()
    inputs = args_text("payload", n=1)
    wid, _ = create(backend, inputs=inputs)
    claims = claim(backend, "worker-a", lease=30)
    assert len(claims) == 1
    c = claims[0]
    assert (c.workflow_id, c.name, c.inputs, c.epoch, c.recovery) == (wid, NAME, inputs, 1, False)
    rec = backend.workflow_get(wid)
    assert rec.status == Status.RUNNING and rec.owner == "worker-a" and rec.epoch == 1
    assert rec.lease_expires_at is not None and rec.started_at is not None
    assert rec.recoveries == 0
    assert claim(backend, "worker-b") == [], "a leased workflow is not claimable"
    assert claim(backend, "worker-a") == [], "not even by its owner"


def test_each_pending_workflow_is_claimed_once_across_owners(backend_factory):
    a, b = backend_factory(), backend_factory()
    ids = {create(a)[0] for _ in range(30)}

    def drain(i: int) -> list[str]:
        backend, owner = ((a, "worker-a"), (b, "worker-b"))[i % 2]
        got: list[str] = []
        while True:
            claims = claim(backend, owner, limit=3)
            if not claims:
                return got
            got.extend(c.workflow_id for c in claims)

    results = run_threads(4, drain)
    everything = [w for r in results for w in r]
    assert len(everything) == len(set(everything)), "a workflow was claimed twice"
    assert set(everything) == ids
    owners = {w: ("worker-a", "worker-b")[i % 2] for i, r in enumerate(results) for w in r}
    for wid in ids:
        rec = a.workflow_get(wid)
        assert rec.epoch == 1 and rec.owner == owners[wid] and rec.status == Status.RUNNING


def test_claim_respects_limit_and_fifo(backend_factory):
    backend = backend_factory()
    ids = [create(backend)[0] for _ in range(5)]
    first = claim(backend, "worker-a", limit=2)
    assert {c.workflow_id for c in first} == set(ids[:2]), "oldest ready workflows first"
    assert len(claim(backend, "worker-a", limit=1)) == 1
    assert claim(backend, "worker-a", limit=0) == []
    assert len(claim(backend, "worker-a", limit=100)) == 2
    assert claim(backend, "worker-a", limit=100) == []


def test_claim_filters_by_name(backend_factory):
    backend = backend_factory()
    alpha, _ = create(backend, name="conf.alpha")
    beta, _ = create(backend, name="conf.beta")
    assert claim(backend, "worker-a", names=["conf.gamma"]) == []
    assert claim(backend, "worker-a", names=[]) == []
    assert claim(backend, "worker-a", names=["conf.alpha' OR '1'='1"]) == []
    got = claim(backend, "worker-a", names=["conf.beta", "conf.gamma"])
    assert [(c.workflow_id, c.name) for c in got] == [(beta, "conf.beta")]
    assert backend.workflow_get(alpha).status == Status.PENDING


def test_claim_filters_by_queue(backend_factory):
    backend = backend_factory()
    q1, _ = create(backend, queue="q1")
    q2, _ = create(backend, queue="q2")
    none, _ = create(backend)
    assert [c.workflow_id for c in claim(backend, "w", queues=["q2"])] == [q2]
    assert claim(backend, "w", queues=["q3"]) == []
    assert {c.workflow_id for c in claim(backend, "w", queues=None)} == {q1, none}


def test_unexpired_lease_is_not_claimed(backend_factory):
    backend = backend_factory()
    wid, _ = create(backend, owner="worker-a", lease=60)
    assert claim(backend, "worker-b") == []
    rec = backend.workflow_get(wid)
    assert rec.owner == "worker-a" and rec.epoch == 1


def test_expired_lease_is_reclaimed_as_recovery(backend_factory):
    a, b = backend_factory(), backend_factory()
    inputs = args_text(7)
    wid, _ = create(a, owner="worker-a", lease=0.3, inputs=inputs)
    c = claim_when_expired(b, wid, "worker-b")
    assert (c.epoch, c.recovery, c.name, c.inputs) == (2, True, NAME, inputs)
    rec = b.workflow_get(wid)
    assert rec.owner == "worker-b" and rec.epoch == 2 and rec.status == Status.RUNNING
    assert rec.recoveries == 1
    assert a.lease_renew("worker-a", 30) == {}, "the dead owner's lease is gone"
    assert claim(a, "worker-c") == [], "reclaimed once, then leased again"


def test_released_workflow_is_claimed_without_recovery_flag(backend_factory):
    backend = backend_factory()
    wid, _ = create(backend, owner="worker-a")
    c = take_over(backend, wid, 1, "worker-b")
    assert c.epoch == 2 and c.recovery is False
    assert backend.workflow_get(wid).recoveries == 0


def test_terminal_workflows_are_never_claimed(backend_factory):
    backend = backend_factory()
    wid, _ = create(backend, owner="worker-a", lease=0.2)
    assert backend.workflow_finish(Finish(wid, 1, Status.SUCCESS, output="1"))
    assert claim(backend, "worker-b") == []
    assert backend.workflow_get(wid).status == Status.SUCCESS


def test_lease_renew_returns_held_leases_and_extends_them(backend_factory):
    backend = backend_factory()
    w1, _ = create(backend, owner="worker-a", lease=5)
    w2, _ = create(backend, owner="worker-a", lease=5)
    other, _ = create(backend, owner="worker-b", lease=5)
    before = backend.workflow_get(w1).lease_expires_at
    assert backend.lease_renew("worker-a", 120) == {w1: 1, w2: 1}
    after = backend.workflow_get(w1).lease_expires_at
    assert after > before
    assert backend.workflow_get(other).lease_expires_at < after, "another owner's lease is untouched"
    assert backend.lease_renew("nobody", 30) == {}


def test_lease_renew_omits_leases_taken_over(backend_factory):
    a, b = backend_factory(), backend_factory()
    kept, _ = create(a, owner="worker-a", lease=60)
    lost, _ = create(a, owner="worker-a", lease=0.3)
    c = claim_when_expired(b, lost, "worker-b")
    assert c.epoch == 2
    assert a.lease_renew("worker-a", 60) == {kept: 1}
    assert b.lease_renew("worker-b", 60) == {lost: 2}
    # A renewal by the old owner must not take the workflow back.
    assert b.workflow_get(lost).owner == "worker-b"


def test_lease_renew_records_worker_heartbeat(backend_factory):
    backend = backend_factory()
    info = WorkerInfo("worker-hb", "host-1", 4242)
    create(backend, owner="worker-hb")
    assert len(backend.lease_renew("worker-hb", 30, info)) == 1
    workers = {w.worker_id: w for w in backend.worker_list()}
    assert "worker-hb" in workers
    w = workers["worker-hb"]
    assert (w.hostname, w.pid) == ("host-1", 4242)
    assert w.heartbeat_at is not None and w.started_at is not None
    first = w.heartbeat_at
    backend.lease_renew("worker-hb", 30, info)
    again = {w.worker_id: w for w in backend.worker_list()}["worker-hb"]
    assert again.heartbeat_at >= first
    assert len([w for w in backend.worker_list() if w.worker_id == "worker-hb"]) == 1
