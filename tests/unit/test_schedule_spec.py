"""Unit tests for grctl.engine.schedule_spec: when ticks fall (cron, calendars, intervals, DST, jitter)."""

from __future__ import annotations

import itertools
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from grctl.engine.schedule_spec import (
    CalendarSpec,
    IntervalSpec,
    ScheduleSpec,
    compile_spec,
    jitter_ms,
    parse_duration_ms,
    parse_interval,
    tick_iso,
    tick_run_id,
)
from grctl.errors import InvalidArgumentError, ScheduleSpecError

BERLIN = "Europe/Berlin"
NEW_YORK = "America/New_York"


def at(text: str, zone: str = "UTC") -> int:
    """Epoch ms of a wall time in a zone (fold 0: the first occurrence)."""
    return round(datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone)).timestamp() * 1000)


def ticks(spec: ScheduleSpec, after: int, count: int) -> list[str]:
    return [tick_iso(t) for t in compile_spec(spec).ticks(after, limit=count)]


def local_ticks(spec: ScheduleSpec, after: int, count: int) -> list[str]:
    compiled = compile_spec(spec)
    return [compiled.local(t).isoformat() for t in compiled.ticks(after, limit=count)]


# -- cron lines ------------------------------------------------------------------------------------


def test_five_field_cron_in_utc() -> None:
    spec = ScheduleSpec(cron=("0 2 * * *",))
    assert ticks(spec, at("2026-01-01T00:00:00"), 3) == [
        "2026-01-01T02:00:00Z",
        "2026-01-02T02:00:00Z",
        "2026-01-03T02:00:00Z",
    ]


def test_next_tick_is_strictly_after() -> None:
    compiled = compile_spec(ScheduleSpec(cron=("0 2 * * *",)))
    assert tick_iso(compiled.next_tick(at("2026-01-01T02:00:00")) or 0) == "2026-01-02T02:00:00Z"
    assert tick_iso(compiled.next_tick(at("2026-01-01T01:59:59")) or 0) == "2026-01-01T02:00:00Z"


def test_six_field_cron_has_seconds_first() -> None:
    spec = ScheduleSpec(cron=("*/20 * * * * *",))
    assert ticks(spec, at("2026-01-01T00:00:00"), 4) == [
        "2026-01-01T00:00:20Z",
        "2026-01-01T00:00:40Z",
        "2026-01-01T00:01:00Z",
        "2026-01-01T00:01:20Z",
    ]


def test_cron_nicknames() -> None:
    assert ticks(ScheduleSpec(cron=("@hourly",)), at("2026-01-01T00:30:00"), 1) == ["2026-01-01T01:00:00Z"]
    assert ticks(ScheduleSpec(cron=("@monthly",)), at("2026-01-15T00:00:00"), 1) == ["2026-02-01T00:00:00Z"]
    assert ticks(ScheduleSpec(cron=("@weekly",)), at("2026-12-07T00:00:00"), 1) == ["2026-12-13T00:00:00Z"]


def test_cron_day_of_month_or_day_of_week_as_vixie_cron() -> None:
    # Both restricted: either matches (the 1st, and every Friday).
    spec = ScheduleSpec(cron=("0 0 1 * FRI",))
    assert ticks(spec, at("2026-04-28T00:00:00"), 3) == [
        "2026-05-01T00:00:00Z",  # a Friday and the 1st
        "2026-05-08T00:00:00Z",
        "2026-05-15T00:00:00Z",
    ]


def test_cron_in_a_time_zone() -> None:
    spec = ScheduleSpec(cron=("0 2 * * *",), time_zone=BERLIN)
    assert ticks(spec, at("2026-06-30T23:00:00"), 1) == ["2026-07-01T00:00:00Z"]  # 02:00 CEST
    assert ticks(spec, at("2026-01-01T00:00:00"), 1) == ["2026-01-01T01:00:00Z"]  # 02:00 CET


def test_union_of_cron_lines_fires_a_shared_time_once() -> None:
    spec = ScheduleSpec(cron=("0 * * * *", "0 */2 * * *"))
    assert ticks(spec, at("2026-01-01T00:00:00"), 3) == [
        "2026-01-01T01:00:00Z",
        "2026-01-01T02:00:00Z",
        "2026-01-01T03:00:00Z",
    ]


# -- DST (Europe/Berlin: 2026-03-29 02:00 -> 03:00, 2026-10-25 03:00 -> 02:00) ------------------


