"""``kit bench`` on PostgreSQL: the statements behind :class:`kit.bench.probe.BenchProbe`.

The floor is a prepared single-row ``INSERT`` committed in autocommit (one round trip), plain and fenced
by an owner row's epoch (with ``FOR KEY SHARE``, as ``step_record`` does). Server CPU is the postmaster's
and its children's user+system time, read with psutil when the server runs on this machine; the WAL
position is ``pg_current_wal_lsn()``. A run's workflows are those whose id starts with ``<prefix>-``.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from kit.bench.probe import Counters, Drain, Latency, Progress, Recovery, Stats
from kit.config import redact_url
from kit.errors import DatabaseUnavailableError, UsageError

FLOOR_TABLE = "bench_floor"  # also marks a schema as created by kit bench (safe to drop)
OWNER_TABLE = "bench_owner"

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

SETTINGS = ("fsync", "synchronous_commit", "wal_sync_method", "full_page_writes", "shared_buffers",
            "max_connections")


def _lsn_bytes(lsn: str) -> int:
    """A pg_lsn ('16/B374D848') as a byte position."""
    high, _, low = lsn.partition("/")
    return (int(high, 16) << 32) + int(low, 16)


class _ServerCpu:
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


class _FloorConnection:
    def __init__(self, conn: psycopg.Connection, statements: dict[str, str]) -> None:
        self._conn = conn
        self._cur = conn.cursor()
        self._statements = statements

    def insert(self, kind: str, prefix: str, start: int, count: int) -> None:
        stmt, cur = self._statements[kind], self._cur
        if kind == "insert":
            for i in range(start, start + count):
                cur.execute(stmt, (prefix, i, "1"), prepare=True)
        else:
            for i in range(start, start + count):
                cur.execute(stmt, (prefix, i, "1", 1), prepare=True)

    def close(self) -> None:
        self._conn.close()


class PostgresBenchProbe:
    """The :class:`~kit.bench.probe.BenchProbe` of PostgreSQL for ``url`` and the bench ``schema``."""

    #: ``kit bench compare`` may run DBOS side by side in this database (a subclass for a server DBOS does
    #: not support, or where the comparison would not be like for like, sets it False).
    hosts_peer = True

    floor_kinds = FLOOR_LABELS

    def __init__(self, url: str, schema: str) -> None:
        self.url = url
        self.schema = schema
        ident = sql.Identifier(schema)
        self._workflows = sql.SQL("{}.workflows").format(ident).as_string(None)
        self._steps = sql.SQL("{}.steps").format(ident).as_string(None)
        floor = sql.SQL("{}.{}").format(ident, sql.Identifier(FLOOR_TABLE)).as_string(None)
        owner = sql.SQL("{}.{}").format(ident, sql.Identifier(OWNER_TABLE)).as_string(None)
        self._floor = {kind: stmt.format(t=floor, o=owner) for kind, stmt in FLOOR_VARIANTS.items()}
        self._conn: psycopg.Connection | None = None
        self._cpu: _ServerCpu | None = None

    # -- connections -----------------------------------------------------------------------------------------
    def _connect(self) -> psycopg.Connection:
        try:
            return psycopg.connect(self.url, autocommit=True, prepare_threshold=0, connect_timeout=10,
                                   application_name="kit-bench")
        except psycopg.Error as exc:
            raise DatabaseUnavailableError(f"cannot connect to {redact_url(self.url)}: {exc}") from None

    @property
    def _main(self) -> psycopg.Connection:
        """The probe's own connection: counters and counts (opened on first use)."""
        if self._conn is None or self._conn.closed:
            self._conn = self._connect()
            self._cpu = _ServerCpu(self._conn)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- schema and floor ----------------------------------------------------------------------------------
    def reset(self) -> None:
        with self._connect() as conn:
            conn.execute("SET lock_timeout = '15s'")
            relations = conn.execute(
                "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s",
                (self.schema,)).fetchone()[0]
            marked = conn.execute("SELECT to_regclass(%s) IS NOT NULL",
                                  (f'"{self.schema}".{FLOOR_TABLE}',)).fetchone()[0]
            if relations and not marked:
                raise UsageError(f"schema '{self.schema}' holds tables that kit bench did not create; refusing to "
                                 "drop it: choose another --schema (the default is kit_bench)")
            ident = sql.Identifier(self.schema)
            try:
                conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(ident))
            except psycopg.errors.LockNotAvailable:
                raise UsageError(f"schema '{self.schema}' is in use (a worker still running on it?); stop it and "
                                 "run again") from None
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(ident))
            conn.execute(sql.SQL(
                "CREATE TABLE {}.{} (workflow_id text NOT NULL, step_id integer NOT NULL, output text, "
                "PRIMARY KEY (workflow_id, step_id))").format(ident, sql.Identifier(FLOOR_TABLE)))
            conn.execute(sql.SQL(
                "CREATE TABLE {}.{} (workflow_id text PRIMARY KEY, epoch bigint NOT NULL, "
                "status text NOT NULL)").format(ident, sql.Identifier(OWNER_TABLE)))
            conn.execute(sql.SQL("INSERT INTO {}.{} VALUES ('owner', 1, 'RUNNING')").format(
                ident, sql.Identifier(OWNER_TABLE)))

    def settings(self) -> dict[str, str]:
        rows = self._main.execute("SELECT name, setting, unit FROM pg_settings WHERE name = ANY(%s)",
                                  (list(SETTINGS),)).fetchall()
        found = {name: f"{setting}{' x ' + unit if unit and unit not in ('', 's') else ''}"
                 for name, setting, unit in rows}
        return {name: found[name] for name in SETTINGS if name in found}

    def client_versions(self) -> dict[str, str]:
        return {"psycopg": psycopg.__version__}

    def floor_connection(self) -> _FloorConnection:
        return _FloorConnection(self._connect(), self._floor)

    # -- counters ------------------------------------------------------------------------------------------
    @property
    def server_cpu_note(self) -> str:
        self._main  # noqa: B018 - the CPU source is found when the probe connects
        assert self._cpu is not None
        return self._cpu.reason

    def counters(self, *, wal: bool = True) -> Counters:
        conn = self._main
        position = None
        if wal:
            try:
                position = _lsn_bytes(conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0])
            except psycopg.Error:  # e.g. a server without WAL functions
                position = None
        assert self._cpu is not None
        return Counters(server_cpu_s=self._cpu.seconds(), wal_bytes=position)

    # -- a run's workflows -----------------------------------------------------------------------------------
    def _one(self, query: str, params: Any) -> Any:
        return self._main.execute(query, params).fetchone()

    def progress(self, prefix: str) -> Progress:
        row = self._one(f"SELECT count(*) FILTER (WHERE status = 'SUCCESS'), count(*) FILTER (WHERE status IN "
                        f"('ERROR', 'CANCELLED')) FROM {self._workflows} WHERE workflow_id LIKE %s", (prefix + "-%",))
        return Progress(succeeded=row[0], failed=row[1])

    def checkpoints(self, prefix: str) -> int:
        return self._one(f"SELECT count(*) FROM {self._steps} WHERE workflow_id LIKE %s", (prefix + "-%",))[0]

    def checkpoints_by_workflow(self, prefix: str) -> dict[str, int]:
        rows = self._main.execute(f"SELECT w.workflow_id, count(s.step_id) FROM {self._workflows} w LEFT JOIN "
                                  f"{self._steps} s USING (workflow_id) WHERE w.workflow_id LIKE %s GROUP BY 1",
                                  (prefix + "-%",)).fetchall()
        return dict(rows)

    def recovery(self, prefix: str) -> Recovery:
        row = self._one(
            f"SELECT (SELECT count(*) FROM {self._workflows} WHERE workflow_id LIKE %(p)s AND recoveries > 0), "
            f"(SELECT count(*) FROM {self._steps} WHERE workflow_id LIKE %(p)s AND epoch > 1), "
            f"(SELECT count(*) FROM {self._workflows} WHERE workflow_id LIKE %(p)s AND status = 'SUCCESS')",
            {"p": prefix + "-%"})
        return Recovery(recovered=row[0], recovered_checkpoints=row[1], succeeded=row[2])

    def latency(self, prefix: str) -> Latency:
        row = self._one(
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY s), percentile_cont(0.99) WITHIN GROUP (ORDER BY s), "
            f"max(s) FROM (SELECT extract(epoch FROM started_at - created_at) * 1000 AS s FROM {self._workflows} "
            "WHERE workflow_id LIKE %s) x", (prefix + "-%",))
        return Latency(p50_ms=float(row[0]), p99_ms=float(row[1]), max_ms=float(row[2]))

    def drain(self, prefix: str) -> Drain:
        # A claim statement stamps every row it claims with the same started_at (its transaction time),
        # so distinct started_at values count the claim transactions that found work.
        row = self._one(
            f"SELECT extract(epoch FROM max(finished_at) - min(started_at)), count(*), count(DISTINCT started_at), "
            f"extract(epoch FROM max(finished_at) - min(finished_at)) "
            f"FROM {self._workflows} WHERE workflow_id LIKE %s AND status = 'SUCCESS'", (prefix + "-%",))
        return Drain(seconds=float(row[0] or 0.0), completed=row[1], claims=row[2],
                     finish_span_s=None if row[3] is None else float(row[3]))

    # -- kit bench compare: counters and activity ------------------------------------------------------
    def stats(self) -> Stats:
        conn = self._main
        try:
            commits = conn.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
                                   ).fetchone()[0]
        except psycopg.Error:
            commits = None
        wal = self.counters(wal=True)
        cpu = wal.server_cpu_s
        return Stats(commits=commits, wal_bytes=wal.wal_bytes, server_cpu_s=cpu,
                     cpu_by_node={} if cpu is None else {"server": cpu})

    def activity(self) -> dict[str, int]:
        return _activity(self._main.execute(ACTIVITY_SQL).fetchall())

    # -- the DBOS side-by-side: DBOS's own tables in its schema on this database -----------------------------
    def peer_progress(self, schema: str, prefix: str) -> Progress:
        """Outcomes of a run's DBOS workflows (``<schema>.workflow_status``, ids ``<prefix>-<n>``)."""
        table = sql.SQL("{}.workflow_status").format(sql.Identifier(schema)).as_string(None)
        row = self._one(f"SELECT count(*) FILTER (WHERE status = 'SUCCESS'), count(*) FILTER (WHERE status IN "
                        f"('ERROR', 'CANCELLED', 'MAX_RECOVERY_ATTEMPTS_EXCEEDED')) FROM {table} "
                        "WHERE workflow_uuid LIKE %s", (prefix + "-%",))
        return Progress(succeeded=row[0], failed=row[1])

    def peer_drain(self, schema: str, prefix: str) -> Drain:
        """The drain of a run's DBOS workflows: ``updated_at`` (ms) of the successful ones is their finish."""
        table = sql.SQL("{}.workflow_status").format(sql.Identifier(schema)).as_string(None)
        row = self._one(f"SELECT (max(updated_at) - min(updated_at)) / 1000.0, count(*) FROM {table} "
                        "WHERE workflow_uuid LIKE %s AND status = 'SUCCESS'", (prefix + "-%",))
        span = None if row[0] is None else float(row[0])
        return Drain(seconds=span or 0.0, completed=row[1], claims=0, finish_span_s=span)

    def peer_reset(self, schema: str) -> None:
        """Drop DBOS's schema of the side-by-side so a run starts empty; refused (UsageError) when the schema
        holds anything but DBOS's tables (its ``workflow_status`` table marks it)."""
        with self._connect() as conn:
            found = conn.execute(
                "SELECT count(*), count(*) FILTER (WHERE c.relname = 'workflow_status') FROM pg_class c JOIN "
                "pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind = 'r'",
                (schema,)).fetchone()
            if found[0] and not found[1]:
                raise UsageError(f"schema '{schema}' holds tables that are not DBOS's; refusing to drop it")
            conn.execute("SET lock_timeout = '15s'")
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


# Busy sessions of this database other than the probe's own, by what they wait on.
ACTIVITY_SQL = ("SELECT state, wait_event_type, count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND backend_type = 'client backend' AND state IN "
                "('active', 'idle in transaction') GROUP BY 1, 2")


def _activity(rows: Any) -> dict[str, int]:
    """Sessions by kind (kit.bench.probe.ACTIVITY_KINDS) from (state, wait_event_type, count) rows."""
    out = {k: 0 for k in ("cpu", "Lock", "LWLock", "IO", "Client", "other")}
    for state, wait, count in rows:
        if wait is None and state == "active":
            out["cpu"] += count
        elif wait in ("Lock", "LWLock", "IO", "Client"):
            out[wait] += count
        else:
            out["other"] += count
    return out
