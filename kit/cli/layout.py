"""How values and tables fit a terminal: compact times and durations, the rule that shortens ids, and
choosing the fullest layout that fits the width (the CLI tables, ``kit monitor`` and ``kit demo``).

Rules a user can read off the output:

* **ids**: an id longer than 12 characters shows its first 8 and ``…`` when the full id does not fit;
  ``--wide`` shows every id whole and ``--json`` every field.
* **times**: UTC; ``HH:MM:SS`` when on the same day as now, ``Mon DD HH:MM`` within the same year, else
  ``YYYY-MM-DD``; the full ``YYYY-MM-DD HH:MM:SS`` whenever there is room (and with ``--wide``).
* **durations and ages**: ``12ms``, ``1.7s``, ``2m03s``, ``1h02m``, ``3d04h``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timezone

from rich import box
from rich.console import Console, RenderableType
from rich.measure import Measurement
from rich.table import Table

ID_KEEP = 8
ID_RULE = "long ids cut to 8 characters (…): --wide shows them whole"


def short_id(value: str | None, *, keep: int = ID_KEEP) -> str:
    """``value`` cut to its first ``keep`` characters and ``…`` when it is longer than ``keep + 4``."""
    if value is None:
        return ""
    return value if len(value) <= keep + 4 else value[:keep] + "…"


def full_time(value: datetime | None) -> str:
    """``YYYY-MM-DD HH:MM:SS`` in UTC ("" for none)."""
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S") if value else ""


def clock(value: datetime | None, now: datetime) -> str:
    """A compact UTC time: ``HH:MM:SS`` on the same day as ``now``, ``Mon DD HH:MM`` in the same year,
    else the date."""
    if value is None:
        return ""
    value, now = value.astimezone(timezone.utc), now.astimezone(timezone.utc)
    if value.date() == now.date():
        return value.strftime("%H:%M:%S")
    if value.year == now.year:
        return value.strftime("%b %d %H:%M")
    return value.strftime("%Y-%m-%d")


def span(seconds: float | None) -> str:
    """A duration or age in at most six characters: ``0.4ms``, ``12ms``, ``1.7s``, ``2m03s``, ``1h02m``,
    ``3d04h`` ("" for none)."""
    if seconds is None:
        return ""
    seconds = max(0.0, seconds)
    if seconds < 1:
        ms = seconds * 1000
        return f"{ms:.1f}ms" if ms < 10 else f"{ms:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    if seconds < 86400:
        return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"
    return f"{int(seconds // 86400)}d{int(seconds % 86400 // 3600):02d}h"


def took(start: datetime | None, end: datetime | None) -> str:
    """The span from ``start`` to ``end`` ("" unless both are known)."""
    return span((end - start).total_seconds()) if start and end else ""


def table(title: str | None = None, caption: str | None = None) -> Table:
    """The CLI's table style: a rule under the header, no outer border, no padding at the edges."""
    return Table(title=title, caption=caption, box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False,
                 title_justify="left", caption_justify="left", title_style="bold", caption_style="dim")


def natural_width(renderable: RenderableType, width: int = 10_000) -> int:
    """How wide ``renderable`` is when nothing is wrapped or cut (at most ``width``)."""
    console = Console(width=width, color_system=None, force_terminal=False, file=_Null())
    return Measurement.get(console, console.options, renderable).maximum


def first_that_fits(width: int, candidates: Iterable[Callable[[], RenderableType]]) -> RenderableType:
    """The first candidate (fullest first) whose natural width fits ``width``; else the last one."""
    chosen: RenderableType | None = None
    for make in candidates:
        chosen = make()
        if natural_width(chosen) <= width:
            return chosen
    assert chosen is not None, "no candidates"
    return chosen


def render_plain(renderable: RenderableType, width: int) -> str:
    """``renderable`` as plain text at ``width`` columns (goldens, ``--once`` without a terminal)."""
    console = Console(width=width, record=True, file=_Null(), color_system=None, force_terminal=False,
                      legacy_windows=False)
    console.print(renderable)
    return console.export_text()


class _Null:
    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


__all__ = ["ID_RULE", "clock", "first_that_fits", "full_time", "natural_width", "render_plain", "short_id",
           "span", "table", "took"]
