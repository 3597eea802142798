"""The worker runtime: the leases of every workflow this process runs, and the claim loop.

Every process running a kit app holds its workflows under leases renewed by one heartbeat thread
(:mod:`kit.runtime.leases`). A process launched as a worker also claims ready and orphaned workflows and
runs them from their last checkpoint (:mod:`kit.runtime.claims`). :class:`Runtime`
(:mod:`kit.runtime.worker`) puts both together with the local thread pools and the graceful stop;
:mod:`kit.runtime.versions` decides which application versions a worker replays.
"""

from kit.runtime.worker import Runtime, StopSummary, new_worker_id

__all__ = ["Runtime", "StopSummary", "new_worker_id"]
