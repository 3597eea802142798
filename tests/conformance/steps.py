"""Conformance: fenced step checkpoints and transactional steps."""

from __future__ import annotations

import pytest

from kit.errors import LeaseLostError, StorageError
from kit.storage import Finish, Status, StepResult

from .helpers import create, run_step_transaction, run_threads, step, take_over


def test_step_record_returns_the_record(backend_factory):
    backend = backend_factory()
    wid, _ = create(backend, owner="worker-a")
    res = StepResult(wid, 0, "charge", 1, output='{"ok":true}', attempts=2)
    rec = backend.step_record(res)
    assert (rec.workflow_id, rec.step_id, rec.name, rec.output, rec.error, rec.epoch, rec.attempts) == (
        wid, 0, "charge", '{"ok":true}', None, 1, 2)
    assert rec.finished_at is not None
    err = backend.step_record(step(wid, 1, 1, name="fail", error='{"type":"ValueError"}'))
    assert err.error == '{"type":"ValueError"}' and err.output is None
    listed = backend.step_list(wid)
    assert [(s.step_id, s.name, s.output, s.error, s.epoch, s.attempts) for s in listed] == [
        (0, "charge", '{"ok":true}', None, 1, 2),
        (1, "fail", None, '{"type":"ValueError"}', 1, 1),
    ]


def test_step_list_is_ordered_and_scoped(backend_factory):
    backend = backend_factory()
    wid, _ = create(backend, owner="worker-a")
    other, _ = create(backend, owner="worker-a")
    for i in (3, 0, 2, 1, 10):
        backend.step_record(step(wid, i, 1, output=str(i)))
    backend.step_record(step(other, 0, 1, output='"other"'))
    assert [s.step_id for s in backend.step_list(wid)] == [0, 1, 2, 3, 10]
    assert [s.output for s in backend.step_list(other)] == ['"other"']
    assert backend.step_list("missing") == []


def test_step_record_same_epoch_twice_reads_back_the_first(backend_factory):
    backend = backend_factory()
    wid, _ = create(backend, owner="worker-a")
    first = backend.step_record(step(wid, 0, 1, output='"first"'))
    again = backend.step_record(step(wid, 0, 1, output='"second"'))
    assert again.output == '"first"' and again.epoch == 1
    assert first.output == '"first"'
    assert [s.output for s in backend.step_list(wid)] == ['"first"']


def test_step_record_is_fenced_after_takeover(backend_factory):
    backend = backend_factory()
    wid, _ = create(backend, owner="worker-a")
    backend.step_record(step(wid, 0, 1, output='"a0"'))
    take_over(backend, wid, 1, "worker-b")
    with pytest.raises(LeaseLostError):
        backend.step_record(step(wid, 1, 1, output='"a1 stale"'))
    assert [(s.step_id, s.epoch) for s in backend.step_list(wid)] == [(0, 1)]
    # The new owner records the next step; the old owner is still refused.
    assert backend.step_record(step(wid, 1, 2, output='"b1"')).epoch == 2
    with pytest.raises(LeaseLostError):
        backend.step_record(step(wid, 2, 1, output='"a2 stale"'))
    assert [(s.step_id, s.epoch, s.output) for s in backend.step_list(wid)] == [
        (0, 1, '"a0"'), (1, 2, '"b1"')]


def test_step_recorded_by_an_earlier_epoch_is_adopted(backend_factory):
    backend = backend_factory()
    wid, _ = create(backend, owner="worker-a")
    backend.step_record(step(wid, 0, 1, output='"from a"'))
    take_over(backend, wid, 1, "worker-b")
    rec = backend.step_record(step(wid, 0, 2, output='"from b"'))
    assert rec.output == '"from a"' and rec.epoch == 1, "replay must see the committed checkpoint (G2)"
    assert len(backend.step_list(wid)) == 1


def test_step_record_refused_when_not_running(backend_factory):
    backend = backend_factory()
    pending, _ = create(backend)
    with pytest.raises(LeaseLostError):
        backend.step_record(step(pending, 0, 0, output="1"))
    done, _ = create(backend, owner="worker-a")
    assert backend.workflow_finish(Finish(done, 1, Status.SUCCESS, output="1"))
    with pytest.raises(LeaseLostError):
        backend.step_record(step(done, 0, 1, output="1"))
    with pytest.raises(LeaseLostError):
        backend.step_record(step("missing", 0, 1, output="1"))
    assert backend.step_list(pending) == [] and backend.step_list(done) == []


def test_concurrent_records_of_one_step_keep_one_row(backend_factory):
    a, b = backend_factory(), backend_factory()
    wid, _ = create(a, owner="worker-a")
    results = run_threads(8, lambda i: (a, b)[i % 2].step_record(step(wid, 0, 1, output=f'"{i}"')))
    rows = a.step_list(wid)
    assert len(rows) == 1
    assert {r.output for r in results} == {rows[0].output}, "every writer reads back the single winner"


def _user_table(backend_factory) -> str:
    if not backend_factory().capabilities.transactional_steps:
        pytest.skip("backend has no transactional steps")
    table = backend_factory.qualify("user_rows")
    backend_factory.sql(f"CREATE TABLE {table} (k text PRIMARY KEY, v text)")
    return table


