"""``grctl schedule`` without a broker: help, and bad specs refused as usage errors (exit 2) before connecting."""

from __future__ import annotations

from typing import Any

import pytest

COMMANDS = ["create", "list", "describe", "pause", "resume", "trigger", "backfill", "update", "delete"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_schedule_command_has_help(cli: Any, command: str) -> None:
    run = cli("schedule", command, "--help")
    assert run.exit_code == 0, run.stderr
    assert "Usage:" in run.stdout


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--cron", "0 2 * *"], "has 4 fields"),
        (["--cron", "0 25 * * *"], "is invalid"),
        (["--cron", "0 2 * * *", "--tz", "Europe/Atlantis"], "unknown time zone 'Europe/Atlantis'"),
        (["--cron", "0 2 * * *", "--start", "2027-01-01", "--end", "2026-01-01"], "ends"),
        (["--every", "5 minutes"], "is not an interval"),
        (["--every", "500ms"], "at least 1s"),
        (["--cron", "0 2 * * *", "--jitter", "soon"], "jitter 'soon' is not a duration"),
        (["--calendar", '{"hour": "25"}'], "hour"),
        (["--calendar", '{"hours": "2"}'], "unknown calendar field(s) hours"),
        (["--calendar", '["2"]'], "is not a JSON object"),
        (["--calendar", "{hour: 2}"], "--calendar"),
        (["--cron", "0 2 * * *", "--exclude", '{"weekday": "SAT"}'], "unknown calendar field(s) weekday"),
        ([], "no times"),
    ],
)
def test_bad_specs_exit_2_with_the_reason(cli: Any, args: list[str], says: str) -> None:
    # -s points at a port nothing listens on: the spec is refused before any connection.
    run = cli("-s", "127.0.0.1:1", "--connect-timeout", "0.1", "schedule", "create", "s1", "--type", "T", *args)
    assert run.exit_code == 2, run.stdout + run.stderr
    assert says in run.stderr


def test_calendar_and_exclude_options_build_the_spec() -> None:
    from grctl.cli.schedule import _calendars
    from grctl.engine.schedule_spec import CalendarSpec

    found = _calendars(['{"hour": 9, "minute": "30", "day_of_week": "MON-FRI"}'], "--calendar")
    assert found == (CalendarSpec(hour="9", minute="30", day_of_week="MON-FRI"),)
    assert _calendars(None, "--exclude") == ()
