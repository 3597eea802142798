"""A kit app whose transactional step writes an ORM object through the SQLAlchemy Session kit hands it.

Workers run it with ``kit worker tests.apps.orm_app:app`` (configured by KIT_* variables). The ORM table
lives in kit's schema (``$KIT_SCHEMA``); the test creates it. Each run of the step body appends a line to
``$KIT_TEST_RUNS_FILE`` (outside the transaction: it counts executions), and while ``$KIT_TEST_DIE_FILE``
exists the worker SIGKILLs itself after the ORM write was flushed and ``session.commit()`` released its
savepoint, but before kit inserted the checkpoint: the crash window of G4.
"""

from __future__ import annotations

import os
import signal

from sqlalchemy import Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

import kit

SCHEMA = os.environ.get("KIT_SCHEMA", "kit")
ORDERS_DDL = "CREATE TABLE IF NOT EXISTS {schema}.orm_orders (id text PRIMARY KEY, cents integer NOT NULL)"


class Base(DeclarativeBase):
    pass


class Order(Base):
    __tablename__ = "orm_orders"
    __table_args__ = {"schema": SCHEMA}

    id: Mapped[str] = mapped_column(String, primary_key=True)
    cents: Mapped[int] = mapped_column(Integer)


app = kit.Kit()


@app.transaction(sqlalchemy="session", name="orm.record")
def record(session: Session, order_id: str, cents: int) -> int:
    session.add(Order(id=order_id, cents=cents))
    session.commit()  # a savepoint released inside kit's transaction: nothing is committed yet
    with open(os.environ["KIT_TEST_RUNS_FILE"], "a") as runs:
        runs.write(f"{os.getpid()}\n")
    die = os.environ.get("KIT_TEST_DIE_FILE")
    if die and os.path.exists(die):
        os.kill(os.getpid(), signal.SIGKILL)
    return cents


@app.workflow(name="orm.checkout")
def checkout(order_id: str, cents: int) -> int:
    return record(order_id, cents)