def test_dst_spring_forward_skipped_daily_time_fires_once_shifted_by_the_gap() -> None:
    spec = ScheduleSpec(cron=("30 2 * * *",), time_zone=BERLIN)
    assert local_ticks(spec, at("2026-03-27T12:00:00", BERLIN), 3) == [
        "2026-03-28T02:30:00+01:00",
        "2026-03-29T03:30:00+02:00",  # 02:30 does not exist that night: once, an hour later
        "2026-03-30T02:30:00+02:00",
    ]


def test_dst_spring_forward_every_15_minutes_fires_each_instant_once() -> None:
    spec = ScheduleSpec(cron=("*/15 * * * *",), time_zone=BERLIN)
    assert local_ticks(spec, at("2026-03-29T01:30:00", BERLIN), 6) == [
        "2026-03-29T01:45:00+01:00",
        "2026-03-29T03:00:00+02:00",
        "2026-03-29T03:15:00+02:00",
        "2026-03-29T03:30:00+02:00",
        "2026-03-29T03:45:00+02:00",
        "2026-03-29T04:00:00+02:00",
    ]


def test_dst_spring_forward_from_inside_the_gap_window() -> None:
    # Asking from 01:10 UTC (03:10 CEST), the skipped 02:30 (firing at 03:30 CEST) is still ahead.
    spec = ScheduleSpec(cron=("30 2 * * *",), time_zone=BERLIN)
    assert ticks(spec, at("2026-03-29T01:10:00"), 2) == ["2026-03-29T01:30:00Z", "2026-03-30T00:30:00Z"]


def test_dst_fall_back_repeated_daily_time_fires_once_at_its_first_occurrence() -> None:
    spec = ScheduleSpec(cron=("30 2 * * *",), time_zone=BERLIN)
    assert local_ticks(spec, at("2026-10-24T12:00:00", BERLIN), 2) == [
        "2026-10-25T02:30:00+02:00",
        "2026-10-26T02:30:00+01:00",
    ]


def test_dst_fall_back_asked_during_the_second_pass_does_not_fire_again() -> None:
    spec = ScheduleSpec(cron=("30 2 * * *",), time_zone=BERLIN)
    second_pass = at("2026-10-25T01:10:00")  # 02:10 CET, the repeated hour's second pass
    assert ticks(spec, second_pass, 1) == ["2026-10-26T01:30:00Z"]


def test_dst_fall_back_every_15_minutes_repeated_hour_once() -> None:
    spec = ScheduleSpec(cron=("*/15 * * * *",), time_zone=BERLIN)
    assert local_ticks(spec, at("2026-10-25T02:30:00", BERLIN), 4) == [
        "2026-10-25T02:45:00+02:00",
        "2026-10-25T03:00:00+01:00",  # 02:00-02:45 CET are wall times already fired
        "2026-10-25T03:15:00+01:00",
        "2026-10-25T03:30:00+01:00",
    ]


def test_dst_new_york_calendar_spec() -> None:
    # 2026-03-08 02:00 -> 03:00 in New York.
    spec = ScheduleSpec(calendars=(CalendarSpec(hour="2", minute="15"),), time_zone=NEW_YORK)
    assert local_ticks(spec, at("2026-03-07T12:00:00", NEW_YORK), 2) == [
        "2026-03-08T03:15:00-04:00",
        "2026-03-09T02:15:00-04:00",
    ]


def test_ticks_are_strictly_increasing_across_a_year_of_transitions() -> None:
    compiled = compile_spec(ScheduleSpec(cron=("*/30 * * * *",), time_zone=BERLIN))
    found = list(compiled.ticks(at("2026-01-01T00:00:00"), at("2027-01-01T00:00:00")))
    assert all(a < b for a, b in itertools.pairwise(found))
    # 365 days of 48 wall times; in spring 02:00 and 02:30 do not exist and fire at 03:00 and
    # 03:30, with those (one tick each); in autumn the repeated 02:00 and 02:30 fire once.
    assert len(found) == 365 * 48 - 2
    assert len(set(found)) == len(found)


# -- calendar specs ------------------------------------------------------------------------------


def test_calendar_first_monday_of_the_month_matches_every_field() -> None:
    spec = ScheduleSpec(calendars=(CalendarSpec(day_of_month="1-7", day_of_week="MON", hour="9"),))
    assert ticks(spec, at("2026-01-01T00:00:00"), 3) == [
        "2026-01-05T09:00:00Z",
        "2026-02-02T09:00:00Z",
        "2026-03-02T09:00:00Z",
    ]


def test_calendar_defaults_are_midnight_every_day() -> None:
    assert ticks(ScheduleSpec(calendars=(CalendarSpec(),)), at("2026-01-01T00:00:00"), 2) == [
        "2026-01-02T00:00:00Z",
        "2026-01-03T00:00:00Z",
    ]


