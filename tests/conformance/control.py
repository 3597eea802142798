"""Conformance: lifecycle control: cancel (fencing), resume, fork, retention, version filters, deadlines."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone

import pytest

from kit.errors import (
    LeaseLostError,
    UsageError,
    WorkflowConflictError,
    WorkflowNotFoundError,
    WorkflowStateError,
)
from kit.storage import ClaimRequest, Finish, ForkRequest, QueueSpec, Status, WorkflowQuery

from .helpers import NAME, claim, create, step, uid


def test_cancel_fences_the_owner_and_cascades_to_children(backend_factory):
    backend = backend_factory()
    parent, _ = create(backend, owner="w1")
    child, _ = create(backend, f"{parent}/0", owner="w1", parent_id=parent)
    done_child, _ = create(backend, f"{parent}/1", owner="w1", parent_id=parent)
    assert backend.workflow_finish(Finish(done_child, 1, Status.SUCCESS, output="1"))
    queued, _ = create(backend, f"{parent}/2", parent_id=parent)
    assert sorted(backend.workflow_cancel(parent, '{"message": "stop"}')) == sorted([parent, child, queued])
    for wid in (parent, child, queued):
        rec = backend.workflow_get(wid)
        assert rec.status == Status.CANCELLED and rec.owner is None
        # Descendants remember the cancel that ended them (resume of that workflow resumes them too).
        expected = {"message": "stop"} if wid == parent else {"message": "stop", "cancelled_with": parent}
        assert json.loads(rec.error) == expected
    assert backend.workflow_get(done_child).status == Status.SUCCESS
    with pytest.raises(LeaseLostError):  # the old owner's checkpoint is refused
        backend.step_record(step(child, 0, 1))
    assert backend.workflow_finish(Finish(parent, 1, Status.SUCCESS, output="1")) is False
    assert backend.lease_renew("w1", 30) == {}
    assert claim(backend, "w2") == []  # cancelled work is never claimed
    assert backend.workflow_cancel(parent, "{}") == []
    with pytest.raises(WorkflowNotFoundError):
        backend.workflow_cancel(uid(), "{}")


def test_resume_makes_cancelled_or_failed_work_claimable_again(backend_factory):
    backend = backend_factory()
    wid, _ = create(backend, owner="w1")
    backend.step_record(step(wid, 0, 1, output="1"))
    backend.step_record(step(wid, 1, 1, error='{"type": "ValueError", "message": "boom"}'))
    assert backend.workflow_finish(Finish(wid, 1, Status.ERROR, error='{"type": "ValueError"}'))
    deadline = datetime(2030, 1, 1, tzinfo=timezone.utc)
    assert backend.workflow_resume(wid, deadline) == [wid]
    rec = backend.workflow_get(wid)
    assert rec.status == Status.PENDING and rec.error is None and rec.finished_at is None
    assert [s.step_id for s in backend.step_list(wid)] == [0]  # the final error checkpoint is dropped
    got = claim(backend, "w2")
    assert [c.workflow_id for c in got] == [wid] and got[0].epoch > 1 and got[0].deadline == deadline
    with pytest.raises(WorkflowStateError, match="RUNNING"):
        backend.workflow_resume(wid)
    assert backend.workflow_finish(Finish(wid, got[0].epoch, Status.SUCCESS, output="2"))
    with pytest.raises(WorkflowStateError, match="SUCCESS"):
        backend.workflow_resume(wid)
    with pytest.raises(WorkflowNotFoundError):
        backend.workflow_resume(uid())


def test_resume_of_a_cancelled_parent_resumes_its_cancelled_children(backend_factory):
    backend = backend_factory()
    parent, _ = create(backend, owner="w1")
    child, _ = create(backend, f"{parent}/0", owner="w1", parent_id=parent)
    backend.workflow_cancel(parent, "{}")
    assert sorted(backend.workflow_resume(parent)) == sorted([parent, child])
    assert {backend.workflow_get(w).status for w in (parent, child)} == {Status.PENDING}


def test_fork_copies_checkpoints_before_the_step_in_one_transaction(backend_factory):
    backend = backend_factory()
    src, _ = create(backend, owner="w1", queue="q1")
    for i in range(3):
        backend.step_record(step(src, i, 1, output=str(i)))
    new = uid()
    created = backend.workflow_fork(ForkRequest(src, new, 2, app_version="v9"))
    assert created.created and created.name == NAME
    rec = backend.workflow_get(new)
    assert rec.status == Status.PENDING and rec.queue == "q1" and rec.app_version == "v9"
    assert rec.inputs == backend.workflow_get(src).inputs
    assert [(s.step_id, s.output) for s in backend.step_list(new)] == [(0, "0"), (1, "1")]
    got = backend.workflow_claim(ClaimRequest("w2", [NAME], 10, 30, queues=["q1"]))
    assert [c.workflow_id for c in got] == [new] and got[0].epoch > 1  # > 1: the worker loads checkpoints
    with pytest.raises(UsageError, match="between 0 and 3"):
        backend.workflow_fork(ForkRequest(src, uid(), 4))
    with pytest.raises(WorkflowConflictError):
        backend.workflow_fork(ForkRequest(src, new, 0))
    with pytest.raises(WorkflowNotFoundError):
        backend.workflow_fork(ForkRequest(uid(), uid(), 0))
    assert len(backend.step_list(new)) == 2  # failed forks changed nothing


def test_gc_deletes_only_old_finished_work(backend_factory):
    backend = backend_factory()
    finished = []
    for _ in range(5):
        wid, _ = create(backend, owner="w1")
        backend.step_record(step(wid, 0, 1, output="1"))
        backend.workflow_finish(Finish(wid, 1, Status.SUCCESS, output="1"))
        finished.append(wid)
    running, _ = create(backend, owner="w1")
    pending, _ = create(backend)
    kid, _ = create(backend, f"{running}/0", owner="w1", parent_id=running)
    backend.step_record(step(running, 0, 1, name="start:conf.child", output=json.dumps(kid)))
    backend.workflow_finish(Finish(kid, 1, Status.SUCCESS, output="1"))
    assert backend.workflow_gc(3600, 100) == 0
    assert backend.workflow_gc(0, 100, dry_run=True) == 5
    assert backend.workflow_gc(0, 2) == 2
    assert backend.workflow_gc(0, 100) == 3
    assert all(backend.workflow_get(w) is None and backend.step_list(w) == [] for w in finished)
    assert {backend.workflow_get(w).status for w in (running, pending, kid)} == {
        Status.RUNNING, Status.PENDING, Status.SUCCESS}


def test_claims_honour_accepted_versions(backend_factory):
    backend = backend_factory()
    v1, _ = create(backend, app_version="v1")
    v2, _ = create(backend, app_version="v2")
    plain, _ = create(backend)
    assert backend.workflow_version_counts() == {"v1": 1, "v2": 1, None: 1}
    got = backend.workflow_claim(ClaimRequest("w1", [NAME], 10, 30, versions=["v2"]))
    assert sorted(c.workflow_id for c in got) == sorted([v2, plain])
    got = backend.workflow_claim(ClaimRequest("w2", [NAME], 10, 30, versions=None))
    assert [c.workflow_id for c in got] == [v1]


def test_deadline_is_stored_and_returned_by_claims(backend_factory):
    backend = backend_factory()
    deadline = datetime(2031, 5, 6, 7, 8, 9, tzinfo=timezone.utc)
    wid, _ = create(backend, deadline=deadline)
    got = claim(backend, "w1")
    assert [(c.workflow_id, c.deadline) for c in got] == [(wid, deadline)]


def test_per_worker_limit_counts_takeovers_and_runs_still_going_here(backend_factory):
    backend = backend_factory()
    backend.queue_define(QueueSpec("cq", worker_concurrency=2))
    mine, _ = create(backend, owner="w1", queue="cq")  # w1 already runs one of the queue
    orphan, _ = create(backend, owner="w0", queue="cq", lease=0.05)  # a dead worker's, lease expiring
    fresh = [create(backend, queue="cq")[0] for _ in range(3)]
    time.sleep(0.2)  # let the orphan's lease expire (database clock)
    got = backend.queue_claim(ClaimRequest("w1", [NAME], 10, 30), "cq")
    assert [c.workflow_id for c in got] == [orphan]  # the takeover uses the last slot: no new start
    running = {r.workflow_id for r in backend.workflow_list(WorkflowQuery(statuses=[Status.RUNNING], queue="cq"))}
    assert running == {mine, orphan}
    # Runs still going in this process count like held leases (a run whose lease was taken over keeps
    # executing its step): with two of them, nothing more starts here.
    assert backend.queue_claim(ClaimRequest("w2", [NAME], 10, 30, running_here=2), "cq") == []
    assert [c.workflow_id for c in backend.queue_claim(ClaimRequest("w2", [NAME], 10, 30, running_here=1), "cq")
            ] == [fresh[0]]
    # Nobody takes over its own expired lease (its next heartbeat renews it; a run may still be going).
    late, _ = create(backend, owner="w3", queue="cq", lease=0.05)
    time.sleep(0.2)
    assert late not in [c.workflow_id for c in backend.queue_claim(ClaimRequest("w3", [NAME], 10, 30), "cq")]
    assert late not in [c.workflow_id for c in claim(backend, "w3")]
