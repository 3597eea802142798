"""What a backend's adapter module needs besides its own details: a ``backend_factory`` base for
psycopg-based SQL backends, the targets each test runs against (every server, plus the fault-injected
pass on one), and the fixtures that run a factory through a test.

A short adapter (see tests/test_conformance_postgres.py)::

    from conformance import *  # noqa: F401,F403 - every area, and the suite's fixtures
    from conformance.factory import SqlFactory, conformance_targets, factory_fixture

    class MyFactory(SqlFactory):
        backend_cls = MyBackend

    def pytest_generate_tests(metafunc):
        if "conformance_target" in metafunc.fixturenames:
            metafunc.parametrize("conformance_target", conformance_targets(servers, metafunc.function),
                                 indirect=True)

    @pytest.fixture
    def backend_factory(request, conformance_target, conformance_fault_totals):
        server, faults = conformance_target
        factory = MyFactory(url_of(server), new_schema(), faults=faults, label=request.node.nodeid)
        yield from factory_fixture(request, factory, conformance_fault_totals)

``conformance_target`` and ``conformance_fault_totals`` are fixtures of the suite (they come with the star
import). Environment: KIT_TEST_FAULT_SERVERS (servers of the fault pass, or ``none``), KIT_TEST_FAULT_SEED
and KIT_TEST_FAULT_EVERY (the schedule: about one boundary in EVERY fails, default 10).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import psycopg
import pytest
from psycopg import sql

from kit.storage import Backend

from .differences import spared_operations
from .faults import FaultPlan, fault_injecting, faulty_connection_class


def fault_servers(servers: Sequence[str]) -> list[str]:
    """The servers of the fault-injected pass: $KIT_TEST_FAULT_SERVERS (comma list, or ``none``), else
    pgserver16 when selected, else the first server."""
    raw = os.environ.get("KIT_TEST_FAULT_SERVERS", "").strip()
    if raw.lower() == "none":
        return []
    if raw:
        return [s for s in (x.strip() for x in raw.split(",")) if s in servers]
    return ["pgserver16"] if "pgserver16" in servers else list(servers[:1])


def conformance_targets(servers: Sequence[str], function: Any = None) -> list[Any]:
    """Parameters of ``conformance_target``: (server, faults) for the plain pass on every server and the
    fault-injected pass on :func:`fault_servers` (not for a test marked with ``no_faults``); ids
    ``<server>`` and ``<server>-faults``."""
    plain = [pytest.param((s, False), id=s) for s in servers]
    if getattr(function, "__conformance_no_faults__", None):
        return plain
    return plain + [pytest.param((s, True), id=f"{s}-faults") for s in fault_servers(servers)]


class SqlFactory:
    """``backend_factory`` for a psycopg-based backend (the contract is in :mod:`conformance.helpers`).

    Subclasses set ``backend_cls`` and may override :meth:`make` (constructor arguments). With
    ``faults=True`` every backend it makes is a :func:`~conformance.faults.fault_injecting` subclass
    sharing one :class:`~conformance.faults.FaultPlan`, and ``connect()`` connections inject it too.
    """

    backend_cls: ClassVar[type[Backend]]

    def __init__(self, url: str, schema: str, *, secret: str = "", faults: bool = False, label: str = "") -> None:
        self.url = url
        self.schema = schema
        self.secret = secret
        self.name: str = self.backend_cls.name
        self.faults: FaultPlan | None = FaultPlan.from_env(label, spared_operations(self.name)) if faults else None
        self.cls: type[Backend] = fault_injecting(self.backend_cls, self.faults) if self.faults else self.backend_cls
        self._made: list[Backend] = []
        self._conns: list[psycopg.Connection] = []
        self._version: str | None = None
        self.test_name: str | None = None  # set by the suite's _known_differences fixture
        self.area: str | None = None

    def make(self, cls: type[Backend]) -> Backend:
        """A new, unopened backend of class ``cls`` (the backend class or a subclass) on the test namespace."""
        return cls(self.url, schema=self.schema)  # type: ignore[call-arg]

    def __call__(self, *, migrate: bool = True) -> Any:
        return self._open(self.cls, self.faults, migrate)

    def with_faults(self, plan: FaultPlan, *, migrate: bool = True) -> Any:
        """A new backend on the test namespace that injects ``plan``'s faults (e.g. a
        :class:`~conformance.faults.OneFault`), whatever the pass."""
        return self._open(fault_injecting(self.backend_cls, plan), plan, migrate)

    def _open(self, cls: type[Backend], plan: FaultPlan | None, migrate: bool) -> Any:
        backend = self.make(cls)
        self._made.append(backend)
        # Setting up the test is not its subject: no faults here (lifecycle tests that open or migrate
        # under test call those operations themselves).
        with plan.quiet() if plan else contextlib.nullcontext():
            backend.open()
            if migrate:
                backend.migrate()
        return backend

    def qualify(self, name: str) -> str:
        return f"{sql.Identifier(self.schema).as_string(None)}.{sql.Identifier(name).as_string(None)}"

    def sql(self, query: str, params: tuple | dict = ()) -> list[tuple]:
        with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))
            cur = conn.execute(query, params)  # type: ignore[arg-type]
            return cur.fetchall() if cur.description else []

    def connect(self, faults: FaultPlan | None = None) -> psycopg.Connection:
        """A caller's own connection (not autocommit); with the pass's faults, or ``faults``."""
        base = getattr(self.backend_cls, "connection_class", psycopg.Connection)
        plan = faults or self.faults
        cls = faulty_connection_class(base, plan) if plan else base
        conn = cls.connect(self.url, autocommit=False, connect_timeout=5)
        self._conns.append(conn)
        return conn

    def server_version(self) -> str:
        if self._version is None:
            self._version = str(self.sql("SELECT version()")[0][0])
        return self._version

    def close_all(self) -> None:
        for conn in self._conns:
            conn.close()
        for backend in self._made:
            backend.close()
        try:
            with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as conn:
                conn.execute("SET lock_timeout = '10s'")
                conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(self.schema)))
        except psycopg.Error:
            pass


class FaultTotals:
    """What the fault-injected pass injected over the session (reported at its end)."""

    def __init__(self) -> None:
        self.tests = 0
        self.boundaries = 0
        self.injected: dict[str, int] = {}

    def add(self, plan: FaultPlan) -> None:
        self.tests += 1
        self.boundaries += plan.boundaries
        for kind, n in plan.injected.items():
            self.injected[kind] = self.injected.get(kind, 0) + n

    def summary(self) -> str:
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(self.injected.items())) or "nothing"
        return (f"conformance fault pass: {self.tests} tests, {self.boundaries} statement/commit boundaries, "
                f"injected {kinds}")


def factory_fixture(request: Any, factory: Any, totals: FaultTotals | None = None) -> Iterator[Any]:
    """The body of an adapter's ``backend_factory`` fixture: opt-outs of the fault pass, then the test,
    then the check that the fault pass injected faults, then clean-up."""
    plan: FaultPlan | None = factory.faults
    reason = getattr(getattr(request, "function", None), "__conformance_no_faults__", None)
    if plan is not None and reason:
        factory.close_all()
        pytest.skip(f"not in the fault pass: {reason}")
    try:
        yield factory
    finally:
        factory.close_all()
    if plan is not None:
        print(f"{plan!r}:", *plan.log, sep="\n  ")  # shown with a failure's report
        if totals is not None:
            totals.add(plan)
        # Every test long enough to reach the plan's phase got faults (else the wrapper is not wired in).
        assert plan.boundaries < plan.first or plan.total > 0, (
            f"the fault pass injected nothing in {plan.boundaries} boundaries: {plan!r}")
