"""What ``kit workflows list``, ``kit workflow show``, ``kit queues`` and ``kit schedules`` print: pure
functions of the records, the time and the terminal width (golden-tested at 80 and 140 columns).

Each table is built in its fullest form first (whole ids, long headers) and falls back to the compact
form of :mod:`kit.cli.layout` (ids cut by its rule) when that does not fit; the free text (an error, an
output, a body) takes what is left of the line. ``wide=True`` shows everything whole, with full times, at
any width. User data is never read as markup.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from rich.columns import Columns
from rich.console import Console, Group, RenderableType
from rich.text import Text

from kit.cli.layout import ID_RULE, clock, full_time, natural_width, short_id, span, table, took
from kit.storage import Status, WorkflowRecord

COLORS = {"SUCCESS": "green", "ERROR": "red", "RUNNING": "cyan", "PENDING": "yellow", "CANCELLED": "white"}
FLEX_MIN = 16  # the free-text column (error, output, body) keeps at least this many characters


def status_text(status: Status) -> Text:
    return Text(status.value, style=COLORS.get(status.value, ""))


def error_line(error: str | None) -> str:
    """A stored error record as ``Type: message`` (the text itself if it is not a record)."""
    if not error:
        return ""
    try:
        rec = json.loads(error)
        return f"{rec.get('type', '')}: {rec.get('message', '')}"
    except (ValueError, AttributeError):
        return error


def one_line(text: str | None) -> str:
    return " ".join((text or "").split())


def _choose(width: int, wide: bool, build: Any) -> RenderableType:
    """``build(full, flex)``: ``full`` shows ids whole (and long headers); ``flex`` is the width of the
    free-text column (0: unbounded and folded, None: left out). The full form when it leaves the free text
    :data:`FLEX_MIN` characters, else the compact one; when not even that does, the free text is left out
    (``kit workflow show`` and ``--json`` have it). ``wide``: everything whole, whatever the width."""
    if wide:
        return build(True, 0)
    for full in (True, False):
        rest = width - (natural_width(build(full, 1)) - 1)
        if rest >= FLEX_MIN:
            return build(full, rest)
    return build(False, None)


def _flex_column(t: Any, header: str, flex: int | None) -> None:
    """The free-text column: ``flex`` characters cut with ``…``; 0: as wide as needed, folded; None: none."""
    if flex:
        t.add_column(header, width=flex, no_wrap=True, overflow="ellipsis")
    elif flex == 0:
        t.add_column(header, overflow="fold")


def _row(t: Any, cells: list[Any], free: Any, flex: int | None) -> None:
    t.add_row(*cells, *([free] if flex is not None else []))


def _caption(full: bool, ids: Sequence[str], flex: int | None, dropped: str) -> str:
    notes = ["times in UTC"]
    if not full and any(short_id(i) != i for i in ids):
        notes.append(ID_RULE)
    if flex is None:
        notes.append(f"{dropped} left out for width: --wide or --json")
    return "; ".join(notes)


def _when(now: datetime, wide: bool) -> Any:
    return full_time if wide else (lambda ts: clock(ts, now))


def workflows_table(records: Sequence[WorkflowRecord], *, now: datetime, width: int,
                    wide: bool = False) -> RenderableType:
    """``kit workflows list``: id, name, status, created, duration, recoveries, error."""
    when = _when(now, wide)

    def build(full: bool, flex: int | None) -> RenderableType:
        t = table(f"{len(records)} workflow(s)", _caption(full, [r.workflow_id for r in records], flex, "errors"))
        for header in ("id", "name", "status", "created", "took", "recoveries" if full else "recov."):
            t.add_column(header, no_wrap=header != "name", overflow="fold",
                         justify="right" if header in ("took", "recoveries", "recov.") else "left")
        _flex_column(t, "error", flex)
        for r in records:
            _row(t, [Text(r.workflow_id if full else short_id(r.workflow_id)), Text(r.name), status_text(r.status),
                     when(r.created_at), took(r.started_at, r.finished_at), str(r.recoveries)],
                 Text(one_line(error_line(r.error))), flex)
        return t

    return _choose(width, wide, build)


def workflow_view(rec: WorkflowRecord, steps: Sequence[Any], children: Sequence[WorkflowRecord],
                  messages: Sequence[Any], events: Sequence[Any], streams: Sequence[Any], *, now: datetime,
                  width: int, wide: bool = False) -> RenderableType:
    """``kit workflow show``: the workflow, its steps, children, messages, events and streams."""
    when = _when(now, wide)
    head = Text()
    head.append(rec.workflow_id, style="bold")
    head.append(f"  {rec.name}  ")  # Text.append never reads markup
    head.append_text(status_text(rec.status))
    head.append("  (times in UTC)", style="dim")
    facts = [f"created {when(rec.created_at)}", f"started {when(rec.started_at) or '—'}",
             f"finished {when(rec.finished_at) or '—'}", f"took {took(rec.started_at, rec.finished_at) or '—'}",
             f"epoch {rec.epoch}", f"recoveries {rec.recoveries}"]
    facts += [f"{k} {v}" for k, v in (("queue", rec.queue), ("version", rec.app_version), ("parent", rec.parent_id))
              if v]
    limit = None if wide else 3 * width

    def clip(label: str, text: str | None) -> Text:
        text = one_line(text)
        return Text(f"{label}: " + (text if limit is None or len(text) <= limit else text[: limit - 1] + "…"))

    parts: list[RenderableType] = [head, Columns([Text(f) for f in facts], padding=(0, 2)), clip("inputs", rec.inputs)]
    if rec.status == Status.SUCCESS:
        parts.append(clip("output", rec.output))
    if rec.error:
        line = clip("error", error_line(rec.error))
        line.stylize("red")
        parts.append(line)
    parts.append(_steps_table(steps, when, width=width, wide=wide))
    if children:
        parts.append(_children_table(children, when, width=width, wide=wide))
    else:
        parts.append(Text("children: none"))
    parts += _messages_events_streams(messages, events, streams, when, width=width, wide=wide)
    return Group(*parts)


def _steps_table(steps: Sequence[Any], when: Any, *, width: int, wide: bool) -> RenderableType:
    if not steps:
        return Text("steps: none")

    def build(full: bool, flex: int | None) -> RenderableType:
        t = table(f"steps ({len(steps)})", "outputs and errors left out for width: --wide or --json"
                  if flex is None else None)
        for header in ("#", "name", "attempts" if full else "tries", "epoch", "started", "took"):
            t.add_column(header, no_wrap=header != "name", overflow="fold",
                         justify="left" if header in ("name", "started") else "right")
        _flex_column(t, "output / error", flex)
        for s in steps:
            outcome = Text(one_line(error_line(s.error)), style="red") if s.error else Text(one_line(s.output))
            _row(t, [str(s.step_id), Text(s.name), str(s.attempts), str(s.epoch), when(s.started_at),
                     took(s.started_at, s.finished_at)], outcome, flex)
        return t

    return _choose(width, wide, build)


def _children_table(children: Sequence[WorkflowRecord], when: Any, *, width: int, wide: bool) -> RenderableType:
    def build(full: bool, flex: int | None) -> RenderableType:
        t = table(f"children ({len(children)})", _caption(full, [c.workflow_id for c in children], flex, "errors"))
        for header in ("id", "name", "status", "created", "took"):
            t.add_column(header, no_wrap=header != "name", overflow="fold",
                         justify="right" if header == "took" else "left")
        _flex_column(t, "error", flex)
        for c in children:
            _row(t, [Text(c.workflow_id if full else short_id(c.workflow_id)), Text(c.name), status_text(c.status),
                     when(c.created_at), took(c.started_at, c.finished_at)], Text(one_line(error_line(c.error))), flex)
        return t

    return _choose(width, wide, build)


def _messages_events_streams(messages: Sequence[Any], events: Sequence[Any], streams: Sequence[Any], when: Any, *,
                             width: int, wide: bool) -> list[RenderableType]:
    waiting = sum(1 for m in messages if m.consumed_at is None)

    def messages_table(full: bool, flex: int | None) -> RenderableType:
        t = table(f"messages received ({len(messages)}, {waiting} still waiting)",
                  "bodies left out for width: --wide or --json" if flex is None else None)
        for header in ("#", "topic", "created", "consumed by step" if full else "step"):
            t.add_column(header, no_wrap=header != "topic", overflow="fold")
        _flex_column(t, "body", flex)
        for m in messages:
            _row(t, [str(m.message_id), Text(m.topic or "(none)"), when(m.created_at),
                     str(m.consumed_step) if m.consumed_at is not None else "waiting"], Text(one_line(m.body)), flex)
        return t

    def events_table(full: bool, flex: int | None) -> RenderableType:
        t = table(f"events ({len(events)})", "values left out for width: --wide or --json" if flex is None else None)
        t.add_column("key", overflow="fold")
        t.add_column("set by step" if full else "step", no_wrap=True, justify="right")
        t.add_column("updated", no_wrap=True)
        _flex_column(t, "value", flex)
        for e in events:
            _row(t, [Text(e.key), str(e.step_id), when(e.updated_at)], Text(one_line(e.value)), flex)
        return t

    out: list[RenderableType] = [
        _choose(width, wide, messages_table) if messages else Text("messages: none"),
        _choose(width, wide, events_table) if events else Text("events: none"),
    ]
    if streams:
        t = table(f"streams ({len(streams)})")
        for header in ("key", "elements", "closed", "last write"):
            t.add_column(header, overflow="fold", no_wrap=header != "key",
                         justify="right" if header == "elements" else "left")
        for st in streams:
            t.add_row(Text(st.key), str(st.count), "closed" if st.closed else "open", when(st.last_write_at))
        out.append(t)
    else:
        out.append(Text("streams: none"))
    return out


def _limit(value: object) -> str:
    return "—" if value is None else (f"{value:g}/s" if isinstance(value, float) else str(value))


def queues_table(rows: Sequence[Any], *, width: int) -> RenderableType:
    """``kit queues``: depth, in flight and every limit of each queue (headers on two lines when narrow)."""

    def build(full: bool) -> RenderableType:
        headers = (("queue", "depth", "in flight", "concurrency", "per worker", "per partition", "rate") if full
                   else ("queue", "depth", "in\nflight", "limit", "per\nworker", "per\npartition", "rate"))
        t = table(f"{len(rows)} queue(s)")
        for i, header in enumerate(headers):
            t.add_column(header, justify="left" if i == 0 else "right", no_wrap=i > 0, overflow="fold")
        for q in rows:
            name = Text(q.queue)
            if q.partitioned:
                name.append(" (partitioned)", style="dim")
            t.add_row(name, str(q.depth), str(q.in_flight), _limit(q.concurrency_limit),
                      _limit(q.worker_concurrency_limit), _limit(q.partition_concurrency_limit),
                      _limit(q.rate_limit_per_second))
        return t

    full = build(True)
    return full if natural_width(full) <= width else build(False)


def schedule_rows(states: Sequence[Any], now: datetime) -> list[dict[str, Any]]:
    """One dict per stored schedule with its next tick (None when this kit cannot parse its cron)."""
    from kit.cron import CronError, parse

    rows = []
    for st in states:
        try:
            nxt: datetime | None = parse(st.spec.cron, st.spec.timezone).next_after(max(now, st.cursor_at))
        except CronError:
            nxt = None  # written by a kit whose cron dialect this one does not understand
        rows.append({**st.spec.__dict__, "queue": st.spec.queue or "default", "cursor_at": st.cursor_at,
                     "last_tick": st.last_tick, "last_workflow_id": st.last_workflow_id, "next_tick": nxt})
    return rows


def _zoned(value: datetime | None, tz: str) -> str:
    if value is None:
        return "—"
    try:
        from zoneinfo import ZoneInfo

        return value.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M:%S %Z")
    except (KeyError, ValueError, OSError):
        return full_time(value) + " UTC"


def schedules_table(rows: Sequence[dict[str, Any]], *, now: datetime, width: int,
                    wide: bool = False) -> RenderableType:
    """``kit schedules``: each schedule's cron, zone, queue, catch-up policy, last and next tick. Narrow:
    ticks relative to now, and a column whose every value is the default said once in the caption."""

    def catch_up(r: dict[str, Any]) -> str:
        return r["catch_up"] + (f" (max {r['max_catch_up']})" if r["catch_up"] == "all" else "")

    def build(full: bool) -> RenderableType:
        drop = set() if full else {c for c, default in (("queue", "default"), ("catch-up", "latest"))
                                   if all((r["queue"] if c == "queue" else catch_up(r)) == default for r in rows)}
        caption = ("ticks in each schedule's time zone" if full else
                   "ticks relative to now" + "".join(f"; every {c}: {d}" for c, d in (("queue", "default"),
                                                                                       ("catch-up", "latest"))
                                                     if c in drop))
        t = table(f"{len(rows)} schedule(s)", caption)
        headers = [h for h in ("schedule", "cron", "time zone", "queue", "catch-up", "last tick", "next tick")
                   if h not in drop]
        for h in headers:
            t.add_column(h, overflow="fold", no_wrap=h in ("cron", "last tick", "next tick"))
        for r in rows:
            last = (_zoned(r["last_tick"], r["timezone"]) if full else
                    (span((now - r["last_tick"]).total_seconds()) + " ago" if r["last_tick"] else "—"))
            nxt = (_zoned(r["next_tick"], r["timezone"]) if full else
                   ("in " + span((r["next_tick"] - now).total_seconds()) if r["next_tick"] else "—"))
            values = {"schedule": Text(r["name"]), "cron": Text(r["cron"]), "time zone": r["timezone"],
                      "queue": Text(r["queue"]), "catch-up": catch_up(r), "last tick": last, "next tick": nxt}
            t.add_row(*(values[h] for h in headers))
        return t

    if wide:
        return build(True)
    full = build(True)
    return full if natural_width(full) <= width else build(False)


def db_view(info: dict[str, Any], *, width: int) -> RenderableType:
    """``kit db``: the database (when connected) and the embedded server's state, one fact per line. A
    list of words wraps under its column; a URL or a path is never cut (print with ``soft_wrap``)."""
    lines: list[tuple[str, str]] = []
    if info.get("backend") is not None:
        version = info.get("schema_version")
        server = str(info.get("server_version") or "").split(" on ", 1)[0].split(",", 1)[0]
        lines += [("backend", info["backend"]), ("url", info.get("url", "")), ("schema", info.get("schema", "")),
                  ("schema version", "not migrated: run `kit migrate`" if version is None else str(version)),
                  ("server", server),
                  ("capabilities", ", ".join(k for k, v in info.get("capabilities", {}).items() if v))]
    emb = info.get("embedded")
    if emb is not None:
        state = (f"running (pid {emb['pid']}), also after kit exits; stop: `kit db stop`" if emb["running"]
                 else "not running; the next kit command starts it, or `kit db start`")
        lines += [("embedded server", state), ("data", emb["pgdata"]), ("server log", emb["log"])]
    key_width = max(len(k) for k, _ in lines) + 2
    room = max(20, width - key_width)
    console = Console(width=room, file=io.StringIO())
    out: list[Text] = []
    for key, value in lines:
        if " " not in value and len(value) > room:  # a URL or path: whole, on a line of its own
            out += [Text(key), Text(value)]
            continue
        for i, chunk in enumerate(Text(value).wrap(console, room)):
            chunk.rstrip()
            out.append(Text(f"{key if i == 0 else '':<{key_width}}") + chunk)
    return Group(*out)


__all__ = ["db_view", "error_line", "queues_table", "schedule_rows", "schedules_table", "status_text", "workflow_view",
           "workflows_table"]