def _user_rows(backend_factory, table: str) -> list[tuple]:
    return [tuple(r) for r in backend_factory.sql(f"SELECT k, v FROM {table} ORDER BY k")]


def test_step_transaction_commits_user_writes_with_checkpoint(backend_factory):
    table = _user_table(backend_factory)
    backend = backend_factory()
    wid, _ = create(backend, owner="worker-a")

    def body(tx):
        tx.connection.execute(f"INSERT INTO {table} (k, v) VALUES (%s, %s)", ("a", "1"))
        tx.checkpoint('"written"')

    record = run_step_transaction(backend, step(wid, 0, 1, name="tx"), body)
    assert record is not None
    assert (record.workflow_id, record.step_id, record.name, record.output, record.epoch) == (
        wid, 0, "tx", '"written"', 1)
    assert _user_rows(backend_factory, table) == [("a", "1")]
    assert [(s.step_id, s.output) for s in backend.step_list(wid)] == [(0, '"written"')]


def test_step_transaction_exception_rolls_back_both(backend_factory):
    table = _user_table(backend_factory)
    backend = backend_factory()
    wid, _ = create(backend, owner="worker-a")

    class Boom(Exception):
        pass

    def after_checkpoint(tx):
        tx.connection.execute(f"INSERT INTO {table} (k, v) VALUES ('b', '2')")
        tx.checkpoint('"never"')
        raise Boom("after the checkpoint, before the commit")

    def before_checkpoint(tx):
        tx.connection.execute(f"INSERT INTO {table} (k, v) VALUES ('c', '3')")
        raise Boom("before the checkpoint")

    with pytest.raises(Boom):
        run_step_transaction(backend, step(wid, 0, 1, name="tx"), after_checkpoint)
    with pytest.raises(Boom):
        run_step_transaction(backend, step(wid, 0, 1, name="tx"), before_checkpoint)
    assert _user_rows(backend_factory, table) == []
    assert backend.step_list(wid) == []
    # The workflow is still ours and can record the step afterwards.
    assert backend.step_record(step(wid, 0, 1, name="tx", output='"later"')).epoch == 1


def test_step_transaction_without_checkpoint_rolls_back(backend_factory):
    table = _user_table(backend_factory)
    backend = backend_factory()
    wid, _ = create(backend, owner="worker-a")
    with pytest.raises(StorageError):
        run_step_transaction(backend, step(wid, 0, 1, name="tx"), lambda tx: tx.connection.execute(
            f"INSERT INTO {table} (k, v) VALUES ('d', '4')"))
    assert _user_rows(backend_factory, table) == []
    assert backend.step_list(wid) == []


def test_step_transaction_fenced_epoch_rolls_back_user_writes(backend_factory):
    table = _user_table(backend_factory)
    backend = backend_factory()
    wid, _ = create(backend, owner="worker-a")
    taken: list = []

    def body(tx):
        tx.connection.execute(f"INSERT INTO {table} (k, v) VALUES ('e', '5')")
        if not taken:  # another worker takes the workflow over between the user's write and the checkpoint
            taken.append(take_over(backend, wid, 1, "worker-b"))
        tx.checkpoint('"stale"')

    with pytest.raises(LeaseLostError):
        run_step_transaction(backend, step(wid, 0, 1, name="tx"), body)
    assert _user_rows(backend_factory, table) == []
    assert backend.step_list(wid) == []
    assert backend.workflow_get(wid).owner == "worker-b"


def test_concurrent_checkpoints_of_many_workflows_are_fenced_one_by_one(backend_factory):
    """Checkpoints arriving together (a backend may commit them as a group) keep per-workflow fencing."""
    backend = backend_factory()
    wids = [create(backend, owner="worker-a")[0] for _ in range(12)]
    stolen = set(wids[::3])
    for wid in stolen:
        take_over(backend, wid, 1, "worker-b")

    def record(i: int):
        wid = wids[i]
        out = []
        for k in range(5):
            try:
                out.append(backend.step_record(step(wid, k, 1, output=str(k))).epoch)
            except LeaseLostError:
                out.append("fenced")
        return out

    results = run_threads(len(wids), record)
    for wid, res in zip(wids, results, strict=True):
        if wid in stolen:
            assert res == ["fenced"] * 5
            assert backend.step_list(wid) == []
        else:
            assert res == [1] * 5
            assert [(s.step_id, s.epoch) for s in backend.step_list(wid)] == [(k, 1) for k in range(5)]


def test_concurrent_finishes_of_many_workflows_are_fenced_one_by_one(backend_factory):
    backend = backend_factory()
    wids = [create(backend, owner="worker-a")[0] for _ in range(12)]
    stolen = set(wids[1::4])
    for wid in stolen:
        take_over(backend, wid, 1, "worker-b")
    done = run_threads(len(wids), lambda i: backend.workflow_finish(
        Finish(wids[i], 1, Status.SUCCESS, output=f'"{i}"')))
    for i, wid in enumerate(wids):
        rec = backend.workflow_get(wid)
        if wid in stolen:
            assert done[i] is False and rec.status == Status.RUNNING and rec.epoch == 2
        else:
            assert done[i] is True and rec.status == Status.SUCCESS and rec.output == f'"{i}"'
