"""Conformance: creating, reading, listing, finishing and releasing workflows."""

from __future__ import annotations

import pytest

from kit.storage import Finish, Status, WorkflowQuery

from .helpers import NAME, args_text, claim, create, take_over, uid

INJECTIONS = [
    "x'; DROP TABLE workflows; --",
    "x' OR '1'='1",
    'x"); DELETE FROM steps; --',
    "%' OR 1=1 --",
    "\\'; SELECT pg_sleep(10); --",
    "$$; DROP SCHEMA public CASCADE; $$",
]


def test_create_unowned_is_pending(backend_factory):
    backend = backend_factory()
    inputs = args_text(1, "two", key=[3])
    wid, created = create(backend, inputs=inputs, queue="q1", app_version="v7")
    assert created.created is True
    assert created.status == Status.PENDING
    assert created.name == NAME
    rec = backend.workflow_get(wid)
    assert rec is not None
    assert rec.workflow_id == wid and rec.name == NAME and rec.status == Status.PENDING
    assert rec.inputs == inputs, "inputs must be stored byte for byte"
    assert rec.owner is None
    assert rec.queue == "q1" and rec.app_version == "v7"
    assert rec.output is None and rec.error is None and rec.finished_at is None
    assert rec.created_at is not None
    assert rec.recoveries == 0


def test_create_owned_starts_running_at_epoch_1(backend_factory):
    backend = backend_factory()
    wid, created = create(backend, owner="worker-a", lease=30)
    assert created.created is True
    assert created.status == Status.RUNNING
    assert created.epoch == 1
    rec = backend.workflow_get(wid)
    assert rec.status == Status.RUNNING and rec.owner == "worker-a" and rec.epoch == 1
    assert rec.lease_expires_at is not None and rec.lease_expires_at > rec.created_at
    assert rec.started_at is not None


def test_create_is_idempotent_by_id(backend_factory):
    backend = backend_factory()
    wid, first = create(backend, inputs=args_text(1))
    assert first.created
    # Same id again, different name / inputs / owner: nothing changes, the existing row is reported.
    _, again = create(backend, wid, name="conf.other", inputs=args_text(2))
    assert again.created is False
    assert again.name == NAME
    assert again.status == Status.PENDING
    _, owned_again = create(backend, wid, owner="worker-x", inputs=args_text(1))
    assert owned_again.created is False
    assert owned_again.status == Status.PENDING
    rec = backend.workflow_get(wid)
    assert rec.inputs == args_text(1) and rec.owner is None and rec.name == NAME
    assert len(backend.workflow_list(WorkflowQuery())) == 1


def test_create_same_id_again_by_the_same_owner_is_not_a_new_run(backend_factory):
    """A second create of an id held by the same owner (e.g. one process starting the same id twice)
    must not report created=True, or the caller would run the workflow a second time (G1)."""
    backend = backend_factory()
    wid, first = create(backend, owner="worker-a", inputs=args_text(1))
    assert first.created and first.epoch == 1
    _, again = create(backend, wid, owner="worker-a", inputs=args_text(1))
    assert again.created is False
    assert again.status == Status.RUNNING and again.name == NAME


def test_create_reports_existing_terminal_status(backend_factory):
    backend = backend_factory()
    wid, created = create(backend, owner="worker-a")
    assert backend.workflow_finish(Finish(wid, created.epoch, Status.SUCCESS, output="42")) is True
    _, again = create(backend, wid, owner="worker-b")
    assert again.created is False
    assert again.status == Status.SUCCESS
    assert again.name == NAME
    rec = backend.workflow_get(wid)
    assert rec.status == Status.SUCCESS and rec.output == "42" and rec.epoch == 1


def test_concurrent_creates_of_one_id_create_once(backend_factory):
    from .helpers import run_threads

    backend = backend_factory()
    other = backend_factory()
    wid = uid()
    results = run_threads(8, lambda i: create((backend, other)[i % 2], wid, owner=f"w{i}")[1])
    assert sum(r.created for r in results) == 1
    winner = [i for i, r in enumerate(results) if r.created][0]
    assert backend.workflow_get(wid).owner == f"w{winner}"


def test_workflow_get_unknown_is_none(backend_factory):
    backend = backend_factory()
    assert backend.workflow_get("no-such-workflow") is None
    assert backend.workflow_get(INJECTIONS[0]) is None


@pytest.mark.parametrize("wid", INJECTIONS)
def test_ids_and_names_that_look_like_sql_are_data(backend_factory, wid):
    backend = backend_factory()
    _, created = create(backend, wid, name=wid, owner="worker-a")
    assert created.created and created.name == wid
    rec = backend.workflow_get(wid)
    assert rec is not None and rec.workflow_id == wid and rec.name == wid
    from .helpers import step

    backend.step_record(step(wid, 0, 1, name=wid, output='"x"'))
    assert [s.name for s in backend.step_list(wid)] == [wid]
    assert [r.workflow_id for r in backend.workflow_list(WorkflowQuery(name=wid))] == [wid]
    assert backend.workflow_finish(Finish(wid, 1, Status.ERROR, error=f'{{"message": "{wid}"}}')) is True
    assert [r.workflow_id for r in backend.workflow_list(WorkflowQuery(error_contains=wid))] == [wid]
    assert backend.schema_version() is not None  # the schema is intact


