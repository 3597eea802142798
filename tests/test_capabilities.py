"""capabilities_from_version: what the PostgreSQL backend concludes from a server's ``SELECT version()``."""

from __future__ import annotations

import pytest
from kit.backends.postgres import capabilities_from_version

from kit.storage import Capabilities

POSTGRES_LIKE = [
    # Debian's PostgreSQL 15 package
    "PostgreSQL 15.6 (Debian 15.6-0+deb12u1) on x86_64-pc-linux-gnu, compiled by gcc (Debian 12.2.0-14) "
    "12.2.0, 64-bit",
    # PostgreSQL 16 as built for the pgserver wheel / upstream
    "PostgreSQL 16.2 on x86_64-pc-linux-gnu, compiled by gcc (GCC) 10.2.1 20210130 (Red Hat 10.2.1-11), 64-bit",
    "PostgreSQL 16.4 (Ubuntu 16.4-1.pgdg22.04+1) on aarch64-unknown-linux-gnu, compiled by gcc "
    "(Ubuntu 11.4.0-1ubuntu1~22.04) 11.4.0, 64-bit",
    "PostgreSQL 13.14 on x86_64-apple-darwin20.6.0, compiled by Apple clang version 12.0.5 (clang-1205.0.22.9), "
    "64-bit",
    # Citus is an extension: version() on a Citus coordinator is the PostgreSQL string of its image
    # (citusdata/citus:12.1 is built on the PGDG Debian packages).
    "PostgreSQL 16.2 (Debian 16.2-1.pgdg120+2) on x86_64-pc-linux-gnu, compiled by gcc (Debian 12.2.0-14) "
    "12.2.0, 64-bit",
]

COCKROACH = [
    "CockroachDB CCL v24.1.0 (x86_64-pc-linux-gnu, built 2024/05/15 21:28:29, go1.22.2 X:nocoverageredesign)",
    "CockroachDB CCL v23.2.4 (aarch64-unknown-linux-gnu, built 2024/04/08 17:47:07, go1.21.9 X:nocoverageredesign)",
    "CockroachDB OSS v22.2.19 (x86_64-pc-linux-gnu, built 2024/01/12 17:00:00, go1.19.13)",
]


@pytest.mark.parametrize("version", POSTGRES_LIKE)
def test_postgres_versions_get_postgres_capabilities(version):
    caps = capabilities_from_version(version)
    assert caps == Capabilities(listen_notify=True, skip_locked=True, transactional_steps=True,
                                advisory_locks=True, follower_reads=False, retry_serialization_failures=False,
                                server_version=version)


@pytest.mark.parametrize("version", COCKROACH)
def test_cockroachdb_is_recognised(version):
    caps = capabilities_from_version(version)
    assert caps.server_version == version
    assert caps.retry_serialization_failures is True
    assert caps.follower_reads is True
    # No LISTEN/NOTIFY, no working advisory locks; SKIP LOCKED is not trusted there.
    assert caps.listen_notify is False
    assert caps.advisory_locks is False
    assert caps.skip_locked is False
    assert caps.transactional_steps is False


def test_detection_is_case_insensitive():
    assert capabilities_from_version("cockroachdb ccl v24.1.0").retry_serialization_failures is True


def test_capabilities_are_immutable_values():
    caps = capabilities_from_version(POSTGRES_LIKE[0])
    with pytest.raises(AttributeError):
        caps.listen_notify = False  # type: ignore[misc]
    assert caps == capabilities_from_version(POSTGRES_LIKE[0])


def test_default_capabilities_promise_nothing():
    caps = Capabilities()
    assert not any((caps.listen_notify, caps.skip_locked, caps.transactional_steps, caps.advisory_locks,
                    caps.follower_reads, caps.retry_serialization_failures))
    assert caps.server_version == ""
