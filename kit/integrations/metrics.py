"""The metrics kit records, defined once for every exporter (OpenTelemetry, Prometheus).

:data:`METRICS` names each metric the OpenTelemetry way (``kit.workflow.started``, unit ``s``); the
Prometheus endpoint exposes the same ones under the names OpenTelemetry's Prometheus conventions give
them (``kit_workflow_started_total``, ``kit_step_duration_seconds``). :class:`MetricsHook` turns the
:mod:`kit.telemetry` hook's events into measurements; an exporter subclasses it and implements
:meth:`~MetricsHook.add` and :meth:`~MetricsHook.observe` (and reads :func:`queue_depths` at collection).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from kit.errors import KitError, LeaseLostError, StorageError

log = logging.getLogger("kit.integrations")


@dataclass(frozen=True)
class Metric:
    """One metric: OpenTelemetry name and unit, kind, label names, description."""

    name: str
    kind: str  # "counter" | "histogram" | "gauge"
    unit: str
    labels: tuple[str, ...]
    description: str

    @property
    def prometheus_name(self) -> str:
        """The name without the ``_total`` a Prometheus counter adds (prometheus_client adds it)."""
        base = self.name.replace(".", "_")
        return base + "_seconds" if self.unit == "s" else base


WORKFLOW_STARTED = Metric("kit.workflow.started", "counter", "{run}", ("workflow", "queue"),
                          "workflow runs started in this process (a recovery or a resumed run counts again)")
WORKFLOW_FINISHED = Metric("kit.workflow.finished", "counter", "{workflow}", ("workflow", "queue", "status"),
                           "workflow runs that recorded their end here, by status (SUCCESS, ERROR, CANCELLED)")
WORKFLOW_FAILED = Metric("kit.workflow.failed", "counter", "{workflow}", ("workflow", "queue"),
                         "workflow runs that ended in ERROR here")
STEP_DURATION = Metric("kit.step.duration", "histogram", "s", ("step", "status"),
                       "from a step's first attempt to its recorded outcome (retries and their waits included); "
                       "status SUCCESS, ERROR or ABANDONED (nothing recorded: lease lost, crash, storage failure)")
CLAIM_DURATION = Metric("kit.claim.duration", "histogram", "s", (),
                        "claim latency: one claim round of a worker that returned work (all its queues, one or "
                        "more database round trips)")
LEASE_TAKEOVERS = Metric("kit.lease.takeovers", "counter", "{workflow}", ("workflow",),
                         "workflows this worker claimed from an expired lease (their previous run died or was cut off)")
QUEUE_DEPTH = Metric("kit.queue.depth", "gauge", "{workflow}", ("queue",),
                     "PENDING workflows per queue, read from the database when collected")

METRICS: tuple[Metric, ...] = (WORKFLOW_STARTED, WORKFLOW_FINISHED, WORKFLOW_FAILED, STEP_DURATION, CLAIM_DURATION,
                               LEASE_TAKEOVERS, QUEUE_DEPTH)

# Bucket bounds (seconds) for the two histograms: a checkpoint is ~0.2 ms, a claim a few ms, steps anything.
DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def step_status(exc: BaseException) -> str:
    """How a step that raised ``exc`` ended: its error recorded (ERROR) or nothing recorded (ABANDONED)."""
    if isinstance(exc, (LeaseLostError, StorageError)) or not isinstance(exc, Exception):
        return "ABANDONED"
    return "ERROR"


def queue_label(queue: str | None) -> str:
    return queue or "default"


class MetricsHook:
    """A :class:`kit.telemetry.Hook` that records :data:`METRICS`. A failing measurement is logged, never
    raised into a run."""

    def add(self, metric: Metric, value: float, labels: dict[str, str]) -> None:
        """Add ``value`` to a counter (each exporter implements it)."""
        raise NotImplementedError(f"{type(self).__name__} does not record counters")

    def observe(self, metric: Metric, value: float, labels: dict[str, str]) -> None:
        """Record one observation of a histogram (each exporter implements it)."""
        raise NotImplementedError(f"{type(self).__name__} does not record histograms")

    def _add(self, metric: Metric, value: float, labels: dict[str, str]) -> None:
        try:
            self.add(metric, value, labels)
        except Exception as exc:  # noqa: BLE001 - metrics must never fail a run
            log.warning("could not record %s: %s", metric.name, exc)

    def _observe(self, metric: Metric, value: float, labels: dict[str, str]) -> None:
        try:
            self.observe(metric, value, labels)
        except Exception as exc:  # noqa: BLE001
            log.warning("could not record %s: %s", metric.name, exc)

    # -- kit.telemetry.Hook -------------------------------------------------------------------------------
    def workflow(self, ctx: Any, run: Callable[[], Any]) -> Any:
        labels = {"workflow": ctx.name, "queue": queue_label(ctx.queue)}
        self._add(WORKFLOW_STARTED, 1, labels)
        outcome = run()
        self.workflow_ended(labels, outcome)
        return outcome

    def workflow_ended(self, labels: dict[str, str], outcome: Any) -> None:
        status = getattr(outcome, "status", None)
        if status is None:
            return  # abandoned: another run will end it
        self._add(WORKFLOW_FINISHED, 1, {**labels, "status": status.value})
        if status.value == "ERROR":
            self._add(WORKFLOW_FAILED, 1, labels)

    def step(self, ctx: Any, step_id: int, name: str, fn: Callable[..., Any],
             run: Callable[[Callable[..., Any]], Any]) -> Any:
        started = time.perf_counter()
        status = "ABANDONED"
        try:
            value = run(fn)
            status = "SUCCESS"
            return value
        except BaseException as exc:
            status = step_status(exc)
            raise
        finally:
            self._observe(STEP_DURATION, time.perf_counter() - started, {"step": name, "status": status})

    async def step_async(self, ctx: Any, step_id: int, name: str, fn: Callable[..., Any],
                         run: Callable[[Callable[..., Any]], Any]) -> Any:
        started = time.perf_counter()
        status = "ABANDONED"
        try:
            value = await run(fn)
            status = "SUCCESS"
            return value
        except BaseException as exc:
            status = step_status(exc)
            raise
        finally:
            self._observe(STEP_DURATION, time.perf_counter() - started, {"step": name, "status": status})

    def claimed(self, claims: Sequence[Any], ctxs: Sequence[Any], seconds: float) -> None:
        if not claims:
            return  # an empty poll is not a claim
        self._observe(CLAIM_DURATION, seconds, {})
        for claim in claims:
            if claim.recovery:
                self._add(LEASE_TAKEOVERS, 1, {"workflow": claim.name})

    def carrier(self) -> dict[str, str] | None:
        return None


def queue_depths(backend: Any) -> Iterator[tuple[str, int]]:
    """``(queue, PENDING count)`` per queue from an opened backend; nothing when it cannot be read."""
    if backend is None:
        return
    try:
        stats = backend.queue_list()
    except KitError as exc:
        log.warning("could not read queue depths: %s", exc)
        return
    for q in stats:
        yield q.queue, q.depth
