"""SQLAlchemy integration: sessions bound to a transactional step's checkpoint transaction (G4) and
enqueues that join a SQLAlchemy transaction, with a real ORM model on real PostgreSQL servers.

What "bound to the very transaction" means is checked on the server: ``txid_current()`` read through
the Session equals the ``xmin`` of the step's checkpoint row (inserted by kit at the top level of that
transaction), also after a ``session.commit()`` in the step body.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from types import SimpleNamespace

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import Integer, String, create_engine, insert, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from test_crash import DB, Workers, wait_for, worker_env
from test_engine import apps  # noqa: F401 - fixture

import kit
from kit.errors import ConfigError, UsageError
from kit.testing import harness

REPO = Path(__file__).resolve().parent.parent
FAST = {"lease_seconds": 5.0, "heartbeat_seconds": 0.5, "poll_seconds": 0.1}


def sqlalchemy_url(url: str) -> str:
    return "postgresql+psycopg://" + url.split("://", 1)[1]


def make_models(schema: str) -> SimpleNamespace:
    class Base(DeclarativeBase):
        pass

    class Order(Base):
        __tablename__ = "orders"
        __table_args__ = {"schema": schema}

        id: Mapped[str] = mapped_column(String, primary_key=True)
        cents: Mapped[int] = mapped_column(Integer)

    return SimpleNamespace(Base=Base, Order=Order)


@pytest.fixture
def orm(pg_url, schema):
    """An ORM model whose table lives in the test's schema, and the user's own SQLAlchemy engine."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
    models = make_models(schema)
    engine = create_engine(sqlalchemy_url(pg_url))
    models.Base.metadata.create_all(engine)
    ns = SimpleNamespace(url=pg_url, schema=schema, engine=engine, Order=models.Order)
    ns.orders = lambda: sorted(tuple(r) for r in _rows(pg_url, sql.SQL("SELECT id, cents FROM {}.orders").format(
        sql.Identifier(schema))))
    yield ns
    engine.dispose()


def _rows(url: str, query, params=()) -> list[tuple]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(query, params).fetchall()


def checkpoint_xid(url: str, schema: str, workflow_id: str, step_id: int) -> int:
    """The transaction that inserted a checkpoint (its row's xmin, at the top level of that transaction)."""
    query = sql.SQL("SELECT xmin::text::bigint FROM {}.steps WHERE workflow_id = %s AND step_id = %s")
    rows = _rows(url, query.format(sql.Identifier(schema)), (workflow_id, step_id))
    assert rows, f"no checkpoint {workflow_id}:{step_id}"
    return rows[0][0]


# -- transactional steps ----------------------------------------------------------------------------------
def test_session_writes_commit_in_the_checkpoint_transaction(apps, orm):  # noqa: F811
    app = apps(**FAST)
    Order = orm.Order

    @app.transaction(sqlalchemy="session")
    def record(session: Session, order_id: str, cents: int) -> list[int]:
        session.add(Order(id=order_id, cents=cents))
        before = session.execute(text("SELECT txid_current()")).scalar_one()
        session.commit()  # releases the session's savepoint; kit's transaction stays open
        session.add(Order(id=order_id + "-b", cents=cents + 1))
        after = session.execute(text("SELECT txid_current()")).scalar_one()
        return [before, after]

    @app.workflow()
    def checkout(order_id: str) -> list[int]:
        return record(order_id, 100)

    wid = f"orm-{uuid.uuid4().hex[:8]}"
    before, after = app.start(checkout, "o1", workflow_id=wid).result(timeout=30)
    assert before == after == checkpoint_xid(orm.url, orm.schema, wid, 0)
    assert orm.orders() == [("o1", 100), ("o1-b", 101)]  # the pending object was flushed at the end


