"""``kit bench``: throughput, per-step cost and recovery time, measured against the database's floor.

Workloads
    seq          N workflows of K trivial steps, started one after another in this process
    par          the same with M threads each starting and awaiting workflows
    queue-drain  N single-step workflows enqueued (PENDING rows), then drained by W ``kit worker``
                 processes running :data:`bench_app`; rate from the database's own timestamps
    recovery     a worker runs N workflows of slow steps and is SIGKILLed mid-run; a second worker
                 finishes them; reports kill -> first reclaim / first recovered checkpoint / all done
    all          every workload above, one after another

Every run first measures the floor on the same database: a prepared single-row ``INSERT`` committed
in autocommit (one round trip), on one connection and on M connections at once. Results are printed
as a table and written as JSON (``--json``). The bench schema (default ``kit_bench``) is dropped and
recreated at the start of every workload so runs never mix.

``kit worker kit.bench:bench_app`` runs the bench workflows; the application reads its settings from
``KIT_*`` environment variables (``KIT_DATABASE_URL``, ``KIT_SCHEMA``, ``KIT_LEASE_SECONDS``, ...).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kit.errors import UsageError

if TYPE_CHECKING:
    import psycopg

    from kit.app import Kit

WORKLOADS = ("seq", "par", "queue-drain", "recovery")
LIMITED_QUEUE = "bench.limited"
LATENCY_SAMPLES = 200
CHOICES = (*WORKLOADS, "all")
DEFAULT_SCHEMA = "kit_bench"
FLOOR_TABLE = "bench_floor"  # also marks a schema as created by kit bench (safe to drop)
JSON_VERSION = 1

# Defaults per workload: (workflows, steps per workflow).
SIZES = {"seq": (200, 10), "par": (200, 10), "queue-drain": (2000, 1), "recovery": (16, 6)}
DEFAULT_CONCURRENCY = 16
DEFAULT_WORKERS = 1
DEFAULT_LEASE = 2.0
DEFAULT_STEP_SECONDS = 0.25
DEFAULT_FLOOR_ITERATIONS = 2000

# BRIEF.md section 5: targets, and the peer's published figures on its reference machine.
TARGET_FLOOR_RATIO = 1.3
TARGET_DRAIN_PER_WORKER = 3000.0
TARGET_PEER_SPEEDUP = 5.0
PEER_MS_PER_STEP = 2.0  # DBOS Transact (Python), ~10 round trips and 2 transactions per step
PEER_DRAIN_PER_S = 288.0

WF_STEPS = "bench.steps"
WF_SLOW = "bench.slow"


# -- the bench application (also run by `kit worker kit.bench:bench_app`) -------------------------------
def build_app(**settings: Any) -> Kit:
    """A Kit application with the bench workflows; ``settings`` are Kit keyword arguments (the rest
    comes from ``KIT_*`` environment variables and kit.toml, as for any application)."""
    from kit.app import Kit

    app = Kit(**settings)
    # queue-drain --queue-limit L: a queue whose global concurrency limit every worker enforces.
    app.queue(LIMITED_QUEUE, concurrency=int(os.environ.get("KIT_BENCH_QUEUE_LIMIT", "8")))

    @app.step(name="bench.noop")
    def noop(i: int) -> int:
        return i

    @app.step(name="bench.sleep")
    def sleep_step(i: int, seconds: float) -> int:
        time.sleep(seconds)
        return i

    @app.workflow(name=WF_STEPS)
    def steps_workflow(k: int) -> int:
        for i in range(k):
            noop(i)
        return k

    @app.workflow(name=WF_SLOW)
    def slow_workflow(k: int, seconds: float) -> int:
        for i in range(k):
            sleep_step(i, seconds)
        return k

    return app


_bench_app: Kit | None = None
_bench_lock = threading.Lock()


def __getattr__(name: str) -> Any:
    # ``bench_app`` is built on first access, so importing kit.bench (the CLI does, to build its parser)
    # never reads configuration or fails on a bad KIT_* variable.
    if name == "bench_app":
        global _bench_app
        with _bench_lock:
            if _bench_app is None:
                _bench_app = build_app()
        return _bench_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# -- arguments ---------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Measure kit on this database: per-step cost against the floor (one prepared single-row INSERT "
        "per round trip, measured first on the same database), throughput, queue drain rate and "
        f"recovery time. The bench schema (--schema, default '{DEFAULT_SCHEMA}', not the application's "
        "schema) is DROPPED AND RECREATED at the start of every workload; a non-empty schema that kit "
        "bench did not create is refused. Results: a table on stdout and a JSON file."
    )
    parser.epilog = (
        "defaults: seq/par 200 workflows x 10 steps (par: 16 threads); queue-drain 2000 single-step "
        "workflows, 1 worker of concurrency 16; recovery 16 workflows x 6 steps of 0.25 s, lease 2 s"
    )
    for action in parser._actions:  # the shared --schema help names the application's default
        if action.dest == "schema":
            action.help = (f"bench schema, dropped and recreated at the start (default: {DEFAULT_SCHEMA}; "
                           "never the application's schema)")
    parser.add_argument("workload", choices=CHOICES, help="what to measure (all: every workload in turn)")
    parser.add_argument("--workflows", metavar="N", help="workflows per workload (default: per workload)")
    parser.add_argument("--steps", metavar="K", help="steps per workflow (default: 10; queue-drain 1; recovery 6)")
    parser.add_argument("--concurrency", metavar="M",
                        help=f"par: threads starting workflows; queue-drain/recovery: worker concurrency "
                             f"(default {DEFAULT_CONCURRENCY}; recovery: all workflows at once)")
    parser.add_argument("--workers", metavar="W", help=f"queue-drain: worker processes (default {DEFAULT_WORKERS})")
    parser.add_argument("--queue-limit", metavar="L",
                        help="queue-drain: drain a queue with a global concurrency limit of L (default: no limit)")
    parser.add_argument("--lease-seconds", metavar="S",
                        help=f"recovery: lease of the bench workers (default {DEFAULT_LEASE:g})")
    parser.add_argument("--step-seconds", metavar="S",
                        help=f"recovery: duration of each slow step (default {DEFAULT_STEP_SECONDS:g})")
    parser.add_argument("--floor-iterations", metavar="N",
                        help=f"INSERTs per floor measurement (default {DEFAULT_FLOOR_ITERATIONS})")
    parser.add_argument("--profile", metavar="PATH",
                        help="seq/par: after measuring, run once more under cProfile (all threads) and "
                             "write pstats to PATH; prints the top functions")
    parser.add_argument("--json", metavar="PATH",
                        help="results file (default bench-results/<workload>-<UTC timestamp>.json)")


@dataclass(frozen=True)
class Params:
    workload: str
    workflows: int | None
    steps: int | None
    concurrency: int | None
    workers: int
    queue_limit: int | None
    lease_seconds: float
    step_seconds: float
    floor_iterations: int
    profile: str | None
    json_path: Path

    def size(self, workload: str) -> tuple[int, int]:
        n, k = SIZES[workload]
        return (self.workflows or n, self.steps or k)


def _number(name: str, value: Any, kind: type, low: float, high: float) -> Any:
    if value is None:
        return None
    try:
        number = kind(str(value).strip())
    except ValueError:
        raise UsageError(f"{name} expects {'an integer' if kind is int else 'a number'}, got {value!r}") from None
    if not math.isfinite(number) or not low <= number <= high:
        shown = (f"{int(low)} and {int(high):,}" if kind is int else f"{low:g} and {high:g}")
        raise UsageError(f"{name} must be between {shown}, got {value!r}")
    return number


def parse_params(args: argparse.Namespace) -> Params:
    """Validate the options; raise UsageError with a one-line message naming the option."""
    workload = args.workload
    if workload not in CHOICES:
        raise UsageError(f"unknown workload {workload!r}; choose one of {', '.join(CHOICES)}")
    workflows = _number("--workflows", args.workflows, int, 1, 10_000_000)
    steps = _number("--steps", args.steps, int, 1, 100_000)
    concurrency = _number("--concurrency", args.concurrency, int, 1, 256)
    workers = _number("--workers", args.workers, int, 1, 64) or DEFAULT_WORKERS
    queue_limit = _number("--queue-limit", getattr(args, "queue_limit", None), int, 1, 10_000)
    lease = _number("--lease-seconds", args.lease_seconds, float, 0.5, 3600) or DEFAULT_LEASE
    step_seconds = _number("--step-seconds", args.step_seconds, float, 0.01, 60) or DEFAULT_STEP_SECONDS
    floor_iterations = _number("--floor-iterations", args.floor_iterations, int, 10, 10_000_000) \
        or DEFAULT_FLOOR_ITERATIONS
    if workload in ("recovery", "all") and (steps or SIZES["recovery"][1]) < 2:
        raise UsageError("recovery needs --steps of at least 2 so the worker can be killed mid-run")
    if args.profile and workload not in ("seq", "par"):
        raise UsageError("--profile works with the seq and par workloads only")
    if args.json:
        json_path = Path(args.json)
        if json_path.is_dir():
            raise UsageError(f"--json {args.json}: is a directory; give a file path")
    else:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        json_path = Path("bench-results") / f"{workload}-{stamp}.json"
    return Params(workload, workflows, steps, concurrency, workers, queue_limit, lease, step_seconds, floor_iterations,
                  args.profile, json_path)


# -- environment --------------------------------------------------------------------------------------
@dataclass
class BenchEnv:
    """Where the bench runs: a resolved URL (the embedded server is started here, once), the schema."""

    url: str
    schema: str
    backend: str | None
    config_file: str | None
    embedded: bool
    data_dir: str | None
    log: Any  # rich Console on stderr
    worker_logs: list[Path] = field(default_factory=list)

    def app(self, **settings: Any) -> Kit:
        return build_app(database_url=self.url, schema=self.schema, backend=self.backend,
                         config_file=self.config_file, **settings)

    def connect(self) -> psycopg.Connection:
        import psycopg

        return psycopg.connect(self.url, autocommit=True, prepare_threshold=0, connect_timeout=10,
                               application_name="kit-bench")

    def qualified(self, table: str) -> str:
        return f'"{self.schema}".{table}'


def resolve_env(args: argparse.Namespace, log: Any) -> BenchEnv:
    from kit.config import load_config

    schema = args.schema or DEFAULT_SCHEMA
    cfg = load_config({"database_url": args.database_url, "data_dir": args.data_dir, "backend": args.backend,
                       "schema": schema}, config_file=args.config)
    url = cfg.database_url
    embedded = url is None
    if embedded:
        from kit.embedded import embedded_url

        url = embedded_url(cfg.data_dir)
    return BenchEnv(url=url, schema=schema, backend=cfg.backend, config_file=args.config, embedded=embedded,
                    data_dir=cfg.data_dir if embedded else None, log=log)


def reset_schema(env: BenchEnv) -> None:
    """Drop and recreate the bench schema (refusing one kit bench did not create) and the floor tables."""
    import psycopg
    from psycopg import sql

    try:
        conn = env.connect()
    except psycopg.Error as exc:
        from kit.config import redact_url
        from kit.errors import DatabaseUnavailableError

        raise DatabaseUnavailableError(f"cannot connect to {redact_url(env.url)}: {exc}") from None
    with conn:
        conn.execute("SET lock_timeout = '15s'")
        relations = conn.execute(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s",
            (env.schema,)).fetchone()[0]
        marked = conn.execute("SELECT to_regclass(%s) IS NOT NULL",
                              (f'"{env.schema}".{FLOOR_TABLE}',)).fetchone()[0]
        if relations and not marked:
            raise UsageError(f"schema '{env.schema}' holds tables that kit bench did not create; refusing to drop "
                             "it: choose another --schema (the default is kit_bench)")
        ident = sql.Identifier(env.schema)
        try:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(ident))
        except psycopg.errors.LockNotAvailable:
            raise UsageError(f"schema '{env.schema}' is in use (a worker still running on it?); stop it and "
                             "run again") from None
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(ident))
        conn.execute(sql.SQL(
            "CREATE TABLE {}.{} (workflow_id text NOT NULL, step_id integer NOT NULL, output text, "
            "PRIMARY KEY (workflow_id, step_id))").format(ident, sql.Identifier(FLOOR_TABLE)))
        conn.execute(sql.SQL(
            "CREATE TABLE {}.bench_owner (workflow_id text PRIMARY KEY, epoch bigint NOT NULL, "
            "status text NOT NULL)").format(ident))
        conn.execute(sql.SQL("INSERT INTO {}.bench_owner VALUES ('owner', 1, 'RUNNING')").format(ident))


# -- CPU accounting ----------------------------------------------------------------------------------------
class ServerCpu:
    """CPU seconds used by the PostgreSQL server, when it runs on this machine (else unavailable).

    Sums user+system time of the postmaster and all its children, plus the children it has reaped, so
    connections that come and go are counted.
    """

    def __init__(self, conn: psycopg.Connection) -> None:
        self._postmaster = None
        self.reason = ""
        try:
            import psutil
        except ImportError:
            self.reason = "psutil not installed"
            return
        host = conn.info.host or ""
        if not (host.startswith("/") or host in ("localhost", "127.0.0.1", "::1")):
            self.reason = f"server on another host ({host})"
            return
        try:
            pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
            proc = psutil.Process(pid)
            parent = proc.parent()
            if parent is None or proc.name() != parent.name():  # a server backend is forked from its server
                self.reason = "server processes not visible from here"
                return
            parent.cpu_times()
            self._postmaster = parent
        except Exception as exc:  # noqa: BLE001 - best effort: a container, another pid namespace, ...
            self.reason = f"server processes not visible ({type(exc).__name__})"

    @property
    def available(self) -> bool:
        return self._postmaster is not None

    def seconds(self) -> float | None:
        if self._postmaster is None:
            return None
        import psutil

        pm = self._postmaster
        try:
            t = pm.cpu_times()
            total = t.user + t.system + t.children_user + t.children_system
            for child in pm.children(recursive=True):
                try:
                    c = child.cpu_times()
                    total += c.user + c.system
                except psutil.Error:
                    pass
            return total
        except psutil.Error:
            return None


def _proc_cpu(pid: int) -> float | None:
    try:
        import psutil

        t = psutil.Process(pid).cpu_times()
        return t.user + t.system
    except Exception:  # noqa: BLE001 - psutil missing or the process gone
        return None


@dataclass
class Meter:
    """Wall time, this process's CPU, the server's CPU and WAL written over a measured section."""

    server: ServerCpu | None = None
    wal_conn: Any = None  # a connection to read pg_current_wal_lsn() from
    wall: float = 0.0
    client_cpu: float = 0.0
    server_cpu: float | None = None
    wal_bytes: int | None = None

    def _lsn(self) -> Any:
        if self.wal_conn is None:
            return None
        try:
            return self.wal_conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
        except Exception:  # noqa: BLE001 - e.g. a server without WAL functions
            self.wal_conn = None
            return None

    @contextmanager
    def measure(self) -> Iterator[Meter]:
        w0 = self._lsn()
        s0 = self.server.seconds() if self.server else None
        c0 = time.process_time()
        t0 = time.perf_counter()
        yield self
        self.wall = time.perf_counter() - t0
        self.client_cpu = time.process_time() - c0
        s1 = self.server.seconds() if self.server else None
        self.server_cpu = (s1 - s0) if s0 is not None and s1 is not None else None
        w1 = self._lsn()
        if w0 is not None and w1 is not None:
            self.wal_bytes = int(self.wal_conn.execute("SELECT pg_wal_lsn_diff(%s, %s)", (w1, w0)).fetchone()[0])


def _ms(seconds: float | None, count: int) -> float | None:
    return None if seconds is None or count <= 0 else round(seconds * 1000.0 / count, 4)


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 3)


def _rate(count: int, seconds: float) -> float:
    return round(count / seconds, 1) if seconds > 0 else 0.0


# -- the floor ---------------------------------------------------------------------------------------------
FLOOR_VARIANTS = {
    "insert": "INSERT INTO {t} (workflow_id, step_id, output) VALUES (%s, %s, %s)",
    # The brief's fenced floor: insert only while the owner row has our epoch.
    "fenced_insert": "INSERT INTO {t} (workflow_id, step_id, output) SELECT %s, %s, %s WHERE EXISTS "
                     "(SELECT 1 FROM {o} WHERE workflow_id = 'owner' AND epoch = %s)",
    # What kit's step_record does: the same, holding the owner row with FOR KEY SHARE.
    "fenced_key_share_insert": "INSERT INTO {t} (workflow_id, step_id, output) SELECT %s, %s, %s WHERE EXISTS "
                               "(SELECT 1 FROM {o} WHERE workflow_id = 'owner' AND epoch = %s FOR KEY SHARE)",
}


FLOOR_LABELS = {"insert": "insert", "fenced_insert": "fenced insert", "fenced_key_share_insert": "fenced + key share"}


def _floor_sql(env: BenchEnv, variant: str) -> str:
    return FLOOR_VARIANTS[variant].format(t=env.qualified(FLOOR_TABLE), o=env.qualified("bench_owner"))


def _insert_loop(cur: Any, stmt: str, prefix: str, start: int, count: int, fenced: bool) -> None:
    if fenced:
        for i in range(start, start + count):
            cur.execute(stmt, (prefix, i, "1", 1), prepare=True)
    else:
        for i in range(start, start + count):
            cur.execute(stmt, (prefix, i, "1"), prepare=True)


FLOOR_ROUNDS = 5


def measure_floor(env: BenchEnv, iterations: int, concurrency: int) -> dict[str, Any]:
    """Prepared single-row INSERTs in autocommit on one connection, the statement kinds interleaved in
    rounds (so drift in the machine's load does not favour one), then plain INSERTs on M connections."""
    out: dict[str, Any] = {"iterations": iterations, "rounds": FLOOR_ROUNDS}
    warm = min(200, iterations)
    per_round = max(1, iterations // FLOOR_ROUNDS)
    with env.connect() as conn:
        server = ServerCpu(conn)
        out["server_cpu_measured"] = server.available
        if not server.available:
            out["server_cpu_note"] = server.reason
        cur = conn.cursor()
        totals = {v: [0.0, 0.0, 0.0, 0, [], 0] for v in FLOOR_VARIANTS}  # wall, cpu, server, n, round ms, wal
        for variant in FLOOR_VARIANTS:
            _insert_loop(cur, _floor_sql(env, variant), f"{variant}-warm", 0, warm, variant != "insert")
        for rnd in range(FLOOR_ROUNDS):
            for variant, acc in totals.items():
                meter = Meter(server, conn)
                with meter.measure():
                    _insert_loop(cur, _floor_sql(env, variant), variant, rnd * per_round, per_round,
                                 variant != "insert")
                acc[5] = None if meter.wal_bytes is None or acc[5] is None else acc[5] + meter.wal_bytes
                acc[0] += meter.wall
                acc[1] += meter.client_cpu
                acc[2] = None if meter.server_cpu is None or acc[2] is None else acc[2] + meter.server_cpu
                acc[3] += per_round
                acc[4].append(meter.wall * 1000 / per_round)
        for variant, (wall, cpu, srv, count, rounds, wal) in totals.items():
            out[variant] = {
                "ms": _ms(wall, count),
                "client_cpu_ms": _ms(cpu, count),
                "server_cpu_ms": _ms(srv, count),
                "wal_bytes": None if wal is None else round(wal / count),
                "per_s": _rate(count, wall),
                "round_ms": [round(x, 4) for x in rounds],
            }
        out["concurrent"] = _floor_concurrent(env, iterations, concurrency, server)
    return out


def _floor_concurrent(env: BenchEnv, iterations: int, concurrency: int, server: ServerCpu) -> dict[str, Any]:
    per = max(20, iterations // concurrency)
    stmt = _floor_sql(env, "insert")
    conns = [env.connect() for _ in range(concurrency)]
    try:
        for n, c in enumerate(conns):  # warm up: prepare on every connection
            _insert_loop(c.cursor(), stmt, f"cwarm-{n}", 0, 20, False)
        barrier = threading.Barrier(concurrency + 1)
        errors: list[BaseException] = []

        def run(n: int, c: psycopg.Connection) -> None:
            cur = c.cursor()
            barrier.wait()
            try:
                _insert_loop(cur, stmt, f"c-{n}", 0, per, False)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(n, c), daemon=True) for n, c in enumerate(conns)]
        for t in threads:
            t.start()
        meter = Meter(server)
        with meter.measure():
            barrier.wait()
            for t in threads:
                t.join()
        if errors:
            raise errors[0]
    finally:
        for c in conns:
            c.close()
    total = per * concurrency
    return {"connections": concurrency, "inserts": total, "ms_effective": _ms(meter.wall, total),
            "client_cpu_ms": _ms(meter.client_cpu, total), "server_cpu_ms": _ms(meter.server_cpu, total),
            "per_s": _rate(total, meter.wall)}


# -- in-process workloads: seq and par ---------------------------------------------------------------------
def _run_batch(app: Kit, prefix: str, n: int, k: int, threads: int) -> None:
    """Start and await ``n`` workflows of ``k`` steps, from ``threads`` threads (1: the calling thread)."""
    if threads <= 1:
        for i in range(n):
            app.start(WF_STEPS, k, workflow_id=f"{prefix}-{i}").result()
        return
    import itertools

    counter = itertools.count()
    errors: list[BaseException] = []

    def loop() -> None:
        try:
            while True:
                i = next(counter)
                if i >= n or errors:
                    return
                app.start(WF_STEPS, k, workflow_id=f"{prefix}-{i}").result()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            errors.append(exc)

    pool = [threading.Thread(target=loop, name=f"bench-{t}", daemon=True) for t in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    if errors:
        raise errors[0]


def _count(env: BenchEnv, conn: psycopg.Connection, prefix: str) -> tuple[int, int]:
    wf = conn.execute(f"SELECT count(*) FROM {env.qualified('workflows')} WHERE workflow_id LIKE %s "
                      "AND status = 'SUCCESS'", (prefix + "-%",)).fetchone()[0]
    st = conn.execute(f"SELECT count(*) FROM {env.qualified('steps')} WHERE workflow_id LIKE %s",
                      (prefix + "-%",)).fetchone()[0]
    return wf, st


def run_inprocess(env: BenchEnv, p: Params, workload: str, floor: dict[str, Any]) -> dict[str, Any]:
    n, k = p.size(workload)
    m = 1 if workload == "seq" else (p.concurrency or DEFAULT_CONCURRENCY)
    app = env.app(pool_size=m + 4)
    try:
        app.backend  # noqa: B018 - open and migrate before measuring
        with env.connect() as conn:
            server = ServerCpu(conn)
            _run_batch(app, f"{workload}-warm", max(m, min(20, n)), k, m)
            main = Meter(server, conn)
            env.log.print(f"[dim]{workload}: {n} workflows x {k} steps, {m} thread(s)[/dim]")
            with main.measure():
                _run_batch(app, f"{workload}-main", n, k, m)
            zero = Meter(server, conn)  # the same workflows with no step: the fixed cost per workflow
            with zero.measure():
                _run_batch(app, f"{workload}-zero", n, 0, m)
            completed, checkpoints = _count(env, conn, f"{workload}-main")
    finally:
        app.close()
    steps = n * k
    if workload == "seq":
        floor_ms, floor_cpu = floor["insert"]["ms"], floor["insert"]["client_cpu_ms"]
        floor_server, floor_kind = floor["insert"]["server_cpu_ms"], "insert, 1 connection"
    else:
        c = floor["concurrent"]
        floor_ms, floor_cpu, floor_server = c["ms_effective"], c["client_cpu_ms"], c["server_cpu_ms"]
        floor_kind = f"insert, {c['connections']} connections (effective)"
    ms_step = _ms(main.wall, steps)
    marginal = _ms(main.wall - zero.wall, steps)
    cpu_step = _ms(main.client_cpu, steps)
    server_step = _ms(main.server_cpu, steps)
    total_cpu = None if server_step is None else round(cpu_step + server_step, 4)
    floor_total = None if floor_server is None else round(floor_cpu + floor_server, 4)
    result = {
        "workload": workload, "workflows": n, "steps_per_workflow": k, "concurrency": m,
        "completed": completed, "checkpoints": checkpoints,
        "wall_s": round(main.wall, 4),
        "workflows_per_s": _rate(n, main.wall),
        "steps_per_s": _rate(steps, main.wall),
        "ms_per_workflow": _ms(main.wall, n),
        "ms_per_step": ms_step,
        "client_cpu_ms_per_step": cpu_step,
        "server_cpu_ms_per_step": server_step,
        "cpu_ms_per_step": total_cpu,
        "wal_bytes_per_step": None if main.wal_bytes is None else round(main.wal_bytes / steps),
        "zero_step_wal_bytes_per_workflow": None if zero.wal_bytes is None else round(zero.wal_bytes / n),
        "marginal_wal_bytes_per_step": None if main.wal_bytes is None or zero.wal_bytes is None
        else round((main.wal_bytes - zero.wal_bytes) / steps),
        "zero_step_ms_per_workflow": _ms(zero.wall, n),
        "zero_step_client_cpu_ms_per_workflow": _ms(zero.client_cpu, n),
        "marginal_ms_per_step": marginal,
        "marginal_client_cpu_ms_per_step": _ms(main.client_cpu - zero.client_cpu, steps),
        "floor_kind": floor_kind,
        "floor_ms": floor_ms,
        "floor_client_cpu_ms": floor_cpu,
        "floor_cpu_ms": floor_total,
        "ratio_to_floor": _ratio(ms_step, floor_ms),
        "marginal_ratio_to_floor": _ratio(marginal, floor_ms),
        "cpu_ratio_to_floor": _ratio(total_cpu, floor_total),
        "client_cpu_ratio_to_floor": _ratio(cpu_step, floor_cpu),
        "target_ratio": TARGET_FLOOR_RATIO,
        "peer_ms_per_step": PEER_MS_PER_STEP,
        "speedup_vs_peer_per_step": _ratio(PEER_MS_PER_STEP, ms_step),
    }
    if p.profile:
        result["profile"] = profile_inprocess(env, p, workload, n, k, m)
    return result


class ThreadProfiler:
    """cProfile in every thread: one profiler per thread (threads started after ``start``), merged.

    Times are each thread's CPU time (``time.thread_time``), so waiting on the network or on a lock costs
    nothing and the profile shows where the client's CPU goes.
    """

    def __init__(self) -> None:
        import cProfile

        self._cls = cProfile.Profile
        self.profiles: list[Any] = []
        self._lock = threading.Lock()

    def _new(self) -> Any:
        return self._cls(time.thread_time)

    def _hook(self, frame: Any, event: str, arg: Any) -> None:
        prof = self._new()
        with self._lock:
            self.profiles.append(prof)
        prof.enable()  # replaces this hook for the thread

    def start(self) -> None:
        threading.setprofile(self._hook)
        main = self._new()
        self.profiles.append(main)
        main.enable()

    def stop(self) -> Any:
        """Merged stats of the calls that completed. Calls still in progress (a thread asleep) are left
        out: ``disable()`` would close them with the *calling* thread's clock, which is meaningless for
        a per-thread CPU timer."""
        import pstats

        threading.setprofile(None)  # type: ignore[arg-type]
        sys.setprofile(None)  # this thread's profiler stops without closing its open calls
        stats = None
        for prof in self.profiles:
            prof.snapshot_stats()
            snap = _Snapshot(prof.stats)
            if not snap.stats:
                continue
            if stats is None:
                stats = pstats.Stats(snap)
            else:
                stats.add(snap)
        return stats if stats is not None else pstats.Stats()


class _Snapshot:
    """Stats already taken from a profiler, in the shape pstats.Stats loads (it calls create_stats)."""

    def __init__(self, stats: dict) -> None:
        self.stats = stats

    def create_stats(self) -> None:
        pass


def profile_inprocess(env: BenchEnv, p: Params, workload: str, n: int, k: int, m: int) -> dict[str, Any]:
    """Run the workload again under cProfile in every thread (slower: not a timing run)."""
    import io

    env.log.print(f"[dim]{workload}: profiling a second run of {n} workflows (cProfile, CPU time, all "
                  "threads)[/dim]")
    profiler = ThreadProfiler()
    profiler.start()  # before the app exists, so its threads are profiled too
    app = env.app(pool_size=m + 4)
    try:
        app.backend  # noqa: B018
        _run_batch(app, f"{workload}-prof", n, k, m)
    finally:
        app.close()
        time.sleep(0.2)
        stats = profiler.stop()
    assert p.profile is not None
    Path(p.profile).parent.mkdir(parents=True, exist_ok=True)
    stats.dump_stats(p.profile)
    buf = io.StringIO()
    stats.stream = buf
    stats.sort_stats("tottime").print_stats(25)
    print(buf.getvalue())
    return {"path": str(p.profile), "timer": "thread CPU time",
            "note": "cProfile of a separate run, every thread; its times are inflated by profiling"}


# -- worker processes ------------------------------------------------------------------------------------
@dataclass
class Worker:
    proc: subprocess.Popen
    log_path: Path
    ready_cpu: float | None = None

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def worker_env(env: BenchEnv, *, concurrency: int, lease: float | None = None) -> dict[str, str]:
    """Environment for `kit worker kit.bench:bench_app`: the resolved URL and schema, and bench settings."""
    e = dict(os.environ)
    e.update(KIT_DATABASE_URL=env.url, KIT_SCHEMA=env.schema, KIT_WORKER_CONCURRENCY=str(concurrency),
             KIT_POOL_SIZE=str(concurrency + 4), KIT_MIGRATE="false")
    if env.backend:
        e["KIT_BACKEND"] = env.backend
    if env.config_file:
        e["KIT_CONFIG"] = env.config_file
    if lease is not None:
        e.update(KIT_LEASE_SECONDS=repr(lease), KIT_HEARTBEAT_SECONDS=repr(lease / 4),
                 KIT_POLL_SECONDS=repr(min(1.0, lease / 2)))
    else:
        for key in ("KIT_LEASE_SECONDS", "KIT_HEARTBEAT_SECONDS", "KIT_POLL_SECONDS"):
            e.pop(key, None)
    return e


def spawn_worker(env: BenchEnv, wenv: dict[str, str], tag: str) -> Worker:
    fd, name = tempfile.mkstemp(prefix=f"kit-bench-{tag}-", suffix=".log")
    log_path = Path(name)
    env.worker_logs.append(log_path)
    with os.fdopen(fd, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "kit.cli", "worker", "kit.bench:bench_app"],
                                env=wenv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    return Worker(proc, log_path)


def wait_ready(workers: list[Worker], timeout: float) -> None:
    """Wait until every worker printed its start line (then note its CPU, to leave out start-up)."""
    deadline = time.monotonic() + timeout
    pending = list(workers)
    while pending:
        for w in list(pending):
            if w.proc.poll() is not None:
                raise UsageError(f"bench worker exited with code {w.proc.returncode}: {_one_line(w.tail(5))}")
            try:
                text = w.log_path.read_text(errors="replace")
            except OSError:
                text = ""
            if "kit worker " in text:
                w.ready_cpu = _proc_cpu(w.proc.pid)
                pending.remove(w)
        if pending and time.monotonic() > deadline:
            raise UsageError(f"bench worker did not start within {timeout:.0f}s: {_one_line(pending[0].tail(5))}")
        time.sleep(0.005)


def stop_workers(workers: list[Worker], grace: float = 10.0) -> None:
    for w in workers:
        if w.proc.poll() is None:
            w.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for w in workers:
        try:
            w.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            w.proc.kill()
            w.proc.wait()


def _one_line(text: str) -> str:
    return " | ".join(ln.strip() for ln in text.splitlines() if ln.strip())[-600:] or "(no output)"


def _enqueue(env: BenchEnv, prefix: str, n: int, name: str, args: tuple, *, queue_limit: int | None = None,
             gap: float = 0.0) -> float:
    """Enqueue ``n`` workflows (PENDING rows) to the default queue, or to the limited bench queue;
    returns the seconds it took. ``gap``: pause between enqueues (latency sampling)."""
    if queue_limit is not None:
        os.environ["KIT_BENCH_QUEUE_LIMIT"] = str(queue_limit)
    app = env.app()
    try:
        app.backend  # noqa: B018 - open and migrate first
        target = next(q for q in app.queues() if q.name == LIMITED_QUEUE) if queue_limit is not None else app
        t0 = time.perf_counter()
        for i in range(n):
            target.enqueue(name, *args, workflow_id=f"{prefix}-{i}")
            if gap:
                time.sleep(gap)
        return time.perf_counter() - t0
    finally:
        app.close()


def _latency(env: BenchEnv, conn: psycopg.Connection, prefix: str, workers: list[Worker], p: Params) -> dict[str, Any]:
    """Enqueue-to-start latency with the workers idle: enqueue one at a time, 5 ms apart, and read
    started_at - created_at (both the server's clock) of each."""
    _enqueue(env, prefix, LATENCY_SAMPLES, WF_STEPS, (1,), queue_limit=p.queue_limit, gap=0.005)
    deadline = time.monotonic() + 60
    while _status_counts(env, conn, prefix)[0] < LATENCY_SAMPLES:
        _check_alive(workers)
        if time.monotonic() > deadline:
            raise UsageError("queue-drain: latency samples did not finish within 60 s")
        time.sleep(0.02)
    row = conn.execute(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY s), percentile_cont(0.99) WITHIN GROUP (ORDER BY s), "
        f"max(s) FROM (SELECT extract(epoch FROM started_at - created_at) * 1000 AS s FROM {env.qualified('workflows')} "
        "WHERE workflow_id LIKE %s) x", (prefix + "-%",)).fetchone()
    return {"samples": LATENCY_SAMPLES, "p50_ms": round(float(row[0]), 2), "p99_ms": round(float(row[1]), 2),
            "max_ms": round(float(row[2]), 2), "how": "enqueued one at a time 5 ms apart to idle workers; "
            "started_at - created_at on the server's clock"}


def _status_counts(env: BenchEnv, conn: psycopg.Connection, prefix: str) -> tuple[int, int]:
    row = conn.execute(
        f"SELECT count(*) FILTER (WHERE status = 'SUCCESS'), count(*) FILTER (WHERE status IN ('ERROR', 'CANCELLED')) "
        f"FROM {env.qualified('workflows')} WHERE workflow_id LIKE %s", (prefix + "-%",)).fetchone()
    return row[0], row[1]


def _check_alive(workers: list[Worker]) -> None:
    for w in workers:
        if w.proc.poll() is not None:
            raise UsageError(f"bench worker exited with code {w.proc.returncode}: {_one_line(w.tail(5))}")


# -- queue-drain ----------------------------------------------------------------------------------------
def run_queue_drain(env: BenchEnv, p: Params, floor: dict[str, Any]) -> dict[str, Any]:
    n, k = p.size("queue-drain")
    w_count = p.workers
    conc = p.concurrency or DEFAULT_CONCURRENCY
    limit_note = f" to a queue limited to {p.queue_limit} at once" if p.queue_limit else ""
    env.log.print(f"[dim]queue-drain: enqueueing {n} workflows of {k} step(s){limit_note}[/dim]")
    enqueue_s = _enqueue(env, "drain", n, WF_STEPS, (k,), queue_limit=p.queue_limit)
    timeout = 60.0 + n * k / 100.0
    workers: list[Worker] = []
    with env.connect() as conn:
        server = ServerCpu(conn)
        s0 = server.seconds()
        env.log.print(f"[dim]queue-drain: starting {w_count} worker process(es), concurrency {conc}[/dim]")
        wenv = worker_env(env, concurrency=conc)
        t_spawn = time.perf_counter()
        try:
            workers = [spawn_worker(env, wenv, f"drain{i}") for i in range(w_count)]
            wait_ready(workers, timeout=60)
            deadline = time.monotonic() + timeout
            while True:
                done, failed = _status_counts(env, conn, "drain")
                if failed:
                    raise UsageError(f"queue-drain: {failed} workflows failed; see {workers[0].log_path}")
                if done >= n:
                    break
                _check_alive(workers)
                if time.monotonic() > deadline:
                    raise UsageError(f"queue-drain: only {done}/{n} workflows finished within {timeout:.0f}s")
                time.sleep(0.02)
            wall_from_spawn = time.perf_counter() - t_spawn
            cpu_end = [_proc_cpu(w.proc.pid) for w in workers]
            s1 = server.seconds()
            env.log.print(f"[dim]queue-drain: sampling enqueue-to-start latency ({LATENCY_SAMPLES} workflows)[/dim]")
            latency = _latency(env, conn, "lat", workers, p)
        finally:
            stop_workers(workers)
        # A claim statement stamps every row it claims with the same started_at (its transaction time),
        # so distinct started_at values count the claim transactions that found work.
        row = conn.execute(
            f"SELECT extract(epoch FROM max(finished_at) - min(started_at)), count(*), count(DISTINCT started_at) "
            f"FROM {env.qualified('workflows')} WHERE workflow_id LIKE %s AND status = 'SUCCESS'", ("drain-%",)).fetchone()
        drain_s, completed, claims = float(row[0] or 0.0), row[1], row[2]
        checkpoints = _count(env, conn, "drain")[1]
    worker_cpu = None
    if all(c is not None for c in cpu_end) and all(w.ready_cpu is not None for w in workers):
        worker_cpu = sum(c - w.ready_cpu for c, w in zip(cpu_end, workers, strict=True))  # type: ignore[operator]
    server_cpu = None if s0 is None or s1 is None else s1 - s0
    rate = _rate(n, drain_s)
    per_worker = round(rate / w_count, 1)
    c = floor["concurrent"]
    ms_wf_per_worker = _ms(drain_s * w_count, n)
    return {
        "workload": "queue-drain", "workflows": n, "steps_per_workflow": k, "workers": w_count,
        "queue_limit": p.queue_limit, "enqueue_to_start_latency": latency,
        "worker_concurrency": conc, "completed": completed, "checkpoints": checkpoints,
        "claim_transactions": claims, "mean_claim_batch": round(n / claims, 2) if claims else None,
        "enqueue_s": round(enqueue_s, 4), "enqueue_per_s": _rate(n, enqueue_s),
        "drain_s": round(drain_s, 4), "wall_from_spawn_s": round(wall_from_spawn, 4),
        "workflows_per_s": rate, "workflows_per_s_per_worker": per_worker,
        "steps_per_s": _rate(n * k, drain_s),
        "ms_per_workflow_per_worker": ms_wf_per_worker,
        "worker_cpu_ms_per_workflow": _ms(worker_cpu, n),
        "server_cpu_ms_per_workflow": _ms(server_cpu, n),
        "floor_kind": f"insert, {c['connections']} connections (effective)",
        "floor_ms": c["ms_effective"], "floor_per_s": c["per_s"],
        "ratio_to_floor": _ratio(_ms(drain_s, n), c["ms_effective"]),
        "target_per_worker_per_s": TARGET_DRAIN_PER_WORKER,
        "ratio_to_target": _ratio(per_worker, TARGET_DRAIN_PER_WORKER),
        "peer_per_s": PEER_DRAIN_PER_S,
        "speedup_vs_peer": _ratio(per_worker, PEER_DRAIN_PER_S),
        "timing": "drain_s = last finished_at - first started_at (server clock); worker CPU excludes start-up",
    }


# -- recovery ------------------------------------------------------------------------------------------
REC = ("rec-%",)


def run_recovery(env: BenchEnv, p: Params) -> dict[str, Any]:
    n, k = p.size("recovery")
    secs, lease = p.step_seconds, p.lease_seconds
    conc = p.concurrency or min(n, 256)
    total = n * k
    env.log.print(f"[dim]recovery: {n} workflows x {k} steps of {secs:g}s, lease {lease:g}s[/dim]")
    _enqueue(env, "rec", n, WF_SLOW, (k, secs))
    wf_t, st_t = env.qualified("workflows"), env.qualified("steps")
    wenv = worker_env(env, concurrency=conc, lease=lease)
    workers: list[Worker] = []
    timeout = 60.0 + 3 * lease + total * secs
    with env.connect() as conn:
        try:
            first = spawn_worker(env, wenv, "rec-a")
            workers.append(first)
            wait_ready([first], timeout=60)
            half = max(1, total // 2)
            deadline = time.monotonic() + timeout
            while True:
                recorded = conn.execute(f"SELECT count(*) FROM {st_t} WHERE workflow_id LIKE %s", REC).fetchone()[0]
                if recorded >= half:
                    break
                _check_alive(workers)
                if time.monotonic() > deadline:
                    raise UsageError(f"recovery: the first worker recorded only {recorded} checkpoints")
                time.sleep(0.005)
            first.proc.send_signal(signal.SIGKILL)
            t_kill = time.monotonic()
            first.proc.wait()
            second = spawn_worker(env, wenv, "rec-b")
            workers.append(second)
            per_wf = dict(conn.execute(f"SELECT w.workflow_id, count(s.step_id) FROM {wf_t} w LEFT JOIN {st_t} s "
                                       "USING (workflow_id) WHERE w.workflow_id LIKE %s GROUP BY 1", REC).fetchall())
            at_kill = sum(per_wf.values())
            done_at_kill = sum(1 for v in per_wf.values() if v >= k)
            if done_at_kill >= n:
                raise UsageError("recovery: the worker finished every workflow before it could be killed; "
                                 "use more --steps or a longer --step-seconds")
            remaining_work = max((k - v for v in per_wf.values()), default=0) * secs
            t_reclaim = t_checkpoint = t_done = None
            while t_done is None:
                row = conn.execute(
                    f"SELECT (SELECT count(*) FROM {wf_t} WHERE workflow_id LIKE %(p)s AND recoveries > 0), "
                    f"(SELECT count(*) FROM {st_t} WHERE workflow_id LIKE %(p)s AND epoch > 1), "
                    f"(SELECT count(*) FROM {wf_t} WHERE workflow_id LIKE %(p)s AND status = 'SUCCESS')",
                    {"p": REC[0]}).fetchone()
                now = time.monotonic()
                if t_reclaim is None and row[0] > 0:
                    t_reclaim = now
                if t_checkpoint is None and row[1] > 0:
                    t_checkpoint = now
                if row[2] >= n:
                    t_done = now
                    break
                if second.proc.poll() is not None:
                    raise UsageError(f"recovery: the second worker exited: {_one_line(second.tail(5))}")
                if now > deadline:
                    raise UsageError(f"recovery: only {row[2]}/{n} workflows finished within {timeout:.0f}s")
                time.sleep(0.005)
        finally:
            stop_workers(workers)
        recovered, completed = conn.execute(
            f"SELECT count(*) FILTER (WHERE recoveries > 0), count(*) FILTER (WHERE status = 'SUCCESS') "
            f"FROM {wf_t} WHERE workflow_id LIKE %s", REC).fetchone()
        checkpoints = conn.execute(f"SELECT count(*) FROM {st_t} WHERE workflow_id LIKE %s", REC).fetchone()[0]

    def since_kill(t: float | None) -> float | None:
        return None if t is None else round(t - t_kill, 3)

    poll = min(1.0, lease / 2)
    return {
        "workload": "recovery", "workflows": n, "steps_per_workflow": k, "step_seconds": secs,
        "worker_concurrency": conc, "lease_seconds": lease, "heartbeat_seconds": lease / 4, "poll_seconds": poll,
        "completed": completed, "recovered_workflows": recovered, "checkpoints": checkpoints,
        "checkpoints_at_kill": at_kill, "workflows_done_at_kill": done_at_kill,
        "remaining_work_s": round(remaining_work, 3),
        "kill_to_first_reclaim_s": since_kill(t_reclaim),
        "kill_to_first_recovered_checkpoint_s": since_kill(t_checkpoint),
        "kill_to_all_done_s": since_kill(t_done),
        "bound_s": round(lease + poll + remaining_work, 3),
        "within_bound": t_done is not None and t_done - t_kill <= lease + poll + remaining_work + 0.5,
        "timing": "bench-process monotonic clock, polled every 5 ms; bound = lease + poll + remaining work",
    }


# -- output -----------------------------------------------------------------------------------------------
def machine_info(env: BenchEnv) -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(), "python": platform.python_version(),
        "python_implementation": platform.python_implementation(), "platform": platform.platform(),
        "machine": platform.machine(),
    }
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        import psutil

        info["memory_gib"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    try:
        import psycopg

        info["psycopg"] = psycopg.__version__
    except ImportError:  # pragma: no cover
        pass
    import kit

    info["kit"] = kit.__version__
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(kit.__file__).parent,
                             capture_output=True, text=True, timeout=5)
        if rev.returncode == 0:
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                   cwd=Path(kit.__file__).parent, capture_output=True, text=True, timeout=5)
            info["kit_git"] = rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def _machine_busy() -> float | None:
    """Whole-machine CPU busy % since the previous call (the first call starts the interval)."""
    try:
        import psutil

        return psutil.cpu_percent(interval=None)
    except ImportError:
        return None


