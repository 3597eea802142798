"""``kit bench``: throughput, per-step cost and recovery time, measured against the database's floor.

Workloads
    seq          N workflows of K trivial steps, started one after another in this process
    par          the same with M threads each starting and awaiting workflows
    queue-drain  N single-step workflows enqueued (PENDING rows), then drained by W ``kit worker``
                 processes running :data:`bench_app`; rate from the database's own timestamps
    recovery     a worker runs N workflows of slow steps and is SIGKILLed mid-run; a second worker
                 finishes them; reports kill -> first reclaim / first recovered checkpoint / all done
    all          every workload above, one after another

Every run first measures the floor on the same database: a prepared single-row ``INSERT`` committed
in autocommit (one round trip), on one connection and on M connections at once. Results are printed
as a table and written as JSON (``--json``). The bench schema (default ``kit_bench``) is dropped and
recreated at the start of every workload so runs never mix.

``kit worker kit.bench:bench_app`` runs the bench workflows; the application reads its settings from
``KIT_*`` environment variables (``KIT_DATABASE_URL``, ``KIT_SCHEMA``, ``KIT_LEASE_SECONDS``, ...).

Modules: :mod:`~kit.bench.params` (options, sizes, targets), :mod:`~kit.bench.environment` (the database,
its probe, meters, the machine), :mod:`~kit.bench.probe` (the :class:`BenchProbe` protocol a backend
implements: every statement the bench sends itself), :mod:`~kit.bench.workloads` (floor, seq, par),
:mod:`~kit.bench.workers` (queue-drain, recovery), :mod:`~kit.bench.report` (tables) and
:mod:`~kit.bench.runner` (``run_bench``). ``kit bench compare``: :mod:`~kit.bench.compare` (targets, the
matrix, the run), :mod:`~kit.bench.cells` (one measured cell), :mod:`~kit.bench.child` (a client process),
:mod:`~kit.bench.peer` (DBOS side by side) and :mod:`~kit.bench.charts` (``kit bench report``).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kit.app import Kit

# Importing this package stays light: a backend's probe imports kit.bench.probe, and the CLI imports the
# option parser (kit.bench.params) and the runner (kit.bench.runner) only as it needs them.
_bench_app: Kit | None = None
_bench_lock = threading.Lock()


def __getattr__(name: str) -> Any:
    # ``bench_app`` is built on first access, so importing kit.bench (the CLI does, to build its parser)
    # never reads configuration or fails on a bad KIT_* variable.
    if name == "bench_app":
        from kit.bench.app import build_app

        global _bench_app
        with _bench_lock:
            if _bench_app is None:
                _bench_app = build_app()
        return _bench_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
