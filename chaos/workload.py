"""The lab workload: submit lab workflows, run ``kit worker chaos.lab_app:app`` processes, watch progress.

Everything here survives the database going away: schema preparation and submission retry through a
failover, ``progress`` raises :class:`DatabaseDown` (a clear error) instead of hanging on a frozen primary,
and ``wait_drained`` keeps polling through outages until its deadline.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from kit.backends.postgres.backend import break_connection
from psycopg import sql

from chaos import lab_app
from kit.config import redact_url

REPO = Path(__file__).resolve().parent.parent
APP_SPEC = "chaos.lab_app:app"
TERMINAL = ("SUCCESS", "ERROR", "CANCELLED")
T = TypeVar("T")


class DatabaseDown(RuntimeError):
    """The lab database could not be reached (or did not answer) within the probe's time bound."""


class WorkloadTimeout(TimeoutError):
    """The workload did not drain in time; the message carries a progress summary."""


def _transient(exc: BaseException) -> bool:
    from kit.errors import DatabaseUnavailableError, TransientStorageError

    return isinstance(exc, (psycopg.OperationalError, psycopg.errors.AdminShutdown, DatabaseUnavailableError,
                            TransientStorageError, DatabaseDown, ConnectionError, TimeoutError,
                            psycopg.errors.ReadOnlySqlTransaction))


def retry(what: str, fn: Callable[[], T], budget: float, log: Callable[[str], None] | None = None) -> T:
    """Call ``fn`` until it succeeds, retrying connection-type errors with backoff for ``budget`` seconds."""
    deadline = time.monotonic() + budget
    delay = 0.2
    while True:
        try:
            return fn()
        except Exception as exc:
            if not _transient(exc) or time.monotonic() + delay > deadline:
                raise
            if log:
                log(f"{what}: {type(exc).__name__}: {redact_url(str(exc)).splitlines()[0] if str(exc) else ''}; "
                    f"retrying in {delay:.1f}s")
            time.sleep(delay)
            delay = min(delay * 2, 3.0)


