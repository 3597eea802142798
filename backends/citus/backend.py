"""The Citus backend: the PostgreSQL backend on a Citus coordinator, with its per-workflow tables
distributed by workflow id, ready work in lanes (one per shard) and limited queues admitted on one shard.

It is the PostgreSQL backend's class with the parts that differ swapped in (one module per area, as in
``backends/postgres``), its own statements (``queries.sql``, and ``overrides.sql`` for the PostgreSQL
statements that read differently here) and two migrations after the PostgreSQL ones (0013 distributes the
tables and creates lanes, slots, dedup and child links; 0014 the SQL ``enqueue()``). docs/backends.md
describes the layout and what each operation costs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import psycopg
from kit.backends.postgres.backend import PostgresBackend
from kit.backends.postgres.queries import MigrationSet, QuerySet
from kit.backends.postgres.server import is_citus

from kit.storage import Claim, ClaimRequest, Created, NewWorkflow, ServerInfo

from .control import CitusControlPart
from .faults import NodeFault, node_fault
from .leases import CitusLeasesPart
from .messaging import CitusMessagingPart
from .outcomes import CitusOutcomesPart
from .queues import CitusQueuesPart
from .renewal import CitusRenewalPart
from .steps import CitusStepsPart
from .streams import CitusStreamsPart

T = TypeVar("T")
_OWN_MIGRATIONS = MigrationSet.load(__package__, "migrations")
# PostgreSQL migrations this backend replaces with its own (none today: it only adds versions). A version
# of its own that PostgreSQL also has and that is not listed here is a numbering clash, refused at import.
REPLACED_VERSIONS: frozenset[int] = frozenset()


def _migrations() -> MigrationSet:
    clash = {m.version for m in _OWN_MIGRATIONS} & {m.version for m in PostgresBackend.migrations}
    if clash - REPLACED_VERSIONS:
        raise RuntimeError(f"Citus migrations {sorted(clash - REPLACED_VERSIONS)} reuse PostgreSQL migration "
                           "versions: renumber them after the newest PostgreSQL migration")
    return PostgresBackend.migrations.with_overrides(_OWN_MIGRATIONS)


class CitusBackend(
    CitusControlPart,
    CitusQueuesPart,
    CitusRenewalPart,
    CitusLeasesPart,
    CitusMessagingPart,
    CitusStreamsPart,
    CitusStepsPart,
    CitusOutcomesPart,
    PostgresBackend,
):
    """Citus 11+ coordinator (tested with 13.2): distributed tables, router claims per lane, notifications
    sent by the coordinator session."""

    name: ClassVar[str] = "citus"
    url_schemes: ClassVar[tuple[str, ...]] = ("citus", "postgresql", "postgres")
    specificity: ClassVar[int] = 10
    queries: ClassVar[QuerySet] = (
        PostgresBackend.queries.with_overrides(QuerySet.load(__package__, "overrides.sql"))
        .plus(QuerySet.load(__package__, "queries.sql")))
    migrations: ClassVar[MigrationSet] = _migrations()

    @classmethod
    def detect(cls, info: ServerInfo) -> bool:
        """A database with the citus extension installed (a coordinator: version() says plain PostgreSQL)."""
        return is_citus(info)

    @classmethod
    def lanes_url(cls, url: str, lanes: int) -> str:
        """``url`` whose sessions run with ``citus.shard_count = lanes`` (libpq ``options``): a schema migrated
        through it distributes kit's tables over that many shards, one ready lane each."""
        from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

        parts = urlsplit(url)
        query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "options"]
        old = dict(parse_qsl(parts.query)).get("options", "")
        query.append(("options", f"{old} -c citus.shard_count={int(lanes)}".strip()))
        return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote)))  # libpq: %20, not '+'

    def _run(self, fn: Callable[[psycopg.Connection], T], *, retry: bool = True) -> T:
        """PostgreSQL's retry loop, with a worker node's failure relayed by the coordinator (faults.py: XX000 at
        a COMMIT, 08006 from a statement, the coordinator connection still healthy) taken as the lost
        connection it is: retried within the budget (every statement run this way is idempotent or read
        back), never reported as the operation's own error."""
        def guarded(conn: psycopg.Connection) -> T:
            try:
                return fn(conn)
            except psycopg.OperationalError:
                raise
            except psycopg.Error as exc:
                if node_fault(exc):
                    raise NodeFault(str(exc)) from exc
                raise

        return super()._run(guarded, retry=retry)

    # The workflows handed to an owner are renewed by node group (renewal.py): every way of handing one out
    # tells the renewal about it.
    def workflow_claim(self, req: ClaimRequest) -> list[Claim]:
        claims = super().workflow_claim(req)
        self._hold(req.owner, [c.workflow_id for c in claims])
        return claims

    def queue_claim(self, req: ClaimRequest, queue: str) -> list[Claim] | None:
        claims = super().queue_claim(req, queue)
        if claims:
            self._hold(req.owner, [c.workflow_id for c in claims])
        return claims

    def workflow_create(self, wf: NewWorkflow) -> Created:
        created = super().workflow_create(wf)
        if wf.owner is not None:
            self._hold(wf.owner, [wf.workflow_id])
        return created

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        try:
            info["lanes"] = len(self._run(self._lane_map))
        except Exception:  # noqa: BLE001 - not migrated yet: no lanes to report
            info["lanes"] = None
        return info

    def bench_probe(self) -> Any:
        """``kit bench`` statements; the PostgreSQL probe's, run through the coordinator."""
        return super().bench_probe()
