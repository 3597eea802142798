"""The engine through the public API (kit.Kit) against real PostgreSQL servers.

Crashes are simulated inside the test process: ``crash(app)`` stops the app's heartbeat thread (as if
the process froze or died) while its workflow threads stay blocked where they are and nothing is
released; another Kit instance with a short lease then takes the work over. Every wait is a bounded
poll or an event; no assertion depends on how long something took.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import psycopg
import pytest
from psycopg import sql

import kit
from kit import serialization as ser
from kit.engine import Outcome, StepOptions
from kit.errors import ConfigError, SchemaError, UnknownWorkflowError, UsageError
from kit.storage import ClaimRequest, Status, WorkflowQuery

pytestmark = pytest.mark.all_backends  # also on the extra targets (Citus): tests/targets.py

# Leases short enough for quick recoveries, long enough that a live run keeps its lease while a loaded
# 2-core machine starves its process for a second (a run stops itself when no renewal came in time).
FAST = {"lease_seconds": 2.0, "heartbeat_seconds": 0.3, "poll_seconds": 0.1}


class Gate:
    """Blocks the first ``block`` callers until opened; counts every caller."""

    def __init__(self, block: int = 1) -> None:
        self.block = block
        self.calls = 0
        self.entered = threading.Event()
        self.opened = threading.Event()
        self._lock = threading.Lock()

    def __call__(self) -> None:
        with self._lock:
            self.calls += 1
            blocked = self.calls <= self.block
        if blocked:
            self.entered.set()
            if not self.opened.wait(60):
                raise RuntimeError("test gate never opened")

    def open(self) -> None:
        self.opened.set()


class Apps:
    """Makes Kit apps on the test's server and schema; opens every gate and closes every app after the test."""

    def __init__(self, url: str, schema: str) -> None:
        self.url = url
        self.schema = schema
        self.apps: list[kit.Kit] = []
        self.gates: list[Gate] = []

    def __call__(self, **overrides) -> kit.Kit:
        opts = {"lease_seconds": 5.0, "heartbeat_seconds": 0.5, "poll_seconds": 0.1}
        opts.update(overrides)
        app = kit.Kit(database_url=self.url, schema=self.schema, **opts)
        self.apps.append(app)
        return app

    def gate(self, block: int = 1) -> Gate:
        g = Gate(block)
        self.gates.append(g)
        return g

    def sql(self, query, params: tuple = ()) -> list[tuple]:
        with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else []

    def table(self, name: str) -> sql.Composed:
        return sql.SQL("{}.{}").format(sql.Identifier(self.schema), sql.Identifier(name))

    def teardown(self) -> None:
        for g in self.gates:
            g.open()
        for app in reversed(self.apps):
            app.close(grace=2)


@pytest.fixture
def apps(pg_url, schema):
    made = Apps(pg_url, schema)
    yield made
    made.teardown()


def crash(app: kit.Kit) -> None:
    """Simulate a dead/frozen process: stop its heartbeats; its threads and leases stay as they are."""
    app.runtime._stop.set()


def wid() -> str:
    return f"wf-{uuid.uuid4().hex[:10]}"


def local_outcome(handle: kit.WorkflowHandle, timeout: float = 20) -> Outcome:
    """How this process's own execution of a started workflow ended (None status: abandoned)."""
    assert handle._future is not None, "the workflow was not started by this app"
    return handle._future.result(timeout=timeout)


def steps_of(app: kit.Kit, workflow_id: str) -> list[tuple[int, str, int]]:
    return [(s.step_id, s.name, s.epoch) for s in app.backend.step_list(workflow_id)]


@dataclasses.dataclass
class Receipt:
    order: uuid.UUID
    amount: Decimal
    at: datetime
    blob: bytes
    tags: frozenset


class CustomError(LookupError):
    pass


# -- starting, idempotency, results --------------------------------------------------------------------


def test_workflow_runs_steps_and_returns_result(apps):
    app = apps()

    @app.step(name="basic.add")
    def add(a, b):
        return a + b

    @app.workflow(name="basic.wf")
    def wf(x, *, y):
        return add(add(x, y), 1)

    assert wf(1, y=2) == 4  # calling the workflow function runs it durably
    h = app.start(wf, 10, y=20, workflow_id="basic-1")
    assert h.workflow_id == "basic-1"
    assert h.result(timeout=20) == 31
    assert h.status() == Status.SUCCESS
    rec = h.record()
    assert rec.name == "basic.wf" and rec.epoch == 1 and rec.owner is None
    assert steps_of(app, "basic-1") == [(0, "basic.add", 1), (1, "basic.add", 1)]
    assert len(app.backend.workflow_list(WorkflowQuery(name="basic.wf"))) == 2


