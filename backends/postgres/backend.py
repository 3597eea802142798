"""The PostgreSQL backend, composed of its parts (one module per area of the storage interface).

Its statements and migrations are data of the class (``queries``, ``migrations``), so a backend for a
server that needs a few different statements subclasses it and replaces only those
(:meth:`~kit.backends.postgres.queries.QuerySet.with_overrides`); its strategies branch on
:class:`~kit.storage.Capabilities` computed from the probed server, never on a name.
"""

from __future__ import annotations

from typing import Any, ClassVar

from .connection import PostgresCore, break_connection, default_worker_info
from .control import ControlPart
from .leases import LeasesPart
from .messaging import MessagingPart
from .migrations import MigrationsPart
from .notifications import NotificationsPart
from .observability import ObservabilityPart
from .queries import MigrationSet, QuerySet
from .schedules import SchedulesPart
from .streams import StreamsPart
from .workflows import WorkflowsPart

__all__ = ["PostgresBackend", "break_connection", "default_worker_info"]


class PostgresBackend(
    MigrationsPart,
    WorkflowsPart,
    LeasesPart,
    MessagingPart,
    StreamsPart,
    SchedulesPart,
    ControlPart,
    ObservabilityPart,
    NotificationsPart,
    PostgresCore,
):
    """Single PostgreSQL (13+). Claims with SKIP LOCKED, checkpoints fenced by the lease epoch."""

    name: ClassVar[str] = "postgres"
    url_schemes: ClassVar[tuple[str, ...]] = ("postgresql", "postgres")
    specificity: ClassVar[int] = 0
    sqlalchemy_url: ClassVar[str | None] = "postgresql+psycopg://"  # its step connections are psycopg 3
    queries: ClassVar[QuerySet] = QuerySet.load(__package__, "queries.sql")
    migrations: ClassVar[MigrationSet] = MigrationSet.load(__package__, "migrations")

    def bench_probe(self) -> Any:
        """The statements of ``kit bench`` on this server and schema (kit.bench.probe.BenchProbe)."""
        from kit.backends.postgres.bench import PostgresBenchProbe

        return PostgresBenchProbe(self.url, self.schema)


# Older names (tests, chaos/workload.py): the statements and migrations of the base class.
_QUERIES = PostgresBackend.queries
_MIGRATIONS = PostgresBackend.migrations
