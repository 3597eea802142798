"""Output of the ``kit`` commands: JSON whose values are JSON (never strings of JSON), and the console the
tables are printed on (its width decides their layout, :mod:`kit.cli.views`).

``--json`` field types are documented in docs/observability.md ("JSON output"): times are ISO 8601
strings with an offset, statuses their names, and the stored values (``inputs``, ``output``, ``error``,
a message's ``body``, an event's ``value``) the JSON they were stored as.
"""

from __future__ import annotations

import enum
import json
import sys
from dataclasses import fields, is_dataclass
from datetime import datetime
from typing import Any

# Fields holding JSON text in the storage records: printed as the JSON value itself.
JSON_TEXT_FIELDS = frozenset({"inputs", "output", "error", "body", "value"})


def json_value(value: Any) -> Any:
    """``value`` made JSON-ready: datetimes as ISO 8601, enums by value, dataclasses as objects."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    if is_dataclass(value) and not isinstance(value, type):
        return record_json(value)
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    return value


def decoded(text: str | None) -> Any:
    """Stored JSON text as its JSON value (text that is not JSON, written by something else, stays text)."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def record_json(rec: Any) -> dict[str, Any]:
    """A storage record as a JSON object: its fields, with stored JSON text decoded."""
    out: dict[str, Any] = {}
    for f in fields(rec):
        value = getattr(rec, f.name)
        out[f.name] = decoded(value) if f.name in JSON_TEXT_FIELDS and isinstance(value, str) else json_value(value)
    return out


def print_json(value: Any) -> None:
    """One JSON document on one line."""
    print(json.dumps(json_value(value), ensure_ascii=False))


def console() -> Any:
    """The console tables are printed on (its width is the terminal's, or $COLUMNS, or 80 when piped)."""
    from rich.console import Console

    return Console(file=sys.stdout)
