"""Schedules against the real broker (issue 27): each spec kind, overlap policies, pause/resume,
trigger, update, delete, backfill, and bad input.

Ticks here are seconds apart (intervals, 6-field cron lines, calendar specs with a seconds
field) so that the tests observe real firings; DST changes run against the broker on a worker
clock the test moves (test_schedule_dst.py); long outages and catch-up windows of hours are
tested without a broker in tests/unit/test_schedule_spec.py, test_schedules.py and
test_schedule_processor.py. Every wait polls a state (tests/support/wait.py).
"""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from grctl import Client, Context, Directive, Workflow
from grctl.client.schedules import ScheduleDescription
from grctl.engine.schedule_spec import CalendarSpec, ScheduleSpec, tick_iso
from grctl.errors import (
    ScheduleAlreadyExistsError,
    ScheduleError,
    ScheduleNotFoundError,
    ScheduleSpecError,
    WorkflowTypeNotRegisteredError,
)
from tests.support.wait import wait_until_async

pytestmark = pytest.mark.kafka

WAIT_S = 30

ticker = Workflow(workflow_type="Ticker")


@ticker.start()
async def ticker_start(ctx: Context, mode: str = "done") -> Directive:
    """Completes with the tick it serves; with mode "wait", runs until an event ends it."""
    info = {
        "schedule_id": ctx.run.schedule_id,
        "scheduled_at": ctx.run.scheduled_at.isoformat() if ctx.run.scheduled_at else None,
        "wf_id": ctx.run.wf_id,
    }
    if mode == "wait":
        return ctx.next.wait()
    return ctx.next.complete(info)


@ticker.event()
async def finish(ctx: Context) -> Directive:
    return ctx.next.complete("finished")


async def described(client: Client, sid: str, what: str, check: Any) -> ScheduleDescription:
    """Poll `describe` until `check(description)` holds."""
    last: list[ScheduleDescription] = []

    async def poll() -> ScheduleDescription | None:
        d = await client.get_schedule_handle(sid).describe()
        last[:] = [d]
        return d if check(d) else None

    return await wait_until_async(what, poll, WAIT_S, interval=0.25, seen=lambda: last[0] if last else None)


async def test_interval_ticks_start_one_run_each_with_its_tick(client: Client, workers: Any) -> None:
    await workers.start([ticker])
    handle = await client.create_schedule("every-second", workflow_type="Ticker", interval="every 1s")
    d = await described(client, "every-second", "three ticks ran", lambda d: sum(
        1 for t in d.recent if t.status == "completed") >= 3)  # fmt: skip
    done = [t for t in d.recent if t.status == "completed"]
    for t in done:
        assert t.run_wf_id == f"every-second:{tick_iso(round(t.tick.timestamp() * 1000))}"
        result = await (await client.get_workflow_handle(t.run_wf_id or "")).result(timeout=WAIT_S)
        assert result == {"schedule_id": "every-second", "scheduled_at": t.tick.isoformat(), "wf_id": t.run_wf_id}
    ticks = [t.tick for t in d.recent if t.action == "started"]
    assert ticks == sorted(ticks) and len(set(ticks)) == len(ticks)
    assert d.fired >= 3 and d.missed == 0
    await handle.delete()


@pytest.mark.parametrize(
    "spec",
    [
        {"cron": "*/2 * * * * *", "time_zone": "Europe/Berlin"},
        {"calendars": [CalendarSpec(second="*/2", minute="*", hour="*")], "time_zone": "America/New_York"},
    ],
    ids=["cron-6-fields", "calendar"],
)
async def test_cron_and_calendar_specs_fire_on_their_seconds(
    client: Client, workers: Any, spec: dict[str, Any]
) -> None:
    await workers.start([ticker])
    await client.create_schedule("even", workflow_type="Ticker", **spec)
    d = await described(client, "even", "two runs completed", lambda d: sum(
        1 for t in d.recent if t.status == "completed") >= 2)  # fmt: skip
    assert all(t.tick.second % 2 == 0 for t in d.recent)
    assert all(t.second % 2 == 0 for t in d.next_ticks) and len(d.next_ticks) == 10