def test_start_same_id_twice_runs_once(apps):
    app = apps()
    other = apps()
    gate = apps.gate()
    effects = Counter()

    def register(a: kit.Kit):
        @a.step(name="idem.effect")
        def effect(x):
            effects["effect"] += 1
            gate()
            return x * 2

        @a.workflow(name="idem.wf")
        def wf(x):
            return effect(x) + 1

        return wf

    wf = register(app)
    wf_other = register(other)
    h1 = app.start(wf, 21, workflow_id="idem-1")
    assert gate.entered.wait(20)
    h2 = app.start(wf, 21, workflow_id="idem-1")  # same process, while the first run is in flight
    h3 = other.start(wf_other, 21, workflow_id="idem-1")  # another process
    gate.open()
    assert h1.result(timeout=20) == 43
    assert h2.result(timeout=20) == 43
    assert h3.result(timeout=20) == 43
    # After it finished: the recorded result, even with different arguments.
    assert app.start(wf, 99, workflow_id="idem-1").result(timeout=20) == 43
    assert other.start(wf_other, 0, workflow_id="idem-1").result(timeout=20) == 43
    assert effects["effect"] == 1, "the step ran more than once (G1)"
    rows = app.backend.workflow_list(WorkflowQuery(name="idem.wf"))
    assert [(r.workflow_id, r.status, r.epoch) for r in rows] == [("idem-1", Status.SUCCESS, 1)]
    assert steps_of(app, "idem-1") == [(0, "idem.effect", 1)]


def test_second_start_of_an_in_flight_workflow_keeps_its_lease(apps):
    """Starting an id this process is already running must not disturb the running execution: its
    lease stays held and renewed (the heartbeat must not mistake it for a stray claim)."""
    app = apps()
    gate = apps.gate()
    effects = Counter()

    @app.step(name="inflight.effect")
    def effect():
        effects["effect"] += 1
        gate()
        return "done"

    @app.workflow(name="inflight.wf")
    def wf():
        return effect()

    h1 = app.start(wf, workflow_id="inflight-1")
    assert gate.entered.wait(20)
    h2 = app.start(wf, workflow_id="inflight-1")
    app.runtime.renew_once()  # what the heartbeat does next
    rec = app.backend.workflow_get("inflight-1")
    assert (rec.status, rec.owner, rec.epoch) == (Status.RUNNING, app.worker_id, 1)
    gate.open()
    assert local_outcome(h1).status == Status.SUCCESS, "the first execution must finish, not be abandoned"
    assert h1.result(timeout=20) == h2.result(timeout=20) == "done"
    assert effects["effect"] == 1
    assert app.backend.workflow_get("inflight-1").epoch == 1


def test_workflow_id_reused_by_another_workflow_conflicts(apps):
    app = apps()

    @app.workflow(name="conflict.a")
    def a():
        return "a"

    @app.workflow(name="conflict.b")
    def b():
        return "b"

    assert app.start(a, workflow_id="shared-id").result(timeout=20) == "a"
    with pytest.raises(kit.WorkflowConflictError, match="conflict.a"):
        app.start(b, workflow_id="shared-id")
    with pytest.raises(kit.WorkflowConflictError):
        app.enqueue(b, workflow_id="shared-id")
    assert app.retrieve("shared-id").result(timeout=5) == "a"


def test_start_rejects_non_workflows_and_bad_ids(apps):
    app = apps()

    @app.workflow(name="ids.wf")
    def wf():
        return 1

    with pytest.raises(UsageError):
        app.start(lambda: 1)
    with pytest.raises(UnknownWorkflowError):
        app.start("ids.unknown")
    for bad in ("has space", "", "x" * 201, "tab\there", "ünïcode"):
        with pytest.raises(UsageError):
            app.start(wf, workflow_id=bad)
    assert app.backend.workflow_list(WorkflowQuery()) == []
    assert app.start("ids.wf", workflow_id="by-name").result(timeout=20) == 1


