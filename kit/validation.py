"""One place for the rules on names and sizes kit accepts from callers.

Every identifier a caller hands kit (workflow ids and names, queue names, message topics, event and
stream keys, deduplication ids, partition keys) and every serialized value it stores is checked here,
before anything is written, with an error that names the rule and how to comply. The database never
sees a value these checks refuse, so a refused call never leaves a partial write.

Rules
    workflow id      1-200 printable ASCII characters, no spaces (``[!-~]``); the SQL function
                     ``kit.enqueue`` enforces the same rule
    workflow name    1-200 characters, no control characters
    queue name       1-100 of ``A-Z a-z 0-9 _ . : -``
    topic            0-200 characters, no control characters (``None`` means the empty topic)
    event / stream   1-200 characters, no control characters
    key, dedup id,
    partition key
    values           JSON text of at most the configured ``max_*_bytes`` (UTF-8 bytes)
"""

from __future__ import annotations

import re
import unicodedata
from typing import Protocol

from kit.errors import ConfigError, LimitExceededError, UsageError

MAX_ID = 200
MAX_NAME = 200
MAX_QUEUE_NAME = 100
MAX_KEY = 200

_ID = re.compile(r"^[\x21-\x7e]{1,200}$")  # printable ASCII, no spaces
_QUEUE_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")

# Settings that bound the size of stored values, and what each one covers.
SIZE_SETTINGS = {
    "max_input_bytes": "workflow inputs",
    "max_output_bytes": "step outputs and workflow results",
    "max_message_bytes": "messages",
    "max_event_bytes": "event values and stream elements",
}
MAX_LIMIT = 1024 * 1024 * 1024 - 1  # PostgreSQL's largest text value is just under 1 GiB


class SizeLimits(Protocol):
    """The size settings :func:`check_size` reads (a :class:`kit.config.Config` has them)."""

    max_input_bytes: int
    max_output_bytes: int
    max_message_bytes: int
    max_event_bytes: int


def _short(value: object) -> str:
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 80 else text[:77] + "..."


def _bad_char(text: str) -> str | None:
    """The first control character or lone surrogate in ``text`` (PostgreSQL text cannot hold NUL)."""
    for ch in text:
        if unicodedata.category(ch) in ("Cc", "Cs"):
            return ch
    return None


def validate_workflow_id(workflow_id: object) -> str:
    """Return ``workflow_id`` if it is 1-200 printable ASCII characters without spaces, else UsageError."""
    if not isinstance(workflow_id, str) or not _ID.match(workflow_id):
        raise UsageError(
            f"invalid workflow id {_short(workflow_id)}: use 1-{MAX_ID} printable ASCII characters without spaces"
        )
    return workflow_id


def validate_workflow_name(name: object) -> str:
    """Return ``name`` if it is a non-empty string of at most 200 characters without control characters."""
    if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME or _bad_char(name) is not None:
        raise UsageError(
            f"invalid workflow name {_short(name)}: use 1-{MAX_NAME} characters without control characters"
        )
    return name


def validate_queue_name(name: object) -> str:
    """Return ``name`` if it is 1-100 letters, digits, '_', '.', ':' or '-', else ConfigError."""
    if not isinstance(name, str) or not _QUEUE_NAME.match(name):
        raise ConfigError(
            f"invalid queue name {_short(name)}: use 1-{MAX_QUEUE_NAME} letters, digits, '_', '.', ':' or '-'"
        )
    return name


def validate_key(what: str, key: object) -> str:
    """Return ``key`` (an event key, stream key, dedup id or partition key) if it is 1-200 characters
    without control characters, else UsageError naming ``what``."""
    if not isinstance(key, str) or not 0 < len(key) <= MAX_KEY or _bad_char(key) is not None:
        raise UsageError(
            f"{what} must be a non-empty string of at most {MAX_KEY} characters without control characters, "
            f"got {_short(key)}"
        )
    return key


def validate_topic(topic: object) -> str:
    """Return the stored form of a message topic (None becomes ''); at most 200 characters, no control
    characters."""
    if topic is None:
        return ""
    if not isinstance(topic, str) or len(topic) > MAX_KEY or _bad_char(topic) is not None:
        raise UsageError(
            f"topic must be None or a string of at most {MAX_KEY} characters without control characters, "
            f"got {_short(topic)}"
        )
    return topic


def _mib(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MiB" if n >= 1024 * 1024 else f"{n} bytes"


def check_size(text: str | None, config: SizeLimits, setting: str, what: str) -> str | None:
    """Return ``text`` if its UTF-8 size is within ``config.<setting>``; else LimitExceededError naming
    the value, its size, the limit and the setting. Nothing has been written when this raises."""
    if text is None:
        return None
    limit: int = getattr(config, setting)
    if len(text) * 4 <= limit:  # at most 4 UTF-8 bytes per character: no need to encode
        return text
    size = len(text.encode("utf-8", "surrogatepass"))
    if size <= limit:
        return text
    raise LimitExceededError(
        f"{what} is {size} bytes ({_mib(size)}), over the limit of {limit} bytes ({_mib(limit)}) set by "
        f"'{setting}': store large data elsewhere and pass a reference, or raise '{setting}' "
        f"(Kit({setting}=...), KIT_{setting.upper()} or kit.toml)",
        setting=setting, limit=limit, size=size,
    )


def check_limit_setting(name: str, value: int) -> None:
    """ConfigError unless a ``max_*_bytes`` setting is between 1 and just under 1 GiB."""
    if not 1 <= value <= MAX_LIMIT:
        raise ConfigError(f"setting '{name}' must be between 1 and {MAX_LIMIT} bytes, got {value}")
