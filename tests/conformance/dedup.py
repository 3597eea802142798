"""Conformance: deduplication: one live (PENDING or RUNNING) workflow per (queue, dedup id)."""

from __future__ import annotations

import pytest

from kit.errors import WorkflowDuplicateError, WorkflowStateError
from kit.storage import Finish, Status, WorkflowQuery

from .helpers import NAME, claim, create, run_threads, uid


def test_a_live_holder_refuses_a_second_workflow_and_is_named(backend_factory):
    backend = backend_factory()
    holder, created = create(backend, queue="mail", dedup_id="order-7")
    assert created.created
    with pytest.raises(WorkflowDuplicateError) as info:
        create(backend, queue="mail", dedup_id="order-7")
    assert info.value.existing_id == holder
    assert holder in str(info.value) and "order-7" in str(info.value)
    # The same id again is not a duplicate: creating is idempotent by workflow id.
    _, again = create(backend, holder, queue="mail", dedup_id="order-7")
    assert again.status == Status.PENDING and again.name == NAME
    # Another queue, the default queue, or another dedup id: independent.
    assert create(backend, queue="sms", dedup_id="order-7")[1].created
    assert create(backend, dedup_id="order-7")[1].created
    assert create(backend, queue="mail", dedup_id="order-8")[1].created
    assert create(backend, queue="mail")[1].created and create(backend, queue="mail")[1].created  # no dedup id
    assert len(backend.workflow_list(WorkflowQuery(queue="mail"))) == 4


def test_a_running_holder_still_holds_and_a_finished_one_frees_the_id(backend_factory):
    backend = backend_factory()
    holder, _ = create(backend, dedup_id="d1")
    (c,) = claim(backend, "w1")
    assert c.workflow_id == holder
    with pytest.raises(WorkflowDuplicateError) as info:
        create(backend, dedup_id="d1")
    assert info.value.existing_id == holder
    assert backend.workflow_finish(Finish(holder, c.epoch, Status.SUCCESS, output="1"))
    second, created = create(backend, dedup_id="d1")
    assert created.created and second != holder
    backend.workflow_cancel(second, '{"message": "stop"}')  # a cancelled holder frees it too
    third, created = create(backend, dedup_id="d1")
    assert created.created
    assert backend.workflow_get(holder).status == Status.SUCCESS


def test_concurrent_creates_with_one_dedup_id_leave_one_live_workflow(backend_factory):
    a, b = backend_factory(), backend_factory()

    def attempt(i: int) -> str:
        try:
            create((a, b)[i % 2], f"dup-{i}-{uid()}", queue="q", dedup_id="same")
            return "created"
        except WorkflowDuplicateError as exc:
            return exc.existing_id

    results = run_threads(8, attempt)
    assert results.count("created") == 1
    live = a.workflow_list(WorkflowQuery(queue="q", statuses=[Status.PENDING]))
    assert len(live) == 1
    assert {r for r in results if r != "created"} == {live[0].workflow_id}, "every loser names the winner"


def test_resume_refuses_while_another_workflow_holds_the_dedup_id(backend_factory):
    backend = backend_factory()
    first, _ = create(backend, queue="q", dedup_id="d")
    backend.workflow_cancel(first, "{}")
    second, _ = create(backend, queue="q", dedup_id="d")
    with pytest.raises(WorkflowStateError):
        backend.workflow_resume(first)
    assert backend.workflow_get(first).status == Status.CANCELLED
    assert backend.workflow_get(second).status == Status.PENDING
