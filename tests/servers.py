"""Helpers that start REAL PostgreSQL servers for the test suite (never mocks).

Two kinds of servers:

* ``PgServer`` / ``pgserver_url``: PostgreSQL 16 from the ``pgserver`` PyPI wheel, reachable
  over a unix socket only (``postgresql://postgres:@/postgres?host=/tmp/...``), trust auth.
* ``DebianPostgres``: Debian's ``postgresql-15`` package binaries, started in a private temp
  data dir on ``127.0.0.1:<free port>`` with a password-protected (scram-sha-256) superuser.
  Supports ``restart()`` and ``kill()`` for crash tests.

PostgreSQL refuses to run as root.  When the tests run as root, ``pgserver`` itself switches to
a ``pgserver`` system user; ``DebianPostgres`` runs initdb / pg_ctl through ``runuser`` as the
``postgres`` system user (created by the Debian package) or, failing that, a ``kit-postgres``
system user it creates.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

import psycopg

PG15_BIN = Path("/usr/lib/postgresql/15/bin")
START_TIMEOUT = 20.0  # seconds to wait for a server to accept connections


# --------------------------------------------------------------------------- server selection

SERVER_NAMES = ("pgserver16", "debian15", "external")


def available_servers() -> list[str]:
    """pgserver16 always; debian15 if the Debian binaries exist; external if $KIT_TEST_DATABASE_URL."""
    names = ["pgserver16"]
    if DebianPostgres.available():
        names.append("debian15")
    if os.environ.get("KIT_TEST_DATABASE_URL"):
        names.append("external")
    return names


def selected_servers() -> list[str]:
    """available_servers() restricted by $KIT_TEST_SERVERS (comma list); ValueError if unavailable."""
    available = available_servers()
    raw = os.environ.get("KIT_TEST_SERVERS", "").strip()
    if not raw:
        return available
    wanted = [n.strip() for n in raw.split(",") if n.strip()]
    missing = [n for n in wanted if n not in available]
    if missing or not wanted:
        raise ValueError(
            f"KIT_TEST_SERVERS={raw!r}: {missing} not available here (available: {available}; "
            "debian15 needs scripts/setup.sh, external needs KIT_TEST_DATABASE_URL)"
        )
    return [n for n in available if n in wanted]


# --------------------------------------------------------------------------- helpers


def _tmp_base() -> str:
    """Directory for server temp dirs: $TMPDIR unless that is too long for unix sockets."""
    base = tempfile.gettempdir()
    if len(base) > 60 and os.path.isdir("/tmp"):
        base = "/tmp"
    return base


def _log_tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as e:
        return f"<no server log at {path}: {e}>"
    return "\n".join(text.splitlines()[-lines:])


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_until_accepting(url: str, deadline: float, *, log: Path | None = None, what: str = "server") -> None:
    """Connect with psycopg in a loop until it works or ``deadline`` (time.monotonic()) passes."""
    last: Exception | None = None
    while True:
        try:
            with psycopg.connect(url, connect_timeout=2, autocommit=True) as conn:
                conn.execute("select 1")
            return
        except psycopg.Error as e:
            last = e
        if time.monotonic() >= deadline:
            tail = _log_tail(log) if log is not None else "<no log>"
            raise RuntimeError(
                f"{what} did not accept connections in time (last error: {last!r}).\n"
                f"--- server log tail ({log}) ---\n{tail}"
            )
        time.sleep(0.1)


def _pid_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie (our PID 1 may not reap daemonized postgres)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


# --------------------------------------------------------------------------- pgserver (PG 16)


def _import_pgserver():
    # platformdirs warns (RuntimeDirWarning) when XDG_RUNTIME_DIR is unset; that's harmless.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver  # noqa: PLC0415

    return pgserver


class PgServer:
    """A pgserver (PostgreSQL 16) instance in its own temp dir; ``stop()`` stops it and removes the dir."""

    def __init__(self, tmpdir: str | os.PathLike | None = None):
        self._own_dir = tmpdir is None
        self.dir = (
            Path(tmpdir) if tmpdir is not None else Path(tempfile.mkdtemp(prefix="kit-pgs-", dir=_tmp_base()))
        )
        self._server = None
        self.url: str | None = None

    def start(self) -> PgServer:
        pgserver = _import_pgserver()
        self._server = pgserver.get_server(self.dir, cleanup_mode="stop")
        url = self._server.get_uri()
        wait_until_accepting(url, time.monotonic() + START_TIMEOUT, log=self.dir / "log", what="pgserver")
        # Speed: fsync=off is safe against process crashes (data stays in the OS page cache).
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET fsync = off")
            conn.execute("SELECT pg_reload_conf()")
        self.url = url
        return self

    def _pg_ctl(self, *args: str) -> None:
        from pgserver._commands import pg_ctl  # the wheel's own binaries, run as pgserver runs them

        user = "pgserver" if os.geteuid() == 0 else None
        pg_ctl(list(args), pgdata=self.dir, user=user, timeout=60)

    def stop_immediate(self) -> None:
        """``pg_ctl stop -m immediate``: every server process exits at once, no checkpoint (crash recovery
        on the next start); clients see their connections closed."""
        self._pg_ctl("-m", "immediate", "-w", "stop")

    def start_again(self) -> None:
        """Start the stopped server on the same data dir and socket (pgserver's own start options)."""
        assert self.url is not None
        socket_dir = psycopg.conninfo.conninfo_to_dict(self.url)["host"]
        self._pg_ctl("-w", "-o", '-h ""', "-o", f"-k {socket_dir}", "-l", str(self.dir / "log"), "start")
        wait_until_accepting(self.url, time.monotonic() + START_TIMEOUT, log=self.dir / "log", what="pgserver")

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            with contextlib.suppress(Exception):
                server.cleanup()  # pg_ctl -w stop (fast mode)
            if (self.dir / "postmaster.pid").exists():  # started again by start_again(): not pgserver's
                with contextlib.suppress(Exception):
                    self._pg_ctl("-m", "fast", "-w", "stop")
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)


