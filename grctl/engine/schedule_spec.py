"""When a schedule's ticks fall: cron lines, intervals and calendar specs in a time zone (pure).

A `ScheduleSpec` is data (it travels in directives and sits in the schedule table); compile it
once with `compile_spec`, which checks every part and raises `ScheduleSpecError` naming the
part at fault, into a `CompiledSpec` that answers `next_tick(after_ms)`: the first nominal tick
strictly after a time. Everything is epoch milliseconds in UTC; ticks fall on whole seconds.

The spec is the union of its cron lines, calendar specs and intervals, minus the times its
exclusions match, within `[start_ms, end_ms]` (Temporal's `ScheduleSpec`).

- **Cron lines** (5 fields, or 6 with seconds first, plus `@hourly` ... `@yearly`) are parsed
  and walked by `cronsim` (Healthchecks.io's, ~600 lines, typed, no dependencies). It was picked
  over `croniter` because it is small enough to audit, needs nothing else (croniter needs
  python-dateutil), puts the seconds field first as Quartz and Temporal do (croniter's default
  puts it last), and walks naive wall times exactly, so the DST rule below is ours and the same
  for cron lines and calendar specs (croniter's own DST handling has a history of repeated and
  backward ticks, taichino/croniter#96). Day of month and day of week combine as in Vixie cron:
  both restricted means either matches.
- **Calendar specs** match every field at once (day of month *and* day of week: "the first
  Monday" is `day_of_month="1-7", day_of_week="MON"`); fields are lists and ranges with steps
  (`"1,15"`, `"MON-FRI"`, `"*/10"`, `"2026-2030"`); unset fields default as Temporal's do
  (second, minute and hour 0; every day, month and year).
- **Intervals** (`every 5m offset 30s`) count from the Unix epoch in UTC, so no time zone or
  DST affects them.
- **Time zones** come from `zoneinfo`. Cron lines and calendars are matched on the wall clock
  of the zone; a wall time maps to the instant it first occurs (DST as Temporal documents it):
  a wall time skipped by a spring-forward transition fires once, shifted by the gap (02:30 in
  a 02:00 -> 03:00 jump fires at 03:30), and a wall time repeated by a fall-back transition
  fires once, at its first occurrence. An instant fires once even if two wall times map to it.
- **Exclusions** are calendar specs matched on the wall clock of the tick's instant.
- **Jitter** delays a tick's firing (never its identity) by `hash(schedule id, tick) mod J`,
  the same on every worker and every replay (`jitter_ms`).

May import (of grctl): errors. No I/O beyond reading the zone files, no clock.
"""

from __future__ import annotations

import hashlib
import re
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Final, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
from cronsim import CronSim, CronSimError

from grctl.errors import ScheduleSpecError

_MS: Final = 1000
_DAY: Final = timedelta(days=1)
#: How far around a time the zone's offsets are looked at to bound the reordering that a
#: spring-forward gap causes (transitions are months apart; a gap is at most a day).
_OFFSET_WINDOW: Final = timedelta(hours=26)
#: A spec that matches nothing for this long is treated as ending (cronsim gives up at 50
#: years too; a calendar spec for February 30 never matches).
_HORIZON_YEARS: Final = 100
#: How many excluded candidates `next_tick` skips before it gives up on a spec whose
#: exclusions cover everything (a cron line every second, excluded for a whole week, is 604,800).
_MAX_EXCLUDED_IN_A_ROW: Final = 1_000_000
#: The shortest interval: ticks fall on whole seconds.
MIN_INTERVAL_MS: Final = 1000

