"""OpenTelemetry integration: spans per workflow run and step, trace context carried with enqueued
workflows to the worker that runs them, recovery and replay marked, and kit's metrics; read with the SDK's
in-memory exporters (no collector)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from test_engine import apps, crash, local_outcome  # noqa: F401 - fixture

import kit
from kit import telemetry
from kit.integrations import otel
from kit.testing import harness

REPO = Path(__file__).resolve().parent.parent
FAST = {"lease_seconds": 5.0, "heartbeat_seconds": 0.5, "poll_seconds": 0.1}


class Telemetry:
    """An SDK tracer and meter provider with in-memory exporters, and kit instrumented with them."""

    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self.tracer = self.tracer_provider.get_tracer("test")
        self.inst: otel.Instrumentation | None = None

    def instrument(self, *apps_: kit.Kit) -> otel.Instrumentation:
        self.inst = otel.instrument(*apps_, tracer_provider=self.tracer_provider, meter_provider=self.meter_provider)
        return self.inst

    def finished(self, prefix: str = "") -> list:
        return [s for s in self.spans.get_finished_spans() if s.name.startswith(prefix)]

    def workflow_spans(self, workflow_id: str) -> list:
        return [s for s in self.finished("workflow ") if s.attributes["kit.workflow.id"] == workflow_id]

    def step_spans(self, workflow_id: str) -> list:
        return sorted((s for s in self.finished("step ") if s.attributes["kit.workflow.id"] == workflow_id),
                      key=lambda s: s.start_time)

    def points(self, name: str) -> list[tuple[dict, float]]:
        """(attributes, value) of a metric's data points (histograms: their count)."""
        data = self.reader.get_metrics_data()
        out = []
        for rm in data.resource_metrics if data else ():
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    if m.name == name:
                        for p in m.data.data_points:
                            out.append((dict(p.attributes), getattr(p, "count", None) or getattr(p, "value", 0)))
        return out

    def value(self, name: str, **labels: str) -> float:
        return sum(v for attrs, v in self.points(name) if all(attrs.get(k) == want for k, want in labels.items()))

    def close(self) -> None:
        if self.inst is not None:
            self.inst.uninstrument()
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


@pytest.fixture
def tel():
    t = Telemetry()
    yield t
    t.close()
    assert telemetry.hook is None, "a test left a hook installed"


def wid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_enqueued_workflow_joins_the_callers_trace_with_a_span_per_step(apps, tel):  # noqa: F811
    app = apps(**FAST)
    tel.instrument(app)
    calls = {"flaky": 0}

    @app.step()
    def price(sku: str) -> int:
        return {"apple": 120, "pear": 95}[sku]

    @app.step(retries=1, initial_delay=0.01)
    def flaky() -> str:
        calls["flaky"] += 1
        if calls["flaky"] == 1:
            raise ConnectionError("provider hiccup")
        return "ok"

    @app.workflow(name="otel.quote")
    def quote(skus: list[str]) -> int:
        flaky()
        return sum(price(s) for s in skus)

    app.launch()
    client = kit.Client(apps.url, schema=apps.schema)
    apps.apps.append(client)
    with tel.tracer.start_as_current_span("POST /quote") as request:
        h = client.enqueue("otel.quote", ["apple", "pear"], workflow_id=wid("quote"))
    assert h.result(timeout=30) == 215

    (wf,) = tel.workflow_spans(h.workflow_id)
    assert wf.context.trace_id == request.context.trace_id  # one trace from the request to the worker
    assert wf.parent.span_id == request.context.span_id
    assert wf.name == "workflow otel.quote"
    assert wf.attributes["kit.workflow.status"] == "SUCCESS"
    assert wf.attributes["kit.workflow.epoch"] == 1
    assert wf.attributes["kit.workflow.recovery"] is False and wf.attributes["kit.workflow.replay"] is False
    steps = tel.step_spans(h.workflow_id)
    assert [s.attributes["kit.step.name"].rsplit(".", 1)[-1] for s in steps] == ["flaky", "price", "price"]
    assert all(s.parent.span_id == wf.context.span_id for s in steps)
    flaky_span = steps[0]
    assert flaky_span.attributes["kit.step.attempt"] == 2
    assert flaky_span.attributes["kit.step.status"] == "SUCCESS"
    assert [e.name for e in flaky_span.events] == ["kit.step.attempt_failed"]
    assert flaky_span.events[0].attributes["exception.type"] == "ConnectionError"
    assert [s.attributes["kit.step.id"] for s in steps] == [0, 1, 2]


