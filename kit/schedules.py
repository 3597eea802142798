"""Cron schedules: ``@app.scheduled`` registers a workflow that runs exactly once per tick.

Every worker process runs one scheduler thread. It sleeps on ``app.clock`` until the next tick of any of
the app's schedules, then hands the due ticks to the database in one transaction that moves the
schedule's cursor (a compare-and-set) and inserts one PENDING workflow per tick with the id
``sched:<name>:<tick in UTC>``. Several workers wake for the same tick; one moves the cursor, the others
find it moved and write nothing, and the workflow id's uniqueness is a second line against duplicates.
Ticks that came due while no worker ran are *missed*; ``catch_up`` decides what happens to them
(docs/scheduling.md).
"""

from __future__ import annotations

import functools
import inspect
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol, TypeVar

from kit import serialization as ser
from kit.cron import CronSchedule, parse
from kit.errors import CronError, KitError, UnknownQueueError, WorkflowTimeoutError
from kit.handle import WorkflowHandle
from kit.queues import DEFAULT_QUEUE
from kit.services import Services
from kit.storage import NewWorkflow, ScheduleSpec
from kit.validation import validate_queue_name

log = logging.getLogger("kit.schedules")
F = TypeVar("F", bound=Callable[..., Any])

CATCH_UP_POLICIES = ("latest", "none", "all")
ON_TIME_SECONDS = 60.0  # a tick seen at most this late is due now, not missed (catch_up="none" runs it)
MAX_CATCH_UP_LIMIT = 10_000
_NAME = re.compile(r"^[\x21-\x7e]{1,100}$")  # printable ASCII without spaces: it goes into workflow ids
_ERROR_BACKOFF = 1.0  # real seconds before retrying after a database error
_REAL_WAIT_CAP = 60.0  # re-read the wall clock at least this often (it may be stepped by NTP)


@dataclass(frozen=True)
class Schedule:
    """A schedule registered by ``@app.scheduled``: the parsed cron and its policy."""

    name: str
    cron: CronSchedule
    queue: str | None
    catch_up: str
    max_catch_up: int

    @property
    def spec(self) -> ScheduleSpec:
        """The definition stored in the database."""
        return ScheduleSpec(name=self.name, workflow_name=self.name, cron=self.cron.expression,
                            timezone=self.cron.timezone, queue=self.queue, catch_up=self.catch_up,
                            max_catch_up=self.max_catch_up)

    def workflow_id(self, tick: datetime) -> str:
        """The tick's workflow id: ``sched:<name>:<tick in UTC, ISO 8601 with Z>``."""
        return tick_workflow_id(self.name, tick)


def tick_workflow_id(name: str, tick: datetime) -> str:
    """The deterministic workflow id of schedule ``name``'s tick at the aware datetime ``tick``."""
    if tick.tzinfo is None or tick.utcoffset() is None:
        raise CronError(f"a tick must be a timezone-aware datetime, got {tick!r}")
    return f"sched:{name}:{tick.astimezone(timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')}"


class _HasServices(Protocol):
    @property
    def services(self) -> Services: ...


def wait_for_tick(app: _HasServices | Services, name: str, tick: datetime, timeout: float = 10.0) -> WorkflowHandle:
    """Wait (real seconds) until schedule ``name``'s tick at ``tick`` has been enqueued; return its handle.

    Meant for tests on a virtual clock: advancing the clock makes a worker enqueue the tick a moment later.
    Raises WorkflowTimeoutError when no worker enqueued it in time. ``app``: the application (or its
    services).
    """
    services = app if isinstance(app, Services) else app.services
    workflow_id = tick_workflow_id(name, tick)
    end = time.monotonic() + timeout
    while services.backend.workflow_get(workflow_id) is None:
        if time.monotonic() >= end:
            raise WorkflowTimeoutError(f"tick {workflow_id} was not enqueued within {timeout}s: is a worker running "
                                       "(app.launch()) and has the clock reached the tick?")
        time.sleep(0.02)
    return WorkflowHandle(services, workflow_id)