_NICKNAMES: Final = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTHS: Final = {
    n: i + 1 for i, n in enumerate(["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"])
}
_DAYS: Final = {n: i for i, n in enumerate(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"])}


# ------------------------------------------------------------------------------------- the data


class CalendarSpec(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Times whose every field matches, on the wall clock of the schedule's time zone.

    Each field is a comma-separated list of values, ranges `A-B` and steps (`*/15`, `10-40/5`);
    months and days of the week also take names (`JAN`, `MON-FRI`). Day of week: 0 or 7 is
    Sunday.
    """

    second: str = "0"
    minute: str = "0"
    hour: str = "0"
    day_of_month: str = "*"
    month: str = "*"
    day_of_week: str = "*"
    year: str = "*"
    comment: str = ""


class IntervalSpec(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Every `every_ms`, at the times `t` with `(t - offset_ms) % every_ms == 0` (from the epoch)."""

    every_ms: int
    offset_ms: int = 0


class ScheduleSpec(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """When a schedule's ticks fall (the union of its parts, minus `exclude`, within start/end).

    Attributes:
        cron: cron lines (5 fields, or 6 with seconds first; `@daily` and its kin).
        calendars: calendar specs.
        intervals: fixed intervals from the epoch.
        exclude: calendar specs whose times never tick.
        time_zone: the IANA zone cron lines, calendars and exclusions are read in.
        start_ms: no tick before this time (epoch ms, UTC).
        end_ms: no tick after this time.
        jitter_ms: a tick fires up to this much after its time (0: at its time).
    """

    cron: tuple[str, ...] = ()
    calendars: tuple[CalendarSpec, ...] = ()
    intervals: tuple[IntervalSpec, ...] = ()
    exclude: tuple[CalendarSpec, ...] = ()
    time_zone: str = "UTC"
    start_ms: int | None = None
    end_ms: int | None = None
    jitter_ms: int = 0


# ---------------------------------------------------------------------- durations and intervals

_DURATION_PART: Final = re.compile(r"(\d+)(ms|s|m|h|d|w)")
_UNIT_MS: Final = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_INTERVAL: Final = re.compile(r"^\s*(?:@?every\s+)?(\S+)(?:\s+offset\s+(\S+))?\s*$", re.IGNORECASE)


def parse_duration_ms(text: str, *, field: str = "duration") -> int:
    """`"90s"`, `"5m"`, `"1h30m"`, `"2d"`, `"1w"` (or a number of seconds) in milliseconds.

    Raises:
        ScheduleSpecError: the text is not a duration.
    """
    cleaned = text.strip().lower()
    if cleaned.isdigit():
        return int(cleaned) * 1000
    pos, total = 0, 0
    for match in _DURATION_PART.finditer(cleaned):
        if match.start() != pos:
            break
        total += int(match.group(1)) * _UNIT_MS[match.group(2)]
        pos = match.end()
    if not cleaned or pos != len(cleaned):
        raise ScheduleSpecError(
            f"{field} {text!r} is not a duration: write it as a number and a unit, "
            "e.g. '30s', '5m', '1h30m', '2d' (units ms, s, m, h, d, w)",
            field=field,
            value=text,
        )
    return total


def parse_interval(text: str) -> IntervalSpec:
    """`"every 5m offset 30s"` (or `"5m"`, `"@every 1h"`) as an `IntervalSpec`.

    Raises:
        ScheduleSpecError: the text is not an interval.
    """
    match = _INTERVAL.match(text)
    if match is None:
        raise ScheduleSpecError(
            f"interval {text!r} is not an interval: write 'every 5m' or 'every 1h offset 15m'",
            field="interval",
            value=text,
        )
    every = parse_duration_ms(match.group(1), field="interval")
    offset = parse_duration_ms(match.group(2), field="interval offset") if match.group(2) else 0
    return IntervalSpec(every_ms=every, offset_ms=offset)


# ---------------------------------------------------------------------------- calendar fields


def _parse_field(text: str, *, name: str, low: int, high: int, names: dict[str, int] | None = None) -> tuple[int, ...]:
    """A calendar field (`"1,15"`, `"MON-FRI"`, `"*/10"`) as the sorted values it matches."""

    def bad(why: str) -> ScheduleSpecError:
        return ScheduleSpecError(
            f"calendar {name} {text!r}: {why} (write values {low}-{high}, ranges A-B, steps */N or A-B/N, "
            "separated by commas)",
            field=f"calendar.{name}",
            value=text,
        )

    def value(token: str) -> int:
        token = token.strip().upper()
        if names and token in names:
            return names[token]
        if not token.isdigit():
            raise bad(f"{token!r} is not a number")
        number = int(token)
        if not low <= number <= high:
            raise bad(f"{number} is out of range")
        return number

    values: set[int] = set()
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            raise bad("an empty item")
        base, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise bad(f"step {step_text!r} is not a positive number")
            step = int(step_text)
        if base == "*":
            start, end = low, high
        elif "-" in base:
            first, _, last = base.partition("-")
            start, end = value(first), value(last)
            if end < start:
                raise bad(f"range {base!r} ends before it starts")
        else:
            start = value(base)
            end = high if step_text else start
        values.update(range(start, end + 1, step))
    return tuple(sorted(values))


@dataclass(frozen=True, slots=True)
class _Calendar:
    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]
    months: tuple[int, ...]
    #: Python's numbering: Monday 0 ... Sunday 6.
    weekdays: frozenset[int]
    #: None: every year.
    years: tuple[int, ...] | None

    @classmethod
    def compile(cls, spec: CalendarSpec) -> _Calendar:
        weekdays = _parse_field(spec.day_of_week, name="day_of_week", low=0, high=7, names=_DAYS)
        years = None
        if spec.year.strip() != "*":
            years = _parse_field(spec.year, name="year", low=1970, high=9999)
        return cls(
            seconds=_parse_field(spec.second, name="second", low=0, high=59),
            minutes=_parse_field(spec.minute, name="minute", low=0, high=59),
            hours=_parse_field(spec.hour, name="hour", low=0, high=23),
            days=frozenset(_parse_field(spec.day_of_month, name="day_of_month", low=1, high=31)),
            months=_parse_field(spec.month, name="month", low=1, high=12, names=_MONTHS),
            weekdays=frozenset((d - 1) % 7 for d in weekdays),
            years=years,
        )

    def matches(self, wall: datetime) -> bool:
        return (
            wall.second in self.seconds
            and wall.minute in self.minutes
            and wall.hour in self.hours
            and self._day_matches(wall.date())
            and (self.years is None or wall.year in self.years)
        )

    def _day_matches(self, day: date) -> bool:
        return day.month in self.months and day.day in self.days and day.weekday() in self.weekdays

    def next_wall(self, after: datetime) -> datetime | None:
        """The first matching wall time strictly after `after` (naive)."""
        day: date | None = after.date()
        clock: time | None = after.time()
        limit = after.year + _HORIZON_YEARS
        while day is not None and day.year <= limit:
            if self.years is not None and day.year not in self.years:
                later = [y for y in self.years if y > day.year]
                day, clock = (date(later[0], 1, 1) if later else None), None
                continue
            if day.month not in self.months:
                day, clock = _first_of_next_month(day), None
                continue
            if day.day in self.days and day.weekday() in self.weekdays:
                found = self._first_time_after(clock)
                if found is not None:
                    return datetime.combine(day, found)
            day, clock = day + _DAY, None
        return None

    def _first_time_after(self, clock: time | None) -> time | None:
        if clock is None:
            return time(self.hours[0], self.minutes[0], self.seconds[0])
        for hour in self.hours:
            if hour < clock.hour:
                continue
            if hour > clock.hour:
                return time(hour, self.minutes[0], self.seconds[0])
            for minute in self.minutes:
                if minute < clock.minute:
                    continue
                if minute > clock.minute:
                    return time(hour, minute, self.seconds[0])
                index = bisect_right(self.seconds, clock.second)
                if index < len(self.seconds):
                    return time(hour, minute, self.seconds[index])
        return None


def _first_of_next_month(day: date) -> date:
    return date(day.year + 1, 1, 1) if day.month == 12 else date(day.year, day.month + 1, 1)


# --------------------------------------------------------------------------------- cron lines


class _WallSource(Protocol):
    def next_wall(self, after: datetime) -> datetime | None: ...


@dataclass(frozen=True, slots=True)
class _Cron:
    line: str

    @classmethod
    def compile(cls, text: str) -> _Cron:
        line = " ".join(text.split())
        line = _NICKNAMES.get(line.lower(), line)
        fields = len(line.split())
        if fields not in (5, 6):
            raise ScheduleSpecError(
                f"cron line {text!r} has {fields} fields: write 5 (minute hour day-of-month month "
                "day-of-week) or 6 (second first), or @hourly/@daily/@weekly/@monthly/@yearly",
                field="cron",
                value=text,
            )
        try:
            CronSim(line, datetime(2000, 1, 1))
        except (CronSimError, ValueError, IndexError, KeyError) as exc:
            raise ScheduleSpecError(
                f"cron line {text!r} is invalid: {exc or type(exc).__name__} "
                "(fields: [second] minute hour day-of-month month day-of-week)",
                field="cron",
                value=text,
            ) from exc
        return cls(line)

    def next_wall(self, after: datetime) -> datetime | None:
        try:
            return next(CronSim(self.line, after))
        except StopIteration:
            return None


# ------------------------------------------------------------------------------ the compiled spec


def _ms(moment: datetime) -> int:
    return round(moment.timestamp() * _MS)


def _utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms // _MS, UTC) + timedelta(milliseconds=ms % _MS)


#: Answers of `CompiledSpec.next_tick` kept per spec (cleared when full).
_MEMO_SIZE = 64


@dataclass(frozen=True, slots=True)
class CompiledSpec:
    """A checked `ScheduleSpec` that answers when its ticks fall (build it with `compile_spec`)."""

    spec: ScheduleSpec
    zone: ZoneInfo
    walls: tuple[_WallSource, ...]
    excludes: tuple[_Calendar, ...]
    #: Recent answers of `next_tick` (a pure function of `after_ms`): thousands of schedules on
    #: one cron line ask for the same tick's successor, which costs tens of microseconds to walk.
    _memo: dict[int, int | None] = field(default_factory=dict, compare=False, hash=False, repr=False)

    def next_tick(self, after_ms: int) -> int | None:
        """The first tick strictly after `after_ms` (epoch ms), or None if the spec has ended."""
        memo = self._memo
        if after_ms in memo:
            return memo[after_ms]
        if len(memo) >= _MEMO_SIZE:
            memo.clear()
        found = memo[after_ms] = self._next_tick(after_ms)
        return found

    def _next_tick(self, after_ms: int) -> int | None:
        spec = self.spec
        if spec.start_ms is not None and after_ms < spec.start_ms:
            after_ms = spec.start_ms - 1
        for _ in range(_MAX_EXCLUDED_IN_A_ROW):
            candidate = self._next_unfiltered(after_ms)
            if candidate is None or (spec.end_ms is not None and candidate > spec.end_ms):
                return None
            if not self._excluded(candidate):
                return candidate
            after_ms = candidate
        return None

    def ticks(self, after_ms: int, until_ms: int | None = None, *, limit: int | None = None) -> Iterator[int]:
        """Ticks strictly after `after_ms` and at or before `until_ms`, in order, at most `limit`."""
        count = 0
        tick = self.next_tick(after_ms)
        while tick is not None and (until_ms is None or tick <= until_ms) and (limit is None or count < limit):
            yield tick
            count += 1
            tick = self.next_tick(tick)

    def fire_at(self, schedule_id: str, tick_ms: int) -> int:
        """When the tick fires: its time plus its jitter."""
        return tick_ms + jitter_ms(schedule_id, tick_ms, self.spec.jitter_ms)

    def local(self, tick_ms: int) -> datetime:
        """The tick on the wall clock of the spec's time zone (aware)."""
        return _utc(tick_ms).astimezone(self.zone)

    def _next_unfiltered(self, after_ms: int) -> int | None:
        best: int | None = None
        for interval in self.spec.intervals:
            every, offset = interval.every_ms, interval.offset_ms
            tick = after_ms + 1 + (offset - (after_ms + 1)) % every
            best = tick if best is None else min(best, tick)
        for source in self.walls:
            found = self._next_from_walls(source, after_ms)
            if found is not None and (best is None or found < best):
                best = found
        return best

    def _next_from_walls(self, source: _WallSource, after_ms: int) -> int | None:
        """The first instant strictly after `after_ms` whose wall time the source matches.

        Wall times map to instants in their order except across a spring-forward gap: a skipped
        wall time maps to the instant one gap later, after the wall times that follow it. So the
        walk starts early enough to see the skipped wall times that land after `after_ms`
        (`_start_offset`), and goes on past a candidate until the wall clock shows the
        candidate's own instant, after which no wall time maps before it.
        """
        after = _utc(after_ms)
        wall = (after + self._start_offset(after)).replace(tzinfo=None)
        best: int | None = None
        stop: datetime | None = None
        while True:
            found = source.next_wall(wall)
            if found is None or (stop is not None and found > stop):
                return best
            instant = _ms(found.replace(tzinfo=self.zone, fold=0))
            if instant > after_ms and (best is None or instant < best):
                best = instant
                stop = self.local(best).replace(tzinfo=None)
            wall = found

    def _start_offset(self, after: datetime) -> timedelta:
        """The offset to read `after` on the wall clock with, to start a walk of wall times.

        The offset in force, unless `after` falls within one gap's length after a spring-forward
        transition: then the offset before it, so that skipped wall times (which fire up to a gap
        late) are walked too.
        """
        now = after.astimezone(self.zone).utcoffset() or timedelta(0)
        before = (after - _OFFSET_WINDOW).astimezone(self.zone).utcoffset() or timedelta(0)
        if before >= now:
            return now
        return min(now, (after - (now - before)).astimezone(self.zone).utcoffset() or timedelta(0))

    def _excluded(self, tick_ms: int) -> bool:
        if not self.excludes:
            return False
        wall = self.local(tick_ms).replace(tzinfo=None)
        return any(calendar.matches(wall) for calendar in self.excludes)


def compile_spec(spec: ScheduleSpec) -> CompiledSpec:
    """Check every part of `spec` and compile it.

    Raises:
        ScheduleSpecError: a part cannot be used; the error names it (`field`) and says what to
            write instead.
    """
    if not (spec.cron or spec.calendars or spec.intervals):
        raise ScheduleSpecError(
            "the schedule has no times: give a cron line, an interval or a calendar spec",
            field="spec",
            value=None,
        )
    zone = load_zone(spec.time_zone)
    walls: list[_WallSource] = [_Cron.compile(line) for line in spec.cron]
    walls.extend(_Calendar.compile(calendar) for calendar in spec.calendars)
    for interval in spec.intervals:
        if interval.every_ms < MIN_INTERVAL_MS or interval.every_ms % 1000:
            raise ScheduleSpecError(
                f"interval of {interval.every_ms} ms: an interval is a whole number of seconds, at least 1s",
                field="interval",
                value=interval.every_ms,
            )
        if not 0 <= interval.offset_ms < interval.every_ms or interval.offset_ms % 1000:
            raise ScheduleSpecError(
                f"interval offset of {interval.offset_ms} ms: an offset is whole seconds, "
                f"at least 0 and shorter than the interval ({interval.every_ms} ms)",
                field="interval offset",
                value=interval.offset_ms,
            )
    if spec.start_ms is not None and spec.end_ms is not None and spec.end_ms < spec.start_ms:
        raise ScheduleSpecError(
            f"the schedule ends ({_utc(spec.end_ms).isoformat()}) before it starts "
            f"({_utc(spec.start_ms).isoformat()}): give an end after the start",
            field="end",
            value=spec.end_ms,
        )
    if spec.jitter_ms < 0:
        raise ScheduleSpecError(
            f"jitter of {spec.jitter_ms} ms: jitter is a duration of 0 or more",
            field="jitter",
            value=spec.jitter_ms,
        )
    excludes = tuple(_Calendar.compile(calendar) for calendar in spec.exclude)
    return CompiledSpec(spec=spec, zone=zone, walls=tuple(walls), excludes=excludes)


def load_zone(name: str) -> ZoneInfo:
    """The IANA time zone `name`.

    Raises:
        ScheduleSpecError: no such zone.
    """
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ScheduleSpecError(
            f"unknown time zone {name!r}: give an IANA name such as 'UTC', 'Europe/Berlin' or 'America/New_York'",
            field="time_zone",
            value=name,
        ) from exc


# ------------------------------------------------------------------------- ticks and their runs


def jitter_ms(schedule_id: str, tick_ms: int, jitter: int) -> int:
    """A tick's delay in `[0, jitter)`: a hash of the schedule and the tick, the same everywhere."""
    if jitter <= 0:
        return 0
    digest = hashlib.blake2b(f"{schedule_id}\x00{tick_ms}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % jitter


def tick_iso(tick_ms: int) -> str:
    """A tick as ISO 8601 in UTC, to the second (`2026-12-07T02:00:00Z`); to the millisecond when
    it is not a whole second (a trigger's own time: `2026-12-07T02:00:00.417Z`)."""
    ms = tick_ms % 1000
    text = _utc(tick_ms).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{ms:03d}Z" if ms else f"{text}Z"


def tick_run_id(schedule_id: str, tick_ms: int) -> str:
    """The workflow id of the run a tick starts: `<schedule id>:<tick in UTC, ISO>`."""
    return f"{schedule_id}:{tick_iso(tick_ms)}"