@pytest.fixture
def listing(backend_factory):
    """Five workflows created in order w0..w4 with varied names, statuses, errors, queues."""
    backend = backend_factory()
    ids = [f"list-{i}" for i in range(5)]
    create(backend, ids[0], name="conf.alpha", queue="q1", app_version="v1")  # PENDING
    create(backend, ids[1], name="conf.beta", owner="w")  # -> SUCCESS
    create(backend, ids[2], name="conf.alpha", owner="w")  # -> ERROR with tricky text
    create(backend, ids[3], name=INJECTIONS[0])  # PENDING, injection-looking name
    create(backend, ids[4], name="conf.beta", owner="w")  # RUNNING
    assert backend.workflow_finish(Finish(ids[1], 1, Status.SUCCESS, output='"fine"'))
    err = '{"type":"OSError","message":"disk 100% full_now; DROP TABLE workflows"}'
    assert backend.workflow_finish(Finish(ids[2], 1, Status.ERROR, error=err))
    records = {i: backend.workflow_get(i) for i in ids}
    return backend, ids, records


def _ids(records) -> list[str]:
    return [r.workflow_id for r in records]


def test_list_all_orders_by_creation(listing):
    backend, ids, _ = listing
    assert _ids(backend.workflow_list(WorkflowQuery())) == ids[::-1]  # created_desc is the default
    assert _ids(backend.workflow_list(WorkflowQuery(order="created_desc"))) == ids[::-1]
    assert _ids(backend.workflow_list(WorkflowQuery(order="created_asc"))) == ids


def test_list_limit(listing):
    backend, ids, _ = listing
    assert _ids(backend.workflow_list(WorkflowQuery(limit=2))) == [ids[4], ids[3]]
    assert _ids(backend.workflow_list(WorkflowQuery(limit=2, order="created_asc"))) == [ids[0], ids[1]]
    assert _ids(backend.workflow_list(WorkflowQuery(limit=1, statuses=[Status.PENDING]))) == [ids[3]]


def test_list_by_status(listing):
    backend, ids, _ = listing
    assert set(_ids(backend.workflow_list(WorkflowQuery(statuses=[Status.PENDING])))) == {ids[0], ids[3]}
    assert _ids(backend.workflow_list(WorkflowQuery(statuses=[Status.RUNNING]))) == [ids[4]]
    both = backend.workflow_list(WorkflowQuery(statuses=[Status.SUCCESS, Status.ERROR]))
    assert set(_ids(both)) == {ids[1], ids[2]}
    assert backend.workflow_list(WorkflowQuery(statuses=[Status.CANCELLED])) == []


def test_list_by_name_queue_and_app_version(listing):
    backend, ids, _ = listing
    assert set(_ids(backend.workflow_list(WorkflowQuery(name="conf.alpha")))) == {ids[0], ids[2]}
    assert _ids(backend.workflow_list(WorkflowQuery(name="conf.beta", statuses=[Status.RUNNING]))) == [ids[4]]
    assert _ids(backend.workflow_list(WorkflowQuery(queue="q1"))) == [ids[0]]
    assert _ids(backend.workflow_list(WorkflowQuery(app_version="v1"))) == [ids[0]]
    assert backend.workflow_list(WorkflowQuery(name="conf.missing")) == []


def test_list_by_time_window(listing):
    backend, ids, recs = listing
    created = [recs[i].created_at for i in ids]
    assert created == sorted(created) and len(set(created)) == len(created)
    since = backend.workflow_list(WorkflowQuery(since=created[1], order="created_asc"))
    assert _ids(since) == ids[1:], "since is inclusive"
    until = backend.workflow_list(WorkflowQuery(until=created[3], order="created_asc"))
    assert _ids(until) == ids[:3], "until is exclusive"
    window = backend.workflow_list(WorkflowQuery(since=created[1], until=created[3], order="created_asc"))
    assert _ids(window) == ids[1:3]
    assert backend.workflow_list(WorkflowQuery(since=created[4], until=created[0])) == []


def test_list_by_error_text_is_literal_and_case_insensitive(listing):
    backend, ids, _ = listing
    for needle in ("100% full_", "%", "_now", "DISK 100", "drop table workflows", "OSError"):
        assert _ids(backend.workflow_list(WorkflowQuery(error_contains=needle))) == [ids[2]], needle
    for needle in ("100%% full", "full__now", "disk_100", "x%y"):
        assert backend.workflow_list(WorkflowQuery(error_contains=needle)) == [], needle


