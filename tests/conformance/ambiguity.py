"""Conformance: lost acknowledgements and serialization failures, one operation at a time.

Each test performs one write through a backend that injects exactly one fault into it
(:class:`~conformance.faults.OneFault`), mostly an ambiguous commit (the statement or COMMIT reached the
server and committed, then the connection was lost before the reply), and checks that the operation's
answer and the stored state are those of a call without the fault: a backend reads the outcome back
instead of guessing, never repeats a write that is not idempotent, and reports a serialization failure
it does not retry as a TransientStorageError. Needs a factory with ``with_faults`` (psycopg-based).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from kit.errors import TransientStorageError
from kit.storage import (
    Finish,
    ForkRequest,
    NewWorkflow,
    QueueSpec,
    ScheduleSpec,
    Status,
    StepResult,
    WorkflowQuery,
)

from .faults import OneFault
from .helpers import NAME, args_text, claim, create, no_faults, qclaim_now, step, uid, wait_for

OWN = "injects its own single fault (this area is the fault pass, one operation at a time)"
T0 = datetime(2030, 1, 1, tzinfo=timezone.utc)


def _faulty(backend_factory, operation: str, at: str | None = None, kind: str = "ambiguous", migrate: bool = True):
    if not hasattr(backend_factory, "with_faults"):
        pytest.skip("the factory has no with_faults (driver-level fault injection)")
    plan = OneFault(operation, kind, at)
    return backend_factory.with_faults(plan, migrate=migrate), plan


def _injected(plan: OneFault) -> None:
    assert plan.total == 1, f"the fault never reached {plan.target} (at {plan.at!r}): {plan.log}"


@no_faults(OWN)
def test_lost_ack_of_an_enqueue_is_read_back(backend_factory):
    backend = backend_factory()
    faulty, plan = _faulty(backend_factory, "workflow_create")
    wid, created = create(faulty, queue="q", dedup_id="d1")
    _injected(plan)
    assert created.created and created.status == Status.PENDING, "our own insert, not another's"
    assert [r.workflow_id for r in backend.workflow_list(WorkflowQuery())] == [wid]


@no_faults(OWN)
def test_lost_ack_of_an_owned_create_is_read_back(backend_factory):
    backend = backend_factory()
    faulty, plan = _faulty(backend_factory, "workflow_create")
    wid, created = create(faulty, owner="w1")
    _injected(plan)
    assert created.created and created.epoch == 1 and created.status == Status.RUNNING
    assert backend.workflow_get(wid).owner == "w1"


@no_faults(OWN)
def test_lost_ack_of_a_finish_is_read_back(backend_factory):
    backend = backend_factory()
    wid, _ = create(backend, owner="w1")
    faulty, plan = _faulty(backend_factory, "workflow_finish")
    assert faulty.workflow_finish(Finish(wid, 1, Status.SUCCESS, output='"ok"')) is True
    _injected(plan)
    assert backend.workflow_get(wid).output == '"ok"'


@no_faults(OWN)
def test_lost_ack_of_a_release_is_read_back(backend_factory):
    backend = backend_factory()
    wid, _ = create(backend, owner="w1")
    faulty, plan = _faulty(backend_factory, "workflow_release")
    assert faulty.workflow_release(wid, 1) is True
    _injected(plan)
    assert backend.workflow_get(wid).status == Status.PENDING


@no_faults(OWN)
def test_lost_ack_of_a_checkpoint_is_read_back(backend_factory):
    backend = backend_factory()
    wid, _ = create(backend, owner="w1")
    faulty, plan = _faulty(backend_factory, "step_record")
    rec = faulty.step_record(step(wid, 0, 1, output='"x"'))
    _injected(plan)
    assert (rec.epoch, rec.output) == (1, '"x"')
    assert len(backend.step_list(wid)) == 1


@no_faults(OWN)
def test_lost_ack_of_a_transactional_step_is_read_back(backend_factory):
    backend = backend_factory()
    if not backend.capabilities.transactional_steps:
        pytest.skip("backend has no transactional steps")
    table = backend_factory.qualify("user_rows")
    backend_factory.sql(f"CREATE TABLE {table} (k text PRIMARY KEY)")
    wid, _ = create(backend, owner="w1")
    faulty, plan = _faulty(backend_factory, "step_transaction", at="COMMIT")
    with faulty.step_transaction(step(wid, 0, 1, name="tx")) as tx:
        tx.connection.execute(f"INSERT INTO {table} (k) VALUES ('once')")
        tx.checkpoint('"done"')
    _injected(plan)
    assert tx.record is not None and (tx.record.epoch, tx.record.output) == (1, '"done"')
    assert backend_factory.sql(f"SELECT k FROM {table}") == [("once",)]


@no_faults(OWN)
def test_lost_ack_of_a_keyed_send_is_not_sent_twice(backend_factory):
    backend = backend_factory()
    wid, _ = create(backend, owner="w1")
    faulty, plan = _faulty(backend_factory, "message_send")
    assert faulty.message_send(wid, "t", '"m"', sender_key="k1") is True
    _injected(plan)
    assert [m.body for m in backend.message_list(wid)] == ['"m"']


@no_faults(OWN)
def test_lost_ack_of_a_keyless_send_is_not_sent_twice(backend_factory):
    backend = backend_factory()
    wid, _ = create(backend, owner="w1")
    faulty, plan = _faulty(backend_factory, "message_send")
    assert faulty.message_send(wid, "t", '"m"') is True
    _injected(plan)
    assert [m.body for m in backend.message_list(wid)] == ['"m"']


@no_faults(OWN)
def test_lost_ack_of_a_receive_consumes_one_message(backend_factory):
    backend = backend_factory()
    wid, _ = create(backend, owner="w1")
    backend.message_send(wid, "t", '"first"', sender_key="a")
    backend.message_send(wid, "t", '"second"', sender_key="b")
    faulty, plan = _faulty(backend_factory, "message_receive", at="COMMIT")
    rec = faulty.message_receive(StepResult(wid, 0, "recv", 1), "t")
    _injected(plan)
    assert rec is not None and rec.output == '"first"'
    assert [m.consumed_step for m in backend.message_list(wid)] == [0, None]


@no_faults(OWN)
def test_lost_ack_of_an_event_and_stream_writes_are_read_back(backend_factory):
    backend = backend_factory()
    wid, _ = create(backend, owner="w1")
    for operation, call in (
        ("event_set", lambda b: b.event_set(step(wid, 0, 1, name="set_event:k", output='"v"'), "k")),
        ("stream_write", lambda b: b.stream_write(StepResult(wid, 1, "write_stream:s", 1), "s", '"e"')),
        ("stream_close", lambda b: b.stream_close(StepResult(wid, 2, "close_stream:s", 1), "s")),
    ):
        faulty, plan = _faulty(backend_factory, operation, at="COMMIT")
        rec = call(faulty)
        _injected(plan)
        assert rec.epoch == 1, operation
    assert backend.event_get(wid, "k") == '"v"'
    chunk = backend.stream_read(wid, "s", -1, 10)
    assert chunk.elements == ((0, '"e"'),) and chunk.closed
    assert [s.step_id for s in backend.step_list(wid)] == [0, 1, 2]


@no_faults(OWN)
def test_lost_ack_of_a_schedule_advance_is_read_back(backend_factory):
    backend = backend_factory()
    spec = ScheduleSpec(uid("s"), NAME, "* * * * *", "UTC")
    backend.schedule_define(spec, T0)
    tick = T0 + timedelta(minutes=1)
    wf = NewWorkflow(workflow_id=f"sched:{spec.name}:{tick.isoformat()}", name=NAME, inputs=args_text(1))
    faulty, plan = _faulty(backend_factory, "schedule_advance", at="COMMIT")
    assert faulty.schedule_advance(spec.name, T0, tick, [wf]) is True, "our advance, not another worker's"
    _injected(plan)
    assert backend.schedule_get(spec.name).cursor_at == tick
    assert backend.workflow_get(wf.workflow_id) is not None


@no_faults(OWN)
def test_lost_ack_of_a_refused_schedule_advance_stays_refused(backend_factory):
    """The COMMIT of an advance whose compare-and-set failed (it wrote nothing) is lost: still False."""
    backend = backend_factory()
    spec = ScheduleSpec(uid("s"), NAME, "* * * * *", "UTC")
    backend.schedule_define(spec, T0)
    tick = T0 + timedelta(minutes=1)
    assert backend.schedule_advance(spec.name, T0, tick, []) is True
    faulty, plan = _faulty(backend_factory, "schedule_advance", at="COMMIT")
    assert faulty.schedule_advance(spec.name, T0, tick, []) is False, "another worker's advance, not ours"
    _injected(plan)


@no_faults(OWN)
def test_lost_ack_of_a_queue_definition_and_of_drop_schema(backend_factory):
    backend = backend_factory()
    faulty, plan = _faulty(backend_factory, "queue_define")
    faulty.queue_define(QueueSpec("q1", concurrency=3))
    _injected(plan)
    assert backend.queue_get("q1") == QueueSpec("q1", concurrency=3)
    faulty, plan = _faulty(backend_factory, "drop_schema")
    faulty.drop_schema()
    _injected(plan)
    assert backend.schema_version() is None


@no_faults(OWN)
def test_lost_ack_of_a_heartbeat_is_retried_and_answers_right(backend_factory):
    """lease_renew retries within its own budget on a fresh connection (it is idempotent): an ambiguous
    commit costs the beat nothing, and the answer is the leases still held."""
    backend = backend_factory()
    wid, _ = create(backend, owner="w1", lease=30)
    before = backend.workflow_get(wid).lease_expires_at
    faulty, plan = _faulty(backend_factory, "lease_renew")
    assert faulty.lease_renew("w1", 600) == {wid: 1}
    _injected(plan)
    assert backend.workflow_get(wid).lease_expires_at > before, "the renewal committed"


def _claim_write(backend) -> str | None:
    """Where a claim commits its writes: its one statement (the first boundary), or, on a backend that claims
    row by row (no multi-row locking claims), the pipelined compare-and-sets after the unlocked read."""
    caps = backend.capabilities
    return None if caps.skip_locked and caps.multi_row_locking_claims else "pipeline"


def _held(backend, owner: str) -> set[str]:
    return {r.workflow_id for r in backend.workflow_list(WorkflowQuery(statuses=[Status.RUNNING]))
            if r.owner == owner}


@no_faults(OWN)
def test_lost_ack_of_a_claim_returns_the_claimed_workflow(backend_factory):
    backend = backend_factory()
    wid, _ = create(backend)
    faulty, plan = _faulty(backend_factory, "workflow_claim", at=_claim_write(backend))
    got = claim(faulty, "w1")
    _injected(plan)
    assert [c.workflow_id for c in got] == [wid]


@no_faults(OWN)
def test_lost_ack_of_a_claim_returns_exactly_what_it_claimed(backend_factory):
    """The retry returns the lost attempt's claims as that attempt would have (epoch, inputs, deadline,
    recovery) and claims nothing beyond the call's limit."""
    backend = backend_factory()
    deadline = T0 + timedelta(hours=1)
    wids = [create(backend, deadline=deadline)[0] for _ in range(3)]
    faulty, plan = _faulty(backend_factory, "workflow_claim", at=_claim_write(backend))
    got = claim(faulty, "w1", limit=2)
    _injected(plan)
    assert sorted(c.workflow_id for c in got) == sorted(wids[:2]), "the two oldest, once each"
    for c in got:
        assert (c.name, c.inputs, c.epoch, c.recovery, c.deadline) == (NAME, args_text(c.workflow_id), 1, False,
                                                                       deadline)
    assert _held(backend, "w1") == set(wids[:2])
    assert backend.workflow_get(wids[2]).status == Status.PENDING


