"""Cron expressions: a parser and tick calculator with Vixie-cron semantics and time-zone awareness.

``parse("*/5 9-17 * * mon-fri", tz="Europe/Paris")`` returns a :class:`CronSchedule`; its
:meth:`~CronSchedule.next_after` gives the next tick as an aware datetime in the schedule's zone.

Syntax (five fields, separated by blanks)::

    minute (0-59)  hour (0-23)  day-of-month (1-31)  month (1-12 or jan-dec)  day-of-week (0-7 or sun-sat)

Each field is ``*`` or a comma-separated list of items ``N``, ``A-B``, ``*/S``, ``A-B/S`` or ``A/S``
(``A/S`` means ``A-<max>/S``). Day of week 0 and 7 are both Sunday. Names are case-insensitive and
allowed in ranges (``mon-fri``). Macros: ``@yearly`` (= ``@annually``), ``@monthly``, ``@weekly``,
``@daily`` (= ``@midnight``) and ``@hourly``. Extension: six fields means a leading *seconds* field
(0-59), as in Quartz and robfig/cron (``*/10 * * * * *`` fires every ten seconds).

Day matching follows Vixie cron: when both day-of-month and day-of-week are restricted (neither field
starts with ``*``) a day matches if *either* matches; otherwise both must match (so ``0 0 13 * fri``
fires on every 13th and every Friday, while ``0 0 */2 * fri`` fires on odd-numbered Fridays).

Time zones and daylight saving time (the schedule is evaluated in local wall-clock time):

* A local time that does not exist (it falls in a spring-forward gap, e.g. 02:30 in Europe/Paris on the
  last Sunday of March) fires **once, at the instant the clocks jump** (03:00 local): a daily 02:30 job
  still runs that day. Several skipped times collapse into that single tick.
* A local time that occurs twice (fall-back: 02:00-02:59 happens twice in Europe/Paris in October)
  fires **once, at its first occurrence**. The repeated hour produces no ticks, so a ``*/5`` schedule
  has a one-hour pause on that night; use ``tz="UTC"`` for schedules that are really intervals.
"""

from __future__ import annotations

import bisect
import calendar
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from kit.errors import CronError

__all__ = ["CronError", "CronSchedule", "parse", "validate_timezone"]

_MONTHS = {name: i for i, name in enumerate(
    ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"], start=1)}
_DAYS = {name: i for i, name in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])}
_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_FIELD_HELP = "minute hour day-of-month month day-of-week"
_SEARCH_YEARS = 400  # the Gregorian calendar repeats every 400 years: no tick in that span means never


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: dict[str, int] = field(default_factory=dict)


_SECOND = _Field("second", 0, 59)
_MINUTE = _Field("minute", 0, 59)
_HOUR = _Field("hour", 0, 23)
_DOM = _Field("day-of-month", 1, 31)
_MONTH = _Field("month", 1, 12, _MONTHS)
_DOW = _Field("day-of-week", 0, 7, _DAYS)


def validate_timezone(tz: str | ZoneInfo | None) -> ZoneInfo:
    """The ZoneInfo for an IANA zone name (None means UTC); CronError naming the zone otherwise."""
    if tz is None:
        return ZoneInfo("UTC")
    if isinstance(tz, ZoneInfo) and tz.key:
        tz = tz.key
    if not isinstance(tz, str) or not tz.strip():
        raise CronError(f"invalid time zone {tz!r}: give an IANA zone name such as 'Europe/Paris' or 'UTC'")
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise CronError(
            f"unknown time zone {tz!r}: give an IANA zone name such as 'Europe/Paris', 'America/New_York' or 'UTC'"
        ) from None


def _err(expr: str, fld: _Field, text: str, why: str) -> CronError:
    return CronError(f"invalid cron expression {expr!r}: {fld.name} field {text!r}: {why}")


def _value(expr: str, fld: _Field, text: str, item: str, allow_names: bool = True) -> int:
    low = text.lower()
    if allow_names and low in fld.names:
        return fld.names[low]
    if not low.isdigit() or not low.isascii():
        if fld.names:
            hint = f"a number {fld.low}-{fld.high} or a name ({', '.join(list(fld.names)[:3])}, ...)"
        else:
            hint = f"a number {fld.low}-{fld.high}"
        raise _err(expr, fld, item, f"{text!r} is not {hint}")
    number = int(low)
    if not fld.low <= number <= fld.high:
        raise _err(expr, fld, item, f"value {number} is out of range {fld.low}-{fld.high}")
    return number


