"""OpenTelemetry traces and metrics for kit (extra ``[otel]``).

``kit.integrations.otel.instrument(app)`` installs a :mod:`kit.telemetry` hook for every kit app in the
process, using the global (or the given) tracer and meter providers:

* a span ``workflow <name>`` per run of a workflow in this process, with ``kit.workflow.name``, ``.id``,
  ``.epoch``, ``.queue``, ``.status`` (SUCCESS, ERROR, CANCELLED, or ABANDONED when the run stopped
  without recording an end: lease lost, crash, handed over), ``kit.workflow.recovery`` (claimed from an
  expired lease) and ``kit.workflow.replay`` / ``kit.workflow.checkpoints`` (the run replays that many
  recorded steps before running new ones); a failed workflow's span has status ERROR and
  ``error.type``;
* a span ``step <name>`` per step that runs (replayed steps run nothing and get none), a child of its
  workflow's span, with ``kit.step.name``, ``.id``, ``.attempt`` (the last attempt), ``.status``
  (SUCCESS, ERROR, ABANDONED), the workflow's id and epoch, an event per failed attempt and the
  recorded exception;
* trace context: a workflow submitted (``app.start``, ``enqueue``, ``Client.enqueue``, a child) while a
  span is current stores that context with its inputs, so the run's span, on whichever worker and after
  any recovery, is a child of the submitter's span: one trace from the web request to the last step;
* the metrics of :mod:`kit.integrations.metrics` (runs started/finished/failed by workflow and queue,
  step duration, claim latency, lease takeovers, queue depth of the apps passed to :func:`instrument`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from kit import serialization as ser
from kit import telemetry
from kit.integrations import missing_extra
from kit.integrations.metrics import (
    DURATION_BUCKETS,
    METRICS,
    Metric,
    MetricsHook,
    queue_depths,
    queue_label,
    step_status,
)

try:
    from opentelemetry import metrics as otel_metrics
    from opentelemetry import propagate, trace
    from opentelemetry.metrics import CallbackOptions, Observation
    from opentelemetry.trace import Span, StatusCode
except ModuleNotFoundError as exc:  # the extra is not installed
    raise missing_extra("otel", "OpenTelemetry") from exc

__all__ = ["Instrumentation", "instrument"]

_SCOPE = "kit"


def _version() -> str:
    import kit

    return kit.__version__


class Instrumentation(MetricsHook):
    """The installed OpenTelemetry hook; :meth:`uninstrument` removes it."""

    def __init__(self, apps: Iterable[Any] = (), *, tracer_provider: Any = None, meter_provider: Any = None) -> None:
        self._apps = list(apps)
        self.tracer = trace.get_tracer(_SCOPE, _version(), tracer_provider)
        meter = otel_metrics.get_meter(_SCOPE, _version(), meter_provider)
        self._instruments: dict[str, Any] = {}
        for m in METRICS:
            if m.kind == "counter":
                self._instruments[m.name] = meter.create_counter(m.name, unit=m.unit, description=m.description)
            elif m.kind == "histogram":
                self._instruments[m.name] = meter.create_histogram(
                    m.name, unit=m.unit, description=m.description,
                    explicit_bucket_boundaries_advisory=DURATION_BUCKETS)
            else:
                meter.create_observable_gauge(m.name, callbacks=[self._queue_depth], unit=m.unit,
                                              description=m.description)

    def observe_queues(self, app: Any) -> None:
        """Report the queue depth of ``app``'s database too (read when the metric is collected)."""
        self._apps.append(app)

    def uninstrument(self) -> None:
        telemetry.uninstall(self)

    # -- metrics ------------------------------------------------------------------------------------------
    def add(self, metric: Metric, value: float, labels: dict[str, str]) -> None:
        self._instruments[metric.name].add(value, labels)

    def observe(self, metric: Metric, value: float, labels: dict[str, str]) -> None:
        self._instruments[metric.name].record(value, labels)

    def _queue_depth(self, options: CallbackOptions) -> Iterable[Observation]:
        seen: set[str] = set()
        for app in self._apps:
            for queue, depth in queue_depths(app.services.opened_backend):  # never opens a database
                if queue not in seen:
                    seen.add(queue)
                    yield Observation(depth, {"queue": queue})

    # -- traces -----------------------------------------------------------------------------------------------
    def carrier(self) -> dict[str, str] | None:
        found: dict[str, str] = {}
        propagate.inject(found)
        return found or None

    def claimed(self, claims: Sequence[Any], ctxs: Sequence[Any], seconds: float) -> None:
        super().claimed(claims, ctxs, seconds)
        for claim, ctx in zip(claims, ctxs, strict=True):
            ctx.trace = ser.decode_trace(claim.inputs)

    def workflow(self, ctx: Any, run: Callable[[], Any]) -> Any:
        parent = propagate.extract(ctx.trace) if ctx.trace else None
        attributes = {
            "kit.workflow.name": ctx.name, "kit.workflow.id": ctx.workflow_id, "kit.workflow.epoch": ctx.epoch,
            "kit.workflow.queue": queue_label(ctx.queue), "kit.workflow.recovery": bool(ctx.recovered),
            "kit.workflow.replay": bool(ctx.steps), "kit.workflow.checkpoints": len(ctx.steps),
        }
        with self.tracer.start_as_current_span(f"workflow {ctx.name}", context=parent, attributes=attributes) as span:
            outcome = super().workflow(ctx, run)
            status = outcome.status
            span.set_attribute("kit.workflow.status", status.value if status is not None else "ABANDONED")
            if status is not None and status.value == "ERROR":
                kind, message = _error_of(outcome.error)
                span.set_attribute("error.type", kind)
                span.add_event("exception", {"exception.type": kind, "exception.message": message})
                span.set_status(StatusCode.ERROR, f"{kind}: {message}")
            return outcome

    def step(self, ctx: Any, step_id: int, name: str, fn: Callable[..., Any],
             run: Callable[[Callable[..., Any]], Any]) -> Any:
        with self.tracer.start_as_current_span(f"step {name}", attributes=_step_attributes(ctx, step_id, name),
                                               record_exception=False, set_status_on_exception=False) as span:
            last = [0]

            def body(*args: Any, **kwargs: Any) -> Any:
                last[0] = _attempt(ctx, last[0])
                try:
                    return fn(*args, **kwargs)
                except Exception as exc:
                    _attempt_failed(span, last[0], exc)
                    raise

            try:
                value = super().step(ctx, step_id, name, body, run)
            except BaseException as exc:
                _step_failed(span, exc)
                raise
            finally:
                span.set_attribute("kit.step.attempt", last[0])
            span.set_attribute("kit.step.status", "SUCCESS")
            return value

    async def step_async(self, ctx: Any, step_id: int, name: str, fn: Callable[..., Any],
                         run: Callable[[Callable[..., Any]], Any]) -> Any:
        with self.tracer.start_as_current_span(f"step {name}", attributes=_step_attributes(ctx, step_id, name),
                                               record_exception=False, set_status_on_exception=False) as span:
            last = [0]

            async def body(*args: Any, **kwargs: Any) -> Any:
                last[0] = _attempt(ctx, last[0])
                try:
                    return await fn(*args, **kwargs)
                except Exception as exc:
                    _attempt_failed(span, last[0], exc)
                    raise

            try:
                value = await super().step_async(ctx, step_id, name, body, run)
            except BaseException as exc:
                _step_failed(span, exc)
                raise
            finally:
                span.set_attribute("kit.step.attempt", last[0])
            span.set_attribute("kit.step.status", "SUCCESS")
            return value