@no_faults(OWN)
def test_lost_ack_of_a_claim_returns_only_that_calls_claims(backend_factory):
    """Workflows the same owner claimed in earlier calls (and runs already) are not returned again."""
    backend = backend_factory()
    first, _ = create(backend)
    assert [c.workflow_id for c in claim(backend, "w1")] == [first]
    second, _ = create(backend)
    faulty, plan = _faulty(backend_factory, "workflow_claim", at=_claim_write(backend))
    got = claim(faulty, "w1")
    _injected(plan)
    assert [c.workflow_id for c in got] == [second]


@no_faults(OWN)
def test_lost_ack_of_a_takeover_claim_reports_the_recovery(backend_factory):
    backend = backend_factory()
    wid, _ = create(backend, owner="w0", lease=0.2)
    table = backend_factory.qualify("workflows")
    wait_for(lambda: backend_factory.sql(f"SELECT lease_expires_at < now() FROM {table} WHERE workflow_id = %s",
                                         (wid,))[0][0], what="the lease to expire")
    faulty, plan = _faulty(backend_factory, "workflow_claim", at=_claim_write(backend))
    got = claim(faulty, "w1")
    _injected(plan)
    assert [(c.workflow_id, c.epoch, c.recovery) for c in got] == [(wid, 2, True)]
    assert backend.workflow_get(wid).recoveries == 1


