"""The chaos lab's application: workflows whose every side effect lands in a ledger outside the cluster.

Workers run it with ``kit worker chaos.lab_app:app``; it is configured by the environment:

- ``KIT_DATABASE_URL``, ``KIT_SCHEMA`` (and any other ``KIT_*`` setting, which wins over the lab
  defaults below: lease 4 s, heartbeat 1 s, poll 0.5 s, call timeout 5 s, connect timeout 3 s,
  database retry budget 180 s so a worker rides through a failover);
- ``LAB_LEDGER_DIR``: directory of the ledger (required by workers; outside the database cluster);
- ``LAB_QUEUE_LIMIT`` (4) and ``LAB_WORKER_QUEUE_LIMIT`` (2): global and per-worker-process concurrency
  of the limited queue ``lab_limited`` (G7);
- ``LAB_SLEEP_SECONDS`` (0.2): the durable sleep of every workflow; ``LAB_WORK_SECONDS`` (0.2): how long
  the limited step holds its slot; ``LAB_RECV_TIMEOUT`` (600): how long a receiver waits for its message.

Workflow ``lab.flow(n, kind, partner)``, four kinds by ``n % 4`` (see :func:`spec_for`):

- ``recv`` (n % 4 == 0): waits for a message from workflow n + 1, then records it in step ``lab.got``;
- ``send`` (n % 4 == 1): sends one message to workflow n - 1 (``app.send`` from workflow code);
- ``limited`` (n % 4 == 2): enqueued on ``lab_limited``; step ``lab.limited_work`` writes ``begin`` and
  ``end`` marks around a pause, so the checker computes the maximum overlap (G7); it also reads the
  ``progress`` event of workflow n + 1 (``get_event``, no wait), which must be a value some committed step
  set, or None (G8);
- ``plain`` (n % 4 == 3, or a receiver without a sender): publishes event ``progress`` twice (stage 1
  after ``lab.prepare``, stage 2 after ``lab.settle``); the events table must hold the latest (G8).

Every kind runs ``lab.prepare``, a durable sleep, its own part, ``lab.settle`` and the transactional step
``lab.record``, which inserts a row into the application table ``lab_effects`` in the same transaction as
its checkpoint (G4).

Ledger: one append-only JSON-lines file per process, ``ledger-<host>-<pid>-<rand>.jsonl``; each line is
written, flushed and fsynced before the step (or the workflow code) continues. Kinds:

- ``run``: a step body started (its side effect); ``begin`` / ``end``: the limited step's slot marks;
- ``ack``: written by workflow code right after a step call returned, i.e. after its checkpoint was
  acknowledged to the worker (``fresh``: it ran in this execution, not replayed from a checkpoint).
  After an asynchronous failover, an ``ack`` whose checkpoint is missing from the database is a lost
  acknowledgement (G9).

Each entry has ``kind, wf, step, name, attempt, epoch, pid, worker, t`` (UNIX time), plus ``msg`` for
``lab.got``.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

import kit
from kit.engine import WorkflowContext, current_context

WORKFLOW = "lab.flow"
LIMITED_QUEUE = "lab_limited"
TX_STEP = "lab.record"
LIMITED_STEP = "lab.limited_work"
GOT_STEP = "lab.got"
APP_TABLE = "lab_effects"
MESSAGE_TOPIC = "pair"
EVENT_KEY = "progress"

QUEUE_LIMIT = int(os.environ.get("LAB_QUEUE_LIMIT", "4"))
WORKER_QUEUE_LIMIT = int(os.environ.get("LAB_WORKER_QUEUE_LIMIT", "2"))
SLEEP_SECONDS = float(os.environ.get("LAB_SLEEP_SECONDS", "0.2"))
WORK_SECONDS = float(os.environ.get("LAB_WORK_SECONDS", "0.2"))
RECV_TIMEOUT = float(os.environ.get("LAB_RECV_TIMEOUT", "600"))

# Lab defaults; a KIT_* variable of the same setting wins (explicit Kit(...) arguments would beat the env).
LAB_DEFAULTS: dict[str, float] = {
    "lease_seconds": 4.0,
    "heartbeat_seconds": 1.0,
    "poll_seconds": 0.5,
    "call_timeout": 5.0,
    "connect_timeout": 3.0,
    "db_retry_seconds": 180.0,
}

APP_TABLE_DDL = """
CREATE TABLE IF NOT EXISTS {schema}.{table} (
    id          bigserial   PRIMARY KEY,
    workflow_id text        NOT NULL,
    step_id     integer     NOT NULL,
    epoch       bigint      NOT NULL,
    n           integer     NOT NULL,
    pid         integer     NOT NULL,
    worker      text        NOT NULL,
    at          timestamptz NOT NULL DEFAULT clock_timestamp()
)
"""
# Deliberately no unique constraint on (workflow_id, step_id): a G4 violation must be visible, not refused.


def workflow_id(n: int) -> str:
    """The deterministic id of workload item ``n``."""
    return f"lab-{n:05d}"


def number_of(wid: str) -> int | None:
    """Inverse of :func:`workflow_id` (None for ids that are not lab workflows)."""
    if not wid.startswith("lab-"):
        return None
    try:
        return int(wid[4:])
    except ValueError:
        return None


def spec_for(n: int, total: int) -> tuple[str, str | None, str | None]:
    """``(kind, partner, queue)`` of item ``n`` in a workload of ``total`` items; why: one definition shared
    by the submitter, the app and the checker's expected results."""
    r = n % 4
    if r == 0 and n + 1 < total:
        return "recv", workflow_id(n + 1), None
    if r == 1:
        return "send", workflow_id(n - 1), None
    if r == 2:  # reads the event of the plain workflow after it, when there is one
        return "limited", workflow_id(n + 1) if n + 1 < total else None, LIMITED_QUEUE
    return "plain", None, None


