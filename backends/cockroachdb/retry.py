"""Transaction retries and ambiguous results, the two things every CockroachDB client must handle.

* **40001** (``restart transaction``; 40P01 on the PostgreSQL profile): nothing of the transaction committed.
  The whole transaction runs again on the same connection after a jittered exponential backoff
  (:class:`RetryPolicy`: "full jitter", bounded by a number of attempts and by the backend's
  ``retry_seconds``). Past the bound the operation fails with :class:`~kit.errors.TransientStorageError`
  (the engine then leaves the workflow to be recovered, or the claim loop tries again later).
* **40003** (``statement completion unknown``, CockroachDB's *ambiguous result*): the transaction may or may
  not have committed. :class:`AmbiguousResultMixin` turns it into exactly what a lost connection during
  COMMIT is: the connection is closed and the caller gets ``psycopg.OperationalError`` from a broken
  connection. Every write path of the PostgreSQL backend already resolves that case by reading back (a
  checkpoint's own row, a finish's status and epoch, a create's row), so the same code resolves both.

Every interface operation is counted per name (:class:`OperationStats`): calls, 40001 retries, lost or
ambiguous outcomes, and retry budgets exhausted; tests print them.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
import psycopg.errors
from psycopg.adapt import AdaptersMap

RETRY_SQLSTATES = frozenset({"40001", "40P01"})  # serialization failure; deadlock (PostgreSQL only)
AMBIGUOUS_SQLSTATE = "40003"


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff between attempts of a transaction that failed with 40001: attempt ``n`` (1-based) sleeps a
    uniformly random time in ``[0, min(cap, base * 2**n))``; at most ``max_attempts`` attempts."""

    max_attempts: int = 40
    base: float = 0.002
    cap: float = 0.25

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        return (rng or random).uniform(0.0, min(self.cap, self.base * 2 ** min(attempt, 30)))


@dataclass
class OperationStats:
    """Counters of one interface operation (e.g. ``step_record``)."""

    calls: int = 0
    retries: int = 0  # attempts run again after 40001 / 40P01
    lost: int = 0  # attempts whose connection was lost or whose result was ambiguous (40003): read back
    exhausted: int = 0  # calls that gave up after max_attempts serialization failures
    max_retries_in_call: int = 0


@dataclass
class OperationTracker:
    """Which interface operation the calling thread is in, and the counters of every operation."""

    stats: dict[str, OperationStats] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _local: threading.local = field(default_factory=threading.local)

    @contextmanager
    def operation(self, name: str) -> Iterator[None]:
        """Inside the block, database calls of this thread count against ``name`` (the outermost
        operation wins: ``schedule_advance`` enqueueing through ``workflow_enqueue_in`` counts once)."""
        local = self._local
        depth = getattr(local, "depth", 0)
        if depth == 0:
            local.name = name
            with self._lock:
                self.stats.setdefault(name, OperationStats()).calls += 1
        local.depth = depth + 1
        try:
            yield
        finally:
            local.depth = depth

    def current(self) -> str:
        return getattr(self._local, "name", None) if getattr(self._local, "depth", 0) else "(internal)"

    def add(self, name: str, *, retries: int = 0, lost: int = 0, exhausted: int = 0, in_call: int = 0) -> None:
        with self._lock:
            s = self.stats.setdefault(name, OperationStats())
            s.retries += retries
            s.lost += lost
            s.exhausted += exhausted
            s.max_retries_in_call = max(s.max_retries_in_call, in_call)

    def snapshot(self) -> dict[str, OperationStats]:
        with self._lock:
            return {k: OperationStats(v.calls, v.retries, v.lost, v.exhausted, v.max_retries_in_call)
                    for k, v in sorted(self.stats.items())}


def format_stats(stats: dict[str, OperationStats], title: str = "transaction retries per operation") -> str:
    """A small table of the counters (for test output and logs)."""
    rows = [(k, v) for k, v in sorted(stats.items()) if v.retries or v.lost or v.exhausted or v.calls > 1]
    if not rows:
        return f"{title}: no operations"
    width = max(len(k) for k, _ in rows)
    lines = [f"{title}:", f"  {'operation':<{width}}  {'calls':>7}  {'40001 retries':>13}  {'max/call':>8}  "
                          f"{'lost/ambiguous':>14}  {'gave up':>7}"]
    for name, s in rows:
        lines.append(f"  {name:<{width}}  {s.calls:>7}  {s.retries:>13}  {s.max_retries_in_call:>8}  {s.lost:>14}  "
                     f"{s.exhausted:>7}")
    total = sum(s.retries for _, s in rows)
    lines.append(f"  {'total':<{width}}  {sum(s.calls for _, s in rows):>7}  {total:>13}")
    return "\n".join(lines)


class AmbiguousResultMixin:
    """Mixed into the backend's connection class: a 40003 (``result is ambiguous``) from any statement or
    COMMIT closes the connection and raises ``psycopg.OperationalError``, so every caller resolves it as it
    resolves a connection lost during COMMIT (by reading back; never by guessing)."""

    ambiguous_results = 0  # class-wide count, for tests and logs

    def wait(self, gen: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().wait(gen, *args, **kwargs)  # type: ignore[misc]
        except psycopg.errors.StatementCompletionUnknown as exc:
            type(self).ambiguous_results += 1
            try:
                self.pgconn.finish()  # type: ignore[attr-defined]  # now `broken`: the pool drops it
            except Exception:  # noqa: BLE001 - it is being discarded either way
                pass
            raise psycopg.OperationalError(
                f"result is ambiguous (SQLSTATE 40003): the outcome is read back: {exc}") from exc


class CockroachConnection(AmbiguousResultMixin, psycopg.Connection):  # type: ignore[misc]
    """Connections to a CockroachDB cluster: psycopg's CockroachDB type adaptations (``psycopg.crdb``), and
    ambiguous results resolved like lost connections."""

    @property
    def adapters(self) -> AdaptersMap:
        if not self._adapters:
            import psycopg.crdb

            self._adapters = AdaptersMap(psycopg.crdb.adapters)
        return self._adapters


class ProfileConnection(AmbiguousResultMixin, psycopg.Connection):  # type: ignore[misc]
    """Connections of the serializable PostgreSQL profile: the same ambiguity handling (PostgreSQL never
    reports 40003; the conformance suite's fault injection produces the equivalent lost COMMIT)."""
