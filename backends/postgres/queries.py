"""Named SQL and numbered migrations as data: loaded from files, overridable by subclasses.

A backend class holds ``queries: ClassVar[QuerySet]`` and ``migrations: ClassVar[MigrationSet]``. A
subclass for a server that needs different statements replaces only those::

    class CitusBackend(PostgresBackend):
        queries = PostgresBackend.queries.with_overrides(QuerySet.load(__package__, "citus_queries.sql"))
        migrations = PostgresBackend.migrations.with_overrides(MigrationSet.load(__package__, "migrations"))

Query files hold blocks starting with ``-- name: NAME`` followed by comment lines (the description) and the
statement; ``{schema}`` stands for the quoted schema identifier and every value is a bound parameter.
Migration files are ``NNNN_name.sql``; a header line ``-- requires: <capability>`` makes a migration
conditional on that capability (applied as a no-op, but recorded, on servers without it).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from importlib import resources
from typing import NamedTuple

from psycopg import sql

_NAME = re.compile(r"^-- name: ", re.M)
_MIGRATION_FILE = re.compile(r"^(\d+)_(\w+)\.sql$")
_REQUIRES = re.compile(r"^--\s*requires:\s*(\w+)\s*$", re.M)
# A named placeholder cast to an array type: ``%(ids)s::text[]``.
_ARRAY_PARAM = re.compile(r"%\((\w+)\)s(::[a-z][a-z0-9_ ]*\[\])")


def binary_array_params(text: str) -> str:
    """``text`` with every placeholder cast to an array type sent in binary (``%(ids)b::text[]``).

    psycopg dumps a list in text format element by element (a regex per element decides its quoting); the
    binary dumper packs it without that, several times cheaper for the arrays of a group commit. The
    explicit cast keeps the statement's types whatever element type psycopg picks (int2[] casts to int[])."""
    return _ARRAY_PARAM.sub(r"%(\1)b\2", text)


class QuerySet(Mapping[str, str]):
    """An immutable mapping of statement name -> SQL text (with ``{schema}`` placeholders)."""

    def __init__(self, statements: Mapping[str, str]) -> None:
        self._statements = dict(statements)

    @classmethod
    def parse(cls, text: str) -> QuerySet:
        """Statements from the text of a query file."""
        out: dict[str, str] = {}
        for block in _NAME.split(text)[1:]:
            name, _, body = block.partition("\n")
            lines = [ln for ln in body.splitlines() if not ln.lstrip().startswith("--")]
            name = name.strip()
            if name in out:
                raise ValueError(f"statement {name!r} is defined twice")
            out[name] = "\n".join(lines).strip()
        return cls(out)

    @classmethod
    def load(cls, package: str, filename: str) -> QuerySet:
        """Statements from a query file shipped in ``package``."""
        return cls.parse(resources.files(package).joinpath(filename).read_text(encoding="utf-8"))

    def with_overrides(self, other: Mapping[str, str]) -> QuerySet:
        """A copy with ``other``'s statements replacing those of the same names (every name must exist
        here: a misspelt override is an error, not a silently unused statement)."""
        unknown = sorted(set(other) - set(self._statements))
        if unknown:
            raise KeyError(f"no statements named {', '.join(unknown)} to override (use plus() to add new ones)")
        return QuerySet({**self._statements, **other})

    def plus(self, other: Mapping[str, str]) -> QuerySet:
        """A copy with ``other``'s new statements added (none may exist here already)."""
        clash = sorted(set(other) & set(self._statements))
        if clash:
            raise KeyError(f"statements {', '.join(clash)} exist already (use with_overrides() to replace them)")
        return QuerySet({**self._statements, **other})

    def render(self, schema: str) -> dict[str, str]:
        """Every statement with the schema filled in, as plain text (rendered once per backend instance:
        psycopg then caches each statement's conversion and prepared plan)."""
        ident = sql.Identifier(schema)
        return {k: sql.SQL(v).format(schema=ident).as_string(None) for k, v in self._statements.items()}

    def __getitem__(self, name: str) -> str:
        return self._statements[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._statements)

    def __len__(self) -> int:
        return len(self._statements)

    def __repr__(self) -> str:
        return f"QuerySet({len(self)} statements)"


class Migration(NamedTuple):
    """One schema migration: applied in version order, recorded in ``schema_migrations``."""

    version: int
    name: str
    body: str

    @property
    def requires(self) -> str | None:
        """The capability this migration needs (``-- requires: <flag>`` header), or None."""
        m = _REQUIRES.search(self.body)
        return m.group(1) if m else None


class MigrationSet(tuple[Migration, ...]):
    """Migrations in version order (a tuple of :class:`Migration`)."""

    @classmethod
    def load(cls, package: str, folder: str = "migrations") -> MigrationSet:
        """``NNNN_name.sql`` files of a folder shipped in ``package``."""
        found = []
        for entry in resources.files(package).joinpath(folder).iterdir():
            m = _MIGRATION_FILE.match(entry.name)
            if m:
                found.append(Migration(int(m.group(1)), m.group(2), entry.read_text(encoding="utf-8")))
        return cls.of(found)

    @classmethod
    def of(cls, migrations: list[Migration] | tuple[Migration, ...]) -> MigrationSet:
        versions = [m.version for m in migrations]
        if len(set(versions)) != len(versions):
            raise ValueError(f"duplicate migration versions in {sorted(versions)}")
        return cls(sorted(migrations))

    @property
    def newest(self) -> int:
        return max((m.version for m in self), default=0)

    def with_overrides(self, other: tuple[Migration, ...] | list[Migration]) -> MigrationSet:
        """A copy where ``other``'s migrations replace those of the same version and add new versions
        (a subclass's schema: its own DDL for some steps, extra steps after them)."""
        mine = {m.version: m for m in self}
        mine.update({m.version: m for m in other})
        return MigrationSet.of(list(mine.values()))
