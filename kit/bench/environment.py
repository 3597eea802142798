"""Where ``kit bench`` runs and how it measures: the resolved database, its probe, and the meters.

:class:`BenchEnv` resolves the URL once (starting the embedded server if that is the default) and holds
the backend's :class:`~kit.bench.probe.BenchProbe`, through which every statement of the bench's own
goes. :class:`Meter` measures a section: wall time, this process's CPU, the server's CPU and the WAL
written (the last two from the probe, when this machine can tell).
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
from kit.bench.probe import BenchProbe, Counters, probe_of
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