def test_calendar_lists_ranges_steps_and_names() -> None:
    spec = ScheduleSpec(
        calendars=(CalendarSpec(second="0,30", minute="*/20", hour="8-9", day_of_week="MON-FRI", month="JAN"),)
    )
    found = ticks(spec, at("2026-01-02T08:40:00"), 4)  # a Friday
    assert found == ["2026-01-02T08:40:30Z", "2026-01-02T09:00:00Z", "2026-01-02T09:00:30Z", "2026-01-02T09:20:00Z"]
    after_friday = ticks(spec, at("2026-01-02T09:59:00"), 1)
    assert after_friday == ["2026-01-05T08:00:00Z"]  # Monday


def test_calendar_years_and_the_end_of_a_spec() -> None:
    spec = ScheduleSpec(calendars=(CalendarSpec(month="12", day_of_month="25", year="2026-2027"),))
    compiled = compile_spec(spec)
    assert [tick_iso(t) for t in compiled.ticks(at("2020-01-01T00:00:00"))] == [
        "2026-12-25T00:00:00Z",
        "2027-12-25T00:00:00Z",
    ]


def test_calendar_that_never_matches_has_no_ticks() -> None:
    spec = ScheduleSpec(calendars=(CalendarSpec(month="2", day_of_month="30"),))
    assert compile_spec(spec).next_tick(at("2026-01-01T00:00:00")) is None


def test_calendar_sunday_is_0_or_7() -> None:
    seven = ScheduleSpec(calendars=(CalendarSpec(day_of_week="7"),))
    zero = ScheduleSpec(calendars=(CalendarSpec(day_of_week="0"),))
    start = at("2026-12-07T00:00:00")
    assert ticks(seven, start, 2) == ticks(zero, start, 2) == ["2026-12-13T00:00:00Z", "2026-12-20T00:00:00Z"]


# -- intervals -----------------------------------------------------------------------------------


def test_interval_with_offset_counts_from_the_epoch() -> None:
    spec = ScheduleSpec(intervals=(parse_interval("every 5m offset 30s"),))
    assert ticks(spec, at("2026-01-01T00:00:30"), 3) == [
        "2026-01-01T00:05:30Z",
        "2026-01-01T00:10:30Z",
        "2026-01-01T00:15:30Z",
    ]


def test_interval_ignores_time_zones_and_dst() -> None:
    spec = ScheduleSpec(intervals=(IntervalSpec(every_ms=3_600_000),), time_zone=BERLIN)
    assert ticks(spec, at("2026-03-29T00:30:00"), 3) == [
        "2026-03-29T01:00:00Z",
        "2026-03-29T02:00:00Z",
        "2026-03-29T03:00:00Z",
    ]


@pytest.mark.parametrize(
    ("text", "every", "offset"),
    [
        ("every 5m offset 30s", 300_000, 30_000),
        ("5m", 300_000, 0),
        ("@every 1h", 3_600_000, 0),
        ("every 1h30m", 5_400_000, 0),
    ],
)
def test_parse_interval(text: str, every: int, offset: int) -> None:
    assert parse_interval(text) == IntervalSpec(every_ms=every, offset_ms=offset)


@pytest.mark.parametrize(
    ("text", "ms"), [("30s", 30_000), ("90", 90_000), ("2d", 172_800_000), ("1w", 604_800_000), ("250ms", 250)]
)
def test_parse_duration(text: str, ms: int) -> None:
    assert parse_duration_ms(text) == ms


# -- start, end, exclusions ----------------------------------------------------------------------


def test_start_and_end_bound_the_ticks() -> None:
    spec = ScheduleSpec(cron=("0 * * * *",), start_ms=at("2026-01-01T05:30:00"), end_ms=at("2026-01-01T08:00:00"))
    compiled = compile_spec(spec)
    assert [tick_iso(t) for t in compiled.ticks(at("2026-01-01T00:00:00"))] == [
        "2026-01-01T06:00:00Z",
        "2026-01-01T07:00:00Z",
        "2026-01-01T08:00:00Z",  # the end is inclusive
    ]


def test_a_tick_at_the_start_counts() -> None:
    spec = ScheduleSpec(cron=("0 * * * *",), start_ms=at("2026-01-01T06:00:00"))
    assert ticks(spec, at("2026-01-01T00:00:00"), 1) == ["2026-01-01T06:00:00Z"]