async def test_overlap_skip_then_the_next_tick_after_the_run_ends(client: Client, workers: Any) -> None:
    await workers.start([ticker])
    await client.create_schedule("skipper", workflow_type="Ticker", interval="1s", input={"mode": "wait"})
    d = await described(client, "skipper", "a tick skipped", lambda d: d.skipped >= 2)
    assert d.fired == 1 and len(d.running) == 1
    await client.send_event(d.running[0], "finish")
    await described(client, "skipper", "a second run", lambda d: d.fired >= 2)


@pytest.mark.parametrize("policy", ["buffer_one", "cancel_other", "terminate_other", "allow_all", "buffer_all"])
async def test_overlap_policies(client: Client, workers: Any, policy: str) -> None:
    await workers.start([ticker])
    sid = f"overlap-{policy.replace('_', '-')}"
    await client.create_schedule(sid, workflow_type="Ticker", interval="1s", input={"mode": "wait"}, overlap=policy)
    if policy == "allow_all":
        d = await described(client, sid, "three runs at once", lambda d: len(d.running) >= 3)
        assert d.skipped == 0
    elif policy in ("buffer_one", "buffer_all"):
        if policy == "buffer_one":  # one tick waits, the others are skipped
            d = await described(client, sid, "a tick buffered, one skipped", lambda d: d.buffered and d.skipped)
            assert d.buffered == 1 and len(d.waiting) == 1
        else:  # every tick waits
            d = await described(client, sid, "ticks buffered", lambda d: d.buffered >= 2)
            assert d.skipped == 0 and len(d.waiting) == d.buffered
        assert d.fired == 1
        first = d.running[0]
        await client.send_event(first, "finish")
        d = await described(client, sid, "a buffered tick started", lambda d: d.fired >= 2)
        assert d.running and d.running[0] != first
    else:
        d = await described(client, sid, "a run ended by the next tick", lambda d: any(
            t.status in ("cancelled", "terminated") for t in d.recent))  # fmt: skip
        ended = next(t for t in d.recent if t.status in ("cancelled", "terminated"))
        assert ended.status == ("cancelled" if policy == "cancel_other" else "terminated")
        await described(client, sid, "the next run started", lambda d: d.fired >= 2)
    await client.get_schedule_handle(sid).pause()


async def test_pause_resume_trigger_update_delete(client: Client, workers: Any) -> None:
    await workers.start([ticker])
    handle = await client.create_schedule("ops", workflow_type="Ticker", cron="0 0 1 1 *", paused=True, note="not yet")
    d = await handle.describe()
    assert d.paused and d.note == "not yet" and d.next_ticks == []
    started = await handle.trigger()
    assert started["action"] == "started"
    d = await described(client, "ops", "the triggered run completed", lambda d: d.recent and d.recent[-1].status)
    assert d.recent[-1].how == "trigger" and d.recent[-1].status == "completed"
    await handle.resume()
    d = await handle.describe()
    assert not d.paused and d.next_ticks[0].month == 1 and d.next_ticks[0].day == 1
    await handle.update(spec=None, input={"mode": "done"}, overlap="allow_all", catchup=timedelta(minutes=5))
    await handle.update(spec=ScheduleSpec(cron=("* * * * * *",)))
    await described(client, "ops", "a tick of the new spec", lambda d: any(t.how == "scheduled" for t in d.recent))
    d = await handle.describe()
    assert d.overlap == "allow_all" and d.catchup == timedelta(minutes=5) and d.input == {"mode": "done"}
    assert len(d.record.eras) == 2
    await handle.delete()
    with pytest.raises(ScheduleNotFoundError):
        await handle.describe()
    with pytest.raises(ScheduleNotFoundError):
        await handle.pause()


