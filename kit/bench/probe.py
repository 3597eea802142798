"""The database side of ``kit bench``: what the bench reads and writes beyond the storage interface.

A backend that ``kit bench`` can measure returns a :class:`BenchProbe` from ``backend.bench_probe()``
(each backend's ``bench`` module in its folder). The probe owns every statement the bench sends itself:
the bench schema and its floor tables, the floor's single-row inserts, the server's CPU time and WAL
position, and the counts and timings of a run's workflows, which the bench names by an id prefix
(``<prefix>-<n>``). It opens connections of its own (never the backend's pool), so it works on a
backend that is not opened, and the bench never imports a database driver.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from kit.errors import UsageError


@dataclass(frozen=True)
class Counters:
    """Server-side counters at one moment; None where this server or machine cannot tell."""

    server_cpu_s: float | None  # CPU seconds used by the database server's processes so far
    wal_bytes: int | None  # write-ahead log position in bytes (differences: WAL written)


@dataclass(frozen=True)
class Progress:
    """Workflows of a run by outcome."""

    succeeded: int
    failed: int  # ERROR or CANCELLED


@dataclass(frozen=True)
class Recovery:
    """How far the recovery of a run got."""

    recovered: int  # workflows claimed again after their owner died (recoveries > 0)
    recovered_checkpoints: int  # checkpoints written by a later lease (epoch > 1)
    succeeded: int


@dataclass(frozen=True)
class Latency:
    """Enqueue-to-start latency of a run (the server's clock: started_at - created_at), milliseconds."""

    p50_ms: float
    p99_ms: float
    max_ms: float


@dataclass(frozen=True)
class Drain:
    """The drain of a run's successful workflows, on the server's clock."""

    seconds: float  # last finish - first start
    completed: int
    claims: int  # claim transactions that found work (rows a claim stamps share one started_at)
    finish_span_s: float | None = None  # last finish - first finish (steady rate, start-up left out)


@dataclass(frozen=True)
class Stats:
    """Cumulative server counters of ``kit bench compare`` (differences over a cell); None: not known."""

    commits: int | None  # transactions committed in the bench's database (every node of a cluster)
    wal_bytes: int | None  # write-ahead log position in bytes, summed over the nodes
    server_cpu_s: float | None  # CPU seconds of the server processes (every node on this machine)
    cpu_by_node: dict[str, float]  # the same per node ("server" for a single server)


#: What a sampled server session of the bench's database is doing (``BenchProbe.activity``): on a CPU
#: (active, no wait event), or waiting on a heavyweight lock, a lightweight lock (e.g. the WAL insert
#: and write locks), I/O (e.g. the WAL flush), the client, or something else.
ACTIVITY_KINDS = ("cpu", "Lock", "LWLock", "IO", "Client", "other")


class FloorConnection(Protocol):
    """One connection of the floor measurement: prepared single-row inserts in autocommit."""

    def insert(self, kind: str, prefix: str, start: int, count: int) -> None:
        """Insert rows ``(prefix, start) .. (prefix, start + count - 1)`` with the statement of ``kind``,
        one round trip and one commit each (prepared on first use)."""

    def close(self) -> None: ...


class BenchProbe(Protocol):
    """The statements of ``kit bench`` for one database and bench schema (see the module docstring)."""

    #: Floor statement kinds and their labels, in report order. "insert" (a plain single-row INSERT, the
    #: physical floor of a checkpoint) is required; others are the backend's fenced variants.
    floor_kinds: dict[str, str]
    #: Why the server's CPU time is not measured ("" when it is).
    server_cpu_note: str
    #: Optional (default False): ``kit bench compare`` may run DBOS side by side in this database.
    hosts_peer: bool

    def reset(self) -> None:
        """Drop and recreate the bench schema with the floor tables. UsageError (and nothing dropped)
        when the schema holds tables the bench did not create or is in use; DatabaseUnavailableError
        when the server cannot be reached."""

    def settings(self) -> dict[str, str]:
        """Server settings that move the floor (durability of a commit, memory), for the report (which
        prints the first three)."""

    def client_versions(self) -> dict[str, str]:
        """Versions of the client libraries the backend talks through (e.g. the database driver)."""

    def floor_connection(self) -> FloorConnection:
        """A new connection for floor inserts (close it after use)."""

    def counters(self, *, wal: bool = True) -> Counters:
        """The server's CPU seconds and (with ``wal``) WAL position now."""

    def progress(self, prefix: str) -> Progress:
        """Outcomes of the run's workflows (one cheap statement: the bench polls it)."""

    def checkpoints(self, prefix: str) -> int:
        """Checkpoints (step rows) of the run's workflows."""

    def checkpoints_by_workflow(self, prefix: str) -> dict[str, int]:
        """Checkpoints of each of the run's workflows (0 for one with none)."""

    def recovery(self, prefix: str) -> Recovery:
        """How far the recovery of the run got (one statement: the bench polls it)."""

    def latency(self, prefix: str) -> Latency:
        """Enqueue-to-start latency percentiles of the run's workflows."""

    def drain(self, prefix: str) -> Drain:
        """Duration and claim count of the run's successful workflows."""

    def stats(self) -> Stats:
        """Commits, WAL position and server CPU now (``kit bench compare``; fields it cannot read are None)."""

    def activity(self) -> dict[str, int]:
        """One sample of the bench database's busy server sessions (not the probe's own) by
        :data:`ACTIVITY_KINDS`: active or in a transaction, counted by what each waits on."""

    def close(self) -> None:
        """Close the probe's own connection."""


def probe_of(backend: Any) -> BenchProbe:
    """The backend's bench probe; UsageError when the backend has none (kit bench cannot measure it)."""
    make = getattr(backend, "bench_probe", None)
    if make is None:
        raise UsageError(f"backend '{getattr(backend, 'name', type(backend).__name__)}' has no bench probe "
                         "(backend.bench_probe()): kit bench cannot measure it")
    return make()
