"""Where ``kit bench`` runs and how it measures: the resolved database, its probe, and the meters.

:class:`BenchEnv` resolves the URL once (starting the embedded server if that is the default) and holds
the backend's :class:`~kit.bench.probe.BenchProbe`, through which every statement of the bench's own
goes. :class:`Meter` measures a section: wall time, this process's CPU, the server's CPU and the WAL
written (the last two from the probe, when this machine can tell). :class:`Window` measures a cell of
``kit bench compare``: commits, WAL and server CPU differences and sampled session activity.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import kit
from kit.app import Kit, load_backend
from kit.bench.app import build_app
from kit.bench.params import DEFAULT_SCHEMA
from kit.bench.probe import ACTIVITY_KINDS, BenchProbe, Counters, Stats, probe_of
from kit.config import load_config
from kit.embedded import embedded_url


@dataclass
class BenchEnv:
    """Where the bench runs: a resolved URL (the embedded server is started here, once), the schema,
    and the probe of the backend there."""

    url: str
    schema: str
    backend: str | None
    config_file: str | None
    embedded: bool
    data_dir: str | None
    log: Any  # rich Console on stderr
    probe: BenchProbe
    worker_logs: list[Path] = field(default_factory=list)

    def app(self, **settings: Any) -> Kit:
        return build_app(database_url=self.url, schema=self.schema, backend=self.backend,
                         config_file=self.config_file, **settings)


def resolve_env(args: argparse.Namespace, log: Any) -> BenchEnv:
    schema = args.schema or DEFAULT_SCHEMA
    cfg = load_config({"database_url": args.database_url, "data_dir": args.data_dir, "backend": args.backend,
                       "schema": schema}, config_file=args.config)
    url = cfg.database_url
    embedded = url is None
    if embedded:
        url = embedded_url(cfg.data_dir)
    probe = probe_of(load_backend(replace(cfg, database_url=url)))  # the backend is built, not opened
    return BenchEnv(url=url, schema=schema, backend=cfg.backend, config_file=args.config, embedded=embedded,
                    data_dir=cfg.data_dir if embedded else None, log=log, probe=probe)


# -- measuring -------------------------------------------------------------------------------------------
def proc_cpu(pid: int) -> float | None:
    """User+system CPU seconds of a process of this machine (None without psutil or when it is gone)."""
    try:
        import psutil

        t = psutil.Process(pid).cpu_times()
        return t.user + t.system
    except Exception:  # noqa: BLE001 - psutil missing or the process gone
        return None


@dataclass
class Meter:
    """Wall time, this process's CPU, the server's CPU and WAL written over a measured section."""

    probe: BenchProbe | None = None  # server-side counters (None: client side only)
    wal: bool = True  # also the WAL written (a round trip before and after)
    wall: float = 0.0
    client_cpu: float = 0.0
    server_cpu: float | None = None
    wal_bytes: int | None = None

    @contextmanager
    def measure(self) -> Iterator[Meter]:
        before = self.probe.counters(wal=self.wal) if self.probe is not None else Counters(None, None)
        c0 = time.process_time()
        t0 = time.perf_counter()
        yield self
        self.wall = time.perf_counter() - t0
        self.client_cpu = time.process_time() - c0
        after = self.probe.counters(wal=self.wal) if self.probe is not None else Counters(None, None)
        if before.server_cpu_s is not None and after.server_cpu_s is not None:
            self.server_cpu = after.server_cpu_s - before.server_cpu_s
        if before.wal_bytes is not None and after.wal_bytes is not None:
            self.wal_bytes = after.wal_bytes - before.wal_bytes


SAMPLE_S = 0.05  # activity sampling period of a Window


class Window:
    """The measured window of a cell: server counters before and after, sessions sampled by wait kind,
    client processes' CPU, and the machine's busy percentage."""

    def __init__(self, probe: BenchProbe) -> None:
        self.probe = probe
        self.samples: list[dict[str, int]] = []
        self.probe_statements = 0
        self.before: Stats | None = None
        self.t0 = self.t1 = 0.0
        self.busy: float | None = None

    def start(self) -> None:
        self.before = self._stats()
        try:
            import psutil

            psutil.cpu_percent(interval=None)
        except ImportError:
            pass
        self.t0 = time.perf_counter()
        self._next = self.t0

    def tick(self) -> None:
        """Sample the sessions when a period has passed (called from the cell's wait loop)."""
        now = time.perf_counter()
        if now >= self._next and hasattr(self.probe, "activity"):
            self.samples.append(self.probe.activity())
            self.probe_statements += 1
            self._next = now + SAMPLE_S

    def stop(self) -> None:
        self.t1 = time.perf_counter()
        try:
            import psutil

            self.busy = psutil.cpu_percent(interval=None)
        except ImportError:
            self.busy = None

    def _stats(self) -> Stats:
        self.probe_statements += 2  # stats() is two statements, each a transaction of its own
        if not hasattr(self.probe, "stats"):  # a probe from before kit bench compare: CPU and WAL only
            c = self.probe.counters(wal=True)
            return Stats(commits=None, wal_bytes=c.wal_bytes, server_cpu_s=c.server_cpu_s,
                         cpu_by_node={} if c.server_cpu_s is None else {"server": c.server_cpu_s})
        return self.probe.stats()

    def result(self, *, settle: float = 0.3) -> dict[str, Any]:
        """Server-side differences (after ``settle`` seconds, so sessions that just ended flushed their
        statistics)."""
        time.sleep(settle)
        after = self._stats()
        before = self.before
        assert before is not None

        def diff(a: float | None, b: float | None) -> float | None:
            return None if a is None or b is None else a - b

        commits = diff(after.commits, before.commits)
        wall = self.t1 - self.t0
        kinds = {k: round(sum(s.get(k, 0) for s in self.samples) / len(self.samples), 3) if self.samples else None
                 for k in ACTIVITY_KINDS}
        nodes = {n: round(after.cpu_by_node[n] - before.cpu_by_node.get(n, 0.0), 4) for n in after.cpu_by_node}
        return {
            "window_s": round(wall, 4),
            "server_cpu_s": None if (d := diff(after.server_cpu_s, before.server_cpu_s)) is None else round(d, 4),
            "server_cpu_by_node_s": nodes,
            "commits": None if commits is None else max(0, int(commits) - self.probe_statements),
            "wal_bytes": diff(after.wal_bytes, before.wal_bytes),
            "sessions": kinds,
            "activity_samples": len(self.samples),
            "machine_busy_percent": self.busy,
        }


def ms(seconds: float | None, count: int) -> float | None:
    return None if seconds is None or count <= 0 else round(seconds * 1000.0 / count, 4)


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 3)


def rate(count: int, seconds: float) -> float:
    return round(count / seconds, 1) if seconds > 0 else 0.0


# -- the machine -----------------------------------------------------------------------------------------
def machine_info(env: BenchEnv) -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(), "python": platform.python_version(),
        "python_implementation": platform.python_implementation(), "platform": platform.platform(),
        "machine": platform.machine(),
    }
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        import psutil

        info["memory_gib"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    info.update(env.probe.client_versions())
    info["kit"] = kit.__version__
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(kit.__file__).parent,
                             capture_output=True, text=True, timeout=5)
        if rev.returncode == 0:
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                   cwd=Path(kit.__file__).parent, capture_output=True, text=True, timeout=5)
            info["kit_git"] = rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def machine_busy() -> float | None:
    """Whole-machine CPU busy % since the previous call (the first call starts the interval)."""
    try:
        import psutil

        return psutil.cpu_percent(interval=None)
    except ImportError:
        return None
