"""Citus storage backend for kit: the PostgreSQL backend on a sharded database.

Modules: ``backend`` (the class), ``lanes`` (lanes, node grouping, shared helpers), and one module per area
that differs from ``backends/postgres``: ``workflows`` (create, finish, release), ``leases`` (claims by lane,
recovery), ``queues`` (limited queues on their home lane, enqueue in a caller's transaction), ``steps``
(group commit), ``messaging`` (fenced send), ``streams`` (read), ``control`` (cancel, resume, fork, gc).
Statements: ``queries.sql`` and ``overrides.sql``; schema: ``migrations/``.
"""

from kit.backends.citus.backend import CitusBackend

BACKEND = CitusBackend  # found by kit.registry in a source tree without installed entry points

__all__ = ["BACKEND", "CitusBackend"]
