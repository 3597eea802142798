"""Configuration: explicit arguments > ``KIT_*`` environment > ``kit.toml`` / ``[tool.kit]`` > defaults.

Every value is validated here, once, with an error that names the setting, where it came from and what
is accepted, so nothing half-configured ever reaches the database.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from kit.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

# 58 characters at most: the notification channel "<schema>_wake" must fit PostgreSQL's 63-byte names.
_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,57}$")


@dataclass(frozen=True)
class Config:
    """Resolved settings of one :class:`kit.Kit`."""

    database_url: str | None = None  # None: the embedded PostgreSQL in ``data_dir``
    backend: str | None = None  # None: chosen by kit.registry from the URL's scheme (and server)
    schema: str = "kit"
    data_dir: str = ".kit"
    app_version: str | None = None  # recorded on every workflow started; None: unversioned
    compatible_versions: str | None = None  # comma-separated older versions this code can replay ('*': all)
    lease_seconds: float = 10.0  # a dead worker's workflows are reclaimed within about this long
    heartbeat_seconds: float = 2.5
    poll_seconds: float = 1.0  # longest sleep between claim attempts when idle
    worker_concurrency: int = 16  # workflows run at once by this process's worker
    pool_size: int = 0  # 0: worker_concurrency + 4
    migrate: bool = True  # apply schema migrations when the app opens
    db_retry_seconds: float = 60.0  # keep retrying a lost database this long before giving up
    connect_timeout: float = 5.0
    call_timeout: float = 20.0  # a database call unanswered this long has its connection broken and retried
    notify: bool = True  # use LISTEN/NOTIFY wake-ups when the backend has them
    # Largest serialized value kit stores, in UTF-8 bytes (docs/security.md); larger ones are refused.
    max_input_bytes: int = 16 * 1024 * 1024  # workflow inputs
    max_output_bytes: int = 16 * 1024 * 1024  # step outputs and workflow results
    max_message_bytes: int = 16 * 1024 * 1024  # messages
    max_event_bytes: int = 16 * 1024 * 1024  # event values and stream elements

    def __repr__(self) -> str:  # never show a password from the URL
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        if self.database_url is not None:
            values["database_url"] = redact_url(self.database_url)
        return "Config(" + ", ".join(f"{k}={v!r}" for k, v in values.items()) + ")"

    @property
    def effective_pool_size(self) -> int:
        return self.pool_size or self.worker_concurrency + 4


_FIELDS = {f.name: f for f in fields(Config)}


def _coerce(name: str, value: Any, source: str) -> Any:
    """Convert ``value`` to the type of setting ``name``; raise ConfigError naming the source."""
    default = _FIELDS[name].default
    if name == "compatible_versions" and isinstance(value, (list, tuple)):
        if not all(isinstance(v, str) and v.strip() and "," not in v for v in value):
            raise ConfigError(f"invalid value {value!r} for setting '{name}' (from {source}): expected version "
                              "strings without commas")
        value = ",".join(v.strip() for v in value)
    kind = type(default) if default is not None else str
    try:
        if isinstance(value, str) and kind is not str:
            text = value.strip()
            if kind is bool:
                low = text.lower()
                if low in ("1", "true", "yes", "on"):
                    return True
                if low in ("0", "false", "no", "off"):
                    return False
                raise ValueError("expected true/false")
            return kind(text)
        if kind is bool and not isinstance(value, bool):
            raise ValueError("expected true/false")
        if kind in (int, float) and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ValueError(f"expected a number, got {type(value).__name__}")
        if kind is str and value is not None and not isinstance(value, str):
            raise ValueError(f"expected text, got {type(value).__name__}")
        return kind(value) if value is not None else None
    except (TypeError, ValueError, OverflowError) as exc:  # OverflowError: int(inf) from a TOML float
        raise ConfigError(f"invalid value {value!r} for setting '{name}' (from {source}): {exc}") from None


def _from_file(cwd: Path, config_file: str | os.PathLike[str] | None) -> tuple[dict[str, Any], str]:
    """Settings from an explicit file, ./kit.toml, or [tool.kit] of ./pyproject.toml."""
    candidates: list[tuple[Path, bool]] = []
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        candidates.append((path, path.name == "pyproject.toml"))
    else:
        candidates += [(cwd / "kit.toml", False), (cwd / "pyproject.toml", True)]
    for path, is_pyproject in candidates:
        if not path.is_file():
            continue
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot parse {path}: {exc}") from None
        if is_pyproject:
            tool = data.get("tool", {})
            data = tool.get("kit", {}) if isinstance(tool, dict) else {}
            if not data:
                continue
            if not isinstance(data, dict):
                raise ConfigError(f"[tool.kit] in {path} must be a table of settings")
            return dict(data), f"[tool.kit] in {path}"
        if "kit" in data and isinstance(data["kit"], dict):
            data = data["kit"]
        return dict(data), str(path)
    return {}, ""


def load_config(
    overrides: Mapping[str, Any] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    config_file: str | os.PathLike[str] | None = None,
) -> Config:
    """Resolve configuration by precedence and validate it."""
    env = os.environ if env is None else env
    here = Path(cwd) if cwd is not None else Path.cwd()
    values: dict[str, Any] = {}
    file_values, file_source = _from_file(here, config_file or env.get("KIT_CONFIG") or None)
    for key, value in file_values.items():
        if key not in _FIELDS:
            raise ConfigError(f"unknown setting '{key}' in {file_source}; known settings: {', '.join(_FIELDS)}")
        values[key] = _coerce(key, value, file_source)
    for key in _FIELDS:
        env_key = "KIT_" + key.upper()
        if env_key in env and env[env_key] != "":
            values[key] = _coerce(key, env[env_key], f"environment variable {env_key}")
    for key, value in (overrides or {}).items():
        if key not in _FIELDS:
            raise ConfigError(f"unknown setting '{key}'; known settings: {', '.join(_FIELDS)}")
        if value is not None:
            values[key] = _coerce(key, value, "argument")
    cfg = Config(**values)
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    """Check ranges and formats; raise ConfigError with the fix."""
    if not _IDENT.match(cfg.schema):
        raise ConfigError(
            f"invalid schema name {cfg.schema!r}: use lowercase letters, digits and underscores "
            "(at most 58 characters, not starting with a digit)"
        )
    for name in ("lease_seconds", "heartbeat_seconds", "poll_seconds", "db_retry_seconds", "connect_timeout", "call_timeout"):
        if not 0 < getattr(cfg, name) < float("inf"):  # also refuses NaN
            raise ConfigError(f"setting '{name}' must be a positive finite number, got {getattr(cfg, name)}")
    from kit.validation import SIZE_SETTINGS, check_limit_setting

    for name in SIZE_SETTINGS:
        check_limit_setting(name, getattr(cfg, name))
    if cfg.heartbeat_seconds * 2 > cfg.lease_seconds:
        raise ConfigError(
            f"heartbeat_seconds ({cfg.heartbeat_seconds}) must be at most half of lease_seconds "
            f"({cfg.lease_seconds}) so a live worker renews its leases before they expire"
        )
    if cfg.worker_concurrency < 1:
        raise ConfigError(f"setting 'worker_concurrency' must be at least 1, got {cfg.worker_concurrency}")
    if cfg.pool_size < 0:
        raise ConfigError(f"setting 'pool_size' must be 0 (automatic) or positive, got {cfg.pool_size}")
    if cfg.database_url is not None:
        check_url(cfg.database_url)


_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def check_url(url: str) -> str:
    """Validate a database URL's syntax (a ``scheme://`` prefix, well-formed ports) and return its scheme,
    lower-cased. Which backend takes the scheme is for :mod:`kit.registry` to decide."""
    if not isinstance(url, str) or not url.strip():
        raise ConfigError("database_url is empty: give a URL like postgresql://user@host:5432/dbname")
    m = _SCHEME.match(url.strip())
    if m is None:
        raise ConfigError(f"malformed database URL {redact_url(url)}: expected a scheme like postgresql://")
    try:
        parts = urlsplit(url.strip())
        # Each host of a multi-host URL (host1:5432,host2:5433) carries its own port.
        for host in parts.netloc.rpartition("@")[2].split(","):
            urlsplit("//" + host).port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise ConfigError(f"malformed database URL {redact_url(url)}: {exc}") from None
    return m.group(1).lower()


def redact_url(url: str) -> str:
    """The URL with any password (in the netloc or a password= parameter) replaced by ***."""
    if not isinstance(url, str):
        return "<invalid>"
    out = re.sub(r"(://[^:/@?#]*:)[^@/?#]*@", r"\1***@", url)
    out = re.sub(r"((?:^|[?&\s])(?:ssl)?password=)[^&\s]*", r"\1***", out, flags=re.IGNORECASE)
    return out