def _step_attributes(ctx: Any, step_id: int, name: str) -> dict[str, Any]:
    return {"kit.step.name": name, "kit.step.id": step_id, "kit.workflow.id": ctx.workflow_id,
            "kit.workflow.name": ctx.name, "kit.workflow.epoch": ctx.epoch}


def _attempt(ctx: Any, previous: int) -> int:
    """The attempt now starting, as kit counts it (``kit.step_info().attempt``)."""
    info = ctx.step
    return info.attempt if info is not None else previous + 1


def _attempt_failed(span: Span, attempt: int, exc: Exception) -> None:
    span.add_event("kit.step.attempt_failed", {"kit.step.attempt": attempt, "exception.type": type(exc).__qualname__,
                                                "exception.message": str(exc)})


def _step_failed(span: Span, exc: BaseException) -> None:
    status = step_status(exc)
    span.set_attribute("kit.step.status", status)
    if status == "ERROR":
        span.record_exception(exc)
        span.set_attribute("error.type", type(exc).__qualname__)
        span.set_status(StatusCode.ERROR, f"{type(exc).__qualname__}: {exc}")
    else:
        span.set_attribute("kit.step.abandoned_by", type(exc).__qualname__)


def _error_of(error: str | None) -> tuple[str, str]:
    """(type, message) of a recorded error (JSON from kit.serialization.exception_to_record)."""
    try:
        data = json.loads(error or "")
        return str(data.get("type", "Error")), str(data.get("message", ""))
    except (ValueError, AttributeError):
        return "Error", error or ""


def instrument(*apps: Any, tracer_provider: Any = None, meter_provider: Any = None) -> Instrumentation:
    """Trace and measure every kit workflow run and step in this process with OpenTelemetry (the global
    providers unless given); ``apps``: whose queue depths ``kit.queue.depth`` reports. Returns the
    installed :class:`Instrumentation` (``.uninstrument()`` removes it)."""
    inst = Instrumentation(apps, tracer_provider=tracer_provider, meter_provider=meter_provider)
    telemetry.install(inst)
    return inst
