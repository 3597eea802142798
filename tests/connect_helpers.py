"""A backend whose every connection attempt is counted (pool, probe and the first attempt alike), for the
tests that prove a permanent connection failure is met on the first attempt."""

from __future__ import annotations

import psycopg
from kit.backends.postgres import PostgresBackend


class CountingConnection(psycopg.Connection):
    """A real psycopg connection that counts how often anyone tried to open one."""

    attempts = 0

    @classmethod
    def connect(cls, *args, **kwargs):  # type: ignore[override]
        CountingConnection.attempts += 1
        return super().connect(*args, **kwargs)


class CountingBackend(PostgresBackend):
    connection_class = CountingConnection
