"""Passwords never show: not in logs (DEBUG included), errors, exception messages or reprs, ``kit db``,
``kit monitor``, ``kit workflows``, nor a worker's output; whether the password comes from the URL,
``PGPASSFILE`` or ``PGPASSWORD``. Every captured text is searched for the password."""

from __future__ import annotations

import logging
import os
import secrets
import signal
import subprocess
import sys
import time
import traceback
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
from psycopg import sql
from security_helpers import let_nodes_connect, run_cli, url_for

import kit
from kit.errors import KitError

pytestmark = pytest.mark.all_backends  # also on the extra targets (Citus): tests/targets.py

REPO = Path(__file__).resolve().parent.parent


class Role:
    def __init__(self, admin_url: str, schema: str) -> None:
        self.name = f"kit_sec_{uuid.uuid4().hex[:8]}"
        self.password = "S3cr3t-" + secrets.token_hex(10)
        self.url = url_for(admin_url, self.name, self.password)
        self.bare_url = url_for(admin_url, self.name, None)
        self.schema = schema
        parts = urlsplit(admin_url)
        self.checks_passwords = "host=/" not in parts.query and bool(parts.hostname)
        self.host, self.port = parts.hostname or "", parts.port or 5432


@pytest.fixture
def role(pg_url: str, schema: str) -> Iterator[Role]:
    r = Role(pg_url, schema)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        dbname = conn.info.dbname
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(r.name),
                                                                     sql.Literal(r.password)))
        conn.execute(sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(sql.Identifier(dbname),
                                                                         sql.Identifier(r.name)))
        let_nodes_connect(conn, r.name, r.password)
    yield r
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("SET lock_timeout = '10s'")
        let_nodes_connect(conn, r.name, None)
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
        conn.execute(sql.SQL("DROP OWNED BY {} CASCADE").format(sql.Identifier(r.name)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(r.name)))


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture,
               monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.LogCaptureFixture]:
    """Capture every logger at DEBUG (kit, psycopg, psycopg.pool); failing connections give up quickly."""
    monkeypatch.setenv("KIT_CONNECT_TIMEOUT", "1")
    names = ("", "kit", "psycopg", "psycopg.pool")
    before = {n: logging.getLogger(n).level for n in names}
    for n in names:
        caplog.set_level(logging.DEBUG, logger=n)
    yield caplog
    for n, level in before.items():
        logging.getLogger(n).setLevel(level)


def _exception_texts(exc: BaseException) -> list[str]:
    texts = [str(exc), repr(exc), "".join(traceback.format_exception(exc))]
    cause = exc.__cause__ or exc.__context__
    if cause is not None and not exc.__suppress_context__:
        texts.append(str(cause))
    return texts


def _battery(url: str, schema: str, role: Role, *, failing: tuple[str, ...] = ()) -> list[str]:
    """Run the app, the CLI and failing connections with ``url``; return everything they printed or raised."""
    texts: list[str] = []
    app = kit.Kit(url, schema=schema, connect_timeout=2)

    @app.step(name="sec.step")
    def step(x: int) -> int:
        return x + 1

    @app.workflow(name="sec.flow")
    def flow(x: int) -> int:
        return step(x)

    @app.workflow(name="sec.fail")
    def fail() -> None:
        raise ValueError("boom")

    try:
        assert app.start(flow, 1).result(timeout=30) == 2
        with pytest.raises(kit.WorkflowError) as failed:
            app.start(fail).result(timeout=30)
        texts += _exception_texts(failed.value)
        texts += [repr(app.config), str(app.config), repr(app.backend), str(app.describe()), repr(app)]
    finally:
        app.close()
    args = ["--database-url", url, "--schema", schema]
    for argv in (["db", "--json"], ["-v", "db"], ["monitor", "--once"], ["workflows", "list", "--json"],
                 ["-v", "migrate"], ["workflows", "list", "--limit", "zero"], ["workflow", "show", "no such id"],
                 ["workflow", "show", "missing-id"]):
        code, out, err = run_cli([*argv[:1], *argv[1:], *args] if argv[0] != "-v" else [*argv, *args])
        texts += [out, err]
        assert code in (0, 2), (argv, code, err)
    # Failing connections: the wrong password (a secret too), an unreachable host.
    wrong = "Wr0ng-" + secrets.token_hex(6)
    bad_urls = {"wrong-password": url_for(url, role.name, wrong),
                "unreachable": f"postgresql://{role.name}:{role.password}@127.0.0.1:1/db"}
    for kind in failing:
        bad = bad_urls[kind]
        if kind == "wrong-password" and not role.checks_passwords:
            continue  # a trust server accepts any password
        with pytest.raises(KitError) as info:
            kit.Kit(bad, schema=schema, connect_timeout=1).backend  # noqa: B018
        texts += _exception_texts(info.value)
        if kind == "unreachable":
            continue  # the CLI's one line for it is covered by tests/test_cli.py
        code, out, err = run_cli(["workflows", "list", "--database-url", bad])
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        texts += [out, err]
        assert wrong not in "".join(texts)
    # A malformed URL carrying the password.
    for bad in (f"postgresql://{role.name}:{role.password}@h:notaport/db", f"mysql://u:{role.password}@h/db",
                f"postgresql://h/db?password={role.password}&sslmode=bogus"):
        code, out, err = run_cli(["db", "--database-url", bad])
        assert code == 2, err
        texts += [out, err]
    return texts