def test_exclusions_on_the_wall_clock() -> None:
    # Every day at 09:00 Berlin, but not at weekends nor on Christmas day.
    spec = ScheduleSpec(
        cron=("0 9 * * *",),
        exclude=(CalendarSpec(hour="9", day_of_week="SAT,SUN"), CalendarSpec(hour="9", month="12", day_of_month="25")),
        time_zone=BERLIN,
    )
    assert local_ticks(spec, at("2026-12-23T12:00:00", BERLIN), 3) == [
        "2026-12-24T09:00:00+01:00",
        "2026-12-28T09:00:00+01:00",  # 25th excluded, 26th and 27th a weekend
        "2026-12-29T09:00:00+01:00",
    ]


def test_exclusions_covering_everything_end_the_spec() -> None:
    spec = ScheduleSpec(cron=("0 9 * * *",), exclude=(CalendarSpec(hour="9"),), end_ms=at("2027-01-01T00:00:00"))
    assert compile_spec(spec).next_tick(at("2026-01-01T00:00:00")) is None


# -- jitter and ids ------------------------------------------------------------------------------


def test_jitter_is_stable_bounded_and_spread() -> None:
    tick = at("2026-01-01T00:00:00")
    delays = [jitter_ms(f"s-{i}", tick, 30_000) for i in range(2000)]
    assert delays == [jitter_ms(f"s-{i}", tick, 30_000) for i in range(2000)]  # the same every time
    assert all(0 <= d < 30_000 for d in delays)
    # Spread over the window: every 3-second tenth of it gets some (2000 draws, ~200 each).
    assert {d // 3000 for d in delays} == set(range(10))
    assert jitter_ms("s-1", tick, 0) == 0


def test_jitter_differs_per_tick_and_fire_at_adds_it() -> None:
    compiled = compile_spec(ScheduleSpec(cron=("* * * * *",), jitter_ms=60_000))
    first, second = at("2026-01-01T00:00:00"), at("2026-01-01T00:01:00")
    assert compiled.fire_at("s", first) - first == jitter_ms("s", first, 60_000)
    assert jitter_ms("s", first, 60_000) != jitter_ms("s", second, 60_000)


def test_tick_run_id() -> None:
    assert tick_run_id("nightly", at("2026-12-07T02:00:00")) == "nightly:2026-12-07T02:00:00Z"


# -- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "field", "says"),
    [
        (ScheduleSpec(cron=("0 2 * *",)), "cron", "has 4 fields"),
        (ScheduleSpec(cron=("61 2 * * *",)), "cron", "is invalid"),
        (ScheduleSpec(cron=("0 2 * * FOO",)), "cron", "is invalid"),
        (ScheduleSpec(cron=("0 2 * * *",), time_zone="Europe/Atlantis"), "time_zone", "unknown time zone"),
        (ScheduleSpec(cron=("0 2 * * *",), time_zone="../etc/passwd"), "time_zone", "unknown time zone"),
        (ScheduleSpec(), "spec", "no times"),
        (ScheduleSpec(intervals=(IntervalSpec(every_ms=500),)), "interval", "at least 1s"),
        (ScheduleSpec(intervals=(IntervalSpec(every_ms=60_000, offset_ms=60_000),)), "interval offset", "shorter"),
        (ScheduleSpec(cron=("@daily",), start_ms=2000, end_ms=1000), "end", "ends"),
        (ScheduleSpec(cron=("@daily",), jitter_ms=-1), "jitter", "0 or more"),
        (ScheduleSpec(calendars=(CalendarSpec(hour="25"),)), "calendar.hour", "out of range"),
        (ScheduleSpec(calendars=(CalendarSpec(day_of_week="MON-FOO"),)), "calendar.day_of_week", "not a number"),
        (ScheduleSpec(calendars=(CalendarSpec(minute="10-5"),)), "calendar.minute", "ends before it starts"),
        (ScheduleSpec(calendars=(CalendarSpec(second="*/0"),)), "calendar.second", "step"),
        (ScheduleSpec(cron=("@daily",), exclude=(CalendarSpec(month="13"),)), "calendar.month", "out of range"),
    ],
)
def test_bad_specs_name_the_part_at_fault(spec: ScheduleSpec, field: str, says: str) -> None:
    with pytest.raises(ScheduleSpecError, match=says) as caught:
        compile_spec(spec)
    assert caught.value.field == field
    assert isinstance(caught.value, InvalidArgumentError)


@pytest.mark.parametrize("text", ["", "5 minutes", "5x", "every", "every 5m offset"])
def test_bad_durations_and_intervals(text: str) -> None:
    with pytest.raises(ScheduleSpecError, match=r"duration|interval"):
        parse_interval(text)
