"""``kit monitor``: a live terminal dashboard.

Three parts, as in rich's ``Live`` and memray's live reporter:

* :class:`MonitorSource` polls the storage interface (:meth:`~kit.storage.Backend.monitor_stats`) and
  returns a frozen :class:`MonitorSnapshot`; a lost database becomes ``snapshot.error`` (the last good
  reading is kept), never an exception.
* :func:`render` is pure: ``render(snapshot, now)`` builds the frame; tests render it at a fixed width
  and clock. :func:`throughput_series`, :func:`finished_counts` and :func:`sparkline` are the
  aggregation it uses.
* :func:`run_live` is the loop: a poller thread feeds snapshots, ``rich.live.Live`` redraws, ``q`` (or
  Ctrl-C) quits.
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TextIO

from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from kit.cli.layout import natural_width, render_plain, short_id, span
from kit.cli.views import error_line
from kit.config import redact_url
from kit.errors import KitError
from kit.storage import (
    Backend,
    MonitorQuery,
    MonitorStats,
    Percentiles,
    ScheduleState,
    Status,
)

SPARK = "▁▂▃▄▅▆▇█"
DASH = "—"


@dataclass(frozen=True)
class MonitorSnapshot:
    """What one frame shows: the latest good reading (maybe stale) and the latest error, if any."""

    backend: str
    endpoint: str  # redacted URL
    query: MonitorQuery
    taken_at: datetime  # client clock when ``stats`` was read (or the failed attempt, when no stats)
    stats: MonitorStats | None = None
    error: str | None = None  # one line, password-free; set while the database is unreachable
    failed_at: datetime | None = None
    refresh_ms: float | None = None  # how long the last successful reading took
    schedules: tuple[ScheduleState, ...] = ()  # cron schedules (kit.schedules), shown when there are any


# -- aggregation (pure) ---------------------------------------------------------------------------------
def finished_counts(stats: MonitorStats) -> dict[Status, int]:
    """Workflows per status: PENDING/RUNNING from the queues, terminal ones over the finished window."""
    counts = {s: 0 for s in Status}
    for q in stats.queues:
        counts[Status.PENDING] += q.depth
        counts[Status.RUNNING] += q.in_flight
    for b in stats.finished:
        counts[b.status] += b.count
    return counts


def throughput_series(stats: MonitorStats, query: MonitorQuery) -> list[float]:
    """Finished workflows per second in each complete bucket of the window, oldest first (the bucket in
    progress at ``stats.server_time`` is left out: its rate would be a guess)."""
    width = max(1, int(query.bucket_seconds))
    n = max(1, int(query.window_seconds) // width - 1)
    current = int(stats.server_time.timestamp() // width) * width  # start of the bucket in progress
    slots = [0] * n
    for b in stats.finished:
        back = (current - int(round(b.start.timestamp()))) // width  # 1 = the last complete bucket
        if 1 <= back <= n:
            slots[n - back] += b.count
    return [c / width for c in slots]


def sparkline(values: list[float]) -> str:
    """One block character per value, scaled to the largest; zero is the lowest block."""
    top = max(values, default=0.0)
    if top <= 0:
        return SPARK[0] * len(values)
    out = []
    for v in values:
        if v <= 0:
            out.append(SPARK[0])
        else:
            out.append(SPARK[max(1, min(len(SPARK) - 1, round(v / top * (len(SPARK) - 1))))])
    return "".join(out)


# -- rendering (pure) ---------------------------------------------------------------------------------
def _age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    return f"{seconds:.1f}s" if seconds < 60 else span(seconds)


def _latency(value: float | None) -> str:
    return DASH if value is None else span(value)


def _rate(value: float) -> str:
    return f"{value:.1f}/s" if value < 100 else f"{value:.0f}/s"


def _one_line(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


class _Clock:
    """Ages of server timestamps as seen at ``now`` (skew-free: measured on the server's clock)."""

    def __init__(self, snap: MonitorSnapshot, now: datetime) -> None:
        assert snap.stats is not None
        self.server_now = snap.stats.server_time + (now - snap.taken_at)

    def age(self, ts: datetime | None) -> str:
        return _age((self.server_now - ts).total_seconds()) if ts else DASH


def _span(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60} min" if seconds % 60 == 0 else f"{seconds} s"


def _header(snap: MonitorSnapshot, now: datetime) -> Text:
    text = Text()
    text.append("kit monitor", style="bold")
    text.append(f"  {snap.backend}  {snap.endpoint}\n")
    if snap.stats is not None:
        role = {True: "primary", False: "standby", None: "role unknown"}[snap.stats.primary]
        text.append(f"node {snap.stats.node} ({role})  ")
    filters = [f"{k}={v}" for k, v in (("name", snap.query.name), ("queue", snap.query.queue)) if v]
    if filters:
        text.append("filter " + " ".join(filters) + "  ", style="cyan")
    text.append(f"{now.astimezone(timezone.utc):%Y-%m-%d %H:%M:%S} UTC", style="dim")
    return text


def _list_table(**kwargs: object) -> Table:
    return Table(box=None, padding=(0, 1), show_edge=False, **kwargs)  # type: ignore[arg-type]


def _more(hidden: int) -> str | None:
    """A panel's subtitle when rows were cut to fit the terminal's height."""
    return f"+{hidden} more" if hidden > 0 else None


def _status_panel(stats: MonitorStats, query: MonitorQuery) -> Panel:
    counts = finished_counts(stats)
    table = Table.grid(padding=(0, 2))
    table.add_column()
    table.add_column(justify="right")
    colors = {Status.PENDING: "yellow", Status.RUNNING: "cyan", Status.SUCCESS: "green", Status.ERROR: "red",
              Status.CANCELLED: "white"}
    for status in Status:
        table.add_row(Text(status.value, style=colors[status]), str(counts[status]))
    return Panel(table, title="workflows", title_align="left", subtitle=f"ended: {_span(query.window_seconds)}",
                 subtitle_align="left", width=20)


def _workers_panel(stats: MonitorStats, clock: _Clock, rows: int | None) -> Panel:
    # A worker id is host:pid:random by default: a separate host:pid column only when some id is not.
    own = all(w.worker_id.startswith(f"{w.hostname}:{w.pid}:") for w in stats.workers)
    table = _list_table()
    for col in ("worker", *(() if own else ("host:pid",)), "alive", "heartbeat", "claims"):
        table.add_column(col, justify="right" if col in ("heartbeat", "claims") else "left", no_wrap=True)
    alive = sum(w.alive for w in stats.workers)
    shown = stats.workers if rows is None else stats.workers[:rows]
    for w in shown:
        table.add_row(Text(w.worker_id), *(() if own else (Text(f"{w.hostname}:{w.pid}"),)),
                      Text("yes", style="green") if w.alive else Text("no", style="red"),
                      clock.age(w.heartbeat_at) + " ago", str(w.claims))
    body: RenderableType = table if stats.workers else Text("(no workers have heartbeated)", style="dim")
    return Panel(body, title=f"workers: {alive} alive / {len(stats.workers)}", title_align="left",
                 subtitle=_more(len(stats.workers) - len(shown)), subtitle_align="right")


def _queues_panel(stats: MonitorStats, rows: int | None) -> Panel:
    table = _list_table()
    for col in ("queue", "depth", "running", "limit"):
        table.add_column(col, justify="left" if col == "queue" else "right", no_wrap=True)
    shown = stats.queues if rows is None else stats.queues[:rows]
    for q in shown:
        limit = DASH if q.concurrency_limit is None else str(q.concurrency_limit)
        table.add_row(Text(q.queue), str(q.depth), str(q.in_flight), limit)
    body: RenderableType = table if stats.queues else Text("(no pending or running work)", style="dim")
    return Panel(body, title="queues", title_align="left", subtitle=_more(len(stats.queues) - len(shown)),
                 subtitle_align="right")


def _throughput_panel(stats: MonitorStats, query: MonitorQuery) -> Panel:
    series = throughput_series(stats, query)
    avg = sum(series) / len(series)
    text = Text()
    text.append(sparkline(series), style="green")
    text.append(f"\nnow {_rate(series[-1])}   avg {_rate(avg)}   peak {_rate(max(series))}")
    return Panel(text, title=f"finished per second, last {_span(query.window_seconds)}", title_align="left")


def _latency_panel(stats: MonitorStats, query: MonitorQuery) -> Panel:
    table = _list_table()
    for col in ("", "n", "p50", "p95", "p99"):
        table.add_column(col, justify="left" if not col else "right", no_wrap=True)

    def row(label: str, p: Percentiles) -> None:
        table.add_row(label, str(p.count), _latency(p.p50), _latency(p.p95), _latency(p.p99))

    row("workflow", stats.workflow_latency)
    row("step", stats.step_latency)
    return Panel(table, title=f"latency, last {_span(query.latency_window_seconds)}", title_align="left")


def _failures_panel(stats: MonitorStats, clock: _Clock, width: int, rows: int | None) -> Panel:
    failures = stats.recent_failures if rows is None else stats.recent_failures[:rows]

    def build(full: bool, error_width: int) -> Table:
        table = _list_table()
        for col in ("when", "workflow", "name"):
            table.add_column(col, justify="right" if col == "when" else "left", no_wrap=True)
        table.add_column("error", no_wrap=True, overflow="ellipsis", width=error_width)
        for rec in failures:
            table.add_row(clock.age(rec.finished_at) + " ago",
                          Text(rec.workflow_id if full else short_id(rec.workflow_id)), Text(rec.name),
                          Text(_one_line(error_line(rec.error), 1000)))
        return table

    inner = width - 4  # the panel's border and padding
    table = build(False, 1)
    for full in (True, False):
        rest = inner - (natural_width(build(full, 1)) - 1)
        if rest >= 24 or not full:
            table = build(full, max(8, rest))
            break
    body: RenderableType = table if stats.recent_failures else Text("(no failures in the last 24h)", style="dim")
    return Panel(body, title="recent failures", title_align="left",
                 subtitle=_more(len(stats.recent_failures) - len(failures)), subtitle_align="right")


def _oldest_pending(stats: MonitorStats, clock: _Clock, width: int) -> Text:
    rec = stats.oldest_pending
    if rec is None:
        return Text("oldest pending: none", style="dim")
    queue = rec.queue or "default"
    for wid in (rec.workflow_id, short_id(rec.workflow_id)):
        line = f"oldest pending: {wid} ({rec.name}, queue {queue}) waiting {clock.age(rec.created_at)}"
        if len(line) <= width:
            break
    return Text(line, style="yellow")


def _schedules_panel(schedules: tuple[ScheduleState, ...], now: datetime, rows: int | None) -> Panel:
    from kit.cron import CronError, parse

    table = _list_table()
    for col in ("schedule", "cron", "time zone", "last tick", "next tick"):
        table.add_column(col, justify="right" if col.endswith("tick") else "left", no_wrap=True)
    shown = schedules if rows is None else schedules[:rows]
    for st in shown:
        try:
            nxt = parse(st.spec.cron, st.spec.timezone).next_after(max(now, st.cursor_at))
            next_text = "in " + _age((nxt - now).total_seconds())
        except CronError:
            next_text = DASH
        last = _age((now - st.last_tick).total_seconds()) + " ago" if st.last_tick else DASH
        table.add_row(Text(st.spec.name), Text(st.spec.cron), Text(st.spec.timezone), last, next_text)
    return Panel(table, title=f"schedules: {len(schedules)}", title_align="left",
                 subtitle=_more(len(schedules) - len(shown)), subtitle_align="right")


def _flow(panels: list[tuple[Panel, bool]], width: int) -> list[RenderableType]:
    """Lay ``(panel, stretches)`` out left to right in rows, starting a new row when the next panel would
    not fit whole: panels stack on a narrow terminal instead of being squeezed. Stretching panels share a
    row's spare width in proportion to their natural widths."""
    rows: list[list[tuple[Panel, bool, int]]] = [[]]
    used = 0
    for panel, stretches in panels:
        need = min(width, natural_width(panel, width))
        if rows[-1] and used + 1 + need > width:
            rows.append([])
            used = 0
        used += need + (1 if rows[-1] else 0)
        rows[-1].append((panel, stretches, need))
    out: list[RenderableType] = []
    for row in rows:
        if len(row) == 1:
            out.append(row[0][0])
            continue
        spare = width - sum(need for _, _, need in row) - (len(row) - 1)
        weight = sum(need for _, stretches, need in row if stretches)
        widths = [need + (spare * need // weight if stretches and weight else 0) for _, stretches, need in row]
        stretchers = [i for i, (_, stretches, _) in enumerate(row) if stretches]
        if stretchers:  # rounding: the last stretching panel takes what is left
            widths[stretchers[-1]] += width - sum(widths) - (len(row) - 1)
        grid = Table.grid(padding=(0, 1, 0, 0))  # one space between panels, none at the edges
        for w in widths:
            grid.add_column(width=w)
        grid.add_row(*(panel for panel, _, _ in row))
        out.append(grid)
    return out


def _frame_parts(snapshot: MonitorSnapshot, now: datetime, width: int, rows: int | None,
                 live: bool) -> list[RenderableType]:
    parts: list[RenderableType] = [_header(snapshot, now)]
    if snapshot.error is not None:
        since = _age((now - snapshot.failed_at).total_seconds()) if snapshot.failed_at else ""
        banner = Text()
        banner.append("reconnecting… ", style="bold red")
        banner.append(f"(last error {since} ago) " if since else "")
        banner.append(snapshot.error, style="red")
        parts.append(banner)
    stats = snapshot.stats
    if stats is None:
        parts.append(Text("waiting for the first reading…" if snapshot.error is None else "no data yet",
                          style="dim"))
        return parts
    clock = _Clock(snapshot, now)
    if snapshot.error is not None:
        parts.append(Text(f"showing the last reading, {_age((now - snapshot.taken_at).total_seconds())} old",
                          style="dim"))
    parts += _flow([(_status_panel(stats, snapshot.query), False), (_workers_panel(stats, clock, rows), True),
                    (_queues_panel(stats, rows), True), (_latency_panel(stats, snapshot.query), False),
                    (_throughput_panel(stats, snapshot.query), True)], width)
    parts.append(_failures_panel(stats, clock, width, rows))
    if snapshot.schedules:
        parts.append(_schedules_panel(snapshot.schedules, now, rows))
    parts.append(_oldest_pending(stats, clock, width))
    footer = ["q quit"] if live else []
    if snapshot.refresh_ms is not None:
        footer.append(f"last reading {snapshot.refresh_ms:.0f} ms")
    if footer:
        parts.append(Text("  ·  ".join(footer), style="dim"))
    return parts


class _Frame:
    """The frame at whatever width the console gives it; with ``height``, lists are cut (``+N more``)
    until it fits."""

    def __init__(self, snapshot: MonitorSnapshot, now: datetime, height: int | None, live: bool) -> None:
        self.snapshot, self.now, self.height, self.live = snapshot, now, height, live

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = options.max_width
        parts = _frame_parts(self.snapshot, self.now, width, None, self.live)
        if self.height is not None:
            for rows in (5, 3, 2, 1):
                if len(console.render_lines(Group(*parts), options.update(height=None), pad=False)) <= self.height:
                    break
                parts = _frame_parts(self.snapshot, self.now, width, rows, self.live)
        yield Group(*parts)


def render(snapshot: MonitorSnapshot, now: datetime, *, height: int | None = None,
           live: bool = False) -> RenderableType:
    """The frame for ``snapshot`` as seen at ``now`` (pure: same inputs and width, same frame). Panels
    flow into rows that fit the console's width and stack when it is narrow; ``height`` (the live
    terminal's) cuts long lists to fit; ``live`` adds the key help."""
    return _Frame(snapshot, now, height, live)


# -- source ---------------------------------------------------------------------------------------------
def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class MonitorSource:
    """Polls a backend into frozen snapshots; (re)opens the backend as needed and never raises for an
    unreachable database (the error goes into the snapshot)."""

    def __init__(self, open_backend: Callable[[], Backend], *, backend_name: str, endpoint: str,
                 query: MonitorQuery, clock: Callable[[], datetime] = _utcnow) -> None:
        self._open_backend = open_backend
        self._backend: Backend | None = None
        self._clock = clock
        self._last: MonitorSnapshot = MonitorSnapshot(backend_name, redact_url(endpoint), query, clock())
        self._lock = threading.Lock()

    @property
    def latest(self) -> MonitorSnapshot:
        """The most recent snapshot (thread-safe)."""
        with self._lock:
            return self._last

    def poll(self) -> MonitorSnapshot:
        """Read once; on failure keep the previous stats and record the error."""
        started = time.perf_counter()
        try:
            if self._backend is None:
                self._backend = self._open_backend()
            stats = self._backend.monitor_stats(self._last.query)
            try:
                schedules = tuple(self._backend.schedule_list())
            except KitError:  # a schema from before schedules existed: show the rest
                schedules = ()
        except Exception as exc:  # noqa: BLE001 - a monitor reports every failure in the frame
            self._drop_backend()
            prev = self.latest
            snap = MonitorSnapshot(prev.backend, prev.endpoint, prev.query,
                                   prev.taken_at if prev.stats else self._clock(), prev.stats,
                                   error=_error_line(exc), failed_at=self._clock(), refresh_ms=prev.refresh_ms,
                                   schedules=prev.schedules)
        else:
            prev = self.latest
            snap = MonitorSnapshot(prev.backend, prev.endpoint, prev.query, self._clock(), stats,
                                   refresh_ms=(time.perf_counter() - started) * 1000, schedules=schedules)
        with self._lock:
            self._last = snap
        return snap

    def _drop_backend(self) -> None:
        backend, self._backend = self._backend, None
        if backend is not None:
            with contextlib.suppress(Exception):
                backend.close()

    def close(self) -> None:
        """Release the backend."""
        self._drop_backend()


def _error_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return _one_line(redact_url(text), 300)


# -- live loop ------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _cbreak(stream: TextIO) -> Iterator[bool]:
    """Put a terminal in cbreak mode (keys arrive one by one, Ctrl-C still signals); yields whether it
    is a terminal."""
    try:
        fd = stream.fileno()
        is_tty = os.isatty(fd)
    except (AttributeError, OSError, ValueError):
        yield False
        return
    if not is_tty:
        yield False
        return
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield True
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _watch_keys(stream: TextIO, stop: threading.Event) -> None:
    fd = stream.fileno()
    while not stop.is_set():
        ready, _, _ = select.select([fd], [], [], 0.1)
        if not ready:
            continue
        data = os.read(fd, 32)
        if not data or b"q" in data.lower():
            stop.set()


def run_live(source: MonitorSource, *, interval: float = 1.0, console: Console | None = None,
             stdin: TextIO | None = None, stop: threading.Event | None = None) -> int:
    """Redraw the dashboard every ``interval`` seconds until ``q``, Ctrl-C or ``stop``; returns 0."""
    from rich.live import Live

    console = console or Console()
    stop = stop or threading.Event()
    stdin = stdin if stdin is not None else sys.stdin

    def poller() -> None:
        while not stop.is_set():
            begun = time.monotonic()
            source.poll()
            stop.wait(max(0.05, interval - (time.monotonic() - begun)))

    threading.Thread(target=poller, name="kit-monitor-poll", daemon=True).start()
    try:
        with _cbreak(stdin) as keys, Live(console=console, auto_refresh=False, screen=False,
                                          redirect_stdout=False, redirect_stderr=False) as live:
            if keys:
                threading.Thread(target=_watch_keys, args=(stdin, stop), name="kit-monitor-keys",
                                 daemon=True).start()
            while True:
                live.update(render(source.latest, _utcnow(), height=console.height, live=True), refresh=True)
                if stop.wait(min(interval, 0.5)):
                    break
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
    return 0


def render_text(snapshot: MonitorSnapshot, now: datetime, *, width: int = 120) -> str:
    """The frame as plain text (``--once`` without a terminal, tests, docs)."""
    return render_plain(render(snapshot, now), width)


__all__ = ["MonitorSnapshot", "MonitorSource", "finished_counts", "render", "render_text", "run_live",
           "sparkline", "throughput_series"]
