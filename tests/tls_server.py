"""A Debian PostgreSQL 15 that accepts TLS connections only, with a throwaway CA made by ``openssl``.

``TlsPostgres`` extends ``servers.DebianPostgres``: at init it writes a CA, a server certificate for
127.0.0.1 / localhost signed by it, a client certificate for the role ``certuser``, and a second,
unrelated CA (to prove a wrong CA is refused). ``pg_hba.conf`` has ``hostssl`` lines only: the
password superuser ``kit`` (scram-sha-256) and ``certuser`` (client certificate, no password).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

try:
    from .servers import DebianPostgres
except ImportError:
    from servers import DebianPostgres

CERT_USER = "certuser"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _key(name: str, cwd: Path) -> None:
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", name, cwd=cwd)


def _ca(name: str, cwd: Path) -> None:
    _key(f"{name}.key", cwd)
    _openssl("req", "-x509", "-new", "-key", f"{name}.key", "-out", f"{name}.crt", "-days", "2",
             "-subj", f"/CN=kit test {name}", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=cwd)


def _signed(name: str, subject: str, extensions: str, ca: str, cwd: Path) -> None:
    _key(f"{name}.key", cwd)
    _openssl("req", "-new", "-key", f"{name}.key", "-out", f"{name}.csr", "-subj", subject, cwd=cwd)
    (cwd / f"{name}.ext").write_text(extensions)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext", cwd=cwd)


class TlsPostgres(DebianPostgres):
    """DebianPostgres with ``ssl = on`` and ``hostssl``-only authentication (see the module docstring)."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.client_dir = Path(tempfile.mkdtemp(prefix="kit-tls-client-"))

    def _initdb(self) -> None:
        super()._initdb()
        assert self.dir is not None
        certs = self.dir / "tls"
        certs.mkdir()
        _ca("ca", certs)
        _ca("wrong_ca", certs)
        _signed("server", "/CN=localhost",
                "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n", "ca", certs)
        _signed("client", f"/CN={CERT_USER}", "extendedKeyUsage=clientAuth\n", "ca", certs)
        for name in ("ca.crt", "wrong_ca.crt", "client.crt", "client.key"):
            target = self.client_dir / name
            target.write_bytes((certs / name).read_bytes())
            target.chmod(0o600)
        if self.run_as is not None:
            ent = pwd.getpwnam(self.run_as)
            for path in (certs, *certs.iterdir()):
                os.chown(path, ent.pw_uid, ent.pw_gid)
        (certs / "server.key").chmod(0o600)
        (self.data_dir / "pg_hba.conf").write_text(
            "# written by tests/tls_server.py: TLS only\n"
            "local   all all trust\n"
            f"hostssl all {CERT_USER} 127.0.0.1/32 cert\n"
            "hostssl all all 127.0.0.1/32 scram-sha-256\n"
        )

    def _write_conf(self) -> None:
        super()._write_conf()
        assert self.dir is not None
        certs = self.dir / "tls"
        with open(self.data_dir / "postgresql.conf", "a") as f:
            f.write(
                "ssl = on\n"
                f"ssl_cert_file = '{certs / 'server.crt'}'\n"
                f"ssl_key_file = '{certs / 'server.key'}'\n"
                f"ssl_ca_file = '{certs / 'ca.crt'}'\n"
            )

    @property
    def url(self) -> str:
        return super().url + "?sslmode=require"

    def tls_url(self, *, user: str | None = None, password: str | None = None, ca: str = "ca.crt",
                client_cert: bool = False, sslmode: str = "verify-full", host: str = "127.0.0.1") -> str:
        """A URL for ``user`` (default: the superuser) with libpq's TLS options as URL parameters."""
        user = user or self.user
        pw = self.password if password is None and user == self.user else password
        auth = f"{user}:{pw}" if pw else user
        params = [f"sslmode={sslmode}"]
        if sslmode != "disable":
            params.append(f"sslrootcert={self.client_dir / ca}")
        if client_cert:
            params += [f"sslcert={self.client_dir / 'client.crt'}", f"sslkey={self.client_dir / 'client.key'}"]
        return f"postgresql://{auth}@{host}:{self.port}/postgres?" + "&".join(params)

    def stop(self) -> None:
        super().stop()
        shutil.rmtree(self.client_dir, ignore_errors=True)