SETTINGS = ("fsync", "synchronous_commit", "wal_sync_method", "full_page_writes", "shared_buffers",
            "max_connections")


def server_settings(env: BenchEnv) -> dict[str, str]:
    """Server settings that move the floor (durability of a commit, memory)."""
    with env.connect() as conn:
        rows = conn.execute("SELECT name, setting, unit FROM pg_settings WHERE name = ANY(%s)",
                            (list(SETTINGS),)).fetchall()
    return {name: f"{setting}{' x ' + unit if unit and unit not in ('', 's') else ''}" for name, setting, unit in rows}


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def _kv_table(title: str, rows: list[tuple[str, str]]) -> Any:
    from rich.table import Table

    t = Table(title=title)
    t.add_column("metric")
    t.add_column("value", justify="right")
    for label, value in rows:
        t.add_row(label, value)
    return t


def render(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    db = report["database"]
    busy = report["machine"].get("cpu_busy_percent_during_run")
    console.print(f"[bold]kit bench {report['workload']}[/bold]  {report['machine']['cpu_count']} CPUs "
                  f"({_fmt(busy, 0)}% busy during the run, all processes), "
                  f"Python {report['machine']['python']}, {db.get('server_version', '?').split(',')[0]}"
                  f"{' (embedded)' if db.get('embedded') else ''}, schema {db.get('schema')}")
    settings = db.get("settings", {})
    console.print("server: " + ", ".join(f"{k}={settings[k]}" for k in SETTINGS[:3] if k in settings))
    floor = report["floor"]
    t = Table(title="floor: prepared single-row INSERT, autocommit (one round trip, one commit)")
    for col in ("statement", "ms", "client CPU ms", "server CPU ms", "WAL B", "per s"):
        t.add_column(col, justify="right" if col != "statement" else "left")
    for variant in FLOOR_VARIANTS:
        f = floor[variant]
        t.add_row(FLOOR_LABELS[variant], _fmt(f["ms"]), _fmt(f["client_cpu_ms"]), _fmt(f["server_cpu_ms"]),
                  _fmt(f.get("wal_bytes")), _fmt(f["per_s"]))
    c = floor["concurrent"]
    t.add_row(f"insert x {c['connections']} conns", _fmt(c["ms_effective"]), _fmt(c["client_cpu_ms"]),
              _fmt(c["server_cpu_ms"]), "", _fmt(c["per_s"]))
    console.print(t)
    res = report["results"]
    inproc = [res[w] for w in ("seq", "par") if w in res]
    if inproc:
        t = Table(title=f"in-process workflows (target: <= {TARGET_FLOOR_RATIO}x floor; peer ~{PEER_MS_PER_STEP:g} "
                        "ms/step)")
        t.add_column("metric")
        for r in inproc:
            t.add_column(f"{r['workload']} ({r['concurrency']} thr)", justify="right")
        rows = [
            ("workflows x steps", lambda r: f"{r['workflows']} x {r['steps_per_workflow']}"),
            ("workflows/s", lambda r: _fmt(r["workflows_per_s"])),
            ("steps/s", lambda r: _fmt(r["steps_per_s"])),
            ("ms per step (wall)", lambda r: _fmt(r["ms_per_step"])),
            ("marginal ms per step", lambda r: _fmt(r["marginal_ms_per_step"])),
            ("ms per 0-step workflow", lambda r: _fmt(r["zero_step_ms_per_workflow"])),
            ("client CPU ms per step", lambda r: _fmt(r["client_cpu_ms_per_step"])),
            ("server CPU ms per step", lambda r: _fmt(r["server_cpu_ms_per_step"])),
            ("WAL bytes per step (marginal)", lambda r: f"{_fmt(r['wal_bytes_per_step'])} "
                                                        f"({_fmt(r['marginal_wal_bytes_per_step'])})"),
            ("floor ms", lambda r: _fmt(r["floor_ms"])),
            ("x floor (wall)", lambda r: _fmt(r["ratio_to_floor"], 2)),
            ("x floor (marginal)", lambda r: _fmt(r["marginal_ratio_to_floor"], 2)),
            ("x floor (client+server CPU)", lambda r: _fmt(r["cpu_ratio_to_floor"], 2)),
            ("vs peer 2 ms/step", lambda r: f"{_fmt(r['speedup_vs_peer_per_step'], 1)}x"),
        ]
        for label, get in rows:
            t.add_row(label, *(get(r) for r in inproc))
        console.print(t)
    if "queue-drain" in res:
        r = res["queue-drain"]
        console.print(_kv_table(
            f"queue drain (target: {TARGET_DRAIN_PER_WORKER:,.0f}/s per worker; peer {PEER_DRAIN_PER_S:g}/s)", [
                ("workflows x steps", f"{r['workflows']} x {r['steps_per_workflow']}"),
                ("workers x concurrency", f"{r['workers']} x {r['worker_concurrency']}"),
                ("queue's global limit", str(r["queue_limit"]) if r["queue_limit"] else "none"),
                ("enqueue (app.enqueue) per s", _fmt(r["enqueue_per_s"])),
                ("enqueue -> start ms p50 / p99", f"{_fmt(r['enqueue_to_start_latency']['p50_ms'], 2)} / "
                                                 f"{_fmt(r['enqueue_to_start_latency']['p99_ms'], 2)}"),
                ("drain s (first start -> last finish)", _fmt(r["drain_s"])),
                ("workflows/s", _fmt(r["workflows_per_s"])),
                ("workflows/s per worker", _fmt(r["workflows_per_s_per_worker"])),
                ("claims (workflows per claim)", f"{r['claim_transactions']} ({_fmt(r['mean_claim_batch'], 2)})"),
                ("worker CPU ms per workflow", _fmt(r["worker_cpu_ms_per_workflow"])),
                ("server CPU ms per workflow", _fmt(r["server_cpu_ms_per_workflow"])),
                ("x target", _fmt(r["ratio_to_target"], 2)),
                ("vs peer", f"{_fmt(r['speedup_vs_peer'], 1)}x"),
            ]))
    if "recovery" in res:
        r = res["recovery"]
        console.print(_kv_table("recovery after SIGKILL of a worker mid-run", [
            ("workflows x steps x step time", f"{r['workflows']} x {r['steps_per_workflow']} x {r['step_seconds']:g}s"),
            ("lease / heartbeat / poll s", f"{r['lease_seconds']:g} / {r['heartbeat_seconds']:g} / "
                                           f"{r['poll_seconds']:g}"),
            ("checkpoints at kill", f"{r['checkpoints_at_kill']} of {r['workflows'] * r['steps_per_workflow']}"),
            ("kill -> first reclaim s", _fmt(r["kill_to_first_reclaim_s"])),
            ("kill -> first recovered checkpoint s", _fmt(r["kill_to_first_recovered_checkpoint_s"])),
            ("kill -> all done s", _fmt(r["kill_to_all_done_s"])),
            ("remaining work at kill s", _fmt(r["remaining_work_s"])),
            ("bound (lease + poll + remaining) s", _fmt(r["bound_s"])),
            ("recovered workflows", f"{r['recovered_workflows']} of {r['workflows']}"),
        ]))
    console.print(f"results: {report['json_path']}")


# -- entry point ------------------------------------------------------------------------------------------
def run_bench(args: argparse.Namespace) -> int:
    from rich.console import Console

    p = parse_params(args)
    log = Console(stderr=True)
    env = resolve_env(args, log)
    workloads = list(WORKLOADS) if p.workload == "all" else [p.workload]
    floor_conc = p.concurrency or DEFAULT_CONCURRENCY
    started = datetime.now(timezone.utc)
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    _machine_busy()
    results: dict[str, Any] = {}
    try:
        reset_schema(env)
        info_app = env.app()
        try:
            database = info_app.describe()
        finally:
            info_app.close()
        database["embedded"] = env.embedded
        database["settings"] = server_settings(env)
        log.print(f"[dim]floor: {p.floor_iterations} prepared INSERTs per statement kind, then "
                  f"{floor_conc} connections[/dim]")
        floor = measure_floor(env, p.floor_iterations, floor_conc)
        for i, workload in enumerate(workloads):
            if i:
                reset_schema(env)
            if workload in ("seq", "par"):
                results[workload] = run_inprocess(env, p, workload, floor)
            elif workload == "queue-drain":
                results[workload] = run_queue_drain(env, p, floor)
            else:
                results[workload] = run_recovery(env, p)
    finally:
        for path in env.worker_logs:
            try:
                path.unlink()
            except OSError:
                pass
    report = {
        "kit_bench_version": JSON_VERSION,
        "workload": p.workload,
        "started_at": started.isoformat(),
        "finished_at": datetime.now(timezone.utc).isoformat(),
        "machine": {**machine_info(env), "load_1min_before": load_before,
                    "cpu_busy_percent_during_run": _machine_busy()},
        "database": database,
        "parameters": _parameters(p, workloads),
        "targets": {"ratio_to_floor": TARGET_FLOOR_RATIO, "drain_per_worker_per_s": TARGET_DRAIN_PER_WORKER,
                    "speedup_vs_peer": TARGET_PEER_SPEEDUP, "peer_ms_per_step": PEER_MS_PER_STEP,
                    "peer_drain_per_s": PEER_DRAIN_PER_S},
        "floor": floor,
        "results": results,
        "json_path": str(p.json_path),
    }
    try:
        p.json_path.parent.mkdir(parents=True, exist_ok=True)
        p.json_path.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write --json {p.json_path}: {exc.strerror or exc}") from None
    render(report)
    return 0


def _parameters(p: Params, workloads: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"floor_iterations": p.floor_iterations,
                           "floor_concurrency": p.concurrency or DEFAULT_CONCURRENCY}
    for w in workloads:
        n, k = p.size(w)
        entry: dict[str, Any] = {"workflows": n, "steps": k}
        if w == "par":
            entry["concurrency"] = p.concurrency or DEFAULT_CONCURRENCY
        elif w == "queue-drain":
            entry.update(workers=p.workers, concurrency=p.concurrency or DEFAULT_CONCURRENCY)
        elif w == "recovery":
            entry.update(lease_seconds=p.lease_seconds, step_seconds=p.step_seconds,
                         concurrency=p.concurrency or min(n, 256))
        out[w] = entry
    return out


__all__ = ["add_arguments", "build_app", "run_bench", "Params", "parse_params", "CHOICES"]
