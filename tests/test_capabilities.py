"""Server detection and capabilities: pure functions of a probed :class:`ServerInfo`, table-tested with the
version strings, extension lists and settings real servers report; then backend resolution by the registry
(which backend wins a scheme several claim, and when the server is probed at all)."""

from __future__ import annotations

import dataclasses

import pytest
from kit.backends.postgres import PostgresBackend, server_capabilities
from kit.backends.postgres.connection import PostgresCore
from kit.backends.postgres.server import is_citus, is_cockroachdb

import kit.registry as registry
from kit.errors import ConfigError
from kit.storage import Capabilities, ServerInfo

PG_EXT = {"plpgsql": "1.0"}

POSTGRES = [
    # Debian's PostgreSQL 15 package
    ServerInfo("PostgreSQL 15.6 (Debian 15.6-0+deb12u1) on x86_64-pc-linux-gnu, compiled by gcc (Debian 12.2.0-14) "
               "12.2.0, 64-bit", 150006, PG_EXT, {"default_transaction_isolation": "read committed"},
               frozenset({"pg_logical_emit_message"})),
    # PostgreSQL 16 as built for the pgserver wheel / upstream
    ServerInfo("PostgreSQL 16.2 on x86_64-pc-linux-gnu, compiled by gcc (GCC) 10.2.1 20210130 (Red Hat 10.2.1-11), "
               "64-bit", 160002, PG_EXT, {"default_transaction_isolation": "read committed"},
               frozenset({"pg_logical_emit_message"})),
    ServerInfo("PostgreSQL 16.4 (Ubuntu 16.4-1.pgdg22.04+1) on aarch64-unknown-linux-gnu, compiled by gcc "
               "(Ubuntu 11.4.0-1ubuntu1~22.04) 11.4.0, 64-bit", 160004, {**PG_EXT, "pg_stat_statements": "1.10"},
               {"default_transaction_isolation": "read committed"}, frozenset({"pg_logical_emit_message"})),
    ServerInfo("PostgreSQL 13.14 on x86_64-apple-darwin20.6.0, compiled by Apple clang version 12.0.5 "
               "(clang-1205.0.22.9), 64-bit", 130014, PG_EXT, {"default_transaction_isolation": "read committed"},
               frozenset({"pg_logical_emit_message"})),
]

# Citus is an extension: version() on a coordinator is the PostgreSQL text of its build (citusdata/citus
# images are built on the PGDG Debian packages; 13.2 here is the vendored source build).
CITUS = [
    ServerInfo("PostgreSQL 16.2 (Debian 16.2-1.pgdg120+2) on x86_64-pc-linux-gnu, compiled by gcc (Debian 12.2.0-14) "
               "12.2.0, 64-bit", 160002, {**PG_EXT, "citus_columnar": "11.3-1", "citus": "12.1-1"},
               {"default_transaction_isolation": "read committed"}, frozenset({"pg_logical_emit_message"})),
    ServerInfo("PostgreSQL 17.5 on x86_64-pc-linux-gnu, compiled by gcc (Debian 12.2.0-14) 12.2.0, 64-bit", 170005,
               {**PG_EXT, "citus_columnar": "11.3-1", "citus": "13.2-1"},
               {"default_transaction_isolation": "read committed"}, frozenset({"pg_logical_emit_message"})),
]

# CockroachDB speaks the protocol; its catalog has no extensions and no pg_logical_emit_message.
COCKROACH = [
    ServerInfo("CockroachDB CCL v24.1.0 (x86_64-pc-linux-gnu, built 2024/05/15 21:28:29, go1.22.2 "
               "X:nocoverageredesign)", 130000, {}, {"default_transaction_isolation": "serializable"}),
    ServerInfo("CockroachDB CCL v23.2.4 (aarch64-unknown-linux-gnu, built 2024/04/08 17:47:07, go1.21.9 "
               "X:nocoverageredesign)", 130000, {}, {"default_transaction_isolation": "serializable"}),
    ServerInfo("CockroachDB OSS v22.2.19 (x86_64-pc-linux-gnu, built 2024/01/12 17:00:00, go1.19.13)", None, {}, {}),
]