async def test_backfill_fires_the_past_ticks_of_the_range(client: Client, workers: Any) -> None:
    await workers.start([ticker])
    handle = await client.create_schedule("bf", workflow_type="Ticker", cron="*/10 * * * *", overlap="allow_all")
    now = datetime.now(UTC)
    end = now.replace(second=0, microsecond=0) - timedelta(minutes=now.minute % 10)
    answer = await handle.backfill(end - timedelta(minutes=30), end)
    assert answer == {"ticks": 4, "started": 4, "skipped": 0}
    d = await described(client, "bf", "4 backfilled runs completed", lambda d: sum(
        1 for t in d.recent if t.how == "backfill" and t.status == "completed") == 4)  # fmt: skip
    ticks = sorted(t.tick for t in d.recent if t.how == "backfill")
    assert ticks == [end - timedelta(minutes=m) for m in (30, 20, 10, 0)]
    with pytest.raises(ScheduleError, match="future"):
        await handle.backfill(now, now + timedelta(hours=1))


async def test_bad_input_is_refused_with_a_clear_error(client: Client, workers: Any) -> None:
    await workers.start([ticker])
    with pytest.raises(ScheduleSpecError, match="is invalid"):
        await client.create_schedule("bad", workflow_type="Ticker", cron="61 * * * *")
    with pytest.raises(ScheduleSpecError, match="unknown time zone"):
        await client.create_schedule("bad", workflow_type="Ticker", cron="@daily", time_zone="Nowhere/City")
    with pytest.raises(ScheduleSpecError, match="before it starts"):
        start = datetime(2030, 1, 1, tzinfo=UTC)
        await client.create_schedule(
            "bad", workflow_type="Ticker", cron="@daily", start=start, end=start - timedelta(1)
        )
    with pytest.raises(WorkflowTypeNotRegisteredError, match="'Nope' is not served"):
        await client.create_schedule("bad", workflow_type="Nope", cron="@daily")
    await client.create_schedule("dup", workflow_type="Ticker", cron="@daily")
    with pytest.raises(ScheduleAlreadyExistsError, match="already exists"):
        await client.create_schedule("dup", workflow_type="Ticker", cron="@yearly")
    listed = await client.list_schedules()
    assert [d.id for d in listed] == ["dup"]


async def test_catch_up_after_an_outage_fires_the_window_and_counts_the_rest(client: Client, workers: Any) -> None:
    """No worker for 15 s with a 10 s catch-up window: the last ~10 ticks fire late, the rest are missed.

    The outage is real time (the worker's timer loop reads the wall clock); the same logic with a
    clock the test sets is in tests/unit/test_schedule_processor.py and test_schedules.py.
    """
    worker = await workers.start([ticker])
    handle = await client.create_schedule(
        "catchup", workflow_type="Ticker", interval="1s", overlap="allow_all", catchup=timedelta(seconds=10)
    )
    await described(client, "catchup", "a first tick", lambda d: d.fired >= 1)
    await worker.stop(shutdown_timeout=2.0)
    down_at = datetime.now(UTC)
    while datetime.now(UTC) < down_at + timedelta(seconds=15):  # the outage itself, not a synchronisation
        await asyncio.sleep(0.5)
    await workers.start([ticker])
    d = await described(client, "catchup", "missed ticks counted", lambda d: d.missed >= 3)
    started = sorted(t.tick for t in d.recent if t.action == "started")
    assert started == sorted(set(started))
    record = d.record
    assert record.last_tick_ms is not None and d.missed + d.fired >= 15
    # Every tick is either started or counted as missed: none vanished (the ring's last 20, a second apart).
    ring = [t.tick for t in d.recent]
    assert all(b - a == timedelta(seconds=1) for a, b in itertools.pairwise(ring)), ring
    assert {t.action for t in d.recent} <= {"started", "missed"} and d.skipped == 0 and d.buffered == 0
    await handle.pause()