def message_id(sender: str, receiver: str) -> str:
    """The id carried by the one message ``sender`` sends to ``receiver``."""
    return f"{sender}->{receiver}"


def expected_output(n: int, total: int) -> dict[str, Any]:
    """What ``lab.flow`` returns for item ``n``; the checker compares every result with it."""
    kind, partner, _ = spec_for(n, total)
    return {
        "n": n,
        "kind": kind,
        "a": n * 10 + 1,
        "work": n * 10 + 3 if kind == "limited" else None,
        "got": message_id(partner, workflow_id(n)) if kind == "recv" and partner else None,
        "b": n * 10 + 2,
        "tx": n * 1000,
    }


# On a Citus coordinator the application table is distributed by workflow id and colocated with kit's
# workflows: the transactional step's row then lands on the shard of its checkpoint, one single-shard
# transaction (a plain coordinator table would commit separately from the worker: not atomic if the
# coordinator dies in between). A distributed table's primary key must include the distribution column.
APP_TABLE_DDL_CITUS = """
CREATE TABLE IF NOT EXISTS {schema}.{table} (
    id          bigserial   NOT NULL,
    workflow_id text        NOT NULL,
    step_id     integer     NOT NULL,
    epoch       bigint      NOT NULL,
    n           integer     NOT NULL,
    pid         integer     NOT NULL,
    worker      text        NOT NULL,
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (workflow_id, id)
)
"""


def ensure_tables(url: str, schema: str) -> None:
    """Create the schema and the application table (idempotent); why: the transactional step writes there.
    On Citus (after kit's migrations) the table is distributed colocated with kit's workflows."""
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        citus = conn.execute("SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'citus'").fetchone()
        ddl = APP_TABLE_DDL_CITUS if citus else APP_TABLE_DDL
        conn.execute(sql.SQL(ddl).format(schema=sql.Identifier(schema), table=sql.Identifier(APP_TABLE)))
        if citus:
            table = f"{sql.Identifier(schema).as_string(conn)}.{sql.Identifier(APP_TABLE).as_string(conn)}"
            done = conn.execute("SELECT 1 FROM pg_catalog.pg_dist_partition WHERE logicalrelid = %s::regclass",
                                (table,)).fetchone()
            if not done:
                conn.execute("SELECT create_distributed_table(%s, 'workflow_id', colocate_with => %s)",
                             (table, f"{sql.Identifier(schema).as_string(conn)}.workflows"))


