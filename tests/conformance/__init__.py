"""Backend conformance suite (River style): one set of tests every storage backend must pass.

A backend's adapter module provides a ``backend_factory`` fixture (see :mod:`.helpers` for its contract,
:mod:`.factory` for a base class and the plain and fault-injected passes) and imports every area at once::

    from conformance import *  # noqa: F401,F403

Areas: :mod:`.lifecycle` (open/close, migrations, drop_schema, describe, capabilities), :mod:`.workflows`
(create, get, list, finish, release, wait), :mod:`.leases` (claims, lease renewal, heartbeats),
:mod:`.steps` (fenced checkpoints, transactional steps), :mod:`.notifications` (wake-ups),
:mod:`.messaging` (messages and events), :mod:`.streams` (streams; listings of messages, events, streams),
:mod:`.control` (cancel, resume, fork, retention, version filters, deadlines), :mod:`.observability`
(children, monitor readings, listing order), :mod:`.queue_limits` (queue definitions, global, per-worker
and rate limits, takeovers), :mod:`.fairness` (partitioned queues, partition concurrency, priority),
:mod:`.dedup` (one live workflow per dedup id), :mod:`.delay` (delayed starts), :mod:`.schedules` (cron
schedules: definitions, the cursor's compare-and-set), :mod:`.enqueue_in` (enqueue in the caller's
transaction), :mod:`.sql_enqueue` (the SQL ``enqueue()`` function), :mod:`.ambiguity` (a lost
acknowledgement of each write, one at a time).

Differences a backend is known to have are declared in :mod:`.differences`, nowhere else.
"""

from __future__ import annotations

from . import (
    ambiguity,
    control,
    dedup,
    delay,
    enqueue_in,
    fairness,
    leases,
    lifecycle,
    messaging,
    notifications,
    observability,
    queue_limits,
    schedules,
    sql_enqueue,
    steps,
    streams,
    workflows,
)
from .fixtures import _known_differences, conformance_fault_totals, conformance_target

AREAS = (lifecycle, workflows, leases, steps, notifications, messaging, streams, control, observability,
         queue_limits, fairness, dedup, delay, schedules, enqueue_in, sql_enqueue, ambiguity)

__all__: list[str] = []

for _module in AREAS:
    for _name in dir(_module):
        if _name.startswith("test_"):
            if _name in globals():
                raise RuntimeError(f"conformance test {_name} is defined twice")
            globals()[_name] = getattr(_module, _name)
            __all__.append(_name)

# Fixtures the suite defines for itself (the adapter gets them with the tests).
listing = workflows.listing
__all__ += ["listing", "_known_differences", "conformance_fault_totals", "conformance_target"]
