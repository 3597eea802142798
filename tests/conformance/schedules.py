"""Conformance: cron schedules: stored definitions, the cursor's compare-and-set, and each tick's
workflow enqueued exactly once, in the transaction that moves the cursor, however many schedulers race."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

from kit.storage import NewWorkflow, ScheduleSpec, Status, WorkflowQuery

from .helpers import args_text, claim, run_threads, uid

T0 = datetime(2030, 1, 1, tzinfo=timezone.utc)
MINUTE = timedelta(minutes=1)


def _spec(name: str | None = None, **kw) -> ScheduleSpec:
    name = name or uid("sched")
    return ScheduleSpec(**{"name": name, "workflow_name": name, "cron": "* * * * *", "timezone": "UTC", **kw})


def _tick(spec: ScheduleSpec, tick: datetime, who: str = "") -> NewWorkflow:
    return NewWorkflow(workflow_id=f"sched:{spec.name}:{tick.isoformat()}{who}", name=spec.workflow_name,
                       inputs=args_text(tick.isoformat()), queue=spec.queue)


def test_define_stores_the_definition_and_starts_the_cursor_at_now(backend_factory):
    backend = backend_factory()
    spec = _spec("conf-b", queue="q1", catch_up="all", max_catch_up=7)
    assert backend.schedule_define(spec, T0) is None, "a new schedule has no previous definition"
    state = backend.schedule_get("conf-b")
    assert state.spec == spec and state.cursor_at == T0
    assert state.last_tick is None and state.last_workflow_id is None
    assert backend_factory().schedule_get("conf-b").spec == spec, "every instance sees it"
    # Declared again (another worker starting later): the cursor stays where it was.
    assert backend.schedule_define(spec, T0 + 5 * MINUTE) == spec
    assert backend.schedule_get("conf-b").cursor_at == T0
    backend.schedule_define(_spec("conf-a"), T0)
    assert [s.spec.name for s in backend.schedule_list()] == ["conf-a", "conf-b"]
    assert backend.schedule_get("no-such-schedule") is None
    assert backend.schedule_get("x' OR '1'='1") is None


def test_changing_the_cron_restarts_the_cursor_but_other_changes_keep_it(backend_factory):
    backend = backend_factory()
    spec = _spec()
    backend.schedule_define(spec, T0)
    moved = replace(spec, queue="other", catch_up="none")
    assert backend.schedule_define(moved, T0 + MINUTE) == spec  # returns what was stored before
    assert backend.schedule_get(spec.name).cursor_at == T0, "no new ticks: the cursor stays"
    recron = replace(moved, cron="*/5 * * * *")
    assert backend.schedule_define(recron, T0 + 2 * MINUTE) == moved
    state = backend.schedule_get(spec.name)
    assert state.spec == recron and state.cursor_at == T0 + 2 * MINUTE, "ticks of the new cron start now"
    # A restart behind the cursor never moves it back.
    backend.schedule_define(replace(recron, timezone="Europe/Paris"), T0)
    assert backend.schedule_get(spec.name).cursor_at == T0 + 2 * MINUTE


def test_advance_is_a_compare_and_set_that_enqueues_its_ticks(backend_factory):
    backend = backend_factory()
    spec = _spec(queue="q1")
    backend.schedule_define(spec, T0)
    ticks = [T0 + MINUTE, T0 + 2 * MINUTE]
    wfs = [_tick(spec, t) for t in ticks]
    assert backend.schedule_advance(spec.name, T0, ticks[-1], wfs) is True
    state = backend.schedule_get(spec.name)
    assert (state.cursor_at, state.last_tick, state.last_workflow_id) == (ticks[-1], ticks[-1], wfs[-1].workflow_id)
    for wf in wfs:
        rec = backend.workflow_get(wf.workflow_id)
        assert (rec.status, rec.name, rec.queue, rec.inputs) == (Status.PENDING, spec.workflow_name, "q1", wf.inputs)
    # A stale cursor (another scheduler advanced first): False, and nothing written.
    late = _tick(spec, ticks[-1], "-late")
    assert backend.schedule_advance(spec.name, T0, T0 + 3 * MINUTE, [late]) is False
    assert backend.workflow_get(late.workflow_id) is None
    assert backend.schedule_get(spec.name).cursor_at == ticks[-1]
    # Never backwards, nor to where it is.
    assert backend.schedule_advance(spec.name, ticks[-1], ticks[-1], []) is False
    assert backend.schedule_advance(spec.name, ticks[-1], T0, []) is False
    # Skipping ticks by policy: the cursor moves, nothing is enqueued, the last tick stays.
    assert backend.schedule_advance(spec.name, ticks[-1], T0 + 10 * MINUTE, []) is True
    state = backend.schedule_get(spec.name)
    assert (state.cursor_at, state.last_tick) == (T0 + 10 * MINUTE, ticks[-1])
    assert backend.schedule_advance("no-such-schedule", T0, T0 + MINUTE, [_tick(spec, T0, "-x")]) is False
    assert len(backend.workflow_list(WorkflowQuery(name=spec.workflow_name))) == 2
    assert {c.workflow_id for c in claim(backend, "w1", names=[spec.workflow_name])} == {
        w.workflow_id for w in wfs}


def test_advance_enqueues_idempotently_by_workflow_id(backend_factory):
    backend = backend_factory()
    spec = _spec()
    backend.schedule_define(spec, T0)
    wf = _tick(spec, T0 + MINUTE)
    backend.workflow_create(wf)  # already there (e.g. enqueued by hand)
    assert backend.schedule_advance(spec.name, T0, T0 + MINUTE, [wf]) is True
    assert len(backend.workflow_list(WorkflowQuery(name=spec.workflow_name))) == 1


def test_racing_advancers_enqueue_each_tick_once(backend_factory):
    """Schedulers in several processes wake for the same ticks; each tick is enqueued by exactly one of
    them. Every racer names its workflows differently, so a tick enqueued twice would show."""
    backends = [backend_factory() for _ in range(3)]
    spec = _spec()
    backends[0].schedule_define(spec, T0)
    ticks = [T0 + (i + 1) * MINUTE for i in range(6)]

    def scheduler(i: int) -> list[datetime]:
        backend, won = backends[i % 3], []
        while True:
            cursor = backend.schedule_get(spec.name).cursor_at
            if cursor >= ticks[-1]:
                return won
            tick = cursor + MINUTE
            if backend.schedule_advance(spec.name, cursor, tick, [_tick(spec, tick, f"-by-{i}")]):
                won.append(tick)

    results = run_threads(6, scheduler)
    won = sorted(t for r in results for t in r)
    assert won == ticks, "every tick won by exactly one scheduler"
    enqueued = backends[0].workflow_list(WorkflowQuery(name=spec.workflow_name, limit=100))
    assert len(enqueued) == len(ticks)
    by_tick = {w.workflow_id.rsplit("-by-", 1)[0] for w in enqueued}
    assert by_tick == {_tick(spec, t).workflow_id for t in ticks}
    for i, r in enumerate(results):  # each winner's own workflow is the one enqueued
        for t in r:
            assert backends[0].workflow_get(_tick(spec, t, f"-by-{i}").workflow_id) is not None
    state = backends[0].schedule_get(spec.name)
    assert state.cursor_at == ticks[-1] and state.last_tick == ticks[-1]