def _assert_clean(texts: list[str], password: str, *more: str) -> None:
    blob = "\n".join([*texts, *more])
    assert blob, "nothing was captured"
    assert password not in blob, f"password leaked: ...{blob[max(0, blob.find(password) - 300):][:600]}..."


def test_password_in_the_url(role: Role, debug_logs: pytest.LogCaptureFixture,
                             capfd: pytest.CaptureFixture[str]) -> None:
    texts = _battery(role.url, role.schema, role, failing=("wrong-password", "unreachable"))
    out, err = capfd.readouterr()
    assert debug_logs.records, "DEBUG logging captured nothing"
    _assert_clean(texts, role.password, debug_logs.text, out, err)


def test_password_from_pgpassfile(role: Role, debug_logs: pytest.LogCaptureFixture, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    if not role.checks_passwords:
        pytest.skip("this server does not use password authentication")
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"{role.host}:{role.port}:*:{role.name}:{role.password}\n")
    passfile.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(passfile))
    monkeypatch.delenv("PGPASSWORD", raising=False)
    texts = _battery(role.bare_url, role.schema, role)
    out, err = capfd.readouterr()
    _assert_clean(texts, role.password, debug_logs.text, out, err)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "none"))
    with pytest.raises(KitError, match="password"):  # proves the file was what authenticated
        kit.Kit(role.bare_url, schema=role.schema, connect_timeout=1).backend  # noqa: B018


def test_password_from_pgpassword(role: Role, debug_logs: pytest.LogCaptureFixture,
                                  monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    if not role.checks_passwords:
        pytest.skip("this server does not use password authentication")
    monkeypatch.setenv("PGPASSWORD", role.password)
    monkeypatch.delenv("PGPASSFILE", raising=False)
    texts = _battery(role.bare_url, role.schema, role, failing=("unreachable",))
    out, err = capfd.readouterr()
    _assert_clean(texts, role.password, debug_logs.text, out, err)


def test_verbose_worker_process_never_prints_the_password(role: Role) -> None:
    if not role.checks_passwords:
        pytest.skip("this server does not use password authentication")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KIT_", "PG"))}
    env.update(KIT_DATABASE_URL=role.url, KIT_SCHEMA=role.schema, KIT_POLL_SECONDS="0.2", PYTHONUNBUFFERED="1",
               KIT_CONNECT_TIMEOUT="1")
    proc = subprocess.Popen([sys.executable, "-m", "kit.cli", "-v", "worker", "tests.apps.secrets_app:app"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            stdin=subprocess.DEVNULL)
    try:
        client = kit.Client(role.url, schema=role.schema)
        try:
            deadline = time.monotonic() + 30
            while client.backend.schema_version() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            handle = client.enqueue("secrets.shout", "psst")
            assert handle.result(timeout=60) == "PSST"
        finally:
            client.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    assert "running secrets.shout" in output, output
    assert role.password not in output
    # A worker that cannot log in: the error names the problem, not the password.
    env["KIT_DATABASE_URL"] = url_for(role.url, role.name, "Wr0ng-pass") if role.checks_passwords else \
        f"postgresql://{role.name}:{role.password}@127.0.0.1:1/db"
    res = subprocess.run([sys.executable, "-m", "kit.cli", "-v", "worker", "tests.apps.secrets_app:app"], cwd=REPO,
                         env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert role.password not in res.stdout + res.stderr and "Wr0ng-pass" not in res.stdout + res.stderr
