"""PostgreSQL storage backend for kit (also used for the embedded default)."""

from kit.backends.postgres.backend import PostgresBackend, capabilities_from_version

__all__ = ["PostgresBackend", "capabilities_from_version"]
