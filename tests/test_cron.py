"""kit.cron: parsing, Vixie day semantics, tick arithmetic across DST, and bad input."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kit.cron import CronError, parse
from kit.errors import UsageError

UTC = timezone.utc
PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def brute_force(expr: str, start: datetime, minutes: int) -> list[datetime]:
    """Reference: test every UTC minute in (start, start + minutes] against the fields (UTC schedules)."""
    s = parse(expr)
    out = []
    t = start.replace(second=0, microsecond=0)
    for _ in range(minutes):
        t += timedelta(minutes=1)
        dom, dow = t.day in s.days, (t.isoweekday() % 7) in s.weekdays
        day = (dom or dow) if s.days_or else (dom and dow)
        if day and t.month in s.months and t.hour in s.hours and t.minute in s.minutes:
            out.append(t)
    return out


# -- parsing ---------------------------------------------------------------------------------------------
def test_fields_lists_ranges_steps():
    s = parse("*/15 9-17/4 1,15,31 jan-mar,dec mon-fri")
    assert s.minutes == (0, 15, 30, 45)
    assert s.hours == (9, 13, 17)
    assert s.days == (1, 15, 31)
    assert s.months == (1, 2, 3, 12)
    assert s.weekdays == (1, 2, 3, 4, 5)
    assert s.seconds == (0,) and not s.has_seconds
    assert s.timezone == "UTC"


def test_start_with_step_means_to_the_end_and_sunday_is_0_or_7():
    s = parse("10/20 * * * 5-7")
    assert s.minutes == (10, 30, 50)
    assert s.weekdays == (0, 5, 6)
    assert parse("0 0 * * 7").weekdays == parse("0 0 * * sun").weekdays == (0,)


def test_names_are_case_insensitive():
    assert parse("0 0 * JAN,Feb SUN-tue").months == (1, 2)
    assert parse("0 0 * JAN,Feb SUN-tue").weekdays == (0, 1, 2)


@pytest.mark.parametrize(("macro", "same"), [
    ("@yearly", "0 0 1 1 *"), ("@annually", "0 0 1 1 *"), ("@monthly", "0 0 1 * *"),
    ("@weekly", "0 0 * * 0"), ("@daily", "0 0 * * *"), ("@midnight", "0 0 * * *"), ("@hourly", "0 * * * *"),
])
def test_macros(macro, same):
    a, b = parse(macro), parse(same)
    assert (a.minutes, a.hours, a.days, a.months, a.weekdays) == (b.minutes, b.hours, b.days, b.months, b.weekdays)
    start = utc(2026, 2, 27, 13, 7)
    assert a.ticks_between(start, start + timedelta(days=800), limit=50) == \
        b.ticks_between(start, start + timedelta(days=800), limit=50)


def test_six_fields_have_a_leading_seconds_field():
    s = parse("*/20 * * * * *")
    assert s.has_seconds and s.seconds == (0, 20, 40)
    assert s.next_after(utc(2026, 1, 1, 0, 0, 5)) == utc(2026, 1, 1, 0, 0, 20)
    assert len(s.ticks_between(utc(2026, 1, 1), utc(2026, 1, 1, 0, 1))) == 3
    assert s.resolution == timedelta(seconds=1)


# -- tick arithmetic ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("expr", [
    "*/7 * * * *", "0 */5 * * *", "30 2 * * 1-5", "0 0 13 * fri", "0 0 */2 * fri", "15 10 1,15 * *",
    "0 12 * feb,aug sun", "59 23 31 * *", "0 0 29 2 *", "5-10/2 3,4 * * *",
])
def test_matches_brute_force(expr):
    start = utc(2026, 1, 30, 22, 13)
    minutes = 60 * 24 * 70
    expected = brute_force(expr, start, minutes)
    got = parse(expr).ticks_between(start, start + timedelta(minutes=minutes), limit=100_000)
    assert got == expected


def test_vixie_day_semantics():
    either = parse("0 0 13 * fri")  # both restricted: the 13th OR a Friday
    ticks = either.ticks_between(utc(2026, 2, 1), utc(2026, 3, 1))
    assert [t.day for t in ticks] == [6, 13, 20, 27]  # Feb 13 2026 is itself a Friday
    both = parse("0 0 */2 * fri")  # dom starts with '*': odd days AND Fridays
    ticks = both.ticks_between(utc(2026, 2, 1), utc(2026, 4, 1))
    assert all(t.isoweekday() == 5 and t.day % 2 == 1 for t in ticks) and ticks


def test_next_after_is_strict_and_previous_before_inverts_it():
    s = parse("*/5 * * * *")
    assert s.next_after(utc(2026, 5, 1, 10, 5)) == utc(2026, 5, 1, 10, 10)
    assert s.next_after(utc(2026, 5, 1, 10, 4, 59, 999999)) == utc(2026, 5, 1, 10, 5)
    assert s.previous_before(utc(2026, 5, 1, 10, 5)) == utc(2026, 5, 1, 10, 0)
    yearly = parse("@yearly", tz="Europe/Paris")
    t = yearly.next_after(utc(2026, 11, 27))
    assert t == datetime(2027, 1, 1, tzinfo=PARIS)
    assert yearly.previous_before(t) == datetime(2026, 1, 1, tzinfo=PARIS)
    assert yearly.next_after(yearly.previous_before(t)) == t


def test_leap_day_schedule_skips_2100():
    assert parse("0 0 29 2 *").next_after(utc(2097, 1, 1)) == utc(2104, 2, 29)


def test_results_are_in_the_schedule_zone():
    t = parse("0 9 * * *", tz="America/New_York").next_after(utc(2026, 7, 1, 12))
    assert t.tzinfo == NEW_YORK
    assert t == datetime(2026, 7, 1, 9, tzinfo=NEW_YORK)
    assert t.astimezone(UTC) == utc(2026, 7, 1, 13)


def test_ticks_between_is_bounded_and_half_open():
    s = parse("* * * * *")
    assert s.ticks_between(utc(2026, 1, 1), utc(2026, 1, 1, 0, 3)) == [
        utc(2026, 1, 1, 0, 1), utc(2026, 1, 1, 0, 2), utc(2026, 1, 1, 0, 3)]
    assert len(s.ticks_between(utc(2026, 1, 1), utc(2027, 1, 1), limit=100)) == 100
    assert s.ticks_between(utc(2026, 1, 1), utc(2025, 1, 1)) == []


def test_the_end_of_the_datetime_range_is_a_clear_error():
    with pytest.raises(CronError, match="no tick after"):
        parse("@yearly").next_after(datetime(9999, 6, 1, tzinfo=UTC))
    with pytest.raises(CronError, match="no tick before"):
        parse("@yearly").previous_before(datetime(1, 6, 1, tzinfo=UTC))
    assert parse("@yearly").ticks_between(datetime(9999, 6, 1, tzinfo=UTC), datetime(9999, 12, 31, tzinfo=UTC)) == []


# -- daylight saving time ---------------------------------------------------------------------------------
def test_spring_forward_skipped_time_fires_once_when_the_clocks_jump():
    s = parse("30 2 * * *", tz="Europe/Paris")  # 2026-03-29: 02:00 CET jumps to 03:00 CEST
    ticks = s.ticks_between(datetime(2026, 3, 28, 12, tzinfo=PARIS), datetime(2026, 3, 31, 12, tzinfo=PARIS))
    assert [t.astimezone(UTC) for t in ticks] == [
        utc(2026, 3, 29, 1, 0),   # 03:00 CEST: the moment the clocks jump, once
        utc(2026, 3, 30, 0, 30),  # 02:30 CEST
        utc(2026, 3, 31, 0, 30),
    ]


def test_spring_forward_interval_schedule_collapses_the_gap():
    s = parse("*/20 * * * *", tz="Europe/Paris")
    ticks = s.ticks_between(datetime(2026, 3, 29, 1, 30, tzinfo=PARIS), datetime(2026, 3, 29, 3, 30, tzinfo=PARIS))
    assert [t.strftime("%H:%M%z") for t in ticks] == ["01:40+0100", "03:00+0200", "03:20+0200"]


def test_fall_back_repeated_time_fires_once_at_its_first_occurrence():
    s = parse("30 2 * * *", tz="Europe/Paris")  # 2026-10-25: 03:00 CEST falls back to 02:00 CET
    ticks = s.ticks_between(datetime(2026, 10, 24, 12, tzinfo=PARIS), datetime(2026, 10, 26, 12, tzinfo=PARIS))
    assert [t.astimezone(UTC) for t in ticks] == [utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]
    repeated = datetime(2026, 10, 25, 2, 10, tzinfo=PARIS, fold=1)  # second pass through 02:10
    assert s.next_after(repeated) == datetime(2026, 10, 26, 2, 30, tzinfo=PARIS)
    hourly = parse("0,30 * * * *", tz="Europe/Paris")
    ticks = hourly.ticks_between(datetime(2026, 10, 25, 1, 45, tzinfo=PARIS), datetime(2026, 10, 25, 3, 15, tzinfo=PARIS))
    assert [t.astimezone(UTC) for t in ticks] == [utc(2026, 10, 25, 0, 0), utc(2026, 10, 25, 0, 30),
                                                  utc(2026, 10, 25, 2, 0)]


def test_new_york_dst_and_every_tick_is_strictly_increasing():
    s = parse("*/30 * * * *", tz="America/New_York")
    ticks = s.ticks_between(utc(2026, 3, 7), utc(2026, 11, 3))
    assert all(a < b for a, b in pairwise(ticks))
    assert all(s.previous_before(b) == a for a, b in list(pairwise(ticks))[:: len(ticks) // 50])
    assert len(set(ticks)) == len(ticks)


# -- bad input ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("expr", "message"), [
    ("", "empty cron expression"),
    ("* * * *", "expected 5 fields"),
    ("* * * * * * *", "but got 7"),
    ("60 * * * *", "minute field '60': value 60 is out of range 0-59"),
    ("* 24 * * *", "hour field '24'"),
    ("* * 0 * *", "day-of-month field '0'"),
    ("* * * 13 *", "month field '13'"),
    ("* * * * 8", "day-of-week field '8'"),
    ("* * * foo *", "month field 'foo': 'foo' is not a number 1-12 or a name"),
    ("* * * * mon-", "a range needs both ends"),
    ("5-2 * * * *", "range 5-2 runs backwards"),
    ("*/0 * * * *", "step must be at least 1"),
    ("*/x * * * *", "step 'x' is not a positive whole number"),
    ("1,,2 * * * *", "empty list item"),
    ("L * * * *", "minute field 'L'"),
    ("@reboot", "unknown macro '@reboot'"),
    ("0 0 30 2 *", "it never fires"),
    ("0 0 31 4,6 *", "it never fires"),
    ("* 60 * * * *", "minute field '60'"),
    ("60 * * * * *", "second field '60'"),
])
def test_bad_expressions_name_the_field_and_value(expr, message):
    with pytest.raises(CronError, match=message.replace("*", r"\*")) as info:
        parse(expr)
    assert isinstance(info.value, UsageError)


def test_feb_30_is_fine_when_day_of_week_may_match():
    assert parse("0 0 30 2 mon").next_after(utc(2026, 1, 1)) == utc(2026, 2, 2)  # Vixie OR: Mondays in February


@pytest.mark.parametrize("tz", ["Mars/Base", "Europe/Pariss", "../etc/passwd", "", "  "])
def test_unknown_time_zone_names_the_zone(tz):
    with pytest.raises(CronError, match="time zone"):
        parse("* * * * *", tz=tz)


def test_non_string_and_naive_datetimes_are_refused():
    with pytest.raises(CronError, match="must be a string"):
        parse(5)  # type: ignore[arg-type]
    with pytest.raises(CronError, match="timezone-aware"):
        parse("* * * * *").next_after(datetime(2026, 1, 1))
    with pytest.raises(CronError, match="limit"):
        parse("* * * * *").ticks_between(utc(2026, 1, 1), utc(2026, 1, 2), limit=-1)


# -- properties ---------------------------------------------------------------------------------------------
_ITEMS = st.one_of(st.just("*"), st.integers(0, 59).map(str), st.integers(1, 12).map(lambda s: f"*/{s}"),
                   st.tuples(st.integers(0, 28), st.integers(0, 28)).map(lambda t: f"{min(t)}-{max(t)}"))


@settings(max_examples=200, deadline=None)
@given(minute=_ITEMS, hour=st.sampled_from(["*", "2", "1-3", "*/5", "23"]), dom=st.sampled_from(["*", "1", "*/10", "29"]),
       dow=st.sampled_from(["*", "sun", "1-5"]), tz=st.sampled_from(["UTC", "Europe/Paris", "America/New_York",
                                                                     "Australia/Lord_Howe", "America/St_Johns"]),
       dt=st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)))
def test_next_and_previous_bracket_every_instant(minute, hour, dom, dow, tz, dt):
    try:
        s = parse(f"{minute} {hour} {dom} * {dow}", tz=tz)
    except CronError:
        return
    n, p = s.next_after(dt), s.previous_before(dt)
    assert p < dt < n
    assert s.previous_before(n) <= dt <= s.next_after(p)  # nothing between p and n but maybe dt itself


def test_a_zoneinfo_object_is_accepted_and_other_tzinfos_are_not():
    assert parse("* * * * *", tz=PARIS).timezone == "Europe/Paris"
    with pytest.raises(CronError, match="IANA zone name"):
        parse("* * * * *", tz=UTC)  # type: ignore[arg-type]
