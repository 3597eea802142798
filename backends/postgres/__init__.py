"""PostgreSQL storage backend for kit (also used for the embedded default).

Modules: ``backend`` (the class, composed of its parts), ``connection`` (pool, retries, watchdog,
synchronous replication), ``server`` (probe, detection, capabilities), ``queries`` (named SQL and
migrations as class data), ``rows`` (row mapping), ``migrations``, ``notifications`` (the wake-up hook),
and one module per area: ``workflows``, ``leases``, ``steps``, ``messaging``, ``streams``, ``queues``,
``control``, ``schedules``, ``observability``.
"""

from kit.backends.postgres.backend import PostgresBackend
from kit.backends.postgres.queries import Migration, MigrationSet, QuerySet
from kit.backends.postgres.server import server_capabilities

BACKEND = PostgresBackend  # found by kit.registry in a source tree without installed entry points

__all__ = ["BACKEND", "Migration", "MigrationSet", "PostgresBackend", "QuerySet", "server_capabilities"]