def test_crash_between_the_orm_write_and_the_checkpoint_leaves_neither(orm):
    """kit.testing's crash point after the body: the body wrote, flushed and session.commit()ed; the run
    dies before the checkpoint. The recovered run writes the same primary key again, which only works
    because nothing of the first run committed."""
    app = kit.Kit(database_url=orm.url)
    Order = orm.Order
    runs: list[int] = []

    @app.transaction(sqlalchemy="session")
    def record(session: Session, order_id: str) -> int:
        session.add(Order(id=order_id, cents=len(runs)))
        session.commit()
        runs.append(session.execute(text("SELECT txid_current()")).scalar_one())
        return len(runs)

    @app.workflow()
    def checkout(order_id: str) -> int:
        return record(order_id)

    with harness(app) as h:
        h.crash_at(checkout, 0, after_body=True)
        handle = app.start(checkout, "crash-1")
        assert h.result(handle) == 2
        assert h.crashes == 1
        assert len(runs) == 2 and runs[0] != runs[1]
        assert checkpoint_xid(orm.url, app.config.schema, handle.workflow_id, 0) == runs[1]
    assert orm.orders() == [("crash-1", 1)]  # written by the second run only


def test_failed_attempt_rolls_its_orm_writes_back_and_retries(apps, orm):  # noqa: F811
    app = apps(**FAST)
    Order = orm.Order
    attempts: list[int] = []

    @app.transaction(sqlalchemy="session", retries=1, initial_delay=0.01)
    def record(session: Session, order_id: str) -> str:
        session.add(Order(id=order_id, cents=len(attempts)))
        session.flush()
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("first attempt fails after its flush")
        return "ok"

    @app.workflow()
    def checkout(order_id: str) -> str:
        return record(order_id)

    assert app.start(checkout, "retry-1").result(timeout=30) == "ok"
    assert orm.orders() == [("retry-1", 1)]


def test_session_rollback_returns_to_the_savepoint_and_the_step_goes_on(apps, orm):  # noqa: F811
    app = apps(**FAST)
    Order = orm.Order

    @app.transaction(sqlalchemy="session")
    def record(session: Session) -> str:
        session.add(Order(id="dup", cents=1))
        session.commit()
        session.add(Order(id="dup", cents=2))
        try:
            session.commit()
        except IntegrityError:
            session.rollback()  # ROLLBACK TO SAVEPOINT: kit's transaction is still usable
        session.add(Order(id="after", cents=3))
        return session.scalars(select(Order.id).order_by(Order.id)).all()

    @app.workflow()
    def checkout() -> list[str]:
        return record()

    assert app.start(checkout).result(timeout=30) == ["after", "dup"]
    assert orm.orders() == [("after", 3), ("dup", 1)]


def test_sqlalchemy_connection_kind_and_what_a_step_may_not_do(apps, orm):  # noqa: F811
    app = apps(**FAST)
    table = orm.Order.__table__

    @app.transaction(sqlalchemy="connection")
    def write(conn, order_id: str) -> int:
        conn.execute(insert(table).values(id=order_id, cents=7))
        return conn.execute(text("SELECT txid_current()")).scalar_one()

    @app.transaction(sqlalchemy="connection")
    def commits(conn, order_id: str) -> None:
        conn.execute(insert(table).values(id=order_id, cents=8))
        conn.commit()

    @app.transaction(sqlalchemy="connection")
    def rolls_back(conn, order_id: str) -> None:
        conn.execute(insert(table).values(id=order_id, cents=9))
        conn.rollback()

    @app.workflow()
    def flow(kind: str) -> object:
        if kind == "write":
            return write("c-write")
        try:
            (commits if kind == "commit" else rolls_back)(f"c-{kind}")
        except UsageError as exc:
            return str(exc)
        return "no error"

    wid = f"conn-{uuid.uuid4().hex[:8]}"
    assert app.start(flow, "write", workflow_id=wid).result(timeout=30) == checkpoint_xid(orm.url, orm.schema, wid, 0)
    assert "must not commit" in app.start(flow, "commit").result(timeout=30)
    assert "must not roll back" in app.start(flow, "rollback").result(timeout=30)
    assert orm.orders() == [("c-write", 7)]  # the refused commit and rollback wrote nothing


