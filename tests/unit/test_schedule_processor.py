"""Schedules through the partition processor, without a broker: directives in, one transaction out.

Real processor, state machines, RocksDB store (tmp_path) and group committer; the Kafka
transaction is `InMemoryPublisher` (as in test_partition_processor.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from grctl.engine import keys
from grctl.engine.records import (
    Reply,
    ReplyTo,
    ScheduleCreateCmd,
    ScheduleDeleteCmd,
    ScheduleDescribeCmd,
    ScheduleListCmd,
    ScheduleRunEndedCmd,
    StartCmd,
    directive_decoder,
    encoder,
    reply_decoder,
    schedule_decoder,
)
from grctl.engine.schedule_spec import IntervalSpec, ScheduleSpec, tick_iso
from grctl.kafka.partitioner import partition_for
from tests.unit.test_partition_processor import TOPICS, Harness, N

TO = ReplyTo(client_id="c", request_id="r", partition=0)


def schedule_ids_on(partition: int) -> Iterator[str]:
    i = 0
    while True:
        if partition_for(f"sched-{i}", N) == partition:
            yield f"sched-{i}"
        i += 1


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path)
    yield h
    h.store.close()


def create(h: Harness, sid: str, **fields: object) -> None:
    args: dict[str, object] = {"wf_type": "Order", "spec": ScheduleSpec(intervals=(IntervalSpec(every_ms=1000),))}
    args.update(fields)
    h.feed(encoder.encode(ScheduleCreateCmd(wf_id=sid, reply_to=TO, **args)), sid)  # type: ignore[arg-type]


def replies(h: Harness) -> list[Reply]:
    return [reply_decoder.decode(r[3]) for pub in h.pub.committed for r in pub.records if r[0] == TOPICS.replies]


async def test_a_firing_is_one_transaction_with_the_schedule_and_the_start(harness: Harness) -> None:
    sid = next(schedule_ids_on(0))
    create(harness, sid, input={"n": 1})
    await harness.committer.flush()
    record = schedule_decoder.decode(harness.store.get_committed(keys.schedule_key(sid)) or b"")
    assert record.next_tick_ms is not None and replies(harness)[0].ok
    tick = record.next_tick_ms
    assert harness.proc.fire_due_timers(tick, 100) == 1
    await harness.committer.flush()
    firing = harness.pub.committed[-1]
    (start_record,) = [r for r in firing.records if r[0] == TOPICS.directives]
    start = directive_decoder.decode(start_record[3])
    assert isinstance(start, StartCmd)
    assert (start.wf_id, start.schedule_id, start.scheduled_ms, start.input) == (
        f"{sid}:{tick_iso(tick)}",
        sid,
        tick,
        {"n": 1},
    )
    assert start_record[1] == partition_for(start.wf_id, N)  # to the run's own partition
    # The same transaction holds the schedule's new state and its next timer.
    after = schedule_decoder.decode(firing.state[0][keys.schedule_key(sid)] or b"")
    assert (after.last_tick_ms, after.next_tick_ms, after.fired) == (tick, tick + 1000, 1)
    assert firing.state[0][keys.timer_key(tick + 1000, sid, "schedule")] is not None
    # The fired timer is gone: firing again at the same time does nothing.
    assert harness.proc.fire_due_timers(tick, 100) == 0


async def test_run_ended_and_describe_and_list_and_delete(harness: Harness) -> None:
    first, second = sid_pair = [s for s, _ in zip(schedule_ids_on(0), range(2), strict=False)]
    for sid in sid_pair:
        create(harness, sid)
    record = harness.proc.get_schedule(first)
    assert record is not None and record.next_tick_ms is not None
    harness.proc.fire_due_timers(record.next_tick_ms, 100)
    record = harness.proc.get_schedule(first)
    assert record is not None and len(record.running) == 1
    wf_id, run_id = record.running[0]
    ended = ScheduleRunEndedCmd(wf_id=first, run_wf_id=wf_id, run_id=run_id, scheduled_ms=0, status="completed")
    harness.feed(encoder.encode(ended), first)
    record = harness.proc.get_schedule(first)
    assert record is not None and record.running == [] and record.recent[-1].status == "completed"
    harness.feed(encoder.encode(ScheduleDescribeCmd(wf_id=first, reply_to=TO)), first)
    harness.feed(encoder.encode(ScheduleListCmd(wf_id="", partition=0, reply_to=TO)), "")
    harness.feed(encoder.encode(ScheduleDeleteCmd(wf_id=second, reply_to=TO)), second)
    await harness.committer.flush()
    described, listed, deleted = replies(harness)[-3:]
    assert described.payload["schedule_id"] == first and described.payload["fired"] >= 1
    assert sorted(s["schedule_id"] for s in listed.payload["schedules"]) == sorted(sid_pair)
    assert deleted.ok and harness.store.get_committed(keys.schedule_key(second)) is None


async def test_a_record_on_the_wrong_partition_is_dead_lettered(harness: Harness) -> None:
    sid = next(schedule_ids_on(1))
    create(harness, sid)
    await harness.committer.flush()
    assert harness.pub.records_of(TOPICS.dead_letter)
    assert harness.store.get_committed(keys.schedule_key(sid)) is None


async def test_after_an_outage_ticks_within_the_catch_up_window_fire_and_older_ones_are_counted(
    harness: Harness,
) -> None:
    sid = next(schedule_ids_on(0))
    create(harness, sid, catchup_ms=10_000, overlap="allow_all")
    record = harness.proc.get_schedule(sid)
    assert record is not None and record.next_tick_ms is not None
    first = record.next_tick_ms
    # The worker's clock (given to the timer firing) jumps a minute: no worker ran meanwhile.
    later = first + 59_000
    while harness.proc.fire_due_timers(later, 100):
        pass
    await harness.committer.flush()
    record = harness.proc.get_schedule(sid)
    assert record is not None
    starts = [directive_decoder.decode(r[3]) for r in harness.pub.records_of(TOPICS.directives)]
    ticks = [s for s in starts if isinstance(s, StartCmd)]
    # 11 ticks within the window, in order, at once; then (allow_all lets a run start while others
    # run) the next tick fired ahead, its start step waiting for its time.
    assert [s.scheduled_ms for s in ticks] == list(range(later - 10_000, later + 1001, 1000))
    assert [s.not_before_ms for s in ticks] == [None] * 11 + [later + 1000]
    assert record.missed == 49 and record.fired == 12
    assert record.next_tick_ms == later + 2000


async def test_dst_through_the_processor_with_the_clock_of_the_timer_firing(harness: Harness) -> None:
    """Europe/Berlin "30 2 * * *" across 2027's spring-forward (03-28 02:00 -> 03:00) and fall-back (10-31)."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from grctl.engine import schedules as machine_module

    sid = next(schedule_ids_on(0))
    create(harness, sid, spec=ScheduleSpec(cron=("30 2 * * *",), time_zone="Europe/Berlin"), overlap="allow_all")
    # Move the schedule's first tick to just before the spring-forward, as if created then.
    record = harness.proc.get_schedule(sid)
    assert record is not None and record.next_fire_ms is not None
    berlin = ZoneInfo("Europe/Berlin")

    def at(text: str) -> int:
        return round(datetime.fromisoformat(text).replace(tzinfo=berlin).timestamp() * 1000)

    first = at("2027-03-27T02:30:00")
    moved = machine_module.ScheduleTransition(record=record)
    record.next_tick_ms = record.next_fire_ms = first
    moved.timers_set.append(machine_module._timer(sid, first))
    harness.proc.apply_schedule(moved, sid)
    fired_at = []
    for when in (at("2027-03-27T12:00:00"), at("2027-03-28T12:00:00"), at("2027-10-31T12:00:00")):
        while harness.proc.fire_due_timers(when, 100):
            pass
    await harness.committer.flush()
    for r in harness.pub.records_of(TOPICS.directives):
        start = directive_decoder.decode(r[3])
        if isinstance(start, StartCmd):
            fired_at.append(datetime.fromtimestamp((start.scheduled_ms or 0) / 1000, berlin).isoformat())
    assert fired_at[:2] == ["2027-03-27T02:30:00+01:00", "2027-03-28T03:30:00+02:00"]  # skipped 02:30: once, later
    # Fall-back day (02:00-03:00 twice): 02:30 fires once, at its first occurrence; then winter time.
    assert fired_at[-2:] == ["2027-10-30T02:30:00+02:00", "2027-10-31T02:30:00+02:00"]
    assert len(fired_at) == len(set(fired_at)) == 2 + (datetime(2027, 10, 31) - datetime(2027, 3, 28)).days
