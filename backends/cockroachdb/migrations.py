"""Schema migrations on CockroachDB: serialised on a lock row, one schema change per transaction.

CockroachDB's advisory locks are no-ops, its schema changes run asynchronously after the transaction that
issued them, and a column added in a transaction cannot be used by that transaction's later statements. So:

* Migrators take turns through the row of ``migration_lock`` (``holder``, ``taken_at``): a conditional
  upsert takes it when it is free or its holder stopped renewing it (``stale_seconds``); a thread renews it
  while the migrator works; the migrator releases it at the end. The lock is a committed row, never held
  open in a transaction (a transaction-long lock would have to wrap the schema changes).
* Each statement of a migration runs in a transaction of its own (autocommit), and every statement is
  idempotent (``IF NOT EXISTS``, ``CREATE OR REPLACE``): a migrator that dies half-way leaves a version that
  the next one completes. A version is recorded in ``schema_migrations`` after its last statement; its
  primary key is the last line of defence should two migrators ever overlap (a lock stolen from a frozen
  holder): the second insert does nothing.
* A version recorded while we hold the lock was recorded by us: a lost acknowledgement of the recording
  is read back as applied by this call.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid

import psycopg
import psycopg.errors
from kit.backends.postgres.migrations import MigrationsPart
from kit.backends.postgres.queries import Migration
from psycopg import sql

from kit.errors import SchemaError, StorageError

log = logging.getLogger("kit.cockroachdb")

LOCK_TABLE = "migration_lock"
_STATEMENT_END = re.compile(r";\s*$", re.M)


def split_statements(body: str) -> list[str]:
    """The statements of a migration file (comment lines dropped; statements end with ``;`` at a line's end)."""
    text = "\n".join(ln for ln in body.splitlines() if not ln.lstrip().startswith("--"))
    return [s.strip() for s in _STATEMENT_END.split(text) if s.strip()]


class LockRowMigrationsPart(MigrationsPart):
    """migrate / schema_version / migration_sql with a lock row and one schema change per transaction."""

    migration_lock_stale_seconds: float = 30.0
    migration_lock_wait_seconds: float = 600.0

    def _migration_statements(self, body: str) -> sql.Composed:
        return sql.SQL(body).format(schema=self._ident(), **{k: sql.SQL(v) for k, v in self._placeholders().items()})

    def _placeholders(self) -> dict[str, str]:
        """Dialect placeholders of migration files (hash-sharded indexes); set by the backend class."""
        return {"hash_sharded": ""}

    def _lock_ident(self) -> sql.Composed:
        return sql.SQL("{}.{}").format(self._ident(), sql.Identifier(LOCK_TABLE))

    def _prepare(self, conn: psycopg.Connection) -> None:
        """Schema, migrations table and lock table (idempotent; a concurrent migrator may win a race on the
        catalog, which leaves what we wanted to create)."""
        for stmt in (sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(self._ident()),
                     self._migrations_table_sql(),
                     sql.SQL("CREATE TABLE IF NOT EXISTS {} (id integer PRIMARY KEY, holder text, "
                             "taken_at timestamptz)").format(self._lock_ident())):
            try:
                conn.execute(stmt)
            except (psycopg.errors.UniqueViolation, psycopg.errors.DuplicateObject, psycopg.errors.DuplicateTable,
                    psycopg.errors.DuplicateSchema):
                pass

    def _try_lock(self, token: str) -> bool:
        stmt = sql.SQL(
            "INSERT INTO {lock} AS l (id, holder, taken_at) VALUES (1, %(token)s, now()) "
            "ON CONFLICT (id) DO UPDATE SET holder = excluded.holder, taken_at = excluded.taken_at "
            "WHERE l.holder IS NULL OR l.holder = excluded.holder "
            "   OR l.taken_at < now() - %(stale)s::float8 * interval '1 second' "
            "RETURNING holder").format(lock=self._lock_ident())
        row = self._run(lambda c: c.execute(stmt, {"token": token,
                                                   "stale": self.migration_lock_stale_seconds}).fetchone())
        return row is not None and row[0] == token

    def _renew_lock(self, token: str) -> bool:
        stmt = sql.SQL("UPDATE {} SET taken_at = now() WHERE id = 1 AND holder = %s RETURNING 1").format(
            self._lock_ident())
        return self._run(lambda c: c.execute(stmt, (token,)).fetchone()) is not None

    def _unlock(self, token: str) -> None:
        stmt = sql.SQL("UPDATE {} SET holder = NULL, taken_at = NULL WHERE id = 1 AND holder = %s").format(
            self._lock_ident())
        try:
            self._run(lambda c: c.execute(stmt, (token,)))
        except StorageError as exc:  # it goes stale and the next migrator takes it
            log.warning("could not release the migration lock: %s", exc)

    def migrate(self) -> list[int]:
        migrations = type(self).migrations
        newest = migrations.newest
        current = self.schema_version()
        if current is not None and current > newest:
            raise SchemaError(f"schema '{self.schema}' is at version {current}, newer than this kit "
                              f"understands ({newest}): upgrade kit")
        if current == newest:
            return []
        try:
            return self._migrate_locked(migrations, newest)
        except StorageError as exc:
            if not isinstance(exc.__cause__, psycopg.errors.InsufficientPrivilege):
                raise
            where = "has no kit tables" if current is None else f"is at version {current}"
            raise SchemaError(
                f"schema '{self.schema}' {where} and this kit needs version {newest}, but the database role "
                "may not change the schema: run `kit migrate` as the schema owner first (then open workers "
                "with migrate=False or leave it on: an up-to-date schema needs no privileges to check)"
            ) from exc.__cause__

    def _migrate_locked(self, migrations: tuple[Migration, ...], newest: int) -> list[int]:
        self._run(self._prepare)
        token = f"{uuid.uuid4().hex}"
        deadline = time.monotonic() + self.migration_lock_wait_seconds
        delay = 0.05
        while not self._try_lock(token):
            if time.monotonic() > deadline:
                raise SchemaError(f"schema '{self.schema}': another migrator has held the migration lock for "
                                  f"{self.migration_lock_wait_seconds:.0f}s; see the row of {self.schema}."
                                  f"{LOCK_TABLE}")
            time.sleep(delay)
            delay = min(delay * 1.5, 1.0)
        lost = threading.Event()
        stop = threading.Event()

        def keep() -> None:
            while not stop.wait(self.migration_lock_stale_seconds / 3):
                try:
                    if not self._renew_lock(token):
                        lost.set()
                        return
                except StorageError as exc:
                    log.warning("could not renew the migration lock: %s", exc)

        keeper = threading.Thread(target=keep, name="kit-migration-lock", daemon=True)
        keeper.start()
        applied: list[int] = []
        try:
            done = set(self._applied_versions())
            if done and max(done) > newest:
                raise SchemaError(f"schema '{self.schema}' is at version {max(done)}, newer than this kit "
                                  f"understands ({newest}): upgrade kit")
            record = sql.SQL("INSERT INTO {}.schema_migrations (version, name) VALUES (%s, %s) "
                             "ON CONFLICT (version) DO NOTHING").format(self._ident())
            for migration in migrations:
                version, name, body = migration
                if version in done:
                    continue
                if not self._skipped(migration):
                    for text in split_statements(body):
                        if lost.is_set():
                            raise SchemaError(f"schema '{self.schema}': the migration lock was taken over while "
                                              f"applying version {version} (this migrator stalled for longer "
                                              f"than {self.migration_lock_stale_seconds:.0f}s); migrate again")
                        stmt = sql.SQL(text).format(schema=self._ident(),
                                                    **{k: sql.SQL(v) for k, v in self._placeholders().items()})
                        self._run(lambda c, s=stmt: c.execute(s, prepare=False))
                self._run(lambda c, v=version, n=name: c.execute(record, (v, n)))
                applied.append(version)
            return applied
        finally:
            stop.set()
            keeper.join(timeout=5)
            self._unlock(token)

    def _applied_versions(self) -> list[int]:
        stmt = sql.SQL("SELECT version FROM {}.schema_migrations").format(self._ident())
        return [r[0] for r in self._run(lambda c: c.execute(stmt).fetchall())]

    def schema_version(self) -> int | None:
        """The newest recorded version (None: no kit schema here). Reads the catalog through
        information_schema, which both servers have."""
        exists = sql.SQL("SELECT count(*) FROM information_schema.tables "
                         "WHERE table_schema = %s AND table_name = 'schema_migrations'")
        newest = sql.SQL("SELECT max(version) FROM {}.schema_migrations").format(self._ident())

        def read(conn: psycopg.Connection) -> int | None:
            if not conn.execute(exists, (self.schema,)).fetchone()[0]:
                return None
            return conn.execute(newest).fetchone()[0]

        return self._run(read)
