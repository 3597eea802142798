"""The backend registry end to end: a third-party backend registered under a scheme of its own is chosen for
URLs with that scheme and runs workflows; an explicit backend that does not match the server is refused
at open() with one line saying what was found."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import pytest
from kit.backends.postgres import PostgresBackend
from kit.backends.postgres.server import is_citus

import kit
import kit.registry as registry
from kit.errors import ConfigError
from kit.storage import ServerInfo


class ThirdParty(PostgresBackend):
    """A backend a third party ships: its own name and URL scheme (speaking to PostgreSQL underneath)."""

    name = "thirdparty"
    url_schemes = ("kit-thirdparty",)


class CitusLike(PostgresBackend):
    """Stands in for a Citus backend: claims postgresql:// too, detects the citus extension."""

    name = "citus_like"
    specificity = 10

    @classmethod
    def detect(cls, info: ServerInfo) -> bool:
        return is_citus(info)


def _with_scheme(url: str, scheme: str) -> str:
    return urlunsplit(urlsplit(url)._replace(scheme=scheme))


def test_third_party_backend_is_chosen_by_its_scheme(pg_url, schema):
    url = _with_scheme(pg_url, "kit-thirdparty")
    with registry.register(ThirdParty):
        assert "kit-thirdparty" in registry.installed_schemes()
        app = kit.Kit(database_url=url, schema=schema, poll_seconds=0.1)

        @app.step(name="tp.double")
        def double(x: int) -> int:
            return 2 * x

        @app.workflow(name="tp.wf")
        def wf(x: int) -> int:
            return double(x) + 1

        try:
            assert type(app.backend) is ThirdParty
            assert app.backend.describe()["backend"] == "thirdparty"
            assert app.start(wf, 20).result(timeout=30) == 41
        finally:
            app.close()
    with pytest.raises(ConfigError, match="no installed backend takes kit-thirdparty:// URLs"):
        kit.Kit(database_url=url, schema=schema).backend  # noqa: B018 - unregistered: unknown scheme again


def test_ambiguous_scheme_probes_and_picks_the_plain_backend(pg_url, schema):
    """With a second backend on postgresql://, the real server is probed: plain PostgreSQL -> postgres."""
    with registry.register(CitusLike):
        assert registry.resolve(pg_url) is PostgresBackend
        app = kit.Kit(database_url=pg_url, schema=schema)
        try:
            assert type(app.backend) is PostgresBackend
        finally:
            app.close()


def test_explicit_backend_that_does_not_match_the_server_fails_at_open(pg_url, schema):
    with registry.register(CitusLike):
        app = kit.Kit(database_url=pg_url, schema=schema, backend="citus_like")
        with pytest.raises(ConfigError) as info:
            app.backend  # noqa: B018 - opens
        app.close()
    msg = str(info.value)
    assert msg.startswith("backend 'citus_like' cannot serve the server at ")
    assert "it is PostgreSQL 1" in msg and "set backend='postgres'" in msg
    assert "\n" not in msg
