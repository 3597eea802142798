"""Conformance: observability operations (children, monitor readings, listing order).

Imported by each backend's adapter module next to the main suite (``from conformance.observability
import *``).
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

from kit.storage import Finish, MonitorQuery, Status, StepResult, WorkerInfo, WorkflowQuery

from .helpers import NAME, create, uid

__all__ = ["test_workflow_children_lists_children_oldest_first", "test_workflow_list_sorts_by_finish_and_duration",
           "test_monitor_stats_reports_queues_workers_and_outcomes", "test_monitor_stats_on_an_empty_store"]


def _finish(backend, wid: str, epoch: int, status: Status = Status.SUCCESS, message: str = "boom") -> None:
    error = f'{{"type": "ValueError", "message": "{message}"}}' if status == Status.ERROR else None
    output = "1" if status == Status.SUCCESS else None
    assert backend.workflow_finish(Finish(wid, epoch, status, output=output, error=error)) is True


def test_workflow_children_lists_children_oldest_first(backend_factory):
    backend = backend_factory()
    parent, _ = create(backend, owner="worker-a")
    kids = [create(backend, f"{parent}-child-{i}", parent_id=parent)[0] for i in range(3)]
    create(backend)  # unrelated
    got = backend.workflow_children(parent)
    assert [r.workflow_id for r in got] == kids
    assert all(r.parent_id == parent for r in got)
    assert [r.workflow_id for r in backend.workflow_children(parent, limit=2)] == kids[:2]
    assert backend.workflow_children(kids[0]) == []
    assert backend.workflow_children("x'; DROP TABLE workflows; --") == []


def test_workflow_list_sorts_by_finish_and_duration(backend_factory):
    backend = backend_factory()
    quick, c1 = create(backend, owner="worker-a")
    slow, c2 = create(backend, owner="worker-a")
    time.sleep(0.3)  # `slow` runs at least this much longer than `quick`
    _finish(backend, slow, c2.epoch)
    late, c3 = create(backend, owner="worker-a")
    _finish(backend, late, c3.epoch)
    _finish(backend, quick, c1.epoch)  # finished last, but started with `slow`
    pending, _ = create(backend)
    by_finish = [r.workflow_id for r in backend.workflow_list(WorkflowQuery(order="finished_desc"))]
    assert by_finish == [quick, late, slow, pending]
    by_duration = [r.workflow_id for r in backend.workflow_list(WorkflowQuery(order="duration_desc"))]
    assert by_duration[0] in (slow, quick) and by_duration[-1] == pending
    assert by_duration.index(slow) < by_duration.index(late)
    oldest = [r.workflow_id for r in backend.workflow_list(WorkflowQuery(order="created_asc", limit=2))]
    assert oldest == [quick, slow]


def test_monitor_stats_reports_queues_workers_and_outcomes(backend_factory):
    backend = backend_factory()
    backend.lease_renew("worker-mon", 30, WorkerInfo(worker_id="worker-mon", hostname="h1", pid=123))
    # Two pending (one without a queue, one on "mail"), one running under worker-mon.
    p1, _ = create(backend)
    create(backend, queue="mail")
    running, _ = create(backend, owner="worker-mon", queue="mail")
    # Two successes with timed steps, one failure.
    start = datetime.now(timezone.utc) - timedelta(seconds=1)
    ok_ids = []
    for _ in range(2):
        wid, c = create(backend, owner="worker-mon")
        for k in range(2):
            backend.step_record(StepResult(workflow_id=wid, step_id=k, name=f"s{k}", epoch=c.epoch, output="1",
                                           started_at=start))
        _finish(backend, wid, c.epoch)
        ok_ids.append(wid)
    bad, cb = create(backend, name="conf.other", owner="worker-mon")
    _finish(backend, bad, cb.epoch, Status.ERROR, message="card declined")

    stats = backend.monitor_stats(MonitorQuery())
    assert stats.server_time.tzinfo is not None
    assert stats.primary in (True, None)
    queues = {q.queue: (q.depth, q.in_flight) for q in stats.queues}
    assert queues == {"default": (1, 0), "mail": (1, 1)}
    assert all(q.concurrency_limit is None for q in stats.queues)
    (worker,) = [w for w in stats.workers if w.worker_id == "worker-mon"]
    assert worker.alive and worker.claims == 1 and worker.hostname == "h1" and worker.pid == 123
    finished: dict[Status, int] = {}
    for b in stats.finished:
        finished[b.status] = finished.get(b.status, 0) + b.count
    assert finished == {Status.SUCCESS: 2, Status.ERROR: 1}
    assert stats.workflow_latency.count == 3
    assert stats.step_latency.count == 4
    assert stats.step_latency.p50 is not None and stats.step_latency.p50 > 0
    assert [r.workflow_id for r in stats.recent_failures] == [bad]
    assert "card declined" in (stats.recent_failures[0].error or "")
    assert stats.oldest_pending is not None and stats.oldest_pending.workflow_id == p1

    # Filters: by name, and by queue ("default" = no queue).
    named = backend.monitor_stats(MonitorQuery(name="conf.other"))
    assert named.recent_failures and named.queues == ()
    assert sum(b.count for b in named.finished) == 1
    assert named.oldest_pending is None
    mail = backend.monitor_stats(MonitorQuery(queue="mail"))
    assert {q.queue for q in mail.queues} == {"mail"} and mail.recent_failures == ()
    default = backend.monitor_stats(MonitorQuery(queue="default"))
    assert [(q.queue, q.depth) for q in default.queues] == [("default", 1)]
    assert default.oldest_pending is not None and default.oldest_pending.workflow_id == p1
    assert backend.monitor_stats(MonitorQuery(name="x' OR '1'='1")).queues == ()


def test_monitor_stats_on_an_empty_store(backend_factory):
    backend = backend_factory()
    stats = backend.monitor_stats(MonitorQuery(name=NAME, queue=uid("q")))
    assert stats.workers == () and stats.queues == () and stats.finished == ()
    assert stats.workflow_latency.count == 0 and stats.workflow_latency.p50 is None
    assert stats.step_latency.count == 0
    assert stats.recent_failures == () and stats.oldest_pending is None