@no_faults(OWN)
def test_lost_ack_of_a_queue_claim_returns_the_claimed_workflow(backend_factory):
    backend = backend_factory()
    backend.queue_define(QueueSpec("lim", concurrency=5))
    wid, _ = create(backend, queue="lim")
    faulty, plan = _faulty(backend_factory, "queue_claim", at="COMMIT")
    got = qclaim_now(faulty, "w1", "lim")
    _injected(plan)
    assert [c.workflow_id for c in got] == [wid]


@no_faults(OWN)
def test_lost_ack_of_a_queue_claim_counts_its_claims_within_the_room(backend_factory):
    """The lost attempt's claims use up the call's limit and the queue's room: the retry returns them and
    starts nothing more."""
    backend = backend_factory()
    backend.queue_define(QueueSpec("lim", concurrency=2))
    wids = [create(backend, queue="lim")[0] for _ in range(3)]
    faulty, plan = _faulty(backend_factory, "queue_claim", at="COMMIT")
    got = qclaim_now(faulty, "w1", "lim", limit=5)
    _injected(plan)
    assert sorted(c.workflow_id for c in got) == sorted(wids[:2])
    assert all((c.epoch, c.recovery, c.queue) == (1, False, "lim") for c in got)
    assert backend.workflow_get(wids[2]).status == Status.PENDING
    faulty, plan = _faulty(backend_factory, "queue_claim", at="COMMIT")
    backend.queue_define(QueueSpec("lim", concurrency=10))
    wids += [create(backend, queue="lim")[0] for _ in range(2)]
    got = qclaim_now(faulty, "w1", "lim", limit=2)
    _injected(plan)
    assert sorted(c.workflow_id for c in got) == sorted(wids[2:4]), "no more than the limit of the call"
    assert backend.workflow_get(wids[4]).status == Status.PENDING


