"""Every ``grctl schedule`` command against a real broker and a real ``grctl worker`` process."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.cli.conftest import ServedNamespace
from tests.support.wait import wait_until

pytestmark = pytest.mark.kafka


def test_schedule_commands(cli: Any, served: ServedNamespace) -> None:
    sid = served.new_id("sched")
    created = cli("schedule", "create", sid, "--type", "CliEcho", "--every", "1s", "--input", '{"value": 7}', "--json")
    assert created.exit_code == 0, created.stderr
    assert created.json()["id"] == sid and len(created.json()["next_ticks"]) == 10

    def fired() -> Any:
        run = cli("schedule", "describe", sid, "--json")
        assert run.exit_code == 0, run.stderr
        d = run.json()
        return d if any(t["status"] == "completed" for t in d["recent"]) else None

    d = wait_until("a tick's run completed", fired, 30)
    done = next(t for t in d["recent"] if t["status"] == "completed")
    result = cli("workflow", "result", done["run_wf_id"], "--json")
    assert result.exit_code == 0 and result.json()["result"] == {"echo": 7}, result.stdout + result.stderr
    text = cli("schedule", "describe", sid)
    assert text.exit_code == 0 and "next ticks:" in text.stdout and "last ticks" in text.stdout

    listed = cli("schedule", "list", "--json")
    assert listed.exit_code == 0 and sid in [s["id"] for s in listed.json()]
    assert cli("schedule", "pause", sid, "--note", "maintenance").exit_code == 0
    paused = cli("schedule", "describe", sid, "--json").json()
    assert paused["paused"] and paused["note"] == "maintenance" and paused["next_ticks"] == []
    triggered = cli("schedule", "trigger", sid, "--json")
    assert triggered.exit_code == 0 and triggered.json()["result"]["action"] in ("started", "skipped")
    assert cli("schedule", "resume", sid).exit_code == 0
    before_update = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1)
    assert cli("schedule", "update", sid, "--cron", "0 3 * * *", "--tz", "Europe/Berlin").exit_code == 0
    updated = cli("schedule", "describe", sid, "--json").json()
    assert updated["spec"]["cron"] == ["0 3 * * *"] and updated["spec"]["time_zone"] == "Europe/Berlin"
    # Five seconds before the update: the every-second spec was in force then.
    start = (before_update - timedelta(seconds=4)).isoformat()
    backfilled = cli("schedule", "backfill", sid, "--from", start, "--to", before_update.isoformat(), "--json")
    assert backfilled.exit_code == 0, backfilled.stderr
    assert backfilled.json()["result"]["ticks"] == 5
    too_long = cli("schedule", "backfill", sid, "--from", "2026-01-01T00:00:00Z", "--to", start)
    assert too_long.exit_code == 1 and "split it into shorter ranges" in too_long.stderr
    assert cli("schedule", "delete", sid).exit_code == 0
    missing = cli("schedule", "describe", sid)
    assert missing.exit_code == 1 and f"no schedule with id {sid!r}" in missing.stderr


def test_schedule_refusals(cli: Any, served: ServedNamespace) -> None:
    sid = served.new_id("sched")
    unknown = cli("schedule", "create", sid, "--type", "NoSuchType", "--cron", "@daily")
    assert unknown.exit_code == 1 and "'NoSuchType' is not served" in unknown.stderr
    assert cli("schedule", "create", sid, "--type", "CliEcho", "--cron", "@daily").exit_code == 0
    dup = cli("schedule", "create", sid, "--type", "CliEcho", "--cron", "@daily")
    assert dup.exit_code == 1 and "already exists" in dup.stderr
    assert cli("schedule", "delete", sid).exit_code == 0


def test_schedule_with_calendar_and_exclude(cli: Any, served: ServedNamespace) -> None:
    sid = served.new_id("sched")
    created = cli(
        "--identity", "ana@ops", "schedule", "create", sid, "--type", "CliEcho", "--tz", "Europe/Berlin",
        "--calendar", '{"hour": "9", "minute": "30", "day_of_week": "MON-FRI"}',
        "--exclude", '{"month": "12", "day_of_month": "24-26"}', "--json",
    )  # fmt: skip
    assert created.exit_code == 0, created.stderr
    spec = json.loads(created.stdout)["spec"]
    assert spec["calendars"] == [{"hour": "9", "minute": "30", "day_of_week": "MON-FRI"}]
    assert spec["exclude"] == [{"month": "12", "day_of_month": "24-26"}]
    assert json.loads(created.stdout)["created_by"] == "ana@ops"  # the operator's identity is recorded
    assert cli("--identity", "bo@ops", "schedule", "pause", sid, "--note", "x").exit_code == 0
    assert json.loads(cli("schedule", "describe", sid, "--json").stdout)["updated_by"] == "bo@ops"
    text = cli("schedule", "describe", sid)
    assert text.exit_code == 0 and "except" in text.stdout and "Europe/Berlin" in text.stdout
    assert cli("schedule", "delete", sid).exit_code == 0
