"""Connection failures at open: a permanent one fails on the first attempt with the cause and the fix, a
transient one is retried and says so once (backends/postgres/errors.py).

Every case runs against a real server (or a real closed port); the assertions count connection attempts
and log lines, never elapsed time.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit, urlunsplit

import psycopg
import pytest
from connect_helpers import CountingBackend, CountingConnection
from kit.backends.postgres.errors import ConnectionRejectedError, classify
from security_helpers import url_for

from kit.errors import DatabaseUnavailableError

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def counting() -> Iterator[type[CountingConnection]]:
    CountingConnection.attempts = 0
    yield CountingConnection


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def with_path(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + database))


def is_socket_url(url: str) -> bool:
    parts = urlsplit(url)
    return not parts.hostname and "host" in parse_qs(parts.query)


def password_of(url: str) -> str | None:
    return psycopg.conninfo.conninfo_to_dict(url).get("password") or None


def open_fails_at_once(url: str, counting: type[CountingConnection],
                       caplog: pytest.LogCaptureFixture) -> ConnectionRejectedError:
    """Open a backend on ``url``: it must raise ConnectionRejectedError after exactly one attempt, log no
    retry, and never show the password."""
    backend = CountingBackend(url, connect_timeout=2, retry_seconds=30)
    with caplog.at_level(logging.DEBUG), pytest.raises(ConnectionRejectedError) as info:
        backend.open()
    assert counting.attempts == 1, f"{counting.attempts} connection attempts for a permanent failure"
    assert not [r for r in caplog.records if "retrying" in r.getMessage()], caplog.text
    message = str(info.value)
    assert "\n" not in message and message.startswith("cannot connect to PostgreSQL at ")
    password = password_of(url)
    if password:
        assert password not in message and password not in caplog.text
    return info.value


def test_refused_port_fails_on_the_first_attempt(counting, caplog) -> None:
    port = free_port()
    err = open_fails_at_once(f"postgresql://kit:hunter2@127.0.0.1:{port}/postgres", counting, caplog)
    assert err.failure.kind == "refused"
    assert f"127.0.0.1 port {port}" in str(err) and "start it" in str(err)


def test_missing_socket_fails_on_the_first_attempt(counting, caplog, tmp_path) -> None:
    err = open_fails_at_once(f"postgresql://postgres@/postgres?host={tmp_path}", counting, caplog)
    assert err.failure.kind == "refused" and str(tmp_path) in str(err)


def test_unknown_database_fails_on_the_first_attempt(pg_url, counting, caplog) -> None:
    err = open_fails_at_once(with_path(pg_url, "kit_no_such_db"), counting, caplog)
    assert err.failure.kind == "unknown-database"
    assert 'database "kit_no_such_db" does not exist' in str(err) and "createdb kit_no_such_db" in str(err)


def test_unknown_role_fails_on_the_first_attempt(pg_url, counting, caplog) -> None:
    err = open_fails_at_once(url_for(pg_url, "kit_no_such_role", password_of(pg_url)), counting, caplog)
    if password_of(pg_url):  # scram: PostgreSQL does not say whether the role exists
        assert err.failure.kind == "authentication" and "kit_no_such_role" in str(err)
    else:
        assert err.failure.kind == "unknown-role" and 'role "kit_no_such_role" does not exist' in str(err)


def test_bad_password_fails_on_the_first_attempt(pg_url, counting, caplog) -> None:
    parts = psycopg.conninfo.conninfo_to_dict(pg_url)
    if not parts.get("password") or is_socket_url(pg_url):
        pytest.skip("this server does not use password authentication (debian15 does)")
    bad = url_for(pg_url, str(parts["user"]), "not-the-password-42")
    err = open_fails_at_once(bad, counting, caplog)
    assert err.failure.kind == "authentication" and "password authentication failed" in str(err)
    assert "not-the-password-42" not in str(err) and "PGPASSWORD" in str(err)


def test_tls_required_by_the_client_but_off_at_the_server(pg_url, counting, caplog) -> None:
    if is_socket_url(pg_url):
        pytest.skip("TLS does not apply to a unix socket (debian15 listens on TCP without TLS)")
    sep = "&" if "?" in pg_url else "?"
    err = open_fails_at_once(f"{pg_url}{sep}sslmode=require", counting, caplog)
    assert err.failure.kind == "tls" and "does not support SSL" in str(err) and "sslmode" in str(err)


class ClosingProxy:
    """A real TCP listener in front of a server: the first ``drop`` connections are closed at once (a
    transient failure), later ones are forwarded to ``upstream`` (host, port) or a unix socket path."""

    def __init__(self, upstream: tuple[str, int] | str | None, drop: int) -> None:
        self.upstream = upstream
        self.drop = drop
        self.accepted = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            if self.accepted <= self.drop or self.upstream is None:
                client.close()
                continue
            if isinstance(self.upstream, str):
                server = socket.socket(socket.AF_UNIX)
            else:
                server = socket.socket()
            server.connect(self.upstream)
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.sock.close()


def upstream_of(url: str) -> tuple[str, int] | str:
    info = psycopg.conninfo.conninfo_to_dict(url)
    port = int(info.get("port") or 5432)
    host = str(info.get("host") or "")
    return f"{host}/.s.PGSQL.{port}" if host.startswith("/") else (host, port)


def through_proxy(url: str, proxy: ClosingProxy) -> str:
    info = psycopg.conninfo.conninfo_to_dict(url)
    auth = info.get("user", "postgres") + (f":{info['password']}" if info.get("password") else "")
    return f"postgresql://{auth}@127.0.0.1:{proxy.port}/{info.get('dbname', 'postgres')}"


def test_transient_failure_is_retried_and_says_so_once(pg_url, counting, caplog) -> None:
    proxy = ClosingProxy(upstream_of(pg_url), drop=2)
    backend = CountingBackend(through_proxy(pg_url, proxy), connect_timeout=5, retry_seconds=30)
    try:
        with caplog.at_level(logging.INFO, logger="kit"):
            backend.open()
        assert backend.schema_version() is None or backend.schema_version() >= 0
    finally:
        backend.close()
        proxy.close()
    retries = [r for r in caplog.records if "retrying" in r.getMessage()]
    assert len(retries) == 1, caplog.text
    assert "closed the connection unexpectedly" in retries[0].getMessage()
    assert proxy.accepted >= 3  # two dropped, then the attempt that got through (and the pool's own)


def test_transient_failure_that_persists_gives_up_with_the_cause(counting, caplog) -> None:
    proxy = ClosingProxy(None, drop=0)
    backend = CountingBackend(f"postgresql://kit:pw@127.0.0.1:{proxy.port}/postgres", connect_timeout=1)
    try:
        with caplog.at_level(logging.INFO, logger="kit"), pytest.raises(DatabaseUnavailableError) as info:
            backend.open()
    finally:
        proxy.close()
    assert not isinstance(info.value, ConnectionRejectedError)
    assert counting.attempts >= 2 and f"after {counting.attempts} attempts" in str(info.value)
    assert len([r for r in caplog.records if "retrying" in r.getMessage()]) == 1


@pytest.mark.parametrize("argv_db", [["db"], ["workflows", "list"]], ids=" ".join)
def test_cli_refused_port_is_one_line_exit_2_without_retries(argv_db) -> None:
    url = f"postgresql://kit:hunter2@127.0.0.1:{free_port()}/postgres"
    res = subprocess.run([sys.executable, "-m", "kit.cli", "-v", *argv_db, "--database-url", url],
                         capture_output=True, text=True, cwd=REPO, timeout=60, stdin=subprocess.DEVNULL)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert lines[-1].startswith("kit: error: cannot connect to PostgreSQL at postgresql://kit:***@127.0.0.1")
    assert "start it, or correct the host and port" in lines[-1]
    # -v logs every pool connection attempt and retry: there must be none.
    assert not [ln for ln in lines if "retrying" in ln or "error connecting" in ln], res.stderr
    assert "hunter2" not in res.stdout + res.stderr


@pytest.mark.parametrize(("text", "kind", "permanent"), [
    ('connection failed: connection to server at "127.0.0.1", port 1 failed: Connection refused\n\tIs the '
     "server running on that host and accepting TCP/IP connections?", "refused", True),
    ('connection failed: connection to server at "h", port 5432 failed: FATAL:  the database system is '
     "starting up", "transient", False),
    ('connection failed: connection to server at "h", port 5432 failed: FATAL:  sorry, too many clients '
     "already", "transient", False),
    ('connection failed: connection to server at "h", port 5432 failed: timeout expired', "transient", False),
    ("failed to resolve host 'nosuch.invalid': [Errno -2] Name or service not known", "unknown-host", True),
    ("failed to resolve host 'db': [Errno -3] Temporary failure in name resolution", "transient", False),
    ('connection failed: connection to server at "h", port 1 failed: SSL error: certificate verify failed',
     "tls", True),
    ("something nobody has seen before", "unrecognised", False),
])
def test_classification_of_driver_messages(text: str, kind: str, permanent: bool) -> None:
    failure = classify(text)
    assert (failure.kind, failure.permanent) == (kind, permanent)


def test_several_hosts_are_permanent_only_when_every_host_is() -> None:
    head = 'connection failed: connection to server at "{h}", port {p} failed: {e}'
    refused = head.format(h="10.0.0.1", p=5432, e="Connection refused")
    starting = head.format(h="10.0.0.2", p=5432, e="FATAL:  the database system is starting up")
    both_refused = (f"{refused}\nMultiple connection attempts failed. All failures were:\n"
                    f"- host: '10.0.0.1', port: '5432', hostaddr: '10.0.0.1': {refused}\n"
                    f"- host: '10.0.0.2', port: '5432', hostaddr: '10.0.0.2': {refused}")
    mixed = (f"{starting}\nMultiple connection attempts failed. All failures were:\n"
             f"- host: '10.0.0.1', port: '5432', hostaddr: '10.0.0.1': {refused}\n"
             f"- host: '10.0.0.2', port: '5432', hostaddr: '10.0.0.2': {starting}")
    assert classify(both_refused).permanent and classify(both_refused).kind == "refused"
    assert not classify(mixed).permanent and "starting up" in classify(mixed).cause