def test_missing_schema_without_migrate_is_reported(apps):
    app = apps(migrate=False)

    @app.workflow(name="nomigrate.wf")
    def wf():
        return 1

    with pytest.raises(SchemaError, match="migrate"):
        app.start(wf)
    apps().backend  # noqa: B018 - another app (default migrate=True) creates the schema
    assert app.start(wf).result(timeout=20) == 1, "the same app works once the schema exists"


def test_retrieve_unknown_workflow(apps):
    app = apps()
    with pytest.raises(kit.WorkflowNotFoundError):
        app.retrieve("no-such-workflow")
    with pytest.raises(UsageError):
        app.retrieve("bad id")


def test_result_timeout(apps):
    app = apps()
    gate = apps.gate()

    @app.step(name="slow.step")
    def slow():
        gate()
        return "late"

    @app.workflow(name="slow.wf")
    def wf():
        return slow()

    h = app.start(wf, workflow_id="slow-1")
    assert gate.entered.wait(20)
    with pytest.raises(kit.WorkflowTimeoutError) as info:
        h.result(timeout=0.1)
    assert isinstance(info.value, TimeoutError)
    with pytest.raises(kit.WorkflowTimeoutError):
        app.retrieve("slow-1").result(timeout=0.1)  # a handle without a local future polls the database
    assert h.status() == Status.RUNNING
    gate.open()
    assert h.result(timeout=20) == "late"
    assert app.retrieve("slow-1").result(timeout=20) == "late"


def test_enqueued_workflows_run_once_each_across_two_workers(apps):
    a, b = apps(**FAST), apps(**FAST)
    ran = Counter()
    lock = threading.Lock()

    def register(app: kit.Kit):
        @app.step(name="queue.work")
        def work(i):
            with lock:
                ran[i] += 1
            return i * i

        @app.workflow(name="queue.wf")
        def wf(i):
            return work(i)

        return wf

    wf = register(a)
    register(b)
    handles = [a.enqueue(wf, i, workflow_id=f"q-{i}") for i in range(12)]
    assert a.backend.workflow_get("q-0").status == Status.PENDING
    a.launch()
    b.launch()
    assert [h.result(timeout=30) for h in handles] == [i * i for i in range(12)]
    assert ran == Counter({i: 1 for i in range(12)})
    assert all(r.epoch == 1 for r in a.backend.workflow_list(WorkflowQuery(name="queue.wf")))


# -- crash recovery, replay and fencing ----------------------------------------------------------------


def _recovery_app(app: kit.Kit, calls: Counter, gate: Gate, keys: list):
    @app.step(name="rec.one")
    def one(x):
        calls["one"] += 1
        return x + 1

    @app.step(name="rec.two")
    def two(x):
        calls["two"] += 1
        return x * 2

    @app.step(name="rec.three")
    def three(x):
        calls["three"] += 1
        keys.append(kit.step_info().idempotency_key)
        gate()
        return x + 100

    @app.workflow(name="rec.wf")
    def wf(x):
        return three(two(one(x)))

    return wf


def test_recovery_after_crash_skips_completed_steps(apps):
    calls, keys = Counter(), []
    gate = apps.gate()
    a = apps(**FAST)
    wf = _recovery_app(a, calls, gate, keys)
    h = a.start(wf, 1, workflow_id="rec-1")
    assert gate.entered.wait(20)  # steps one and two are checkpointed; three is running
    crash(a)

    b = apps(**FAST)
    _recovery_app(b, calls, gate, keys)
    b.launch()
    assert b.retrieve("rec-1").result(timeout=30) == 104
    assert calls == Counter({"one": 1, "two": 1, "three": 2}), "completed steps must not run again (G2)"
    assert keys == ["rec-1:2", "rec-1:2"], "the idempotency key is stable across the recovery"
    rec = b.backend.workflow_get("rec-1")
    assert rec.status == Status.SUCCESS and rec.epoch == 2 and rec.recoveries == 1
    assert steps_of(b, "rec-1") == [(0, "rec.one", 1), (1, "rec.two", 1), (2, "rec.three", 2)]

    # The frozen process wakes up: its late checkpoint is refused and it abandons the run.
    gate.open()
    assert local_outcome(h).status is None
    assert steps_of(b, "rec-1") == [(0, "rec.one", 1), (1, "rec.two", 1), (2, "rec.three", 2)]
    assert h.result(timeout=20) == 104, "the old handle reports the surviving result (G1)"


