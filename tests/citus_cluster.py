"""A real local Citus cluster for the tests: a coordinator and N workers, each a private Debian PostgreSQL 15
server on 127.0.0.1 with ``shared_preload_libraries = 'citus'`` (built by scripts/citus-setup.sh from the
vendored source). No Docker.

The nodes share one superuser (``kit``) and password; the coordinator reaches the workers with that
password through ``pg_dist_authinfo`` (set on every node), so no ``.pgpass`` of the system user is touched.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
from pathlib import Path

import psycopg

try:  # works whether or not tests/ is a package
    from .servers import PG15_BIN, DebianPostgres
except ImportError:
    from servers import PG15_BIN, DebianPostgres


def citus_available(bin_dir: Path = PG15_BIN) -> str | None:
    """None when Citus can run here, else the reason it can't (for skip messages)."""
    if not DebianPostgres.available(bin_dir):
        return "Debian PostgreSQL 15 is not installed (run scripts/setup.sh)"
    import subprocess

    try:
        pkglib = subprocess.run([str(Path(bin_dir) / "pg_config"), "--pkglibdir"], capture_output=True, text=True,
                                check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError) as exc:
        return f"pg_config failed: {exc}"
    if not (Path(pkglib) / "citus.so").is_file():
        return f"Citus is not installed in {pkglib} (run scripts/citus-setup.sh)"
    return None


class CitusNode(DebianPostgres):
    """One Citus node: Debian PostgreSQL 15 with citus preloaded."""

    def __init__(self, password: str, *, max_connections: int = 300, shard_count: int = 4) -> None:
        super().__init__(max_connections=max_connections)
        self.password = password
        self.shard_count = shard_count

    def _write_conf(self) -> None:
        super()._write_conf()
        with open(self.data_dir / "postgresql.conf", "a") as f:
            f.write(
                "shared_preload_libraries = 'citus,pg_stat_statements'\n"
                "citus.node_conninfo = 'sslmode=disable'\n"
                "wal_level = logical\n"
                "max_prepared_transactions = 600\n"
                "citus.max_client_connections = 250\n"
                # kit's distributed tables get this many shards (= lanes) when a test migrates a schema:
                # 2 per worker (same-node and cross-node transactions both happen), and a migration takes
                # a third of the time Citus' default of 32 shards does.
                f"citus.shard_count = {self.shard_count}\n"
            )


class CitusCluster:
    """Coordinator + ``workers`` worker nodes on loopback; ``url`` is the coordinator's (password auth)."""

    def __init__(self, workers: int = 2) -> None:
        import secrets

        self.password = secrets.token_hex(16)
        self.coordinator = CitusNode(self.password)
        self.workers = [CitusNode(self.password) for _ in range(workers)]

    @property
    def url(self) -> str:
        return self.coordinator.url

    @property
    def nodes(self) -> list[CitusNode]:
        return [self.coordinator, *self.workers]

    def start(self) -> CitusCluster:
        with concurrent.futures.ThreadPoolExecutor(len(self.nodes)) as pool:
            list(pool.map(lambda n: n.start(), self.nodes))
        try:
            for node in self.nodes:
                with psycopg.connect(node.url, autocommit=True) as conn:
                    conn.execute("CREATE EXTENSION IF NOT EXISTS citus")
                    conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
                    conn.execute("INSERT INTO pg_dist_authinfo (nodeid, rolename, authinfo) VALUES (0, %s, %s) "
                                 "ON CONFLICT DO NOTHING", (DebianPostgres.user, f"password={self.password}"))
            with psycopg.connect(self.url, autocommit=True) as conn:
                conn.execute("SELECT citus_set_coordinator_host('127.0.0.1', %s)", (self.coordinator.port,))
                for worker in self.workers:
                    conn.execute("SELECT citus_add_node('127.0.0.1', %s)", (worker.port,))
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for node in reversed(self.nodes):
            with contextlib.suppress(Exception):
                node.stop()

    def __enter__(self) -> CitusCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
