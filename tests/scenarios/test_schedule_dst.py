"""A schedule across DST changes against the real broker, on a worker clock the test moves.

`Worker(clock=...)` gives the engine a wall clock the test sets: it starts just before Europe/
Berlin's 2027 spring-forward (03-28, 02:00 CET -> 03:00 CEST) and fall-back (10-31, 03:00 CEST ->
02:00 CET) and jumps to a few seconds before each tick, so no test waits for 2 a.m. The daily
"30 2 * * *" must fire once at 03:30 CEST on the spring day (02:30 does not exist: a gap later,
as Temporal documents it) and once at the first 02:30 on the fall day (02:30 happens twice).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from grctl import Client, Context, Directive, Workflow
from tests.conftest import WorkerRunner
from tests.support.wait import wait_until_async

pytestmark = pytest.mark.kafka

dst = Workflow(workflow_type="DstTicker")


@dst.start()
async def dst_start(ctx: Context) -> Directive:
    assert ctx.run.scheduled_at is not None
    return ctx.next.complete({"scheduled_at": ctx.run.scheduled_at.isoformat(), "wf_id": ctx.run.wf_id})


class MovableClock:
    """Epoch seconds that run at the real pace from a time the test sets (and moves)."""

    def __init__(self, start: datetime) -> None:
        self.offset = 0.0
        self.jump_to(start)

    def __call__(self) -> float:
        return time.time() + self.offset

    def jump_to(self, when: datetime) -> None:
        self.offset = when.timestamp() - time.time()


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


async def next_tick(client: Client, sid: str) -> datetime:
    """The next tick as the worker holds it (`describe`'s `next_ticks` are computed on the client's clock)."""
    record = (await client.get_schedule_handle(sid).describe()).record
    assert record.next_tick_ms is not None
    return datetime.fromtimestamp(record.next_tick_ms / 1000, UTC)


async def tick_result(client: Client, wf_id: str) -> object:
    async def ended() -> object:
        try:
            info = await client.describe(wf_id)
        except Exception:  # not started yet: the tick's timer has not fired
            return None
        return info.result if info.status == "completed" else None

    return await wait_until_async(f"the run {wf_id} completed", ended, 60)


async def test_schedule_across_spring_forward_and_fall_back_on_a_moved_clock(
    client: Client, workers: WorkerRunner
) -> None:
    clock = MovableClock(utc("2027-03-28T00:59:00"))  # 01:59 CET in Berlin
    await workers.start([dst], clock=clock)
    await client.create_schedule("dst-spring", workflow_type="DstTicker", cron="30 2 * * *", time_zone="Europe/Berlin")
    # 02:30 does not exist that night: the tick is 03:30 CEST (01:30 UTC), once.
    assert await next_tick(client, "dst-spring") == utc("2027-03-28T01:30:00")
    clock.jump_to(utc("2027-03-28T01:29:57"))
    result = await tick_result(client, "dst-spring:2027-03-28T01:30:00Z")
    assert result == {"scheduled_at": "2027-03-28T01:30:00+00:00", "wf_id": "dst-spring:2027-03-28T01:30:00Z"}
    # The next day has 02:30 again, in summer time (00:30 UTC).
    assert await next_tick(client, "dst-spring") == utc("2027-03-29T00:30:00")

    clock.jump_to(utc("2027-10-31T00:00:00"))  # 02:00 CEST: 02:30 comes twice this night
    await client.create_schedule("dst-fall", workflow_type="DstTicker", cron="30 2 * * *", time_zone="Europe/Berlin")
    assert await next_tick(client, "dst-fall") == utc("2027-10-31T00:30:00")  # the first 02:30 (CEST)
    clock.jump_to(utc("2027-10-31T00:29:57"))
    result = await tick_result(client, "dst-fall:2027-10-31T00:30:00Z")
    assert result == {"scheduled_at": "2027-10-31T00:30:00+00:00", "wf_id": "dst-fall:2027-10-31T00:30:00Z"}
    # Not again at the repeated 02:30 (CET, 01:30 UTC): the next tick is the next day's.
    assert await next_tick(client, "dst-fall") == utc("2027-11-01T01:30:00")
    described = await client.get_schedule_handle("dst-fall").describe()
    assert [(t.tick, t.action) for t in described.recent] == [(utc("2027-10-31T00:30:00"), "started")]