def test_sqlalchemy_option_errors(apps, orm):  # noqa: F811
    app = apps(**FAST)
    with pytest.raises(ConfigError, match="sqlalchemy= must be one of"):
        app.transaction(sqlalchemy="orm")
    with pytest.raises(ConfigError, match="plain def"):
        @app.transaction(sqlalchemy="session")
        async def not_sync(session: Session) -> None:
            pass


def test_missing_extra_is_a_config_error_naming_it():
    code = textwrap.dedent("""
        import sys
        sys.modules["sqlalchemy"] = None  # as if the extra were not installed
        import kit
        app = kit.Kit(database_url="postgresql://nobody@127.0.0.1:1/none")
        try:
            app.transaction(sqlalchemy="session")
        except kit.ConfigError as exc:
            print(exc)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert "SQLAlchemy is not installed: pip install 'durable-kit[sqlalchemy]'" in out.stdout, out.stderr


# -- enqueues in the caller's SQLAlchemy transaction ---------------------------------------------------------
def _worker(apps):  # noqa: F811
    app = apps(**FAST)
    orders = app.queue("orm-orders", concurrency=4)

    @app.workflow(name="orm.total")
    def total(order_id: str, cents: int) -> str:
        return f"{order_id}:{cents}"

    app.launch()
    return app, orders


def test_enqueue_joins_a_session_and_a_connection(apps, orm):  # noqa: F811
    app, orders = _worker(apps)
    client = kit.Client(orm.url, schema=apps.schema)
    apps.apps.append(client)
    Order = orm.Order
    ids = {k: f"{k}-{uuid.uuid4().hex[:6]}" for k in ("s-rolled", "s-kept", "c-rolled", "c-kept", "q-kept", "a-kept")}

    with Session(orm.engine) as session:  # the ORM session of a web request
        session.add(Order(id=ids["s-rolled"], cents=1))
        client.enqueue("orm.total", ids["s-rolled"], 1, workflow_id=ids["s-rolled"], connection=session)
        session.rollback()  # neither the order nor its workflow
        session.add(Order(id=ids["s-kept"], cents=2))
        client.enqueue("orm.total", ids["s-kept"], 2, workflow_id=ids["s-kept"], queue="orm-orders",
                       connection=session)
        session.commit()

    with orm.engine.connect() as conn:  # commit as you go: the enqueue begins the transaction
        client.enqueue("orm.total", ids["c-rolled"], 3, workflow_id=ids["c-rolled"], connection=conn)
        conn.rollback()
        orders.enqueue("orm.total", ids["q-kept"], 4, workflow_id=ids["q-kept"], connection=conn)
        conn.commit()
    with orm.engine.begin() as conn:
        conn.execute(insert(Order.__table__).values(id=ids["c-kept"], cents=5))
        client.enqueue("orm.total", ids["c-kept"], 5, workflow_id=ids["c-kept"], connection=conn)
        app.enqueue("orm.total", ids["a-kept"], 6, workflow_id=ids["a-kept"], connection=conn)

    for key in ("s-kept", "c-kept", "q-kept", "a-kept"):
        assert client.retrieve(ids[key]).result(timeout=30).startswith(ids[key])
    for key in ("s-rolled", "c-rolled"):
        with pytest.raises(kit.WorkflowNotFoundError):
            client.retrieve(ids[key])
    assert {o for o, _ in orm.orders()} == {ids["s-kept"], ids["c-kept"]}
    assert app.retrieve(ids["q-kept"]).record().queue == "orm-orders"


def test_enqueue_with_a_steps_own_session_commits_with_the_step(apps, orm):  # noqa: F811
    """A transactional step enqueues through its Session: the workflow exists if and only if the step's
    checkpoint commits (a crash after the body leaves none; the re-run enqueues it once)."""
    app = apps(**FAST)

    @app.workflow(name="orm.child")
    def child(n: int) -> int:
        return n * 2

    @app.transaction(sqlalchemy="session")
    def order_and_enqueue(session: Session, n: int) -> str:
        session.add(orm.Order(id=f"step-{n}", cents=n))
        key = kit.step_info().idempotency_key
        return app.enqueue("orm.child", n, workflow_id=f"{key}/child", connection=session).workflow_id

    @app.workflow()
    def parent(n: int) -> str:
        return order_and_enqueue(n)

    app.launch()
    child_id = app.start(parent, 21).result(timeout=30)
    assert app.retrieve(child_id).result(timeout=30) == 42
    assert orm.orders() == [("step-21", 21)]

    rolled = f"rolled-{uuid.uuid4().hex[:6]}"

    @app.transaction(sqlalchemy="session")
    def enqueue_then_fail(session: Session) -> None:
        app.enqueue("orm.child", 1, workflow_id=rolled, connection=session)
        raise RuntimeError("the step fails after enqueueing")

    @app.workflow()
    def failing() -> str:
        try:
            enqueue_then_fail()
        except RuntimeError:
            return "failed"
        return "no error"

    assert app.start(failing).result(timeout=30) == "failed"
    with pytest.raises(kit.WorkflowNotFoundError):
        app.retrieve(rolled)


def test_enqueue_connection_refusals(apps, orm):  # noqa: F811
    app, _ = _worker(apps)
    client = kit.Client(orm.url, schema=apps.schema)
    apps.apps.append(client)
    conn = orm.engine.connect()
    conn.close()
    with pytest.raises(UsageError, match="closed"):
        client.enqueue("orm.total", "x", 1, connection=conn)

    @app.workflow()
    def in_workflow_code() -> str:
        with Session(orm.engine) as session:
            try:
                app.enqueue("orm.total", "y", 2, connection=session)
            except UsageError as exc:
                return str(exc)
        return "no error"

    assert "cannot be used in workflow code" in app.start(in_workflow_code).result(timeout=30)


# -- a real worker process dies between the ORM write and the checkpoint --------------------------------------
@pytest.mark.slow
def test_worker_killed_after_the_orm_write_leaves_neither_row_nor_checkpoint(pg_url, schema, tmp_path):
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {}.orm_orders (id text PRIMARY KEY, cents integer NOT NULL)")
                     .format(sql.Identifier(schema)))
    client = kit.Client(pg_url, schema=schema)
    db = DB(pg_url, schema)
    runs_file, die_file = tmp_path / "runs", tmp_path / "die"
    die_file.touch()
    env = {**worker_env(pg_url, schema), "KIT_TEST_RUNS_FILE": str(runs_file), "KIT_TEST_DIE_FILE": str(die_file)}
    try:
        with Workers(env, tmp_path, app_spec="tests.apps.orm_app:app") as workers:
            first = workers.start(concurrency=1)
            workers.wait_ready(first)
            handle = client.enqueue("orm.checkout", "order-1", 4200, workflow_id="orm-kill-1")
            first.proc.wait(timeout=60)
            assert first.proc.returncode == -signal.SIGKILL, first.text()
            assert runs_file.read_text().split() == [str(first.pid)]  # the body ran, then the process died
            assert db.rows("SELECT id FROM {s}.orm_orders") == []  # neither the ORM row...
            assert db.rows("SELECT step_id FROM {s}.steps") == []  # ...nor the checkpoint
            assert handle.status() == kit.Status.RUNNING  # under the dead worker's lease
            os.remove(die_file)
            second = workers.start(concurrency=1)
            workers.wait_ready(second)
            assert handle.result(timeout=60) == 4200
            assert len(runs_file.read_text().split()) == 2
            assert db.rows("SELECT id, cents FROM {s}.orm_orders") == [("order-1", 4200)]
            (epoch,) = db.rows("SELECT epoch FROM {s}.steps WHERE step_id = 0")[0]
            assert epoch == 2
            wait_for(lambda: handle.record().recoveries == 1, 10, "the recovery to be counted")
    finally:
        client.close()
        db.close()