@no_faults(OWN)
def test_lost_ack_of_a_cancel_returns_the_cancelled_ids(backend_factory):
    backend = backend_factory()
    parent, _ = create(backend, owner="w1")
    child, _ = create(backend, f"{parent}/0", owner="w1", parent_id=parent)
    faulty, plan = _faulty(backend_factory, "workflow_cancel", at="COMMIT")
    got = faulty.workflow_cancel(parent, '{"message": "stop"}')
    _injected(plan)
    assert sorted(got) == sorted([parent, child])


@no_faults(OWN)
def test_lost_ack_of_a_resume_returns_the_resumed_ids(backend_factory):
    backend = backend_factory()
    wid, _ = create(backend, owner="w1")
    backend.workflow_cancel(wid, "{}")
    faulty, plan = _faulty(backend_factory, "workflow_resume", at="COMMIT")
    got = faulty.workflow_resume(wid)
    _injected(plan)
    assert got == [wid]
    assert backend.workflow_get(wid).status == Status.PENDING


@no_faults(OWN)
def test_lost_ack_of_a_fork_returns_the_fork(backend_factory):
    backend = backend_factory()
    src, _ = create(backend, owner="w1")
    backend.step_record(step(src, 0, 1, output="0"))
    new = uid()
    faulty, plan = _faulty(backend_factory, "workflow_fork", at="COMMIT")
    created = faulty.workflow_fork(ForkRequest(src, new, 1))
    _injected(plan)
    assert created.created and created.name == NAME
    assert [s.step_id for s in backend.step_list(new)] == [0]


@no_faults(OWN)
def test_lost_ack_of_a_gc_batch_returns_the_count(backend_factory):
    backend = backend_factory()
    for _ in range(3):
        wid, _ = create(backend, owner="w1")
        backend.workflow_finish(Finish(wid, 1, Status.SUCCESS, output="1"))
    faulty, plan = _faulty(backend_factory, "workflow_gc", at="COMMIT")
    n = faulty.workflow_gc(0, 100)
    _injected(plan)
    assert backend.workflow_list(WorkflowQuery()) == []
    assert n == 3


@no_faults(OWN)
def test_lost_ack_of_a_new_schedule_definition_returns_none(backend_factory):
    backend = backend_factory()
    spec = ScheduleSpec(uid("s"), NAME, "* * * * *", "UTC")
    faulty, plan = _faulty(backend_factory, "schedule_define", at="COMMIT")
    before = faulty.schedule_define(spec, T0)
    _injected(plan)
    assert backend.schedule_get(spec.name).spec == spec
    assert before is None, "the schedule was new"