def test_failed_step_and_workflow_spans_and_child_workflows(apps, tel):  # noqa: F811
    app = apps(**FAST)
    tel.instrument(app)

    @app.step()
    def boom() -> None:
        raise ValueError("address incomplete")

    @app.workflow(name="otel.child")
    def child(n: int) -> int:
        return n + 1

    @app.workflow(name="otel.parent")
    def parent() -> int:
        got = app.start(child, 1).result()
        boom()
        return got

    with tel.tracer.start_as_current_span("script") as root:
        h = app.start(parent, workflow_id=wid("parent"))
        with pytest.raises(kit.WorkflowError):
            h.result(timeout=30)
    (wf,) = tel.workflow_spans(h.workflow_id)
    assert wf.parent.span_id == root.context.span_id  # app.start: the local run joins the caller's trace
    assert wf.status.status_code == StatusCode.ERROR
    assert wf.attributes["kit.workflow.status"] == "ERROR" and wf.attributes["error.type"] == "ValueError"
    start_step, boom_step = tel.step_spans(h.workflow_id)
    assert start_step.name == "step start:otel.child"
    assert boom_step.attributes["kit.step.status"] == "ERROR"
    assert boom_step.status.status_code == StatusCode.ERROR
    assert [e.name for e in boom_step.events][-1] == "exception"
    (child_span,) = tel.workflow_spans(f"{h.workflow_id}/0")
    assert child_span.parent.span_id == start_step.context.span_id  # started inside the start: step
    assert child_span.context.trace_id == root.context.trace_id


def test_recovery_and_replay_are_marked_and_stay_in_the_trace(apps, tel):  # noqa: F811
    """A process freezes in step 1 (its heartbeat stops); another worker takes the workflow over from the
    expired lease, replays step 0 and runs step 1: its run's span says recovery and replay, and both runs
    are in the trace of whoever started the workflow."""
    gate = apps.gate()
    fast = {**FAST, "lease_seconds": 2.0}

    def register(app: kit.Kit) -> None:
        @app.step(name="otel.one")
        def one() -> int:
            return 1

        @app.step(name="otel.two")
        def two() -> int:
            gate()
            return 2

        @app.workflow(name="otel.recovered")
        def flow() -> int:
            return one() + two()

    a = apps(**fast)
    register(a)
    tel.instrument(a)
    with tel.tracer.start_as_current_span("caller") as caller:
        handle = a.start("otel.recovered", workflow_id=wid("recovered"))
    assert gate.entered.wait(20)
    crash(a)
    b = apps(**fast)
    register(b)
    b.launch()
    assert b.retrieve(handle.workflow_id).result(timeout=30) == 3
    gate.open()
    assert local_outcome(handle).status is None  # the frozen run wakes up fenced and abandons

    first, second = sorted(tel.workflow_spans(handle.workflow_id), key=lambda s: s.attributes["kit.workflow.epoch"])
    assert first.attributes["kit.workflow.status"] == "ABANDONED" and first.attributes["kit.workflow.recovery"] is False
    assert second.attributes["kit.workflow.epoch"] == 2 and second.attributes["kit.workflow.status"] == "SUCCESS"
    assert second.attributes["kit.workflow.recovery"] is True
    assert second.attributes["kit.workflow.replay"] is True and second.attributes["kit.workflow.checkpoints"] == 1
    assert first.context.trace_id == second.context.trace_id == caller.context.trace_id
    # Step 0 ran once (replayed by the second run, which gives it no span); step 1 ran in both runs.
    steps = [(s.attributes["kit.step.id"], s.attributes["kit.workflow.epoch"], s.attributes["kit.step.status"])
             for s in tel.step_spans(handle.workflow_id)]
    assert sorted(steps) == [(0, 1, "SUCCESS"), (1, 1, "ABANDONED"), (1, 2, "SUCCESS")]
    assert tel.value("kit.lease.takeovers", workflow="otel.recovered") == 1
    assert tel.value("kit.workflow.started", workflow="otel.recovered") == 2
    assert tel.value("kit.workflow.finished", workflow="otel.recovered", status="SUCCESS") == 1
    assert tel.value("kit.step.duration", step="otel.two", status="ABANDONED") == 1


def test_a_released_run_replays_without_being_a_recovery(pg_url, tel):
    """kit.testing's crash point: the dead run's lease is released at once, not expired; the next run
    replays the checkpoints but is not a takeover."""
    app = kit.Kit(database_url=pg_url)
    tel.instrument(app)

    @app.step()
    def one() -> int:
        return 1

    @app.step()
    def two() -> int:
        return 2

    @app.workflow(name="otel.released")
    def flow() -> int:
        return one() + two()

    with harness(app) as h:
        h.crash_at(flow, 1)
        handle = app.start(flow)
        assert h.result(handle) == 3
        first, second = sorted(tel.workflow_spans(handle.workflow_id), key=lambda s: s.start_time)
        assert first.attributes["kit.workflow.status"] == "ABANDONED"
        assert second.attributes["kit.workflow.replay"] is True and second.attributes["kit.workflow.recovery"] is False
        assert tel.value("kit.lease.takeovers") == 0


