"""Schema migrations of the PostgreSQL backend: the class's ``migrations`` applied in one transaction.

Concurrent migrators (several workers starting at once) serialise on a lock taken first in that
transaction: a transaction-scoped advisory lock where the server has working ones (``advisory_locks``),
else the row of a one-row lock table (CockroachDB's advisory locks are no-ops). Either way the second
migrator finds the versions the first applied and applies nothing twice. A migration whose
``-- requires: <capability>`` the server lacks is recorded without running its DDL.
"""

from __future__ import annotations

import json

import psycopg
import psycopg.errors
from psycopg import sql

from kit.errors import SchemaError, StorageError

from .connection import PostgresCore, call_token
from .queries import Migration

MIGRATION_LOCK = 0x6B6974  # "kit": pg_advisory_xact_lock key serialising migrations
LOCK_TABLE = "schema_lock"  # the lock row of servers without advisory locks


class MigrationsPart(PostgresCore):
    """migrate / schema_version / migration_sql / grants_sql / drop_schema."""

    def _ident(self) -> sql.Identifier:
        return sql.Identifier(self.schema)

    def _migration_statements(self, body: str) -> sql.Composed:
        return sql.SQL(body).format(schema=self._ident())

    def _migrations_table_sql(self) -> sql.Composed:
        return sql.SQL(
            "CREATE TABLE IF NOT EXISTS {schema}.schema_migrations "
            "(version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        ).format(schema=self._ident())

    def _skipped(self, migration: Migration) -> bool:
        """True when the migration needs a capability this server lacks (recorded, not run)."""
        need = migration.requires
        return need is not None and not getattr(self._caps, need)

    def migration_sql(self) -> str:
        parts = [f"CREATE SCHEMA IF NOT EXISTS {self._ident().as_string(None)};",
                 self._migrations_table_sql().as_string(None) + ";"]
        for version, name, body in type(self).migrations:
            parts.append(f"-- migration {version:04d}_{name}")
            parts.append(self._migration_statements(body).as_string(None))
            # Recorded like `kit migrate` does, so a schema built from this script is at this version.
            parts.append(sql.SQL("INSERT INTO {}.schema_migrations (version, name) VALUES ({}, {});").format(
                self._ident(), sql.Literal(version), sql.Literal(name)).as_string(None))
        return "\n".join(parts) + "\n"

    def grants_sql(self, *, worker_role: str | None = None, monitor_role: str | None = None) -> str:
        """GRANT statements for a least-privilege worker role and a read-only monitor role."""
        from .grants import grants_sql

        cls = type(self)
        return grants_sql(self.schema, cls.queries, cls.migrations, worker_role=worker_role,
                          monitor_role=monitor_role)

    # -- the two ways to serialise migrators ------------------------------------------------------------
    def _prepare_migration_lock(self, conn: psycopg.Connection) -> None:
        """Before the migration transaction (autocommit): make sure the lock row exists. Nothing to do with
        advisory locks. A concurrent migrator may win the race on the catalog (a unique violation): then
        what we wanted to create exists."""
        if self._caps.advisory_locks:
            return
        lock = sql.Identifier(LOCK_TABLE)
        for stmt in (sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(self._ident()),
                     sql.SQL("CREATE TABLE IF NOT EXISTS {}.{} (id integer PRIMARY KEY)").format(self._ident(), lock),
                     sql.SQL("INSERT INTO {}.{} (id) VALUES (1) ON CONFLICT DO NOTHING").format(self._ident(), lock)):
            try:
                conn.execute(stmt)
            except (psycopg.errors.UniqueViolation, psycopg.errors.DuplicateObject, psycopg.errors.DuplicateTable,
                    psycopg.errors.DuplicateSchema):
                pass

    def _lock_migrations(self, conn: psycopg.Connection) -> None:
        """First statement of the migration transaction: wait for any other migrator to finish."""
        if self._caps.advisory_locks:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        else:
            conn.execute(sql.SQL("SELECT id FROM {}.{} WHERE id = 1 FOR UPDATE").format(
                self._ident(), sql.Identifier(LOCK_TABLE)))

    def migrate(self) -> list[int]:
        migrations = type(self).migrations
        newest = migrations.newest
        # Already at the latest version: no DDL and no lock, so a role without DDL privileges can open.
        current = self.schema_version()
        if current is not None and current > newest:
            raise SchemaError(f"schema '{self.schema}' is at version {current}, newer than this kit "
                              f"understands ({newest}): upgrade kit")
        if current == newest:
            return []

        token = call_token()
        attempts = 0

        def apply(conn: psycopg.Connection) -> list[int]:
            nonlocal attempts
            attempts += 1
            if attempts > 1:  # an earlier attempt may have committed, its acknowledgement lost
                committed = self._applied_by(conn, token)
                if committed is not None:
                    return committed
            applied: list[int] = []
            self._prepare_migration_lock(conn)
            with conn.transaction():
                self._lock_migrations(conn)
                conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(self._ident()))
                conn.execute(self._migrations_table_sql())
                done = {
                    r[0]
                    for r in conn.execute(
                        sql.SQL("SELECT version FROM {}.schema_migrations").format(self._ident())
                    )
                }
                if done and max(done) > newest:
                    raise SchemaError(
                        f"schema '{self.schema}' is at version {max(done)}, newer than this kit "
                        f"understands ({newest}): upgrade kit"
                    )
                for migration in migrations:
                    version, name, body = migration
                    if version in done:
                        continue
                    if not self._skipped(migration):
                        conn.execute(self._migration_statements(body), prepare=False)
                    conn.execute(
                        sql.SQL("INSERT INTO {}.schema_migrations (version, name) VALUES (%s, %s)").format(
                            self._ident()
                        ),
                        (version, name),
                    )
                    applied.append(version)
                if applied:  # the answer commits with the versions (call_outcomes exists from version 12 on)
                    self._record_outcome(conn, token, "migrate", applied)
            return applied

        try:
            return self._run(apply)
        except StorageError as exc:
            if not isinstance(exc.__cause__, psycopg.errors.InsufficientPrivilege):
                raise
            where = "has no kit tables" if current is None else f"is at version {current}"
            raise SchemaError(
                f"schema '{self.schema}' {where} and this kit needs version {newest}, but the database role "
                "may not change the schema: run `kit migrate` as the schema owner first (then open workers "
                "with migrate=False or leave it on: an up-to-date schema needs no privileges to check)"
            ) from exc.__cause__

    def _applied_by(self, conn: psycopg.Connection, token: str) -> list[int] | None:
        """The versions a migrate call's committed attempt applied (recorded under its token), or None
        when no attempt of it committed (the table may not exist yet: nothing committed). Looked up in
        pg_tables, not with to_regclass: a name lookup of a schema that does not exist yet leaves a negative
        catalog-cache entry in the session, and the migration transaction that follows, once granted the
        lock after another migrator created the schema, would then try to create it again (unique
        violation on pg_namespace)."""
        exists = conn.execute("SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_tables "
                              "WHERE schemaname = %s AND tablename = 'call_outcomes')", (self.schema,)).fetchone()[0]
        if not exists:
            return None
        row = conn.execute(self._q["call_outcome_get"], {"token": token}).fetchone()
        return None if row is None else [int(v) for v in json.loads(row[0])]

    def schema_version(self) -> int | None:
        def read(conn: psycopg.Connection) -> int | None:
            exists = conn.execute(
                "SELECT to_regclass(%s) IS NOT NULL",
                (self._ident().as_string(conn) + ".schema_migrations",),
            ).fetchone()[0]
            if not exists:
                return None
            row = conn.execute(
                sql.SQL("SELECT max(version) FROM {}.schema_migrations").format(self._ident())
            ).fetchone()
            return row[0]

        return self._run(read)

    def drop_schema(self) -> None:
        stmt = sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(self._ident())
        self._run(lambda c: c.execute(stmt))