def _parse_field(expr: str, fld: _Field, text: str) -> frozenset[int]:
    values: set[int] = set()
    for item in text.split(","):
        if not item:
            raise _err(expr, fld, text, "empty list item (two commas in a row, or a leading/trailing comma)")
        base, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or not step_text.isascii():
                raise _err(expr, fld, item, f"step {step_text!r} is not a positive whole number")
            step = int(step_text)
            if step < 1:
                raise _err(expr, fld, item, "step must be at least 1")
        if base == "*":
            start, end = fld.low, fld.high
        elif "-" in base:
            a, _, b = base.partition("-")
            if not a or not b:
                raise _err(expr, fld, item, "a range needs both ends, as in 1-5")
            start, end = _value(expr, fld, a, item), _value(expr, fld, b, item)
            if start > end:
                raise _err(expr, fld, item, f"range {a}-{b} runs backwards; write it as two ranges "
                                            f"({a}-{fld.high},{fld.low}-{b})")
        else:
            start = _value(expr, fld, base, item)
            end = fld.high if slash else start
        values.update(range(start, end + 1, step))
    if fld is _DOW and 7 in values:  # 7 is another name for Sunday
        values.discard(7)
        values.add(0)
    return frozenset(values)


def parse(expr: str, tz: str | ZoneInfo | None = None) -> CronSchedule:
    """Parse a 5-field cron expression (6 with a leading seconds field, or a macro) in time zone ``tz``."""
    if not isinstance(expr, str):
        raise CronError(f"a cron expression must be a string, got {type(expr).__name__}")
    zone = validate_timezone(tz)
    text = " ".join(expr.split())
    if not text:
        raise CronError(f"empty cron expression: give five fields ({_FIELD_HELP}), e.g. '*/5 * * * *'")
    if text.startswith("@"):
        macro = _MACROS.get(text.lower())
        if macro is None:
            raise CronError(f"invalid cron expression {expr!r}: unknown macro {text!r}; use one of "
                            f"{', '.join(sorted(_MACROS))}")
        text = macro
    parts = text.split(" ")
    if len(parts) == 5:
        parts = ["0", *parts]
        has_seconds = False
    elif len(parts) == 6:
        has_seconds = True
    else:
        raise CronError(f"invalid cron expression {expr!r}: expected 5 fields ({_FIELD_HELP}), or 6 with a "
                        f"leading seconds field, but got {len(parts)}")
    fields = (_SECOND, _MINUTE, _HOUR, _DOM, _MONTH, _DOW)
    sets = [_parse_field(expr, f, p) for f, p in zip(fields, parts, strict=True)]
    dom_star, dow_star = parts[3].startswith("*"), parts[5].startswith("*")
    schedule = CronSchedule(
        expression=expr.strip(), timezone=str(zone.key), has_seconds=has_seconds,
        seconds=tuple(sorted(sets[0])), minutes=tuple(sorted(sets[1])), hours=tuple(sorted(sets[2])),
        days=tuple(sorted(sets[3])), months=tuple(sorted(sets[4])), weekdays=tuple(sorted(sets[5])),
        days_or=not dom_star and not dow_star,
    )
    if not schedule.days_or and not any(d <= _max_days(m) for m in schedule.months for d in schedule.days):
        raise CronError(f"invalid cron expression {expr!r}: it never fires (day-of-month {parts[3]!r} "
                        f"does not exist in month {parts[4]!r})")
    return schedule


def _max_days(month: int) -> int:
    return 29 if month == 2 else calendar.monthrange(2001, month)[1]


def _next_in(values: tuple[int, ...], current: int) -> int | None:
    i = bisect.bisect_left(values, current)
    return values[i] if i < len(values) else None


