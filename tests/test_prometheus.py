"""Prometheus endpoint: kit's metrics and the monitor's numbers scraped over loopback, in-process and from a
real ``kit worker --metrics-port`` process."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import urllib.request
import uuid
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_crash import wait_for, worker_env
from test_engine import apps  # noqa: F401 - fixture

import kit
from kit import telemetry
from kit.errors import UsageError
from kit.integrations import prometheus

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests.apps import queue_app  # noqa: E402

FAST = {"lease_seconds": 5.0, "heartbeat_seconds": 0.5, "poll_seconds": 0.1}


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """Every sample of the endpoint: (name, sorted labels) -> value."""
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.status == 200
        body = resp.read().decode()
    out: dict[tuple[str, tuple], float] = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(samples: dict, name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in samples.items() if n == name and all((k, w) in ls for k, w in labels.items()))


def test_endpoint_serves_kit_metrics_and_the_monitor_numbers(apps):  # noqa: F811
    app = apps(**FAST)
    mail = app.queue("prom-mail", concurrency=2)

    @app.step(name="prom.send")
    def send(n: int) -> int:
        if n < 0:
            raise RuntimeError("bad address")
        return n

    @app.workflow(name="prom.mail")
    def mailer(n: int) -> int:
        return send(n)

    server = prometheus.serve(app, 0, address="127.0.0.1")
    try:
        assert server.url.startswith("http://127.0.0.1:")
        app.launch()
        handles = [mail.enqueue(mailer, n) for n in (1, 2, 3, -1)]
        for h in handles[:3]:
            h.result(timeout=30)
        with pytest.raises(kit.WorkflowError):
            handles[3].result(timeout=30)
        # Work nobody runs: the monitor's numbers count it from the database.
        client = kit.Client(apps.url, schema=apps.schema)
        apps.apps.append(client)
        client.enqueue("prom.unrun", queue="prom-mail")
        client.enqueue("prom.unrun")

        samples = scrape(server.url)
        assert value(samples, "kit_workflow_started_total", workflow="prom.mail", queue="prom-mail") == 4
        assert value(samples, "kit_workflow_finished_total", workflow="prom.mail", status="SUCCESS") == 3
        assert value(samples, "kit_workflow_finished_total", workflow="prom.mail", status="ERROR") == 1
        assert value(samples, "kit_workflow_failed_total", workflow="prom.mail", queue="prom-mail") == 1
        assert value(samples, "kit_step_duration_seconds_count", step="prom.send", status="SUCCESS") == 3
        assert value(samples, "kit_step_duration_seconds_count", step="prom.send", status="ERROR") == 1
        assert value(samples, "kit_step_duration_seconds_bucket", step="prom.send", status="SUCCESS", le="+Inf") == 3
        assert value(samples, "kit_claim_duration_seconds_count") >= 1
        assert ("kit_lease_takeovers_total", ()) not in samples  # none happened (no label set yet)

        assert value(samples, "kit_monitor_up") == 1
        assert value(samples, "kit_queue_depth", queue="prom-mail") == 1
        assert value(samples, "kit_queue_depth", queue="default") == 1
        assert value(samples, "kit_workflows_ended_recent", status="SUCCESS") == 3
        assert value(samples, "kit_workflows_ended_recent", status="ERROR") == 1
        # The worker's row appears with its first heartbeat (readings are cached for a second).
        wait_for(lambda: value(scrape(server.url), "kit_workers", alive="true") == 1, 15, "the worker's heartbeat")
        assert value(samples, "kit_oldest_pending_age_seconds") >= 0
        assert value(samples, "kit_workflow_latency_seconds", quantile="0.5") > 0
    finally:
        server.close()
    assert telemetry.hook is None


def test_a_busy_port_is_a_usage_error(apps):  # noqa: F811
    app = apps(**FAST)
    server = prometheus.serve(app, 0, address="127.0.0.1", monitor=False)
    try:
        with pytest.raises(UsageError, match="cannot serve metrics on 127.0.0.1"):
            prometheus.serve(app, server.port, address="127.0.0.1", monitor=False)
    finally:
        server.close()
    assert telemetry.hook is None


@pytest.mark.slow
def test_kit_worker_metrics_port_is_scraped_over_loopback(pg_url, schema, tmp_path):
    queue_app.ensure_table(pg_url, schema)
    env = worker_env(pg_url, schema)
    client = kit.Client(pg_url, schema=schema)
    log = tmp_path / "metrics-worker.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "kit", "worker", "tests.apps.queue_app:app",
                                 "--metrics-port", "0"], cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        found = wait_for(lambda: re.search(r"metrics on (http://\S+)", log.read_text()), 30, "the metrics endpoint",
                         lambda: log.read_text())
        url = found.group(1)
        assert url.startswith("http://127.0.0.1:")
        wait_for(lambda: "kit worker " in log.read_text().replace("kit worker: metrics", ""), 30, "the worker to start",
                 lambda: log.read_text())
        handles = [client.enqueue("queue_app.job", 0.0, queue="limited", workflow_id=f"prom-{uuid.uuid4().hex[:8]}")
                   for _ in range(5)]
        for h in handles:
            h.result(timeout=60)
        samples = scrape(url)
        assert value(samples, "kit_workflow_finished_total", workflow="queue_app.job", queue="limited",
                     status="SUCCESS") == 5
        assert value(samples, "kit_step_duration_seconds_count", step="queue_app.timed") == 5
        assert value(samples, "kit_monitor_up") == 1
        wait_for(lambda: value(scrape(url), "kit_workers", alive="true") >= 1, 15, "the worker's heartbeat")
    finally:
        proc.terminate()
        code = proc.wait(timeout=30)
        client.close()
    assert code == 0, log.read_text()


def test_metrics_port_out_of_range_is_one_line(tmp_path):
    out = subprocess.run([sys.executable, "-m", "kit", "worker", "tests.apps.queue_app:app", "--metrics-port",
                          "70000", "--database-url", "postgresql://nobody@127.0.0.1:1/none"],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.strip() == "kit: error: --metrics-port must be a port number (0-65535), got 70000"


def test_opentelemetry_and_prometheus_installed_together_both_see_every_step(apps):  # noqa: F811
    """Two hooks chain: each wraps the next, sync and async steps alike."""
    from test_otel import Telemetry

    app = apps(**FAST)

    @app.step(name="both.sync")
    def sync_step() -> int:
        return 1

    @app.step(name="both.async")
    async def async_step() -> int:
        return 2

    @app.workflow(name="both.sync_wf")
    def sync_wf() -> int:
        return sync_step()

    @app.workflow(name="both.async_wf")
    async def async_wf() -> int:
        return await async_step()

    tel = Telemetry()
    tel.instrument(app)
    server = prometheus.serve(app, 0, address="127.0.0.1", monitor=False)
    try:
        assert app.start(sync_wf).result(timeout=30) == 1
        assert app.start(async_wf).result(timeout=30) == 2
        samples = scrape(server.url)
        for step in ("both.sync", "both.async"):
            assert value(samples, "kit_step_duration_seconds_count", step=step, status="SUCCESS") == 1
            assert tel.value("kit.step.duration", step=step, status="SUCCESS") == 1
            (span,) = [s for s in tel.finished("step ") if s.attributes["kit.step.name"] == step]
            assert span.attributes["kit.step.attempt"] == 1
        assert value(samples, "kit_workflow_finished_total", status="SUCCESS") == 2
        assert len(tel.finished("workflow ")) == 2
    finally:
        server.close()
        tel.close()
    assert telemetry.hook is None


def test_metrics_port_without_the_extra_is_one_line():
    code = textwrap.dedent("""
        import sys
        sys.modules["prometheus_client"] = None  # as if the extra were not installed
        from kit.cli import main
        sys.exit(main(["worker", "tests.apps.queue_app:app", "--metrics-port", "0",
                       "--database-url", "postgresql://nobody@127.0.0.1:1/none"]))
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip() == ("kit: error: prometheus_client is not installed: "
                                  "pip install 'durable-kit[prometheus]'")
