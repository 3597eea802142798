"""The hot-path levers of issue 14 keep every guarantee: group-commit batches sent with binary array
parameters fence each workflow by its own epoch, and carry every value (NULLs, large ids, errors) intact."""

from __future__ import annotations

from datetime import datetime, timezone

from kit.backends.postgres.queries import binary_array_params

from kit.errors import LeaseLostError
from kit.storage import Finish, NewWorkflow, Status, StepResult


def test_array_placeholders_become_binary_and_nothing_else_changes():
    text = ("SELECT * FROM unnest(%(ids)s::text[], %(n)s::bigint[], %(at)s::timestamptz[]) "
            "WHERE x = %(one)s AND y = ANY(%(names)s) AND z = %(k)s::int")
    assert binary_array_params(text) == (
        "SELECT * FROM unnest(%(ids)b::text[], %(n)b::bigint[], %(at)b::timestamptz[]) "
        "WHERE x = %(one)s AND y = ANY(%(names)s) AND z = %(k)s::int")


def _running(backend, n: int) -> list[str]:
    ids = [f"hp-{i}" for i in range(n)]
    for wid in ids:
        assert backend.workflow_create(NewWorkflow(workflow_id=wid, name="w", inputs="[]", owner="me",
                                                   lease_seconds=60)).created
    return ids


def test_grouped_checkpoints_fence_each_workflow_by_its_own_epoch(backend):
    a, b, c = _running(backend, 3)
    now = datetime.now(timezone.utc)
    batch = [
        StepResult(a, 0, "s", 1, output='"x"', attempts=1, started_at=now),
        StepResult(b, 40_000, "s", 2, output="1", attempts=1, started_at=now),  # stale epoch: fenced
        StepResult(c, 70_000, "s@t:0", 1, output=None, error='{"type": "ValueError"}', attempts=3,
                   started_at=now),
    ]
    out = backend._flush_steps(batch)
    assert out[0].output == '"x"' and out[0].epoch == 1
    assert isinstance(out[1], LeaseLostError)
    assert out[2].error == '{"type": "ValueError"}' and out[2].output is None
    assert [(s.step_id, s.output, s.attempts) for s in backend.step_list(a)] == [(0, '"x"', 1)]
    assert backend.step_list(b) == []
    (rec,) = backend.step_list(c)
    assert (rec.step_id, rec.name, rec.error, rec.attempts) == (70_000, "s@t:0", '{"type": "ValueError"}', 3)


def test_grouped_finishes_fence_each_workflow_by_its_own_epoch(backend):
    a, b, c = _running(backend, 3)
    out = backend._flush_finishes([
        Finish(a, 1, Status.SUCCESS, "7", None),
        Finish(b, 5, Status.SUCCESS, "8", None),  # stale epoch: changes nothing
        Finish(c, 1, Status.ERROR, None, '{"type": "KeyError", "message": "k"}'),
    ])
    assert out == [True, False, True]
    assert backend.workflow_get(a).status is Status.SUCCESS and backend.workflow_get(a).output == "7"
    assert backend.workflow_get(b).status is Status.RUNNING
    got = backend.workflow_get(c)
    assert got.status is Status.ERROR and got.output is None and "KeyError" in got.error


def test_json_fast_path_writes_exactly_what_the_encoder_writes():
    from kit.serialization.encoding import _ENCODER, _json_text

    values = [None, True, False, 0, -5, 10**30, 1.5, -0.0, 1e300, "", "héllo", 'a"b\\\n\u2028', "\ud800",
              [1, "x", None, [True, {"a": 1.25}]], {"b": 1, "a": [1, 2], "é": None}, {}, [], [[[]]]]
    for value in values:
        assert _json_text(value) == _ENCODER.encode(value)
    for bad in (float("nan"), {"a": [float("-inf")]}, object()):
        errors = []
        for encode in (_ENCODER.encode, _json_text):
            try:
                encode(bad)
            except (ValueError, TypeError) as exc:
                errors.append((type(exc), str(exc)))
        assert len(errors) == 2 and errors[0] == errors[1]


def test_group_commit_wakes_every_follower_exactly_once_under_churn():
    """Followers wait on bare locks: with flushes that return at once (leadership changing hands all the
    time) every caller still gets its own result and none is left waiting."""
    import threading

    from kit.groupcommit import GroupCommitter

    gc = GroupCommitter(lambda items: [(i, "ok") for i in items], max_batch=4)
    results: dict[int, object] = {}

    def caller(n: int) -> None:
        for k in range(300):
            results[n * 1000 + k] = gc.submit(n * 1000 + k)

    threads = [threading.Thread(target=caller, args=(n,), daemon=True) for n in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "a caller was never woken"
    assert len(results) == 32 * 300 and all(v == (k, "ok") for k, v in results.items())
    assert gc.items == 32 * 300