def test_fencing_old_owner_cannot_checkpoint_after_takeover(apps):
    calls = Counter()
    gate_a, gate_b = apps.gate(), apps.gate()

    def register(app: kit.Kit):
        @app.step(name="fence.one")
        def one():
            calls["one"] += 1
            return "one"

        @app.step(name="fence.two")
        def two():
            calls["two"] += 1
            (gate_a if calls["two"] == 1 else gate_b)()
            return f"two-{calls['two']}"

        @app.step(name="fence.three")
        def three(v):
            calls["three"] += 1
            return v + "-three"

        @app.workflow(name="fence.wf")
        def wf():
            one()
            return three(two())

        return wf

    a = apps(**FAST)
    h = a.start(register(a), workflow_id="fence-1")
    assert gate_a.entered.wait(20)
    crash(a)
    b = apps(**FAST)
    register(b)
    b.launch()
    assert gate_b.entered.wait(30)  # B owns the workflow now (epoch 2) and is inside step two
    assert b.backend.workflow_get("fence-1").epoch == 2

    gate_a.open()  # A's step two returns and tries to checkpoint under epoch 1
    assert local_outcome(h).status is None, "A must abandon the run"
    assert steps_of(b, "fence-1") == [(0, "fence.one", 1)], "A's checkpoint must be rejected (G6)"
    assert calls["three"] == 0, "A must not go on to the next step"

    gate_b.open()
    assert b.retrieve("fence-1").result(timeout=30) == "two-2-three"
    rows = steps_of(b, "fence-1")
    assert rows == [(0, "fence.one", 1), (1, "fence.two", 2), (2, "fence.three", 2)]
    assert calls == Counter({"one": 1, "two": 2, "three": 1})
    assert h.result(timeout=20) == "two-2-three"


def test_graceful_close_hands_workflows_over_at_once(apps):
    gate = apps.gate()
    calls = Counter()

    def register(app: kit.Kit):
        @app.step(name="handoff.first")
        def first():
            calls["first"] += 1
            return 1

        @app.step(name="handoff.block")
        def block():
            calls["block"] += 1
            gate()
            return 2

        @app.workflow(name="handoff.wf")
        def wf():
            return first() + block()

        return wf

    a = apps(lease_seconds=60, heartbeat_seconds=1)  # a long lease: only the release can hand it over
    a.start(register(a), workflow_id="handoff-1")
    assert gate.entered.wait(20)
    a.close(grace=0.1)
    rec = apps(lease_seconds=60, heartbeat_seconds=1).backend.workflow_get("handoff-1")
    assert rec.status == Status.PENDING and rec.owner is None
    b = apps(lease_seconds=60, heartbeat_seconds=1)
    register(b)
    b.launch()
    assert b.retrieve("handoff-1").result(timeout=30) == 3
    assert calls == Counter({"first": 1, "block": 2})


def test_non_determinism_is_reported_with_both_step_names(apps):
    gate = apps.gate()
    a = apps()

    @a.step(name="nd.old_step")
    def old_step():
        return 1

    @a.step(name="nd.block")
    def block():
        gate()
        return 2

    @a.workflow(name="nd.wf")
    def wf_v1():
        return old_step() + block()

    a.start(wf_v1, workflow_id="nd-1")
    assert gate.entered.wait(20)
    a.close(grace=0.1)  # hand the in-flight workflow over

    b = apps()
    new_calls = Counter()

    @b.step(name="nd.new_step")
    def new_step():
        new_calls["new"] += 1
        return 1

    @b.workflow(name="nd.wf")
    def wf_v2():  # the code changed under the in-flight workflow
        return new_step()

    b.launch()
    with pytest.raises(kit.WorkflowError) as info:
        b.retrieve("nd-1").result(timeout=30)
    err = info.value
    assert err.type_name == "kit.errors.NonDeterminismError"
    assert "nd.old_step" in err.message and "nd.new_step" in err.message
    assert new_calls["new"] == 0
    assert b.backend.workflow_get("nd-1").status == Status.ERROR