def caps(info: ServerInfo, **flags: bool) -> Capabilities:
    return Capabilities(server_version=info.version, **flags)


TABLE = (
    [(info, caps(info, listen_notify=True, notify_in_statement=True, skip_locked=True, multi_row_locking_claims=True,
                 transactional_steps=True, advisory_locks=True, replication_barrier=True, sql_enqueue_function=True))
     for info in POSTGRES]
    + [(info, caps(info, listen_notify=True, notify_in_statement=False, skip_locked=True,
                   multi_row_locking_claims=False, transactional_steps=True, advisory_locks=True,
                   replication_barrier=True, sql_enqueue_function=True))
       for info in CITUS]
    + [(info, caps(info, transactional_steps=True, retry_serialization_failures=True, follower_reads=True))
       for info in COCKROACH]
    + [  # a PostgreSQL whose default isolation is SERIALIZABLE: any transaction may fail with 40001
        (dataclasses.replace(POSTGRES[1], settings={"default_transaction_isolation": "serializable"}),
         caps(POSTGRES[1], listen_notify=True, notify_in_statement=True, skip_locked=True,
              multi_row_locking_claims=True, transactional_steps=True, advisory_locks=True,
              replication_barrier=True, sql_enqueue_function=True, retry_serialization_failures=True)),
        # a PostgreSQL-compatible server without WAL messages: no replication barrier
        (dataclasses.replace(POSTGRES[0], functions=frozenset()),
         caps(POSTGRES[0], listen_notify=True, notify_in_statement=True, skip_locked=True,
              multi_row_locking_claims=True, transactional_steps=True, advisory_locks=True,
              sql_enqueue_function=True)),
    ]
)


@pytest.mark.parametrize("info, expected", TABLE, ids=lambda v: v.version[:24] if isinstance(v, ServerInfo) else "")
def test_capabilities_table(info, expected):
    assert server_capabilities(info) == expected


def test_a_citus_coordinator_does_not_get_postgres_capabilities():
    """Same version() text, different server: only the extension list tells them apart."""
    plain = dataclasses.replace(CITUS[0], extensions=PG_EXT)
    assert plain.version == CITUS[0].version
    assert server_capabilities(plain) != server_capabilities(CITUS[0])
    assert server_capabilities(plain).notify_in_statement and not server_capabilities(CITUS[0]).notify_in_statement


@pytest.mark.parametrize("info", POSTGRES)
def test_postgres_backend_detects_plain_postgres(info):
    assert PostgresBackend.detect(info) and not is_citus(info) and not is_cockroachdb(info)


@pytest.mark.parametrize("info", CITUS + COCKROACH)
def test_postgres_backend_refuses_citus_and_cockroachdb(info):
    assert not PostgresBackend.detect(info)
    assert is_citus(info) or is_cockroachdb(info)


def test_detection_is_case_insensitive():
    assert is_cockroachdb(ServerInfo("cockroachdb ccl v24.1.0"))


def test_capabilities_are_immutable_values():
    c = server_capabilities(POSTGRES[0])
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.listen_notify = False  # type: ignore[misc]
    assert c == server_capabilities(POSTGRES[0])


def test_default_capabilities_promise_nothing():
    c = Capabilities()
    assert not any(v for k, v in dataclasses.asdict(c).items() if k != "server_version")
    assert c.server_version == ""


def test_server_description_in_errors():
    assert registry.describe_server(CITUS[1]) == "PostgreSQL 17.5 with extensions citus 13.2-1, citus_columnar 11.3-1"
    assert registry.describe_server(POSTGRES[0]) == "PostgreSQL 15.6"
    assert registry.describe_server(COCKROACH[0]) == "CockroachDB CCL v24.1.0"