class Ledger:
    """Per-process append-only JSON-lines file; every entry is fsynced before ``write`` returns, so an
    entry in the ledger means the side effect happened even if the process is SIGKILLed right after."""

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self._dir = directory
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._pid = 0

    def _open(self) -> int:
        if self._fd is not None and self._pid == os.getpid():
            return self._fd
        directory = self._dir or os.environ.get("LAB_LEDGER_DIR")
        if not directory:
            raise RuntimeError("LAB_LEDGER_DIR is not set: the lab app needs a ledger directory")
        Path(directory).mkdir(parents=True, exist_ok=True)
        name = f"ledger-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
        self._fd = os.open(os.path.join(directory, name), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._pid = os.getpid()
        return self._fd

    def write(self, entry: dict[str, Any]) -> None:
        """Append one entry (a single ``write`` of one line) and fsync it."""
        line = (json.dumps(entry, separators=(",", ":"), sort_keys=True) + "\n").encode()
        with self._lock:
            fd = self._open()
            os.write(fd, line)
            os.fsync(fd)


def make_app(ledger_dir: str | os.PathLike[str] | None = None, **settings: Any) -> kit.Kit:
    """Build the lab app (``settings`` override the lab defaults and KIT_* variables); why: tests and the
    workload need instances bound to their own database and schema, workers use the module's ``app``."""
    defaults = {k: v for k, v in LAB_DEFAULTS.items() if f"KIT_{k.upper()}" not in os.environ}
    defaults.update(settings)
    app = kit.Kit(**defaults)
    ledger = Ledger(ledger_dir)
    limited = app.queue(LIMITED_QUEUE, concurrency=QUEUE_LIMIT, worker_concurrency=WORKER_QUEUE_LIMIT)

    def worker_id() -> str:
        """This process's kit worker id (host:pid:random) for ledger entries."""
        runtime = app._runtime
        return runtime.worker_id if runtime is not None else f"{socket.gethostname()}:{os.getpid()}"

    def mark(kind: str, **extra: Any) -> None:
        """Ledger entry for the running step."""
        ctx = current_context()
        info = kit.step_info()
        if ctx is None or info is None:
            raise RuntimeError("ledger marks are written inside steps only")
        ledger.write({"kind": kind, "wf": info.workflow_id, "step": info.step_id, "name": info.name,
                      "attempt": info.attempt, "epoch": ctx.epoch, "pid": os.getpid(), "worker": worker_id(),
                      "t": time.time(), **extra})

    class Acker:
        """Writes an ``ack`` entry for every step position consumed since the last call."""

        def __init__(self, ctx: WorkflowContext) -> None:
            self.ctx = ctx
            self.done = ctx.next_step

        def __call__(self) -> None:
            ctx = self.ctx
            for pos in range(self.done, ctx.next_step):
                rec = ctx.steps.get(pos)
                ledger.write({"kind": "ack", "wf": ctx.workflow_id, "step": pos,
                              "name": rec.name if rec is not None else None, "attempt": None, "epoch": ctx.epoch,
                              "pid": os.getpid(), "worker": worker_id(), "t": time.time(), "fresh": rec is None})
            self.done = ctx.next_step

    @app.step(name="lab.prepare")
    def prepare(n: int) -> int:
        """First side effect of every workflow."""
        mark("run")
        return n * 10 + 1

    @app.step(name="lab.settle")
    def settle(n: int) -> int:
        """Last ordinary side effect of every workflow."""
        mark("run")
        return n * 10 + 2

    @app.step(name=LIMITED_STEP)
    def limited_work(n: int) -> int:
        """Hold a slot of the limited queue for WORK_SECONDS between begin/end marks (G7)."""
        mark("run")
        mark("begin")
        time.sleep(WORK_SECONDS)
        mark("end")
        return n * 10 + 3

    @app.step(name=GOT_STEP)
    def got(msg_id: str) -> str:
        """Handle a received message (its id in the ledger: the same message at two positions fails G8)."""
        mark("run", msg=msg_id)
        return msg_id

    @app.transaction(name=TX_STEP)
    def record(conn: psycopg.Connection, n: int) -> int:
        """Write the application row in the checkpoint's transaction (G4)."""
        ctx = current_context()
        info = kit.step_info()
        assert ctx is not None and info is not None
        mark("run")
        conn.execute(
            sql.SQL("INSERT INTO {}.{} (workflow_id, step_id, epoch, n, pid, worker) VALUES (%s, %s, %s, %s, %s, %s)")
            .format(sql.Identifier(app.config.schema), sql.Identifier(APP_TABLE)),
            (info.workflow_id, info.step_id, ctx.epoch, n, os.getpid(), worker_id()),
        )
        return n * 1000

    @app.workflow(name=WORKFLOW)
    def flow(n: int, kind: str, partner: str | None = None) -> dict[str, Any]:
        """The lab workflow (see the module docstring); acknowledges every step position in the ledger."""
        ctx = current_context()
        assert ctx is not None
        ack = Acker(ctx)
        a = prepare(n)
        ack()
        app.sleep(SLEEP_SECONDS)
        ack()
        work = received = None
        if kind == "plain":
            app.set_event(EVENT_KEY, {"stage": 1, "n": n})
            ack()
        if kind == "send" and partner:
            app.send(partner, {"msg": message_id(ctx.workflow_id, partner), "n": n}, topic=MESSAGE_TOPIC)
            ack()
        elif kind == "recv":
            body = app.recv(MESSAGE_TOPIC, timeout=RECV_TIMEOUT)
            ack()
            if body is None:
                raise RuntimeError(f"workflow {ctx.workflow_id}: no message from {partner} within {RECV_TIMEOUT}s")
            received = got(body["msg"])
            ack()
        elif kind == "limited":
            work = limited_work(n)
            ack()
            if partner:
                app.get_event(partner, EVENT_KEY, timeout=0)  # timing-dependent: checked, not returned
                ack()
        b = settle(n)
        ack()
        if kind == "plain":
            app.set_event(EVENT_KEY, {"stage": 2, "n": n})
            ack()
        tx = record(n)
        ack()
        return {"n": n, "kind": kind, "a": a, "work": work, "got": received, "b": b, "tx": tx}

    app.lab_flow = flow  # type: ignore[attr-defined]
    app.lab_limited = limited  # type: ignore[attr-defined]
    app.lab_ledger = ledger  # type: ignore[attr-defined]
    return app


app = make_app()