def test_recorded_step_errors_are_raised_again_on_replay(apps):
    gate = apps.gate()
    calls = Counter()
    runs: list[list] = []

    def register(app: kit.Kit):
        @app.step(name="err.value")
        def bad_value():
            calls["value"] += 1
            raise ValueError("bad value 42")

        @app.step(name="err.key")
        def bad_key():
            calls["key"] += 1
            raise KeyError("missing-key")

        @app.step(name="err.custom")
        def bad_custom():
            calls["custom"] += 1
            raise CustomError("custom trouble")

        @app.step(name="err.block")
        def block():
            gate()

        @app.workflow(name="err.wf")
        def wf():
            seen = []
            for fn in (bad_value, bad_key, bad_custom):
                try:
                    fn()
                except ValueError as e:
                    seen.append(["ValueError", type(e) is ValueError, str(e)])
                except KeyError as e:
                    seen.append(["KeyError", type(e) is KeyError, str(e), e.args[0]])
                except LookupError as e:
                    seen.append(["LookupError", type(e).__name__, str(e)])
            runs.append(seen)
            block()
            return seen

        return wf

    a = apps()
    a.start(register(a), workflow_id="err-1")
    assert gate.entered.wait(20)
    a.close(grace=0.1)
    b = apps()
    register(b)
    b.launch()
    result = b.retrieve("err-1").result(timeout=30)
    assert calls == Counter({"value": 1, "key": 1, "custom": 1}), "recorded errors are replayed, not re-run"
    assert len(runs) == 2
    assert runs[0] == runs[1] == result
    assert runs[1] == [
        ["ValueError", True, "bad value 42"],
        ["KeyError", True, "'missing-key'", "missing-key"],
        ["LookupError", "CustomError", "custom trouble"],
    ]
    errors = [json.loads(s.error) for s in b.backend.step_list("err-1")[:3]]
    assert [e["type"] for e in errors] == ["ValueError", "KeyError", "CustomError"]


def test_child_workflow_is_reattached_after_parent_recovery(apps):
    gate = apps.gate()
    calls = Counter()

    def register(app: kit.Kit):
        @app.step(name="child.before")
        def before():
            calls["before"] += 1
            return 1

        @app.step(name="child.work")
        def work(x):
            calls["work"] += 1
            gate()
            return x * 10

        @app.workflow(name="child.wf")
        def child(x):
            return work(x)

        @app.workflow(name="child.parent")
        def parent(x):
            return before() + child(x)

        return parent

    a = apps(**FAST)
    a.start(register(a), 4, workflow_id="parent-1")
    assert gate.entered.wait(20)  # the child is running in A
    crash(a)
    b = apps(**FAST)
    register(b)
    b.launch()
    assert b.retrieve("parent-1").result(timeout=30) == 41
    children = b.backend.workflow_list(WorkflowQuery(name="child.wf"))
    assert [(c.workflow_id, c.parent_id, c.status) for c in children] == [
        ("parent-1/1", "parent-1", Status.SUCCESS)]
    assert calls["before"] == 1
    parent_steps = b.backend.step_list("parent-1")
    assert [(s.step_id, s.name, s.epoch) for s in parent_steps] == [
        (0, "child.before", 1), (1, "start:child.wf", 1)]
    assert ser.loads(parent_steps[1].output) == "parent-1/1"
    assert b.retrieve("parent-1/1").result(timeout=5) == 40


def test_child_workflow_with_explicit_id(apps):
    app = apps()

    @app.workflow(name="kid.wf")
    def kid(x):
        return x + 1

    @app.workflow(name="kid.parent")
    def parent():
        h = app.start(kid, 1, workflow_id="kid-explicit")
        return [h.workflow_id, h.result(timeout=20), kid(5)]

    assert parent() == ["kid-explicit", 2, 6]
    kids = app.backend.workflow_list(WorkflowQuery(name="kid.wf", order="created_asc"))
    assert len(kids) == 2 and kids[0].workflow_id == "kid-explicit"
    assert kids[0].parent_id == kids[1].parent_id is not None


# -- retries, errors, step info ---------------------------------------------------------------------------


def test_step_retries_then_succeeds(apps):
    app = apps()
    infos: list[kit.StepInfo] = []

    @app.step(name="retry.first")
    def first():
        return 0

    @app.step(name="retry.flaky", retries=2, initial_delay=0.01, backoff=2.0)
    def flaky():
        infos.append(kit.step_info())
        if len(infos) < 3:
            raise ConnectionError(f"flaky {len(infos)}")
        return "ok"

    @app.workflow(name="retry.wf")
    def wf():
        assert kit.step_info() is None  # workflow code outside a step
        first()
        return flaky()

    assert kit.step_info() is None
    assert app.start(wf, workflow_id="retry-1").result(timeout=20) == "ok"
    assert [i.attempt for i in infos] == [1, 2, 3]
    assert {(i.workflow_id, i.step_id, i.name) for i in infos} == {("retry-1", 1, "retry.flaky")}
    assert {i.idempotency_key for i in infos} == {"retry-1:1"}
    rec = app.backend.step_list("retry-1")[1]
    assert rec.attempts == 3 and rec.output == '"ok"' and rec.error is None


