"""CockroachDB storage backend for kit (``kit.backends.cockroachdb``), and its serializable PostgreSQL profile.

Modules: ``backend`` (:class:`CockroachBackend`, :class:`SerializableProfileBackend`), ``server`` (probe,
detection, capabilities), ``retry`` (40001 retries, 40003 ambiguity, per-operation counters, connection
classes), ``dialect`` (the only SQL that differs between a cluster and the profile), ``migrations`` (lock
row, one schema change per transaction), ``queries.sql`` and ``migrations/`` (statements and schema).
docs/backends.md has the design and what was verified where.
"""

from kit.backends.cockroachdb.backend import CockroachBackend, SerializableProfileBackend
from kit.backends.cockroachdb.retry import OperationStats, RetryPolicy, format_stats
from kit.backends.cockroachdb.server import cockroach_capabilities

BACKEND = CockroachBackend  # found by kit.registry in a source tree without installed entry points

__all__ = ["BACKEND", "CockroachBackend", "OperationStats", "RetryPolicy", "SerializableProfileBackend",
           "cockroach_capabilities", "format_stats"]