def pgserver_url(tmpdir: str | os.PathLike) -> str:
    """Start (or reuse) a pgserver PostgreSQL 16 in ``tmpdir`` and return its unix-socket URI.

    The server is stopped at interpreter exit by pgserver (cleanup_mode="stop"); use ``PgServer``
    for explicit control.
    """
    return PgServer(tmpdir).start().url  # type: ignore[return-value]


# --------------------------------------------------------------------------- Debian PG 15


def _ensure_system_user() -> str:
    """Return an unprivileged system user to run postgres as (only needed when euid == 0)."""
    for name in ("postgres", "kit-postgres"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    name = "kit-postgres"
    nologin = "/usr/sbin/nologin" if os.path.exists("/usr/sbin/nologin") else "/bin/false"
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", nologin, name],
        check=True,
        capture_output=True,
    )
    return name


class DebianPostgres:
    """Debian's PostgreSQL 15 on 127.0.0.1:<free port> in a private temp dir.

    Superuser ``kit`` with a random password (scram-sha-256 over TCP, trust on the unix socket in
    the temp dir).  ``fsync=off``, ``max_connections=200``.
    """

    user = "kit"

    def __init__(self, *, max_connections: int = 200, bin_dir: Path = PG15_BIN):
        self.bin_dir = Path(bin_dir)
        self.max_connections = max_connections
        self.password = secrets.token_hex(16)
        self.port: int | None = None
        self.dir: Path | None = None
        self.run_as: str | None = _ensure_system_user() if os.geteuid() == 0 else None
        self._initialized = False

    # ---- paths
    @staticmethod
    def available(bin_dir: Path = PG15_BIN) -> bool:
        return all((Path(bin_dir) / b).is_file() for b in ("initdb", "pg_ctl", "postgres"))

    @property
    def data_dir(self) -> Path:
        assert self.dir is not None
        return self.dir / "data"

    @property
    def log_path(self) -> Path:
        assert self.dir is not None
        return self.dir / "server.log"

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("DebianPostgres not started")
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/postgres"

    @property
    def socket_url(self) -> str:
        """Trusted unix-socket URL (no password), e.g. for admin actions."""
        return f"postgresql://{self.user}@/postgres?host={self.dir}&port={self.port}"

    # ---- process plumbing
    def _run(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        cmd = [str(self.bin_dir / args[0]), *args[1:]]
        if self.run_as is not None:
            cmd = ["runuser", "-u", self.run_as, "--", *cmd]
        env = dict(os.environ, LC_ALL="C", LANG="C")
        for k in ("PGDATA", "PGPORT", "PGHOST", "PGUSER", "PGPASSWORD", "PGDATABASE", "PGOPTIONS"):
            env.pop(k, None)
        # Output goes to a temp file, not a pipe: pg_ctl's daemonized child could keep a pipe open.
        with tempfile.TemporaryFile("w+") as out:
            proc = subprocess.run(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
                env=env,
                timeout=timeout,
                text=True,
            )
            out.seek(0)
            proc.stdout = out.read()
        if check and proc.returncode != 0:
            raise RuntimeError(
                f"{' '.join(cmd)} failed with exit code {proc.returncode}:\n{proc.stdout}\n"
                f"--- server log tail ({self.log_path}) ---\n{_log_tail(self.log_path)}"
            )
        return proc

    def _initdb(self) -> None:
        assert self.dir is not None
        self.dir.chmod(0o700)
        pwfile = self.dir / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self.run_as is not None:
            ent = pwd.getpwnam(self.run_as)
            for p in (self.dir, pwfile):
                os.chown(p, ent.pw_uid, ent.pw_gid)
        try:
            self._run(
                "initdb",
                "-D",
                str(self.data_dir),
                "-U",
                self.user,
                f"--pwfile={pwfile}",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            )
        finally:
            pwfile.unlink(missing_ok=True)
        (self.data_dir / "pg_hba.conf").write_text(
            "# written by tests/servers.py\n"
            "local all all trust\n"
            "host  all all 127.0.0.1/32 scram-sha-256\n"
            "host  all all ::1/128      scram-sha-256\n"
        )
        self._initialized = True

    def _write_conf(self) -> None:
        with open(self.data_dir / "postgresql.conf", "a") as f:
            f.write(
                "\n# --- kit tests (tests/servers.py) ---\n"
                "listen_addresses = '127.0.0.1'\n"
                f"port = {self.port}\n"
                f"unix_socket_directories = '{self.dir}'\n"
                f"max_connections = {self.max_connections}\n"
                "fsync = off\n"
                "password_encryption = 'scram-sha-256'\n"
                "logging_collector = off\n"
            )

    def _postmaster_pid(self) -> int | None:
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    # ---- lifecycle
    def start(self) -> DebianPostgres:
        if not self.available(self.bin_dir):
            raise RuntimeError(f"PostgreSQL 15 binaries not found in {self.bin_dir} (run scripts/setup.sh)")
        if self.dir is None:
            self.dir = Path(tempfile.mkdtemp(prefix="kit-pg15-", dir=_tmp_base()))
        fresh = not self._initialized
        if fresh:
            self._initdb()
        attempts = 3 if fresh else 1  # a fresh server may pick another port if its port got taken
        for attempt in range(attempts):
            if fresh:
                self.port = free_port()
                self._write_conf()  # later settings in postgresql.conf win
            deadline = time.monotonic() + START_TIMEOUT
            proc = self._run(
                "pg_ctl",
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_path),
                "-w",
                "-t",
                str(int(START_TIMEOUT)),
                "start",
                check=False,
                timeout=START_TIMEOUT + 10,
            )
            if proc.returncode == 0:
                wait_until_accepting(self.url, deadline, log=self.log_path, what="Debian PostgreSQL 15")
                return self
            tail = _log_tail(self.log_path, 15)
            bind_failed = "could not bind" in tail or "Address already in use" in tail
            if not (bind_failed and attempt + 1 < attempts):
                raise RuntimeError(
                    f"Debian PostgreSQL 15 failed to start (pg_ctl exit {proc.returncode}):\n{proc.stdout}\n"
                    f"--- server log tail ({self.log_path}) ---\n{_log_tail(self.log_path)}"
                )
        raise AssertionError("unreachable")

    def _stop_server(self) -> None:
        """Fast shutdown; falls back to kill() if pg_ctl fails. Keeps the data dir."""
        if self.dir is None or not self.data_dir.exists():
            return
        pid = self._postmaster_pid()
        if pid is None or not _pid_alive(pid):
            return
        proc = self._run(
            "pg_ctl",
            "-D",
            str(self.data_dir),
            "-m",
            "fast",
            "-w",
            "-t",
            "30",
            "stop",
            check=False,
            timeout=40,
        )
        if proc.returncode != 0 and _pid_alive(pid):
            self.kill()

    def stop(self) -> None:
        """Fast shutdown, then remove the temp dir. Idempotent."""
        if self.dir is None:
            return
        try:
            self._stop_server()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
            self._initialized = False

    def stop_immediate(self) -> None:
        """``pg_ctl stop -m immediate``: every server process exits at once, no checkpoint (crash recovery
        on the next start); clients see their connections closed. ``start()`` brings it back."""
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "-t", "30", "stop", timeout=40)

    def start_again(self) -> None:
        self.start()

    def restart(self) -> DebianPostgres:
        """Stop (fast) if running, then start again on the same data dir and port."""
        self._stop_server()
        return self.start()

    def kill(self, timeout: float = 10.0) -> None:
        """SIGKILL the postmaster and every process of its group (backends etc.), like a crash.

        pg_ctl puts the postmaster in its own session/process group, so killing the group takes
        down all server processes at once; waits until they are gone, then removes the stale
        lock files so that ``restart()`` / ``start()`` can bring it back (with crash recovery).
        """
        pid = self._postmaster_pid()
        if pid is None:
            return
        pids = {pid}
        with contextlib.suppress(Exception):
            import psutil  # dependency of pgserver

            pids |= {c.pid for c in psutil.Process(pid).children(recursive=True)}
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        for p in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(p, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        while any(_pid_alive(p) for p in pids):
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"postgres processes {sorted(p for p in pids if _pid_alive(p))} survived SIGKILL"
                )
            time.sleep(0.05)
        # Remove the lock files of the dead server: its pid may linger as a zombie (our PID 1 need
        # not reap daemonized processes promptly), which would make the next postmaster refuse.
        for lock in (self.data_dir / "postmaster.pid", self.dir / f".s.PGSQL.{self.port}.lock"):
            with contextlib.suppress(OSError):
                lock.unlink()

    @property
    def pid(self) -> int | None:
        """PID of the running postmaster, or None."""
        pid = self._postmaster_pid() if self.dir is not None else None
        return pid if pid is not None and _pid_alive(pid) else None

    def __enter__(self) -> DebianPostgres:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()