def _bounded_query(url: str, stmt: sql.Composable, params: Any, timeout: float) -> list[tuple]:
    """Run one read on a fresh connection, giving up after ``timeout`` seconds even if the server is frozen
    (a paused primary accepts TCP but never answers: the socket is shut down from another thread)."""
    result: dict[str, Any] = {}
    conn_box: dict[str, psycopg.Connection] = {}

    def run() -> None:
        """Connect and run the statement (in a thread the caller can give up on)."""
        try:
            conn = psycopg.connect(url, autocommit=True, connect_timeout=max(1, int(timeout)))
            conn_box["conn"] = conn
            try:
                result["rows"] = conn.execute(stmt, params).fetchall()
            finally:
                conn.close()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            result["error"] = exc

    t = threading.Thread(target=run, name="lab-probe", daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        conn = conn_box.get("conn")
        if conn is not None:
            break_connection(conn)
        raise DatabaseDown(f"the database did not answer within {timeout:.0f}s")
    if "error" in result:
        exc = result["error"]
        if isinstance(exc, psycopg.OperationalError):
            first = redact_url(str(exc)).strip().splitlines()
            raise DatabaseDown(f"database unreachable: {first[0] if first else type(exc).__name__}") from None
        raise exc
    return result["rows"]


class WorkerProc:
    """One worker subprocess slot (a restart replaces the process, keeps the slot)."""

    def __init__(self, index: int, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.index = index
        self.proc = proc
        self.log = log
        self.paused = False

    @property
    def pid(self) -> int:
        """The process id."""
        return self.proc.pid

    def alive(self) -> bool:
        """Whether the process has not exited (a SIGSTOPped one is alive)."""
        return self.proc.poll() is None


class Workload:
    """A lab workload of ``workflows`` lab workflows on ``schema`` run by ``workers`` worker processes."""

    def __init__(self, database_url: str, schema: str, ledger_dir: Path, *, workflows: int = 1000,
                 workers: int = 3, worker_env: dict[str, str] | None = None, concurrency: int = 8,
                 retry_budget: float = 180.0, log: Callable[[str], None] | None = None) -> None:
        self.database_url = database_url
        self.schema = schema
        self.ledger_dir = Path(ledger_dir)
        self.workflows = workflows
        self.workers = workers
        self.worker_env = dict(worker_env or {})
        self.concurrency = concurrency
        self.retry_budget = retry_budget
        self.log = log or (lambda msg: print(f"[workload] {msg}", file=sys.stderr, flush=True))
        self.ids = [lab_app.workflow_id(n) for n in range(workflows)]
        self._procs: list[WorkerProc | None] = [None] * workers
        self._generation = 0
        self._client: Any = None
        self.last_progress: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"Workload({redact_url(self.database_url)!r}, schema={self.schema!r}, workflows={self.workflows})"

    # -- database side ----------------------------------------------------------------------------------------
    def _kit_client(self) -> Any:
        import kit

        if self._client is None:
            self._client = kit.Client(self.database_url, schema=self.schema)
        return self._client

    def _reset_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # noqa: BLE001 - a broken client is discarded either way
                pass

    def prepare(self) -> None:
        """Create/upgrade kit's schema, the app table and the limited queue; retries through a failover."""
        def once() -> None:
            """One attempt: migrate, declare the queue, create the application table."""
            app = lab_app.make_app(ledger_dir=self.ledger_dir, database_url=self.database_url, schema=self.schema,
                                   db_retry_seconds=30.0)
            try:
                app.backend.migrate()
                app._ensure_queues()
            finally:
                app.close()
            lab_app.ensure_tables(self.database_url, self.schema)

        self.ledger_dir.mkdir(parents=True, exist_ok=True)
        retry("prepare", once, self.retry_budget, self.log)

    def submit(self) -> list[str]:
        """Enqueue every workflow under its deterministic id (idempotent; receivers before their senders, so a
        send never targets a missing workflow); retries through connection errors. Returns the ids."""
        for n, wid in enumerate(self.ids):
            kind, partner, queue = lab_app.spec_for(n, self.workflows)

            def once(n: int = n, wid: str = wid, kind: str = kind, partner: str | None = partner,
                     queue: str | None = queue) -> None:
                """One enqueue attempt; a broken client is replaced before the retry."""
                try:
                    self._kit_client().enqueue(lab_app.WORKFLOW, n, kind, partner, queue=queue, workflow_id=wid)
                except Exception as exc:
                    if _transient(exc):
                        self._reset_client()
                    raise

            retry(f"submit {wid}", once, self.retry_budget, self.log)
        return list(self.ids)

    def _query(self, stmt: str, params: Any = None, timeout: float = 5.0) -> list[tuple]:
        return _bounded_query(self.database_url, sql.SQL(stmt).format(s=sql.Identifier(self.schema)), params, timeout)

    def progress(self) -> dict[str, int]:
        """Workflow counts by status (plus ``total`` expected); raises DatabaseDown when the database does not
        answer within 5 s (``last_progress`` keeps the previous reading)."""
        rows = self._query("SELECT status, count(*) FROM {s}.workflows WHERE workflow_id = ANY(%s) GROUP BY status",
                           [self.ids])
        counts = {status: int(c) for status, c in rows}
        for st in ("PENDING", "RUNNING", *TERMINAL):
            counts.setdefault(st, 0)
        counts["total"] = len(self.ids)
        self.last_progress = counts
        return counts

    def first_checkpoint_after(self, t: float) -> float | None:
        """UNIX time of the first step checkpoint committed after ``t`` (None if none yet); falls back to the
        ledger's first freshly acknowledged checkpoint when the database does not answer."""
        try:
            rows = self._query("SELECT extract(epoch FROM min(finished_at))::float8 FROM {s}.steps "
                               "WHERE finished_at > to_timestamp(%s)", [t])
            return rows[0][0] if rows and rows[0][0] is not None else None
        except DatabaseDown:
            from chaos.checker import read_ledger

            _, acks, _ = read_ledger(self.ledger_dir)
            times = [a.t for a in acks if a.fresh and a.t > t]
            return min(times) if times else None

    def wait_drained(self, timeout: float) -> float:
        """Block until every submitted workflow is terminal; returns the seconds waited. Rides through
        database outages; raises WorkloadTimeout with a progress summary at the deadline."""
        start = time.monotonic()
        deadline = start + timeout
        last_error = ""
        while True:
            try:
                counts = self.progress()
                last_error = ""
                if sum(counts[s] for s in TERMINAL) >= len(self.ids):
                    return time.monotonic() - start
            except DatabaseDown as exc:
                last_error = str(exc)
            if time.monotonic() >= deadline:
                alive = [p.pid for p in self._procs if p is not None and p.alive()]
                raise WorkloadTimeout(
                    f"workload not drained after {timeout:.0f}s: last progress {self.last_progress or 'none'}"
                    + (f"; database: {last_error}" if last_error else "")
                    + f"; live workers {alive}; logs in {self.ledger_dir}")
            time.sleep(0.25)

    # -- workers ------------------------------------------------------------------------------------------------
    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KIT_", "LAB_"))}
        env.update(self.worker_env)
        env.update(KIT_DATABASE_URL=self.database_url, KIT_SCHEMA=self.schema,
                   LAB_LEDGER_DIR=str(self.ledger_dir), PYTHONUNBUFFERED="1")
        path = env.get("PYTHONPATH")
        env["PYTHONPATH"] = str(REPO) + (os.pathsep + path if path else "")
        return env

    def _spawn(self, i: int) -> WorkerProc:
        self._generation += 1
        log = self.ledger_dir / f"worker-{i}-{self._generation}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "kit.cli", "worker", APP_SPEC, "--concurrency", str(self.concurrency)],
                cwd=REPO, env=self._env(), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            )
        w = WorkerProc(i, proc, log)
        self._procs[i] = w
        return w

    def start_workers(self) -> None:
        """Start every worker slot that has no live process."""
        self.ledger_dir.mkdir(parents=True, exist_ok=True)
        for i in range(self.workers):
            w = self._procs[i]
            if w is None or not w.alive():
                self._spawn(i)

    def worker_pids(self) -> list[int]:
        """Pids of the live worker processes, by slot (dead slots omitted)."""
        return [w.pid for w in self._procs if w is not None and w.alive()]

    def _slot(self, i: int) -> WorkerProc:
        w = self._procs[i]
        if w is None:
            raise IndexError(f"worker slot {i} was never started")
        return w

    def kill_worker(self, i: int, sig: int = signal.SIGKILL) -> int:
        """Send ``sig`` to worker ``i`` (SIGKILL by default, waiting for it to die); returns its pid."""
        w = self._slot(i)
        if w.alive():
            if w.paused and sig == signal.SIGTERM:
                os.kill(w.pid, signal.SIGCONT)  # a stopped process cannot handle SIGTERM
                w.paused = False
            w.proc.send_signal(sig)
            if sig in (signal.SIGKILL, signal.SIGTERM):
                try:
                    w.proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    w.proc.kill()
                    w.proc.wait(timeout=10)
        return w.pid

    def restart_worker(self, i: int) -> int:
        """Replace worker ``i`` by a new process (killing the old one with SIGKILL if alive); returns the new
        pid."""
        w = self._procs[i]
        if w is not None and w.alive():
            self.kill_worker(i, signal.SIGKILL)
        return self._spawn(i).pid

    def pause_worker(self, i: int) -> int:
        """Freeze worker ``i`` with SIGSTOP (the zombie scenario); returns its pid."""
        w = self._slot(i)
        if w.alive():
            os.kill(w.pid, signal.SIGSTOP)
            w.paused = True
        return w.pid

    def resume_worker(self, i: int) -> int:
        """Thaw worker ``i`` with SIGCONT; returns its pid."""
        w = self._slot(i)
        if w.alive():
            os.kill(w.pid, signal.SIGCONT)
        w.paused = False
        return w.pid

    def worker_logs(self, tail: int = 3000) -> str:
        """The tail of every worker log of this workload (for failure messages)."""
        parts = []
        for p in sorted(self.ledger_dir.glob("worker-*.log")):
            try:
                text = p.read_text(errors="replace")
            except OSError:
                continue
            parts.append(f"--- {p.name} ---\n{redact_url(text[-tail:])}")
        return "\n".join(parts)

    def stop(self, grace: float = 10.0) -> None:
        """Stop every worker: SIGCONT (if frozen) and SIGTERM, then SIGKILL after ``grace`` seconds."""
        procs = [w for w in self._procs if w is not None]
        for w in procs:
            if w.alive():
                try:
                    os.kill(w.pid, signal.SIGCONT)
                    w.proc.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + grace
        for w in procs:
            try:
                w.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                w.proc.kill()
                w.proc.wait(timeout=10)
        self._reset_client()

    def __enter__(self) -> Workload:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
