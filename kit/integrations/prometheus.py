"""A Prometheus endpoint for a kit worker (extra ``[prometheus]``; ``kit worker --metrics-port N``).

``serve(app, port)`` installs a :mod:`kit.telemetry` hook recording the metrics of
:mod:`kit.integrations.metrics` with ``prometheus_client`` (in a registry of its own) and serves them on
``http://ADDRESS:PORT/metrics``, together with the numbers of ``kit monitor``, read from the database at
each scrape (at most once a second, through a small connection pool of their own with a short retry
budget, as the monitor does):

==============================================  =======================================================
``kit_queue_depth{queue}``                       PENDING workflows (also the OpenTelemetry gauge)
``kit_queue_in_flight{queue}``                   RUNNING workflows
``kit_workflows_ended_recent{status}``           SUCCESS / ERROR / CANCELLED in the last 5 minutes
``kit_workflows_finished_per_second``            over the last complete 5-second bucket
``kit_workflow_latency_seconds{quantile}``       p50/p95/p99 duration of recently finished workflows
``kit_step_latency_seconds{quantile}``           the same for their steps
``kit_workers{alive}``                           workers by liveness (heartbeat within 7.5 s)
``kit_oldest_pending_age_seconds``               age of the longest-waiting PENDING workflow
``kit_monitor_up``, ``kit_monitor_read_seconds``  whether the last reading succeeded, and its duration
==============================================  =======================================================

The monitor's numbers describe the whole database, so every worker's endpoint reports the same values:
aggregate them with ``max`` (or scrape one worker for them), and ``sum`` the per-process counters.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from kit import telemetry
from kit.errors import UsageError
from kit.integrations import missing_extra
from kit.integrations.metrics import DURATION_BUCKETS, METRICS, Metric, MetricsHook
from kit.storage import MonitorQuery, Status

try:
    from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
    from prometheus_client.core import GaugeMetricFamily
    from prometheus_client.registry import Collector
except ModuleNotFoundError as exc:  # the extra is not installed
    raise missing_extra("prometheus", "prometheus_client") from exc

__all__ = ["MetricsServer", "PrometheusHook", "serve"]

log = logging.getLogger("kit.integrations.prometheus")


class PrometheusHook(MetricsHook):
    """Records kit's metrics into ``registry`` with prometheus_client counters and histograms."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._metrics: dict[str, Any] = {}
        for m in METRICS:
            if m.kind == "counter":
                self._metrics[m.name] = Counter(m.prometheus_name, m.description, m.labels, registry=registry)
            elif m.kind == "histogram":
                self._metrics[m.name] = Histogram(m.prometheus_name, m.description, m.labels,
                                                  buckets=DURATION_BUCKETS, registry=registry)

    def add(self, metric: Metric, value: float, labels: dict[str, str]) -> None:
        m = self._metrics[metric.name]
        (m.labels(**labels) if labels else m).inc(value)

    def observe(self, metric: Metric, value: float, labels: dict[str, str]) -> None:
        m = self._metrics[metric.name]
        (m.labels(**labels) if labels else m).observe(value)


