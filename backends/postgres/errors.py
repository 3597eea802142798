"""Why a connection to PostgreSQL failed, and whether trying again can help.

libpq reports a failed connection as text only (no SQLSTATE reaches the client before a session exists),
so :func:`classify` reads libpq's and the server's messages. A failure is **permanent** when the same
attempt cannot succeed later without someone changing the URL or the server: nothing listening on the
port or socket, an unknown host, database or role, a rejected password or ``pg_hba.conf`` entry, a TLS
mismatch or a certificate that does not verify. Everything else (a server starting up or shutting down,
too many connections, a timeout, a dropped connection, a message this module does not know) is
**transient** and retried. With several hosts in the URL the failure is permanent only when every host's
is.

:func:`first_attempt` applies it where the backend opens: a permanent failure raises
:class:`ConnectionRejectedError` at once, with the cause and what to do; a transient one is retried
with backoff for a bounded time, and the first retry is logged (one line).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg

from kit.config import redact_url
from kit.errors import DatabaseUnavailableError

log = logging.getLogger("kit.postgres")


@dataclass(frozen=True)
class ConnectFailure:
    """One classified connection failure: ``kind`` (e.g. ``refused``, ``authentication``, ``tls``,
    ``transient``), whether retrying is pointless, the cause (one line) and what to do about it."""

    kind: str
    permanent: bool
    cause: str
    fix: str = ""

    def message(self, url: str) -> str:
        """``cannot connect to <redacted url>: <cause>; <fix>`` (one line, no password)."""
        text = f"cannot connect to PostgreSQL at {redact_url(url)}: {self.cause}"
        return f"{text}; {self.fix}" if self.fix else text


class ConnectionRejectedError(DatabaseUnavailableError):
    """A connection failure that retrying cannot fix (see :func:`classify`); ``failure`` says which."""

    def __init__(self, message: str, failure: ConnectFailure) -> None:
        super().__init__(message)
        self.failure = failure


_WHERE = re.compile(r'connection to server (?:at "(?P<host>[^"]*)"(?: \([^)]*\))?, port (?P<port>\d+)'
                    r'|on socket "(?P<socket>[^"]*)") failed: ')
_PASSWORD_HELP = "check the user name and password (in the URL, PGPASSWORD or ~/.pgpass)"
_TLS_HELP = ("check sslmode, sslrootcert, sslcert and sslkey in the URL against the server's certificates "
             "(docs/security.md)")

# (pattern, kind, fix); the first match decides. ``{where}`` is the host and port (or socket) that failed.
_PERMANENT: tuple[tuple[re.Pattern[str], str, str], ...] = tuple(
    (re.compile(p, re.IGNORECASE), kind, fix) for p, kind, fix in (
        (r"Connection refused", "refused",
         "is PostgreSQL running at {where}? start it, or correct the host and port in the URL"),
        (r"No such file or directory", "refused",
         "is PostgreSQL running with {where}? start it, or correct host= (the socket directory) and the port"),
        (r'database "([^"]*)" does not exist', "unknown-database",
         "create it (createdb {name}) or correct the database name at the end of the URL"),
        (r'role "([^"]*)" does not exist', "unknown-role",
         "create it (CREATE ROLE \"{name}\" LOGIN) or correct the user name in the URL"),
        (r"password authentication failed", "authentication",
         _PASSWORD_HELP + "; PostgreSQL reports an unknown role the same way"),
        (r"no password supplied", "authentication",
         "the server asks for a password: put it in the URL, PGPASSWORD or ~/.pgpass"),
        (r"\b(peer|ident|scram|md5|gssapi|sspi|radius|ldap|pam|bsd|certificate) authentication failed",
         "authentication", "the server rejected these credentials: check the user name and authentication method"),
        (r"no pg_hba\.conf entry for .*no encryption", "tls",
         "the server accepts only TLS connections from here: add sslmode=require (or verify-full with "
         "sslrootcert=...) to the URL"),
        (r"no pg_hba\.conf entry|pg_hba\.conf rejects connection", "hba",
         "the server's pg_hba.conf admits no such connection: connect as another user or database, or add an "
         "entry for this host"),
        (r"server does not support SSL, but SSL was required", "tls",
         "the server has TLS turned off: use sslmode=prefer (or disable) in the URL, or turn ssl on at the server"),
        (r"certificate verify failed|does not match host name|root certificate file|certificate file"
         r"|private key file|client certificate|could not load private key|alert (bad|unknown|handshake)"
         r"|unsupported protocol|wrong version number|invalid sslmode|sslmode value", "tls", _TLS_HELP),
        (r"permission denied for database|does not have CONNECT privilege", "no-connect-privilege",
         "the role may not connect to this database: GRANT CONNECT ON DATABASE ... TO the role"),
        (r"could not translate host name|failed to resolve host|Name or service not known"
         r"|nodename nor servname|No address associated with hostname", "unknown-host",
         "correct the host name in the URL"),
    )
)
_RETRY_FIRST = re.compile(r"Temporary failure in name resolution|try again", re.IGNORECASE)
# Failures known to be transient; one matching nothing here or above is "unrecognised", and retried too.
_TRANSIENT = re.compile(
    r"starting up|shutting down|not yet accepting connections|in recovery mode|too many (connections|clients)"
    r"|remaining connection slots|timeout expired|timed out|closed the connection unexpectedly|"
    r"Temporary failure in name resolution|Connection reset|SSL SYSCALL|EOF detected|Network is unreachable"
    r"|No route to host|could not receive data|server closed", re.IGNORECASE)


def _attempts(text: str) -> list[str]:
    """The failure of each host libpq (or psycopg) tried, from one error text."""
    marker = "All failures were:"
    if marker not in text:
        return [text]
    return [part.strip() for part in re.split(r"\n- host: ", text.split(marker, 1)[1]) if part.strip()]


def _where(text: str) -> str:
    m = _WHERE.search(text)
    if m is None:
        return "that address"
    return f"socket {m['socket']}" if m["socket"] else f"{m['host']} port {m['port']}"


def _cause(text: str) -> str:
    """The failure's own words: libpq's "connection to server ... failed:" prefix and hints dropped."""
    first = text.strip().splitlines()[0] if text.strip() else "connection failed"
    first = _WHERE.split(first)[-1] if _WHERE.search(first) else first
    first = re.sub(r"^(connection (failed|is bad): )+", "", first)
    return " ".join(first.replace("FATAL:", "").split()) or "connection failed"


def classify_one(text: str) -> ConnectFailure:
    """Classify the failure of one connection attempt to one host."""
    if _RETRY_FIRST.search(text):  # e.g. "failed to resolve host ...: Temporary failure in name resolution"
        return ConnectFailure("transient", False, _cause(text))
    for pattern, kind, fix in _PERMANENT:
        m = pattern.search(text)
        if m:
            fix = fix.replace("{where}", _where(text)).replace("{name}", (m.group(1) if m.re.groups else "") or "")
            return ConnectFailure(kind, True, _cause(text), fix)
    return ConnectFailure("transient" if _TRANSIENT.search(text) else "unrecognised", False, _cause(text))


def classify(text: str) -> ConnectFailure:
    """Classify a connection error's text (every host's failure when the URL names several)."""
    failures = [classify_one(t) for t in _attempts(text)]
    transient = [f for f in failures if not f.permanent]
    if not transient:
        return failures[0] if len({f.kind for f in failures}) == 1 else ConnectFailure(
            "several", True, "; ".join(dict.fromkeys(f.cause for f in failures)), failures[0].fix)
    return transient[0]


def error_text(exc: BaseException) -> str:
    """An exception's message, or its type name when it has none."""
    return str(exc).strip() or type(exc).__name__


