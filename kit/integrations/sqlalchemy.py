"""SQLAlchemy in transactional steps, and enqueues that join a SQLAlchemy transaction (extra ``[sqlalchemy]``).

**Steps.** ``@app.transaction(sqlalchemy="session")`` hands the step a :class:`sqlalchemy.orm.Session`
(``"connection"``: a :class:`sqlalchemy.engine.Connection`) bound to the very transaction in which kit
records the step's checkpoint, so ORM writes commit if and only if the checkpoint does (G4). SQLAlchemy
never ends that transaction:

* kit's driver connection reaches SQLAlchemy through :class:`_StepConnection`, a pass-through whose
  ``commit()`` always raises and whose ``rollback()`` raises while the step body runs (an explicit
  ``Connection.commit()``/``rollback()`` in the step is a mistake: it would end kit's transaction). The
  ``rollback()`` SQLAlchemy itself issues when it lets go of a connection (after its first-connect
  initialisation, and on closing the ``Connection``) does nothing; ``close()`` does nothing either: the
  connection goes back to kit's pool, not SQLAlchemy's (a ``NullPool`` whose creator hands out the
  step's connection).
* The ``Connection`` is opened with ``begin()`` (SQLAlchemy's view of kit's open transaction; the
  psycopg dialect sends nothing for it), and the ``Session`` joins it with
  ``join_transaction_mode="create_savepoint"``: ``session.commit()`` releases a savepoint,
  ``session.rollback()`` rolls back to it (kit's transaction goes on), and after the step function
  returns kit commits the session (a flush and a ``RELEASE SAVEPOINT``) before inserting the checkpoint.

One SQLAlchemy ``Engine`` per opened backend, only for its dialect (the URL the backend names in
``sqlalchemy_url``, with no host: it never connects by itself). Its first use initialises the dialect with
a few catalog reads inside that first step's transaction.

**Enqueues.** ``Client.enqueue(..., connection=)`` and ``Queue.enqueue(..., connection=)`` accept a
SQLAlchemy ``Connection`` or ``Session``: :func:`driver_connection` begins SQLAlchemy's transaction if
none is open (as an ``execute`` would) and returns the driver connection under it, which the backend
inserts through; the caller's ``commit()`` or ``rollback()`` then decides for the workflow too.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import logging
import threading
import weakref
from collections.abc import Callable
from typing import Any

from kit.errors import ConfigError, UsageError
from kit.integrations import is_sqlalchemy, missing_extra

try:
    from sqlalchemy import create_engine
    from sqlalchemy.engine import Connection, Engine
    from sqlalchemy.orm import Session
    from sqlalchemy.pool import NullPool
except ModuleNotFoundError as exc:  # the extra is not installed
    raise missing_extra("sqlalchemy", "SQLAlchemy") from exc

__all__ = ["KINDS", "driver_connection", "is_sqlalchemy", "run_bound", "step_binder"]

log = logging.getLogger("kit.integrations.sqlalchemy")

KINDS = ("session", "connection")

_borrowed: contextvars.ContextVar[_StepConnection | None] = contextvars.ContextVar("kit_sa_step", default=None)
_engines: weakref.WeakKeyDictionary[Any, Engine] = weakref.WeakKeyDictionary()
_engines_lock = threading.Lock()


# -- enqueues ------------------------------------------------------------------------------------------
def driver_connection(obj: Any) -> Any:
    """The driver (DBAPI) connection under a SQLAlchemy ``Session`` or ``Connection``, with SQLAlchemy's
    transaction begun when none was (``Session.connection()`` begins the session's), so whatever is
    written through the driver connection commits or rolls back with the caller's transaction."""
    if isinstance(obj, Session):
        obj = obj.connection()
    if not isinstance(obj, Connection):
        raise UsageError(f"connection= takes a driver connection, or a SQLAlchemy Connection or Session; got "
                         f"{type(obj).__module__}.{type(obj).__qualname__} (an AsyncSession/AsyncConnection is "
                         "not supported: pass a synchronous one)")
    if obj.closed or obj.invalidated:
        raise UsageError("connection=: the SQLAlchemy Connection is closed")
    if not obj.in_transaction():
        obj.begin()  # commit-as-you-go: the caller's conn.commit() now commits the enqueue too
    driver = obj.connection.driver_connection
    # The Session of a transactional step: its driver connection is kit's, in the step's transaction (the
    # workflow then exists if and only if the step commits).
    return driver._conn if isinstance(driver, _StepConnection) else driver


# -- transactional steps ---------------------------------------------------------------------------------
class _StepConnection:
    """kit's step connection as SQLAlchemy's pool sees it: every attribute passes through to the driver
    connection except ending the transaction and closing (see the module docstring)."""

    __slots__ = ("_conn", "guarded")

    def __init__(self, conn: Any) -> None:
        object.__setattr__(self, "_conn", conn)
        object.__setattr__(self, "guarded", False)  # True while the step function runs

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "guarded":
            object.__setattr__(self, name, value)
        else:
            setattr(self._conn, name, value)

    def commit(self) -> None:
        raise UsageError("a transactional step must not commit: kit commits its transaction together with the "
                         "step's checkpoint (use session.commit() on the Session kit hands out: it releases a "
                         "savepoint, or just return)")

    def rollback(self) -> None:
        if self.guarded:
            raise UsageError("a transactional step must not roll back kit's transaction: raise an exception to "
                             "fail the step (its writes roll back), or use a savepoint (begin_nested())")

    def close(self) -> None:
        """The connection belongs to kit's pool: SQLAlchemy letting go of it closes nothing."""

    def add_notice_handler(self, handler: Any) -> None:
        """Not on kit's pooled connection (the dialect would add one per step)."""


def _creator() -> Any:
    borrowed = _borrowed.get()
    if borrowed is None:
        raise UsageError("kit's SQLAlchemy engine only hands out the connection of a running transactional step")
    return borrowed


def _engine_for(backend: Any) -> Engine:
    """The dialect-only Engine of ``backend`` (created on first use)."""
    with _engines_lock:
        engine = _engines.get(backend)
        if engine is None:
            url = getattr(backend, "sqlalchemy_url", None)
            if not url:
                raise UsageError(f"backend '{backend.name}' does not name a SQLAlchemy dialect (sqlalchemy_url): "
                                 "transactional steps there take its driver connection only")
            engine = create_engine(url, creator=_creator, poolclass=NullPool)
            if hasattr(engine.dialect, "use_native_hstore"):
                # The dialect would look up hstore's type with psycopg's TypeInfo, which wants the bare
                # driver connection; hstore values are still parsed (by SQLAlchemy itself).
                engine.dialect.use_native_hstore = False
            _engines[backend] = engine
        return engine


def run_bound(backend: Any, conn: Any, kind: str, fn: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
    """Call ``fn(handle, *args, **kwargs)`` with a SQLAlchemy Session or Connection bound to the open
    transaction on the driver connection ``conn``; commit the session (a savepoint) when ``fn`` returns."""
    engine = _engine_for(backend)
    borrowed = _StepConnection(conn)
    token = _borrowed.set(borrowed)
    try:
        sa_conn = engine.connect()
    finally:
        _borrowed.reset(token)
    session: Session | None = None
    ok = False
    try:
        sa_conn.begin()  # SQLAlchemy's view of kit's transaction: nothing is sent
        if kind == "connection":
            borrowed.guarded = True
            value = fn(sa_conn, *args, **kwargs)
        else:
            session = Session(bind=sa_conn, join_transaction_mode="create_savepoint")
            borrowed.guarded = True
            value = fn(session, *args, **kwargs)
            session.commit()  # flush, RELEASE SAVEPOINT: the writes are now part of kit's transaction
        ok = True
        return value
    finally:
        borrowed.guarded = False
        if session is not None:
            _release(session.close, ok)
        _release(sa_conn.close, ok)


def _release(close: Callable[[], None], ok: bool) -> None:
    """Close a SQLAlchemy object; after a failure, never hide the step's own exception behind this one."""
    if ok:
        close()
        return
    try:
        close()
    except Exception as exc:  # noqa: BLE001 - the step's exception is the one that matters
        log.debug("closing SQLAlchemy objects after a failed step: %s", exc)


def step_binder(kind: str, backend: Callable[[], Any]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """For ``@app.transaction(sqlalchemy=kind)``: turn a step function taking a Session (or Connection)
    first into one taking the driver connection first. ``backend()`` gives the opened backend."""
    if kind not in KINDS:
        raise ConfigError(f"sqlalchemy= must be one of {', '.join(map(repr, KINDS))}, got {kind!r}")

    def bind(fn: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.iscoroutinefunction(fn):
            return fn  # refused by the decorator (a transactional step is a plain def)

        @functools.wraps(fn)
        def with_sqlalchemy(conn: Any, *args: Any, **kwargs: Any) -> Any:
            return run_bound(backend(), conn, kind, fn, args, kwargs)

        return with_sqlalchemy

    return bind
