"""TLS end to end: a PostgreSQL 15 that accepts ``hostssl`` only, with a CA made by openssl at test time.

libpq's TLS options (sslmode, sslrootcert, sslcert, sslkey) pass through kit's database URL unchanged.
"""

from __future__ import annotations

import uuid

import psycopg
import pytest
from connect_helpers import CountingBackend, CountingConnection
from kit.backends.postgres.errors import ConnectionRejectedError
from psycopg import sql
from security_helpers import run_cli
from tls_server import CERT_USER, TlsPostgres

import kit
from kit.errors import DatabaseUnavailableError

pytestmark = pytest.mark.skipif(not TlsPostgres.available(), reason="Debian PostgreSQL 15 binaries not installed")


@pytest.fixture(scope="module")
def tls_pg():
    server = TlsPostgres(max_connections=60)
    try:
        server.start()
        with psycopg.connect(server.socket_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(CERT_USER)))
            conn.execute(sql.SQL("GRANT CREATE ON DATABASE postgres TO {}").format(sql.Identifier(CERT_USER)))
        yield server
    finally:
        server.stop()


def _run_workflow(url: str, schema: str) -> str:
    app = kit.Kit(url, schema=schema, connect_timeout=3)

    @app.step(name="tls.hello")
    def hello(name: str) -> str:
        return f"hello {name}"

    @app.workflow(name="tls.greet")
    def greet(name: str) -> str:
        return hello(name)

    try:
        return app.start(greet, "tls", workflow_id=f"tls-{uuid.uuid4().hex[:8]}").result(timeout=30)
    finally:
        app.close()


def _ssl_in_use(url: str) -> bool:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()[0]


def test_plain_connections_are_refused(tls_pg: TlsPostgres) -> None:
    plain = tls_pg.tls_url(sslmode="disable")
    with pytest.raises(psycopg.OperationalError, match="no encryption|pg_hba.conf"):
        psycopg.connect(plain, connect_timeout=3).close()
    with pytest.raises(DatabaseUnavailableError, match="no encryption|pg_hba.conf"):
        kit.Kit(plain, connect_timeout=1).backend  # noqa: B018


def test_verify_full_with_the_ca_runs_a_workflow(tls_pg: TlsPostgres) -> None:
    url = tls_pg.tls_url()
    assert "sslmode=verify-full" in url and "sslrootcert=" in url
    assert _ssl_in_use(url)
    assert _run_workflow(url, f"t_{uuid.uuid4().hex[:10]}") == "hello tls"
    # The same URL on the command line, and the host name form that the certificate also names.
    code, out, err = run_cli(["db", "--database-url", tls_pg.tls_url(host="localhost")])
    assert code == 0, err
    assert tls_pg.password not in out + err


def test_wrong_ca_fails_with_a_clear_error(tls_pg: TlsPostgres, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KIT_CONNECT_TIMEOUT", "1")
    url = tls_pg.tls_url(ca="wrong_ca.crt")
    with pytest.raises(DatabaseUnavailableError, match="certificate verify failed") as info:
        kit.Kit(url, connect_timeout=1).backend  # noqa: B018
    assert tls_pg.password not in str(info.value)
    code, _out, err = run_cli(["workflows", "list", "--database-url", url])
    assert code == 2 and "certificate verify failed" in err and len(err.strip().splitlines()) == 1
    assert tls_pg.password not in err


def test_verify_full_rejects_a_host_the_certificate_does_not_name(tls_pg: TlsPostgres) -> None:
    import socket

    names = {socket.gethostname()} - {"localhost"}
    if not names:
        pytest.skip("no other host name resolves to this machine")
    host = names.pop()
    try:
        if socket.gethostbyname(host) != "127.0.0.1":
            pytest.skip(f"{host} does not resolve to 127.0.0.1")
    except OSError:
        pytest.skip(f"{host} does not resolve")
    with pytest.raises(DatabaseUnavailableError, match="does not match|certificate"):
        kit.Kit(tls_pg.tls_url(host=host), connect_timeout=1).backend  # noqa: B018


def test_client_certificate_authenticates_without_a_password(tls_pg: TlsPostgres) -> None:
    url = tls_pg.tls_url(user=CERT_USER, client_cert=True)
    assert "sslcert=" in url and "sslkey=" in url
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == CERT_USER
    assert _run_workflow(url, f"t_{uuid.uuid4().hex[:10]}") == "hello tls"
    # Without the certificate the same role is refused.
    with pytest.raises(DatabaseUnavailableError, match="certificate"):
        kit.Kit(tls_pg.tls_url(user=CERT_USER), connect_timeout=1).backend  # noqa: B018


@pytest.mark.parametrize(("kind", "make_url", "fragment"), [
    ("plain to a TLS-only server", lambda s: s.tls_url(sslmode="disable"), "add sslmode=require"),
    ("a CA that did not sign the server's certificate", lambda s: s.tls_url(ca="wrong_ca.crt"),
     "certificate verify failed"),
    ("no client certificate where one is required", lambda s: s.tls_url(user=CERT_USER),
     "valid client certificate"),
], ids=lambda v: v if isinstance(v, str) and " " in v else "")
def test_tls_mismatch_fails_on_the_first_attempt(tls_pg: TlsPostgres, kind: str, make_url, fragment: str) -> None:
    """A TLS mismatch cannot succeed on retry: one connection attempt, no retry, the cause and the fix."""
    CountingConnection.attempts = 0
    backend = CountingBackend(make_url(tls_pg), connect_timeout=2, retry_seconds=30)
    with pytest.raises(ConnectionRejectedError) as info:
        backend.open()
    assert CountingConnection.attempts == 1, kind
    assert info.value.failure.kind == "tls" and fragment in str(info.value)
    assert tls_pg.password not in str(info.value)