def test_step_failing_every_attempt_fails_the_workflow(apps):
    app = apps()
    calls = Counter()

    @app.step(name="retry.never", retries=1, initial_delay=0.01)
    def never_works():
        calls["never"] += 1
        raise ValueError("always bad")

    @app.workflow(name="retry.fail")
    def wf():
        return never_works()

    h = app.start(wf, workflow_id="fail-1")
    with pytest.raises(kit.WorkflowError) as info:
        h.result(timeout=20)
    err = info.value
    assert (err.workflow_id, err.type_name, err.message) == ("fail-1", "ValueError", "always bad")
    assert "Traceback" in err.traceback and "never_works" in err.traceback
    assert "ValueError: always bad" in err.traceback
    assert calls["never"] == 2
    assert h.status() == Status.ERROR
    [step] = app.backend.step_list("fail-1")
    assert step.output is None and step.attempts == 2
    assert json.loads(step.error)["type"] == "ValueError"
    assert [r.workflow_id for r in app.backend.workflow_list(WorkflowQuery(error_contains="always bad"))] == ["fail-1"]
    # Retrieving it later raises the same error.
    with pytest.raises(kit.WorkflowError, match="always bad"):
        app.retrieve("fail-1").result(timeout=5)


def test_step_called_inside_a_step_is_part_of_the_outer_step(apps):
    app = apps()
    calls = Counter()
    seen: list = []

    @app.step(name="nest.inner")
    def inner(x):
        calls["inner"] += 1
        info = kit.step_info()
        seen.append(info.name if info else None)
        return x + 1

    @app.step(name="nest.outer")
    def outer(x):
        calls["outer"] += 1
        return inner(x) * 10

    @app.workflow(name="nest.wf")
    def wf():
        return outer(1)

    assert app.start(wf, workflow_id="nest-1").result(timeout=20) == 20
    assert steps_of(app, "nest-1") == [(0, "nest.outer", 1)]
    assert calls == Counter({"outer": 1, "inner": 1})
    assert seen == ["nest.outer"], "inside the outer step, step_info() is the outer step's"
    assert inner(5) == 6  # outside any workflow, a step is a plain call
    assert seen == ["nest.outer", None]


def test_workflow_exceptions_keep_type_and_message(apps):
    app = apps()

    @app.workflow(name="raise.builtin")
    def raises_builtin():
        raise KeyError("nope")

    @app.workflow(name="raise.custom")
    def raises_custom():
        raise CustomError("custom failure")

    with pytest.raises(kit.WorkflowError) as info:
        raises_builtin()
    assert info.value.type_name == "KeyError" and info.value.message == "'nope'"
    with pytest.raises(kit.WorkflowError) as info:
        app.start(raises_custom).result(timeout=20)
    assert info.value.type_name.endswith(".CustomError") and info.value.message == "custom failure"


def test_backoff_delays_and_step_option_validation(apps):
    opts = StepOptions(retries=5, backoff=3.0, initial_delay=0.5, max_delay=4.0)
    assert [opts.delay(n) for n in (1, 2, 3, 4)] == [0.5, 1.5, 4.0, 4.0]
    app = apps()
    with pytest.raises(ConfigError):
        app.step(retries=-1)
    with pytest.raises(ConfigError):
        app.step(retries=True)
    with pytest.raises(ConfigError):
        app.step(backoff=0.5)
    with pytest.raises(ConfigError):
        app.transaction(initial_delay=-1)


# -- serialization through workflows ---------------------------------------------------------------------


