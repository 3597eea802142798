"""The conformance suite's fault injection (tests/conformance/faults.py) on real PostgreSQL: the two
faults are what a real server and network produce (an aborted transaction with 40001; a commit whose
acknowledgement never arrives on a connection that is then broken), they fall only inside the backend's
operations, the schedule is deterministic, and the backend's ``connection_class`` hook reaches every
connection it opens."""

from __future__ import annotations

import psycopg
import psycopg.errors
import pytest
from kit.backends.postgres import PostgresBackend
from psycopg import sql

try:  # works whether or not tests/ is a package
    from .conformance.faults import (
        KINDS,
        FaultPlan,
        FaultyConnectionMixin,
        OneFault,
        fault_injecting,
        faulty_connection_class,
        interface_operations,
    )
except ImportError:
    from conformance.faults import (
        KINDS,
        FaultPlan,
        FaultyConnectionMixin,
        OneFault,
        fault_injecting,
        faulty_connection_class,
        interface_operations,
    )


def _decisions(plan: FaultPlan, ops: int = 40, per_op: int = 5) -> list[str | None]:
    out = []
    for i in range(ops):
        with plan.operation(f"op{i % 3}"):
            out += [plan.decide(f"stmt {j}", KINDS) for j in range(per_op)]
    return out


def test_the_schedule_is_seeded_bounded_per_operation_and_spares_what_it_must():
    a, b = FaultPlan(seed=7, label="t1"), FaultPlan(seed=7, label="t1")
    assert _decisions(a) == _decisions(b), "same seed and test: same faults"
    assert _decisions(FaultPlan(seed=7, label="t2")) != _decisions(FaultPlan(seed=7, label="t1"))
    plan = FaultPlan(seed=3, label="t", every=1, per_operation=2)
    got = _decisions(plan, ops=10)
    for i in range(10):
        assert sum(k is not None for k in got[i * 5:(i + 1) * 5]) == 2, "at most per_operation per call"
    assert plan.total == 20 and set(plan.injected) <= set(KINDS) and len(plan.log) == 20
    assert plan.decide("outside any operation", KINDS) is None
    spared = FaultPlan(seed=3, every=1, spared={"lease_renew": KINDS, "workflow_claim": ("ambiguous",)})
    with spared.operation("lease_renew"):
        assert spared.decide("x", KINDS) is None
    with spared.operation("workflow_claim"):
        assert spared.decide("x", KINDS) == "serialization" and spared.decide("y", ("ambiguous",)) is None
    nested = FaultPlan(seed=3, every=1, per_operation=1)
    with nested.operation("schedule_advance"):
        assert nested.decide("a", KINDS) is not None
        with nested.operation("workflow_enqueue_in"):  # a call inside an operation shares its budget
            assert nested.decide("b", KINDS) is None
    with nested.quiet():
        assert nested.decide("setup", KINDS) is None
    with pytest.raises(ValueError):
        FaultPlan(every=0)


def test_the_wrapper_is_a_subclass_wrapping_every_operation():
    plan = FaultPlan()
    cls = fault_injecting(PostgresBackend, plan)
    assert issubclass(cls, PostgresBackend) and cls.name == "postgres" and cls.fault_plan is plan
    assert issubclass(cls.connection_class, FaultyConnectionMixin)
    assert issubclass(cls.connection_class, PostgresBackend.connection_class)
    ops = interface_operations()
    assert {"workflow_create", "step_transaction", "schedule_advance", "drop_schema"} <= set(ops)
    assert "capabilities" not in ops and "wake_channel" not in ops  # properties stay as they are
    for op in ops:
        assert hasattr(cls.__dict__[op], "__wrapped__"), op

    class NoHook:
        name = "x"

    with pytest.raises(TypeError, match="connection_class"):
        fault_injecting(NoHook, plan)  # type: ignore[arg-type]


@pytest.fixture
def table(pg_url, schema):
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        name = sql.Identifier(schema, "t").as_string(conn)
        conn.execute(f"CREATE TABLE {name} (k text PRIMARY KEY)")
    return name


def _rows(pg_url: str, table: str) -> list[str]:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        return [r[0] for r in conn.execute(f"SELECT k FROM {table} ORDER BY k")]


def test_a_serialization_failure_aborts_the_transaction_on_the_server(pg_url, table):
    plan = OneFault("op", "serialization", at="INSERT")
    with faulty_connection_class(psycopg.Connection, plan).connect(pg_url, autocommit=True) as conn:
        with plan.operation("op"):
            with pytest.raises(psycopg.errors.SerializationFailure) as info:
                with conn.transaction():
                    conn.execute(f"INSERT INTO {table} VALUES ('a')")
            assert info.value.sqlstate == "40001"
            with conn.transaction():  # the connection is fine; the next attempt commits
                conn.execute(f"INSERT INTO {table} VALUES ('b')")
        # Inside a caller's transaction the server-side transaction is aborted, as a real 40001 leaves it.
        plan2 = OneFault("op", "serialization", at="INSERT")
        conn.fault_plan = plan2
        conn.autocommit = False
        conn.execute(f"INSERT INTO {table} VALUES ('c')")
        with plan2.operation("op"), pytest.raises(psycopg.errors.SerializationFailure):
            conn.execute(f"INSERT INTO {table} VALUES ('d')")
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            conn.execute("SELECT 1")
        conn.rollback()
    assert _rows(pg_url, table) == ["b"]


def test_an_ambiguous_commit_commits_then_breaks_the_connection(pg_url, table):
    plan = OneFault("op", "ambiguous", at="INSERT")
    with faulty_connection_class(psycopg.Connection, plan).connect(pg_url, autocommit=True) as conn:
        with plan.operation("op"), pytest.raises(psycopg.OperationalError):
            conn.execute(f"INSERT INTO {table} VALUES ('auto')")
        assert conn.broken, "a genuine lost connection, as the backend sees one"
    plan = OneFault("op", "ambiguous", at="COMMIT")
    with faulty_connection_class(psycopg.Connection, plan).connect(pg_url, autocommit=True) as conn:
        with plan.operation("op"), pytest.raises(psycopg.OperationalError):
            with conn.transaction():
                conn.execute(f"INSERT INTO {table} VALUES ('tx1')")
                conn.execute(f"INSERT INTO {table} VALUES ('tx2')")
        assert conn.broken
    assert _rows(pg_url, table) == ["auto", "tx1", "tx2"], "both committed before the connection was lost"


def test_no_fault_outside_an_operation_or_on_listen(pg_url, table):
    plan = FaultPlan(every=1, per_operation=100)
    with faulty_connection_class(psycopg.Connection, plan).connect(pg_url, autocommit=True) as conn:
        conn.execute(f"INSERT INTO {table} VALUES ('outside')")
        with plan.operation("op"):
            conn.execute("LISTEN conformance_faults")
    assert plan.total == 0 and _rows(pg_url, table) == ["outside"]


def test_the_backend_opens_every_connection_through_its_connection_class(pg_url, schema):
    plan = FaultPlan(spared={})
    cls = fault_injecting(PostgresBackend, plan)
    backend = cls(pg_url, schema=schema, pool_size=2, retry_seconds=5)
    backend.open()
    try:
        with backend._pool.connection() as conn:
            assert isinstance(conn, cls.connection_class)
        backend.notify_wait(["conformance_faults"], 0.01)
        assert isinstance(backend._listen_conn, cls.connection_class)
        backend.migrate()
        assert backend.workflow_get("nothing") is None
    finally:
        backend.close()
    assert plan.boundaries > 0, "the backend's statements went through the faulty cursor"