def explain(text: str) -> str:
    """A failure text followed by what to do about it, when :func:`classify` knows the cause."""
    failure = classify(text)
    first = text.strip().splitlines()[0] if text.strip() else text
    return f"{first}; {failure.fix}" if failure.fix else first


def first_attempt(connect: Callable[[], Any], url: str, scrub: Callable[[str, str], str], *,
                  retry_for: float, sleep: Callable[[float], None] = time.sleep) -> int:
    """Connect (and close) until one attempt succeeds; returns the number of attempts.

    A permanent failure raises :class:`ConnectionRejectedError` on the attempt that meets it. A transient
    one is retried with backoff for up to ``retry_for`` seconds, saying so once in the log; then
    :class:`~kit.errors.DatabaseUnavailableError` names the last cause. ``scrub(text, url)`` removes the
    password from a driver message."""
    deadline = time.monotonic() + retry_for
    delay = 0.1
    attempts = 0
    while True:
        attempts += 1
        try:
            connect().close()
            return attempts
        except psycopg.Error as exc:
            failure = classify(scrub(error_text(exc), url))
        if failure.permanent:
            raise ConnectionRejectedError(failure.message(url), failure) from None
        if time.monotonic() + delay > deadline:
            raise DatabaseUnavailableError(f"{failure.message(url)} (still failing after {attempts} attempts "
                                           f"in {retry_for:g}s)") from None
        if attempts == 1:
            log.warning("cannot connect to PostgreSQL at %s yet (%s): retrying for up to %gs",
                        redact_url(url), failure.cause, retry_for)
        sleep(delay)
        delay = min(delay * 2, 1.0)


__all__ = ["ConnectFailure", "ConnectionRejectedError", "classify", "classify_one", "explain", "first_attempt"]