@pytest.mark.parametrize("value", INJECTIONS)
def test_list_filters_treat_sql_looking_values_as_data(listing, value):
    backend, ids, _ = listing
    assert backend.workflow_list(WorkflowQuery(error_contains=value)) == []
    assert backend.workflow_list(WorkflowQuery(queue=value)) == []
    assert backend.workflow_list(WorkflowQuery(app_version=value)) == []
    by_name = _ids(backend.workflow_list(WorkflowQuery(name=value)))
    assert by_name == ([ids[3]] if value == INJECTIONS[0] else [])
    assert len(backend.workflow_list(WorkflowQuery())) == 5, "a filter value changed the data"


def test_finish_success_and_error(backend_factory):
    backend = backend_factory()
    ok, _ = create(backend, owner="worker-a")
    bad, _ = create(backend, owner="worker-a")
    assert backend.workflow_finish(Finish(ok, 1, Status.SUCCESS, output='{"n":1}')) is True
    err = '{"type":"ValueError","module":"builtins","message":"nope"}'
    assert backend.workflow_finish(Finish(bad, 1, Status.ERROR, error=err)) is True
    r_ok, r_bad = backend.workflow_get(ok), backend.workflow_get(bad)
    assert r_ok.status == Status.SUCCESS and r_ok.output == '{"n":1}' and r_ok.error is None
    assert r_bad.status == Status.ERROR and r_bad.error == err and r_bad.output is None
    for rec in (r_ok, r_bad):
        assert rec.finished_at is not None
        assert rec.owner is None, "a finished workflow holds no lease"
    assert backend.lease_renew("worker-a", 30) == {}


def test_finish_retry_with_same_epoch_is_idempotent(backend_factory):
    backend = backend_factory()
    wid, _ = create(backend, owner="worker-a")
    fin = Finish(wid, 1, Status.SUCCESS, output='"done"')
    assert backend.workflow_finish(fin) is True
    assert backend.workflow_finish(fin) is True  # e.g. a retry after a lost acknowledgement
    assert backend.workflow_get(wid).output == '"done"'
    # A different terminal status under the same epoch does not overwrite the recorded one.
    assert backend.workflow_finish(Finish(wid, 1, Status.ERROR, error="{}")) is False
    assert backend.workflow_get(wid).status == Status.SUCCESS


def test_finish_is_fenced_by_epoch(backend_factory):
    backend = backend_factory()
    wid, _ = create(backend, owner="worker-a")
    new = take_over(backend, wid, 1, "worker-b")
    assert new.epoch == 2
    assert backend.workflow_finish(Finish(wid, 1, Status.SUCCESS, output='"stale"')) is False
    rec = backend.workflow_get(wid)
    assert rec.status == Status.RUNNING and rec.owner == "worker-b" and rec.output is None
    assert backend.workflow_finish(Finish(wid, 2, Status.SUCCESS, output='"fresh"')) is True
    assert backend.workflow_get(wid).output == '"fresh"'


def test_finish_unknown_or_pending_workflow_is_refused(backend_factory):
    backend = backend_factory()
    assert backend.workflow_finish(Finish("missing", 1, Status.SUCCESS, output="1")) is False
    wid, _ = create(backend)  # PENDING, epoch 0
    assert backend.workflow_finish(Finish(wid, 0, Status.SUCCESS, output="1")) is False
    assert backend.workflow_get(wid).status == Status.PENDING


def test_release_returns_workflow_to_the_queue(backend_factory):
    backend = backend_factory()
    wid, _ = create(backend, owner="worker-a")
    assert backend.workflow_release(wid, 1) is True
    rec = backend.workflow_get(wid)
    assert rec.status == Status.PENDING and rec.owner is None
    assert backend.lease_renew("worker-a", 30) == {}
    claims = claim(backend, "worker-b")
    assert [(c.workflow_id, c.epoch) for c in claims] == [(wid, 2)]
    assert backend.workflow_release(wid, 1) is False, "a stale epoch cannot release"
    assert backend.workflow_get(wid).owner == "worker-b"
    assert backend.workflow_finish(Finish(wid, 2, Status.SUCCESS, output="1"))
    assert backend.workflow_release(wid, 2) is False, "a finished workflow cannot be released"
    assert backend.workflow_get(wid).status == Status.SUCCESS


def test_workflow_wait_returns_terminal_records(backend_factory):
    backend = backend_factory()
    done, _ = create(backend, owner="worker-a")
    running, _ = create(backend, owner="worker-a")
    assert backend.workflow_wait([running], 0.05) == []
    assert backend.workflow_finish(Finish(done, 1, Status.SUCCESS, output='"r"'))
    got = backend.workflow_wait([done, running, "missing"], 5)
    assert [(r.workflow_id, r.status, r.output) for r in got] == [(done, Status.SUCCESS, '"r"')]