def test_json_edge_cases_round_trip_through_a_workflow(apps):
    app = apps()

    @app.step(name="json.echo")
    def echo(when, amount, ident, blob):
        return Receipt(ident, amount, when, blob, frozenset({"a", "b"}))

    @app.workflow(name="json.wf")
    def wf(when, amount, ident, *, blob):
        receipt = echo(when, amount, ident, blob)
        return {"receipt": receipt, "by_id": {ident: amount}, "when": when, "tuple": (1, 2)}

    when = datetime(2024, 2, 29, 23, 59, 59, 123456, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    amount = Decimal("1234.5600")
    ident = uuid.UUID("12345678-1234-5678-1234-567812345678")
    blob = b"\x00\xff binary \n"
    out = app.start(wf, when, amount, ident, blob=blob, workflow_id="json-1").result(timeout=20)
    receipt = out["receipt"]
    assert isinstance(receipt, Receipt)
    assert receipt == Receipt(ident, amount, when, blob, frozenset({"a", "b"}))
    assert str(receipt.amount) == "1234.5600"
    assert receipt.at.utcoffset() == timedelta(hours=5, minutes=30)
    assert isinstance(receipt.blob, bytes)
    assert out["by_id"] == {ident: amount} and isinstance(next(iter(out["by_id"])), uuid.UUID)
    assert out["when"] == when and out["tuple"] == [1, 2]
    args, kwargs = ser.decode_args(app.backend.workflow_get("json-1").inputs)
    assert args == (when, amount, ident) and kwargs == {"blob": blob}


def test_non_serializable_inputs_are_rejected_before_anything_is_written(apps):
    app = apps()

    @app.workflow(name="ser.wf")
    def wf(*args, **kwargs):
        return 1

    with pytest.raises(kit.SerializationError):
        app.start(wf, object())
    with pytest.raises(kit.SerializationError):
        app.start(wf, 1, workflow_id="ser-1", lock=threading.Lock())
    with pytest.raises(kit.SerializationError):
        app.start(wf, float("nan"), workflow_id="ser-2")
    with pytest.raises(kit.SerializationError):
        app.enqueue(wf, {1: object()}, workflow_id="ser-3")
    with pytest.raises(kit.SerializationError):
        wf(lambda: 1)
    assert app.backend.workflow_list(WorkflowQuery()) == []
    assert app.backend.workflow_get("ser-1") is None
    # The id is still free afterwards.
    assert app.start(wf, 1, workflow_id="ser-1").result(timeout=20) == 1


def test_non_serializable_step_output_is_a_recorded_step_error(apps):
    app = apps()
    calls = Counter()

    @app.step(name="ser.out", retries=3, initial_delay=0.01)
    def unstorable():
        calls["out"] += 1
        return threading.Lock()

    @app.workflow(name="ser.step_wf")
    def wf():
        return unstorable()

    @app.workflow(name="ser.catching_wf")
    def catching():
        try:
            unstorable()
        except kit.SerializationError as e:
            return f"caught: {type(e).__name__}"
        return "not raised"

    @app.workflow(name="ser.result_wf")
    def bad_result():
        return object()

    with pytest.raises(kit.WorkflowError) as info:
        app.start(wf, workflow_id="ser-out").result(timeout=20)
    assert info.value.type_name == "kit.errors.SerializationError"
    assert calls["out"] == 1, "a serialization failure is not retried"
    [step] = app.backend.step_list("ser-out")
    assert step.output is None and "SerializationError" in step.error
    assert app.start(catching).result(timeout=20) == "caught: SerializationError"
    with pytest.raises(kit.WorkflowError) as info:
        app.start(bad_result).result(timeout=20)
    assert info.value.type_name == "kit.errors.SerializationError"


# -- transactional steps ---------------------------------------------------------------------------------


def _ledger(apps: Apps, app: kit.Kit) -> sql.Composed:
    app.backend  # noqa: B018 - creates the schema
    table = apps.table("ledger")
    apps.sql(sql.SQL("CREATE TABLE IF NOT EXISTS {} (k text NOT NULL, run integer NOT NULL)").format(table))
    return table


def _ledger_rows(apps: Apps, table) -> list[tuple]:
    return [tuple(r) for r in apps.sql(sql.SQL("SELECT k, run FROM {} ORDER BY k, run").format(table))]


def test_transactional_step_commits_with_its_checkpoint(apps):
    app = apps()
    table = _ledger(apps, app)

    @app.transaction(name="tx.write")
    def write(conn, k):
        conn.execute(sql.SQL("INSERT INTO {} (k, run) VALUES (%s, 1)").format(table), (k,))
        return f"wrote {k}"

    @app.workflow(name="tx.wf")
    def wf(k):
        return write(k)

    assert app.start(wf, "a", workflow_id="tx-1").result(timeout=20) == "wrote a"
    assert _ledger_rows(apps, table) == [("a", 1)]
    assert steps_of(app, "tx-1") == [(0, "tx.write", 1)]
    with pytest.raises(UsageError):
        write("outside a workflow")


def test_transactional_step_that_raises_writes_nothing(apps):
    app = apps()
    table = _ledger(apps, app)

    @app.transaction(name="tx.fail")
    def write_then_fail(conn, k):
        conn.execute(sql.SQL("INSERT INTO {} (k, run) VALUES (%s, 1)").format(table), (k,))
        raise ValueError("rollback please")

    @app.workflow(name="tx.fail_wf")
    def wf(k):
        return write_then_fail(k)

    with pytest.raises(kit.WorkflowError) as info:
        app.start(wf, "b", workflow_id="tx-2").result(timeout=20)
    assert info.value.type_name == "ValueError"
    assert _ledger_rows(apps, table) == []
    [step] = app.backend.step_list("tx-2")
    assert step.output is None and json.loads(step.error)["message"] == "rollback please"


def test_transactional_step_retry_commits_only_the_successful_attempt(apps):
    app = apps()
    table = _ledger(apps, app)
    attempts = Counter()

    @app.transaction(name="tx.retry", retries=2, initial_delay=0.01)
    def write(conn, k):
        attempts["n"] += 1
        conn.execute(sql.SQL("INSERT INTO {} (k, run) VALUES (%s, %s)").format(table), (k, attempts["n"]))
        if attempts["n"] < 3:
            raise ConnectionResetError("payment provider hiccup")
        return attempts["n"]

    @app.workflow(name="tx.retry_wf")
    def wf(k):
        return write(k)

    assert app.start(wf, "r", workflow_id="tx-retry").result(timeout=20) == 3
    assert _ledger_rows(apps, table) == [("r", 3)], "failed attempts' writes roll back"
    [step] = app.backend.step_list("tx-retry")
    assert step.attempts == 3 and step.output == "3"


def test_transactional_step_fenced_before_checkpoint_writes_nothing(apps):
    app = apps()
    table = _ledger(apps, app)
    taken: list[str] = []

    @app.transaction(name="tx.fenced")
    def write(conn, k):
        conn.execute(sql.SQL("INSERT INTO {} (k, run) VALUES (%s, 1)").format(table), (k,))
        # Another worker takes the workflow over between the user's write and the checkpoint.
        info = kit.step_info()
        if app.backend.workflow_release(info.workflow_id, 1):
            claims = app.backend.workflow_claim(ClaimRequest("intruder", ["tx.fenced_wf"], 10, 60))
            taken.extend(c.workflow_id for c in claims)
        return k

    @app.workflow(name="tx.fenced_wf")
    def wf(k):
        return write(k)

    h = app.start(wf, "c", workflow_id="tx-3")
    assert local_outcome(h).status is None, "the fenced run is abandoned"
    assert taken == ["tx-3"]
    assert _ledger_rows(apps, table) == [], "the user's write must roll back with the refused checkpoint (G4)"
    assert app.backend.step_list("tx-3") == []
    rec = app.backend.workflow_get("tx-3")
    assert (rec.status, rec.owner, rec.epoch) == (Status.RUNNING, "intruder", 2)


def test_transactional_step_interrupted_by_crash_commits_exactly_once(apps):
    gate = apps.gate()
    invocations = Counter()
    a = apps(**FAST)
    table = _ledger(apps, a)

    def register(app: kit.Kit):
        @app.transaction(name="tx.crash")
        def write(conn, k):
            invocations["n"] += 1
            run = invocations["n"]
            conn.execute(sql.SQL("INSERT INTO {} (k, run) VALUES (%s, %s)").format(table), (k, run))
            if k == "second":
                gate()  # A stops here, its write uncommitted
            return run

        @app.workflow(name="tx.crash_wf")
        def wf():
            return [write("first"), write("second")]

        return wf

    h = a.start(register(a), workflow_id="tx-4")
    assert gate.entered.wait(20)
    crash(a)
    b = apps(**FAST)
    register(b)
    b.launch()
    assert b.retrieve("tx-4").result(timeout=30) == [1, 3]
    gate.open()  # A resumes: its checkpoint is fenced and its write rolls back
    assert local_outcome(h).status is None
    assert _ledger_rows(apps, table) == [("first", 1), ("second", 3)]
    assert steps_of(b, "tx-4") == [(0, "tx.crash", 1), (1, "tx.crash", 2)]
