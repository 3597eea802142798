"""Printing workflows, steps, messages and tables for the ``kit`` commands (user data never read as markup)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from kit.storage import Status


def fmt_time(value: datetime | None) -> str:
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S") if value else ""


def duration(start: datetime | None, end: datetime | None) -> str:
    if not start or not end:
        return ""
    secs = (end - start).total_seconds()
    return f"{secs * 1000:.1f} ms" if secs < 1 else f"{secs:.2f} s"


def short(text: str | None, width: int = 60) -> str:
    if text is None:
        return ""
    return text if len(text) <= width else text[: width - 1] + "…"


def error_line(error: str | None) -> str:
    if not error:
        return ""
    try:
        rec = json.loads(error)
        return f"{rec.get('type', '')}: {rec.get('message', '')}"
    except (ValueError, AttributeError):
        return error


def record_json(rec: Any) -> dict[str, Any]:
    out = {}
    for key, value in rec.__dict__.items():
        if isinstance(value, datetime):
            value = value.isoformat()
        elif isinstance(value, Status):
            value = value.value
        out[key] = value
    return out


def styled(status: Status) -> str:
    color = {"SUCCESS": "green", "ERROR": "red", "RUNNING": "cyan", "PENDING": "yellow"}.get(status.value, "white")
    return f"[{color}]{status.value}[/{color}]"


def print_messages_events_streams(console: Any, messages: list, events: list, streams: list) -> None:
    from rich.text import Text  # user data is never read as markup

    waiting = sum(1 for m in messages if m.consumed_at is None)
    print_table(console, "messages", f"messages received ({len(messages)}, {waiting} still waiting)",
                 ("#", "topic", "created (UTC)", "consumed by step", "body"),
                 [(str(m.message_id), Text(m.topic or "(none)"), fmt_time(m.created_at),
                   str(m.consumed_step) if m.consumed_at is not None else "waiting", Text(short(m.body, 70)))
                  for m in messages])
    print_table(console, "events", f"events ({len(events)})", ("key", "value", "set by step", "updated (UTC)"),
                 [(Text(e.key), Text(short(e.value, 70)), str(e.step_id), fmt_time(e.updated_at))
                  for e in events])
    print_table(console, "streams", f"streams ({len(streams)})",
                 ("key", "elements", "closed", "last write (UTC)"),
                 [(Text(st.key), str(st.count), "closed" if st.closed else "open", fmt_time(st.last_write_at))
                  for st in streams])


def print_table(console: Any, what: str, title: str, columns: Sequence[str], rows: list[tuple]) -> None:
    """A rich table of ``rows``, or "<what>: none" when there are none."""
    from rich.table import Table

    if not rows:
        console.print(f"{what}: none")
        return
    table = Table(title=title)
    for col in columns:
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*row)
    console.print(table)