def scheduled(registry: dict[str, Schedule], register_workflow: Callable[[str, Callable[..., Any]], Any], cron: str,
              *, tz: str | None = None, name: str | None = None, queue: str | None = None,
              catch_up: str = "latest", max_catch_up: int = 100) -> Callable[[F], F]:
    """The ``@app.scheduled`` decorator: validate everything now (CronError), register at decoration: the
    schedule in ``registry`` (the app's schedules by name), its tick workflow with ``register_workflow(name,
    fn)`` (the app's ``@workflow`` decorator), which returns the decorated function."""
    schedule_cron = parse(cron, tz)
    if catch_up not in CATCH_UP_POLICIES:
        raise CronError(f"catch_up must be one of {', '.join(repr(p) for p in CATCH_UP_POLICIES)}, got {catch_up!r}")
    if isinstance(max_catch_up, bool) or not isinstance(max_catch_up, int) or not 1 <= max_catch_up <= MAX_CATCH_UP_LIMIT:
        raise CronError(f"max_catch_up must be an integer from 1 to {MAX_CATCH_UP_LIMIT}, got {max_catch_up!r}")
    if max_catch_up != 100 and catch_up != "all":
        raise CronError(f"max_catch_up only applies to catch_up='all' (got catch_up={catch_up!r})")
    if queue is not None:
        validate_queue_name(queue)
        if queue == DEFAULT_QUEUE:
            queue = None

    def decorate(fn: F) -> F:
        sched_name = name or fn.__qualname__
        if not isinstance(sched_name, str) or not _NAME.match(sched_name):
            raise CronError(f"invalid schedule name {sched_name!r}: use 1-100 printable ASCII characters without "
                            "spaces (it is part of every tick's workflow id); pass name=...")
        existing = registry.get(sched_name)
        schedule = Schedule(sched_name, schedule_cron, queue, catch_up, max_catch_up)
        if existing is not None and existing != schedule:
            raise CronError(f"two schedules are named {sched_name!r}: give one of them name=...")
        zone = schedule_cron.zone

        def localize(tick: datetime | str) -> datetime:
            if isinstance(tick, str):  # enqueued from SQL or another language as ISO 8601 text
                tick = datetime.fromisoformat(tick.replace("Z", "+00:00"))
            if tick.tzinfo is None:  # ticks are UTC instants when no offset was given
                tick = tick.replace(tzinfo=timezone.utc)
            return tick.astimezone(zone)

        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def run_tick(tick: datetime) -> Any:
                return await fn(localize(tick))
        else:
            @functools.wraps(fn)
            def run_tick(tick: datetime) -> Any:
                return fn(localize(tick))

        wrapper = register_workflow(sched_name, run_tick)
        registry[sched_name] = schedule
        wrapper.__kit_schedule__ = sched_name  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate


def plan_ticks(schedule: Schedule, cursor: datetime, now: datetime) -> tuple[list[datetime], datetime | None]:
    """Which due ticks (``cursor < tick <= now``) to run under the catch-up policy, oldest first, and the
    new cursor (None: nothing is due). Ticks before the newest due one were missed; so is the newest when
    it is more than ``ON_TIME_SECONDS`` late."""
    limit = schedule.max_catch_up if schedule.catch_up == "all" else 1
    due: list[datetime] = []  # newest first
    probe = now + timedelta(microseconds=1)
    while len(due) < limit:
        tick = schedule.cron.previous_before(probe)
        if tick <= cursor:
            break
        due.append(tick)
        probe = tick
    if not due:
        return [], None
    newest = due[0]
    if schedule.catch_up == "none" and (now - newest).total_seconds() > ON_TIME_SECONDS:
        return [], newest
    return list(reversed(due)), newest