def test_metrics_by_workflow_queue_and_status(apps, tel):  # noqa: F811
    app = apps(**FAST)
    tel.instrument(app)
    mail = app.queue("otel-mail", concurrency=2)

    @app.step(name="otel.send")
    def send(n: int) -> int:
        if n < 0:
            raise RuntimeError("bad address")
        return n

    @app.workflow(name="otel.mail")
    def mailer(n: int) -> int:
        return send(n)

    app.launch()
    handles = [mail.enqueue(mailer, n) for n in (1, 2, -1)]
    for h in handles[:2]:
        assert h.result(timeout=30) in (1, 2)
    with pytest.raises(kit.WorkflowError):
        handles[2].result(timeout=30)
    assert tel.value("kit.workflow.started", workflow="otel.mail", queue="otel-mail") == 3
    assert tel.value("kit.workflow.finished", workflow="otel.mail", queue="otel-mail", status="SUCCESS") == 2
    assert tel.value("kit.workflow.finished", workflow="otel.mail", queue="otel-mail", status="ERROR") == 1
    assert tel.value("kit.workflow.failed", workflow="otel.mail", queue="otel-mail") == 1
    assert tel.value("kit.step.duration", step="otel.send", status="SUCCESS") == 2
    assert tel.value("kit.step.duration", step="otel.send", status="ERROR") == 1
    assert tel.value("kit.claim.duration") >= 1  # claim rounds that returned work

    app.close()  # no worker now: enqueued work waits, and the gauge reads it from the database
    client = kit.Client(apps.url, schema=apps.schema)
    apps.apps.append(client)
    client.enqueue("otel.mail", 5)  # the default queue
    for _ in range(3):
        client.enqueue("otel.mail", 6, queue="otel-mail")
    tel.inst.observe_queues(client)
    depths = {a["queue"]: v for a, v in tel.points("kit.queue.depth")}
    assert depths.get("otel-mail") == 3 and depths.get("default") == 1


def test_async_steps_get_spans(apps, tel):  # noqa: F811
    app = apps(**FAST)
    tel.instrument(app)

    @app.step()
    async def fetch(n: int) -> int:
        await asyncio.sleep(0.01)
        return n * 10

    @app.workflow(name="otel.async")
    async def gather() -> list[int]:
        return list(await asyncio.gather(fetch(1), fetch(2)))

    h = app.start(gather, workflow_id=wid("async"))
    assert h.result(timeout=30) == [10, 20]
    (wf,) = tel.workflow_spans(h.workflow_id)
    steps = tel.step_spans(h.workflow_id)
    assert len(steps) == 2 and all(s.parent.span_id == wf.context.span_id for s in steps)
    assert {s.attributes["kit.step.status"] for s in steps} == {"SUCCESS"}


def test_no_trace_context_stored_without_instrumentation_or_span(apps, tel):  # noqa: F811
    app = kit.Client(apps.url, schema=apps.schema)  # enqueues by name; nothing runs them here
    apps.apps.append(app)
    plain = app.enqueue("otel.none", workflow_id=wid("plain"))
    assert telemetry.hook is None
    assert "trace" not in json.loads(app.backend.workflow_get(plain.workflow_id).inputs)
    tel.instrument(app)
    no_span = app.enqueue("otel.none", workflow_id=wid("nospan"))  # instrumented, but no span is current
    assert "trace" not in json.loads(app.backend.workflow_get(no_span.workflow_id).inputs)
    with tel.tracer.start_as_current_span("caller") as caller:
        traced = app.enqueue("otel.none", 1, workflow_id=wid("traced"))
    stored = json.loads(app.backend.workflow_get(traced.workflow_id).inputs)
    assert stored["args"] == [1] and f"{caller.context.trace_id:032x}" in stored["trace"]["traceparent"]
    tel.inst.uninstrument()
    assert telemetry.hook is None


def test_missing_extra_is_a_config_error_naming_it():
    code = textwrap.dedent("""
        import sys
        sys.modules["opentelemetry"] = None  # as if the extra were not installed
        import kit
        try:
            import kit.integrations.otel
        except kit.ConfigError as exc:
            print(exc)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert "OpenTelemetry is not installed: pip install 'durable-kit[otel]'" in out.stdout, out.stderr