@dataclass(frozen=True)
class CronSchedule:
    """A parsed cron expression in a time zone; all methods take and return aware datetimes."""

    expression: str
    timezone: str
    has_seconds: bool
    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: tuple[int, ...]
    months: tuple[int, ...]
    weekdays: tuple[int, ...]  # 0 = Sunday
    days_or: bool  # Vixie: both day fields restricted, so either may match

    def __str__(self) -> str:
        return self.expression if self.timezone == "UTC" else f"{self.expression} ({self.timezone})"

    @property
    def zone(self) -> ZoneInfo:
        """The schedule's time zone."""
        return ZoneInfo(self.timezone)

    @property
    def resolution(self) -> timedelta:
        """The finest step between two ticks: one second with a seconds field, else one minute."""
        return timedelta(seconds=1) if self.has_seconds else timedelta(minutes=1)

    # -- matching on local wall-clock time (naive datetimes) -------------------------------------------
    def _day_matches(self, d: datetime) -> bool:
        dom = d.day in self.days
        dow = (d.isoweekday() % 7) in self.weekdays
        return (dom or dow) if self.days_or else (dom and dow)

    def _next_wall(self, w: datetime) -> datetime:
        """The first matching local wall time at or after the naive ``w`` (whole seconds)."""
        limit = w.year + _SEARCH_YEARS
        while True:
            if w.year > limit:  # pragma: no cover - parse() rejects schedules that never fire
                raise CronError(f"cron expression {self.expression!r} has no tick within {_SEARCH_YEARS} years")
            if w.month not in self.months:
                m = _next_in(self.months, w.month)
                w = datetime(w.year, m, 1) if m is not None else datetime(w.year + 1, self.months[0], 1)
                continue
            if not self._day_matches(w):
                w = datetime(w.year, w.month, w.day) + timedelta(days=1)
                continue
            if w.hour not in self.hours:
                h = _next_in(self.hours, w.hour)
                w = (w.replace(hour=h, minute=0, second=0) if h is not None
                     else datetime(w.year, w.month, w.day) + timedelta(days=1))
                continue
            if w.minute not in self.minutes:
                m = _next_in(self.minutes, w.minute)
                w = (w.replace(minute=m, second=0) if m is not None
                     else w.replace(minute=0, second=0) + timedelta(hours=1))
                continue
            if w.second not in self.seconds:
                s = _next_in(self.seconds, w.second)
                w = w.replace(second=s) if s is not None else w.replace(second=0) + timedelta(minutes=1)
                continue
            return w

    def _resolve(self, w: datetime) -> datetime:
        """The UTC instant of local wall time ``w``: its first occurrence, or the end of a DST gap."""
        zone = self.zone
        first = w.replace(tzinfo=zone, fold=0).astimezone(timezone.utc)
        if first.astimezone(zone).replace(tzinfo=None) == w:
            return first
        # w falls in a gap: the clocks jump at some instant in (w with the later offset, first].
        lo = int(w.replace(tzinfo=zone, fold=1).astimezone(timezone.utc).timestamp())
        hi = int(first.timestamp())
        before = datetime.fromtimestamp(lo, zone).utcoffset()
        while hi - lo > 1:  # smallest instant whose offset differs from the pre-jump one
            mid = (lo + hi) // 2
            if datetime.fromtimestamp(mid, zone).utcoffset() == before:
                lo = mid
            else:
                hi = mid
        return datetime.fromtimestamp(hi, timezone.utc)

    # -- public API -----------------------------------------------------------------------------------
    def next_after(self, dt: datetime) -> datetime:
        """The first tick strictly after ``dt`` (aware), as an aware datetime in the schedule's zone."""
        _check_aware(dt, "next_after")
        try:
            return self._next_after(dt)
        except (OverflowError, ValueError):
            raise CronError(f"cron expression {self.expression!r} has no tick after {dt.isoformat()} "
                            f"before the end of the datetime range (year 9999)") from None

    def _next_after(self, dt: datetime) -> datetime:
        zone = self.zone
        instant = dt.astimezone(timezone.utc)
        wall = instant.astimezone(zone).replace(tzinfo=None, microsecond=0)
        if not self.has_seconds:
            wall = wall.replace(second=0)
        # Resolving wall times is monotonic, so scan matching wall times from dt's own wall time on.
        w = self._next_wall(wall)
        while True:
            tick = self._resolve(w)
            if tick > instant:
                return tick.astimezone(zone)
            w = self._next_wall(w + self.resolution)

    def ticks_between(self, start: datetime, end: datetime, limit: int = 10_000) -> list[datetime]:
        """Ticks ``t`` with ``start < t <= end`` in order: the earliest ``limit`` of them at most."""
        _check_aware(start, "ticks_between")
        _check_aware(end, "ticks_between")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise CronError(f"limit must be a non-negative integer, got {limit!r}")
        out: list[datetime] = []
        t = start
        while len(out) < limit:
            try:
                t = self._next_after(t)
            except (OverflowError, ValueError):  # no tick before year 9999, so none before end either
                break
            if t > end:
                break
            out.append(t)
        return out

    def previous_before(self, dt: datetime) -> datetime:
        """The last tick strictly before ``dt`` (aware), as an aware datetime in the schedule's zone."""
        _check_aware(dt, "previous_before")
        try:
            return self._previous_before(dt)
        except (OverflowError, ValueError):
            raise CronError(f"cron expression {self.expression!r} has no tick before {dt.isoformat()} "
                            f"after the start of the datetime range (year 1)") from None

    def _previous_before(self, dt: datetime) -> datetime:
        # Find a window (dt - w, dt) holding a tick, growing w fourfold; then binary-search whole seconds
        # (ticks are whole seconds) for the last start from which the next tick is still before dt.
        window = 2 * self.resolution
        while self._next_after(dt - window) >= dt:
            window *= 4
            if window > timedelta(days=366 * _SEARCH_YEARS):  # pragma: no cover - parse() rejects these
                raise CronError(f"cron expression {self.expression!r} has no tick "
                                f"within {_SEARCH_YEARS} years before {dt.isoformat()}")
        lo = math.floor((dt - window).timestamp())  # next tick after lo is before dt
        hi = math.ceil(dt.timestamp())  # next tick after hi is after dt
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self._next_after(datetime.fromtimestamp(mid, timezone.utc)) < dt:
                lo = mid
            else:
                hi = mid
        return self._next_after(datetime.fromtimestamp(lo, timezone.utc))

def _check_aware(dt: object, what: str) -> None:
    if not isinstance(dt, datetime):
        raise CronError(f"{what} needs a datetime, got {type(dt).__name__}")
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise CronError(f"{what} needs a timezone-aware datetime (e.g. datetime.now(timezone.utc)), got {dt!r}")