# -- resolution: several backends on one scheme --------------------------------------------------------


class CitusLike(PostgresBackend):
    """Stands in for a Citus backend (a refinement of PostgreSQL on the same scheme)."""

    name = "citus_like"
    specificity = 10

    @classmethod
    def detect(cls, info: ServerInfo) -> bool:
        return is_citus(info)


class CockroachLike(PostgresBackend):
    name = "cockroach_like"
    specificity = 10

    @classmethod
    def detect(cls, info: ServerInfo) -> bool:
        return is_cockroachdb(info)


@pytest.fixture
def probes(monkeypatch):
    """Every probe answers with ``probes.info`` and is counted (the PostgreSQL-family backends share one
    probe implementation, so one probe serves all of them)."""

    class Probes:
        info: ServerInfo = POSTGRES[1]
        calls = 0

    def probe(cls, url, *, connect_timeout):
        Probes.calls += 1
        return Probes.info

    monkeypatch.setattr(PostgresCore, "probe", classmethod(probe))
    return Probes


URL = "postgresql://kit@db.example:5432/app"


@pytest.fixture
def only_postgres(monkeypatch):
    """Resolution as if PostgreSQL were the only installed backend (the tests register the others)."""
    monkeypatch.setattr(registry, "_discovered", lambda: ({"postgres": PostgresBackend}, ()))


def test_one_backend_on_a_scheme_is_chosen_without_probing(probes, only_postgres):
    assert registry.resolve(URL) is PostgresBackend
    assert probes.calls == 0


@pytest.mark.parametrize("info, expected", [(POSTGRES[0], PostgresBackend), (POSTGRES[3], PostgresBackend),
                                            (CITUS[0], CitusLike), (CITUS[1], CitusLike),
                                            (COCKROACH[0], CockroachLike), (COCKROACH[2], CockroachLike)])
def test_the_most_specific_detecting_backend_wins(probes, only_postgres, info, expected):
    probes.info = info
    with registry.register(CitusLike), registry.register(CockroachLike):
        assert registry.resolve(URL) is expected
    assert probes.calls == 1, "one probe serves every backend of the family"


def test_ambiguous_scheme_without_probing_takes_the_plain_backend(probes, only_postgres):
    with registry.register(CitusLike):
        assert registry.resolve(URL, probe=False) is PostgresBackend
    assert probes.calls == 0


def test_explicit_backend_is_not_probed_at_resolution(probes, only_postgres):
    probes.info = CITUS[0]
    with registry.register(CitusLike):
        assert registry.resolve(URL, "postgres") is PostgresBackend
    assert probes.calls == 0  # open() checks the server instead


def test_no_backend_detects_the_server(probes, only_postgres):
    probes.info = COCKROACH[0]
    with registry.register(CitusLike), pytest.raises(ConfigError) as info:
        registry.resolve(URL)
    msg = str(info.value)
    assert "CockroachDB CCL v24.1.0" in msg and "citus_like" in msg and "postgres" in msg
    assert "\n" not in msg


def test_mismatch_error_says_what_was_found_and_what_to_set(only_postgres):
    with registry.register(CitusLike):
        msg = str(registry.server_mismatch(PostgresBackend, CITUS[1], "postgresql://kit:pw@coord/app"))
        assert msg == ("backend 'postgres' cannot serve the server at postgresql://kit:***@coord/app: it is "
                       "PostgreSQL 17.5 with extensions citus 13.2-1, citus_columnar 11.3-1; set backend='citus_like' "
                       "(or leave backend unset)")
        msg = str(registry.server_mismatch(CitusLike, POSTGRES[1], URL))
        assert "it is PostgreSQL 16.2; set backend='postgres'" in msg
    msg = str(registry.server_mismatch(PostgresBackend, COCKROACH[0], URL))
    assert "it is CockroachDB CCL v24.1.0; no installed backend serves it (installed: " in msg