@no_faults(OWN)
def test_lost_ack_of_a_changed_schedule_definition_returns_the_previous_one(backend_factory):
    backend = backend_factory()
    spec = ScheduleSpec(uid("s"), NAME, "* * * * *", "UTC")
    backend.schedule_define(spec, T0)
    changed = ScheduleSpec(spec.name, NAME, "*/5 * * * *", "UTC", queue="q", catch_up="all", max_catch_up=7)
    faulty, plan = _faulty(backend_factory, "schedule_define", at="COMMIT")
    before = faulty.schedule_define(changed, T0)
    _injected(plan)
    assert before == spec
    assert backend.schedule_get(spec.name).spec == changed


@no_faults(OWN)
def test_lost_ack_of_a_migration_returns_the_versions_applied(backend_factory):
    faulty, plan = _faulty(backend_factory, "migrate", at="COMMIT", migrate=False)
    applied = faulty.migrate()
    _injected(plan)
    version = backend_factory(migrate=False).schema_version()
    assert version is not None
    assert applied and max(applied) == version, f"migrate applied the schema but returned {applied}"


@no_faults(OWN)
def test_a_serialization_failure_at_a_transactional_step_commit_is_transient(backend_factory):
    """40001 at the COMMIT (or anywhere in the block): nothing committed, and the engine must run the step
    again rather than count it as a failure of the user's code."""
    backend = backend_factory()
    if not backend.capabilities.transactional_steps:
        pytest.skip("backend has no transactional steps")
    table = backend_factory.qualify("user_rows")
    backend_factory.sql(f"CREATE TABLE {table} (k text PRIMARY KEY)")
    wid, _ = create(backend, owner="w1")
    faulty, plan = _faulty(backend_factory, "step_transaction", at="COMMIT", kind="serialization")
    with pytest.raises(TransientStorageError):
        with faulty.step_transaction(step(wid, 0, 1, name="tx")) as tx:
            tx.connection.execute(f"INSERT INTO {table} (k) VALUES ('once')")
            tx.checkpoint('"done"')
    _injected(plan)
    assert backend.step_list(wid) == [] and backend_factory.sql(f"SELECT k FROM {table}") == []
    with faulty.step_transaction(step(wid, 0, 1, name="tx")) as tx:  # the engine's next attempt
        tx.connection.execute(f"INSERT INTO {table} (k) VALUES ('once')")
        tx.checkpoint('"done"')
    assert tx.record is not None and tx.record.output == '"done"'


@no_faults(OWN)
def test_a_serialization_failure_in_enqueue_in_is_transient(backend_factory):
    backend = backend_factory()
    if not hasattr(backend_factory, "connect"):
        pytest.skip("the factory has no connect()")
    faulty, plan = _faulty(backend_factory, "workflow_enqueue_in", kind="serialization")
    conn = backend_factory.connect(plan)  # the fault hits the backend's statement on the caller's connection
    wf = NewWorkflow(workflow_id=uid(), name=NAME, inputs=args_text(1))
    with pytest.raises(TransientStorageError):
        faulty.workflow_enqueue_in(conn, wf)
    _injected(plan)
    conn.rollback()  # the caller runs its transaction again
    assert faulty.workflow_enqueue_in(conn, wf).created
    conn.commit()
    assert backend.workflow_get(wf.workflow_id).status == Status.PENDING


@no_faults(OWN)
def test_a_serialization_failure_in_a_schedule_tick_is_retried(backend_factory):
    backend = backend_factory()
    spec = ScheduleSpec(uid("s"), NAME, "* * * * *", "UTC")
    backend.schedule_define(spec, T0)
    tick = T0 + timedelta(minutes=1)
    wf = NewWorkflow(workflow_id=f"sched:{spec.name}:{tick.isoformat()}", name=NAME, inputs=args_text(1))
    faulty, plan = _faulty(backend_factory, "schedule_advance", at="WITH", kind="serialization")
    assert faulty.schedule_advance(spec.name, T0, tick, [wf]) is True
    _injected(plan)
    assert backend.schedule_get(spec.name).cursor_at == tick
    assert backend.workflow_get(wf.workflow_id) is not None