class MonitorCollector(Collector):
    """The monitor's numbers, read with ``Backend.monitor_stats`` when scraped (cached for ``min_interval``)."""

    def __init__(self, app: Any, *, min_interval: float = 1.0) -> None:
        from kit.monitor import MonitorSource  # the monitor's reader: reconnects, never raises
        from kit.registry import load_backend

        # A scrape must report an outage within seconds, not wait it out like a worker does.
        cfg = replace(app.config, db_retry_seconds=min(app.config.db_retry_seconds, 2.0),
                      connect_timeout=min(app.config.connect_timeout, 3.0), pool_size=2)

        def open_backend() -> Any:
            backend = load_backend(cfg)
            backend.open()
            return backend

        self.query = MonitorQuery()
        self._source = MonitorSource(open_backend, backend_name=cfg.backend or "", endpoint=cfg.database_url or "",
                                     query=self.query)
        self._min_interval = min_interval
        self._lock = threading.Lock()
        self._read_at = -float("inf")

    def snapshot(self) -> Any:
        with self._lock:  # scrapes are served on threads of their own
            if time.monotonic() - self._read_at >= self._min_interval:
                self._source.poll()
                self._read_at = time.monotonic()
            return self._source.latest

    def close(self) -> None:
        self._source.close()

    def describe(self) -> list[Any]:
        return []  # nothing is read when the collector is registered

    def collect(self) -> Iterator[Any]:
        from kit.monitor import throughput_series

        snap = self.snapshot()
        up = GaugeMetricFamily("kit_monitor_up", "1 when the last reading of the monitor's numbers succeeded")
        up.add_metric([], 0 if snap.error is not None or snap.stats is None else 1)
        yield up
        if snap.error is not None or snap.stats is None:
            return  # stale numbers would mislead: only kit_monitor_up = 0
        stats = snap.stats
        read = GaugeMetricFamily("kit_monitor_read_seconds", "how long the last reading took")
        read.add_metric([], (snap.refresh_ms or 0.0) / 1000)
        yield read
        depth = GaugeMetricFamily("kit_queue_depth", "PENDING workflows per queue", labels=["queue"])
        in_flight = GaugeMetricFamily("kit_queue_in_flight", "RUNNING workflows per queue", labels=["queue"])
        for q in stats.queues:
            depth.add_metric([q.queue], q.depth)
            in_flight.add_metric([q.queue], q.in_flight)
        yield depth
        yield in_flight
        window = self.query.window_seconds
        ended = GaugeMetricFamily("kit_workflows_ended_recent",
                                  f"workflows that ended in the last {window} s, by status", labels=["status"])
        totals = {s: 0 for s in (Status.SUCCESS, Status.ERROR, Status.CANCELLED)}
        for bucket in stats.finished:
            if bucket.status in totals:
                totals[bucket.status] += bucket.count
        for status, count in totals.items():
            ended.add_metric([status.value], count)
        yield ended
        series = throughput_series(stats, self.query)
        rate = GaugeMetricFamily("kit_workflows_finished_per_second",
                                 "workflows finished per second over the last complete "
                                 f"{self.query.bucket_seconds} s")
        rate.add_metric([], series[-1] if series else 0.0)
        yield rate
        for name, what, pct in (("kit_workflow_latency_seconds", "workflows", stats.workflow_latency),
                                ("kit_step_latency_seconds", "steps of those workflows", stats.step_latency)):
            fam = GaugeMetricFamily(name, f"duration percentiles of {what} finished in the last "
                                          f"{self.query.latency_window_seconds} s", labels=["quantile"])
            for q, value in (("0.5", pct.p50), ("0.95", pct.p95), ("0.99", pct.p99)):
                if value is not None:
                    fam.add_metric([q], value)
            yield fam
        workers = GaugeMetricFamily("kit_workers", "workers seen, by liveness (heartbeat within "
                                                   f"{self.query.alive_seconds} s)", labels=["alive"])
        alive = sum(1 for w in stats.workers if w.alive)
        workers.add_metric(["true"], alive)
        workers.add_metric(["false"], len(stats.workers) - alive)
        yield workers
        oldest = GaugeMetricFamily("kit_oldest_pending_age_seconds", "age of the longest-waiting PENDING workflow")
        pending = stats.oldest_pending
        if pending is not None and pending.created_at is not None:
            oldest.add_metric([], max(0.0, (stats.server_time - pending.created_at).total_seconds()))
        else:
            oldest.add_metric([], 0.0)
        yield oldest


class MetricsServer:
    """A running endpoint: ``url`` to scrape, ``close()`` to stop it and remove its hook."""

    def __init__(self, hook: PrometheusHook, httpd: Any, thread: threading.Thread,
                 monitor: MonitorCollector | None) -> None:
        self.hook = hook
        self._httpd = httpd
        self._thread = thread
        self._monitor = monitor
        self.address, self.port = httpd.server_address[:2]

    @property
    def url(self) -> str:
        host = self.address if self.address not in ("0.0.0.0", "::", "") else "127.0.0.1"
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        telemetry.uninstall(self.hook)
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
        if self._monitor is not None:
            self._monitor.close()


def serve(app: Any, port: int, *, address: str = "0.0.0.0", monitor: bool = True) -> MetricsServer:
    """Record kit's metrics in this process and serve them (and, with ``monitor``, the monitor's numbers
    for ``app``'s database) on ``http://address:port/metrics``; ``port=0`` picks a free port."""
    registry = CollectorRegistry()
    hook = PrometheusHook(registry)
    collector = MonitorCollector(app) if monitor else None
    if collector is not None:
        registry.register(collector)
    try:
        httpd, thread = start_http_server(port, address, registry=registry)
    except OSError as exc:
        if collector is not None:
            collector.close()
        raise UsageError(f"cannot serve metrics on {address or '*'}:{port}: {exc.strerror or exc}") from None
    telemetry.install(hook)
    return MetricsServer(hook, httpd, thread, collector)