class Scheduler:
    """One thread per worker process: waits for the next tick of any schedule, then enqueues it."""

    def __init__(self, services: Services, schedules: list[Schedule]) -> None:
        self.services = services
        self.schedules = schedules
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.enqueued = 0  # ticks this process enqueued (it won the race)

    def start(self) -> None:
        """Store the definitions (errors surface to the caller), then start the thread."""
        backend = self.services.backend
        declared = set(self.services.definitions.queue_names())
        for s in self.schedules:
            if s.queue is not None and s.queue not in declared:
                raise UnknownQueueError(f"schedule {s.name!r} uses queue {s.queue!r}, which this application does "
                                        f"not declare: call app.queue({s.queue!r}, ...) before starting the worker")
        now = self.services.clock.now()
        for s in self.schedules:
            before = backend.schedule_define(s.spec, now)
            if before is not None and before != s.spec:
                log.warning("schedule %r: replacing the stored definition %s with this application's %s",
                            s.name, before, s.spec)
        self._thread = threading.Thread(target=self._loop, name="kit-scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop waiting for ticks (a tick being enqueued finishes its transaction first)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        clock = self.services.clock
        due_at = {s.name: clock.now() for s in self.schedules}  # each schedule's next tick (all due at start)
        while not self._stop.is_set():
            failed = False
            now = clock.now()
            for s in self.schedules:
                if due_at[s.name] > now:
                    continue  # not due: no database work for it this round
                try:
                    due_at[s.name] = self.run_due(s)
                except KitError as exc:
                    log.warning("schedule %r: %s; retrying", s.name, exc)
                    failed = True
                except Exception:  # pragma: no cover - never let the scheduler die silently
                    log.exception("schedule %r: unexpected failure; retrying", s.name)
                    failed = True
            if failed:
                if self._stop.wait(_ERROR_BACKOFF):
                    return
                continue
            when = min(due_at.values()).timestamp()
            if not clock.virtual:
                when = min(when, clock.time() + _REAL_WAIT_CAP)
            if clock.wait_until(self._stop, when):
                return

    def run_due(self, schedule: Schedule) -> datetime:
        """Enqueue this schedule's due ticks (if this worker is first); return its next tick."""
        backend = self.services.backend
        for _ in range(10):
            state = backend.schedule_get(schedule.name)
            if state is None:  # dropped from the database (schema reset): declare it again
                backend.schedule_define(schedule.spec, self.services.clock.now())
                continue
            now = self.services.clock.now()
            cursor = state.cursor_at
            ticks, new_cursor = plan_ticks(schedule, cursor, now)
            if new_cursor is None:
                return schedule.cron.next_after(max(cursor, now))
            workflows = [self._new_workflow(schedule, t) for t in ticks]
            if backend.schedule_advance(schedule.name, cursor, new_cursor, workflows):
                self.enqueued += len(workflows)
                self._log_advance(schedule, cursor, ticks, new_cursor)
                return schedule.cron.next_after(max(new_cursor, now))
            # Another worker moved the cursor meanwhile: read it again.
        return schedule.cron.next_after(self.services.clock.now())

    def _new_workflow(self, schedule: Schedule, tick: datetime) -> NewWorkflow:
        inputs = ser.encode_args((tick,), {}, what=f"tick of schedule '{schedule.name}'")
        return NewWorkflow(workflow_id=schedule.workflow_id(tick), name=schedule.name, inputs=inputs,
                           queue=schedule.queue, app_version=self.services.config.app_version)

    @staticmethod
    def _log_advance(schedule: Schedule, cursor: datetime, ticks: list[datetime], new_cursor: datetime) -> None:
        first_run = ticks[0] if ticks else None
        end = (first_run - timedelta(microseconds=1)) if first_run is not None else new_cursor
        skipped = len(schedule.cron.ticks_between(cursor, end, limit=MAX_CATCH_UP_LIMIT))
        if skipped:
            more = "+" if skipped >= MAX_CATCH_UP_LIMIT else ""
            log.warning("schedule %r: %d%s missed tick(s) up to %s skipped (catch_up=%r)", schedule.name, skipped,
                        more, new_cursor.isoformat(), schedule.catch_up)
        for tick in ticks:
            log.info("schedule %r: tick %s enqueued as %s", schedule.name, tick.isoformat(),
                     schedule.workflow_id(tick))


def start(services: Services, schedules: list[Schedule]) -> Scheduler | None:
    """Start the scheduler of a worker process (None when the app has no schedules)."""
    if not schedules:
        return None
    scheduler = Scheduler(services, schedules)
    scheduler.start()
    return scheduler
