"""Unit tests for grctl.engine.schedules: the schedule state machine (no broker, a clock the test sets)."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import msgspec
import pytest

from grctl.engine.machine import Machine
from grctl.engine.records import (
    CancelCmd,
    OverlapPolicy,
    ReplyCode,
    ReplyTo,
    RunRecord,
    ScheduleBackfillCmd,
    ScheduleCreateCmd,
    ScheduleDeleteCmd,
    SchedulePauseCmd,
    ScheduleRecord,
    ScheduleRunEndedCmd,
    ScheduleTriggerCmd,
    ScheduleUpdateCmd,
    StartCmd,
    TimerEntry,
    TimerKind,
    encoder,
    schedule_decoder,
)
from grctl.engine.schedule_spec import IntervalSpec, ScheduleSpec, jitter_ms, tick_iso
from grctl.engine.schedules import (
    MAX_RECENT,
    MAX_TICKS_PER_TRANSITION,
    ScheduleMachine,
    ScheduleTransition,
    tick_run_ulid,
)
from grctl.models.run_info import RunStatus

TO = ReplyTo(client_id="c", request_id="r", partition=0)
MINUTE = 60_000


def at(text: str, zone: str = "UTC") -> int:
    return round(datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone)).timestamp() * 1000)


T0 = at("2026-12-07T10:00:30")


class Types:
    def __init__(self, *types: str) -> None:
        self.types = set(types)

    def has_type(self, wf_type: str) -> bool:
        return wf_type in self.types


class World:
    """A schedule, its partition's offsets and a clock the test moves."""

    def __init__(self, lead_ms: int = 0, **create: object) -> None:
        # Ticks at their time (lead 0): the lead's own tests pass `lead_ms`.
        self.machine = ScheduleMachine(Types("report"), lead_ms=lead_ms)
        self.offset = 0
        self.now = T0
        self.record: ScheduleRecord | None = None
        self.timers: dict[int, TimerEntry] = {}
        fields: dict[str, object] = {"wf_type": "report", "spec": ScheduleSpec(cron=("* * * * *",))}
        fields.update(create)
        self.last = self.send(ScheduleCreateCmd(wf_id="s", reply_to=TO, **fields))  # type: ignore[arg-type]

    def keep(self, tr: ScheduleTransition) -> ScheduleTransition:
        for t in tr.timers_clear:
            self.timers.pop(t.due_ms, None)
        for t in tr.timers_set:
            self.timers[t.due_ms] = t
        if tr.delete:
            self.record = None
        elif tr.record is not None:
            # Through the wire format, as the processor stores it.
            self.record = schedule_decoder.decode(encoder.encode(tr.record))
        return tr

    def send(self, cmd: object) -> ScheduleTransition:
        self.offset += 1
        return self.keep(self.machine.apply(self.record, cmd, self.offset, self.now))  # type: ignore[arg-type]

    def advance(self, to_ms: int) -> list[ScheduleTransition]:
        """Move the clock to `to_ms`, firing each due timer as the timer loop would."""
        done = []
        while True:
            due = [d for d in self.timers if d <= to_ms]
            if not due:
                break
            first = min(due)
            self.now = max(self.now, first)
            timer = self.timers.pop(first)
            done.append(self.keep(self.machine.on_due(self.record, timer, self.now)))
        self.now = to_ms
        return done

    def outage(self, to_ms: int) -> list[ScheduleTransition]:
        """No worker until `to_ms`: then every due timer fires at `to_ms`."""
        self.now = to_ms
        done = []
        while due := [d for d in self.timers if d <= to_ms]:
            timer = self.timers.pop(min(due))
            done.append(self.keep(self.machine.on_due(self.record, timer, to_ms)))
        return done

    def starts(self, trs: list[ScheduleTransition]) -> list[StartCmd]:
        return [c for tr in trs for c in tr.sends if isinstance(c, StartCmd)]

    def end(self, start: StartCmd, status: str = "completed") -> ScheduleTransition:
        return self.send(
            ScheduleRunEndedCmd(
                wf_id="s",
                run_wf_id=start.wf_id,
                run_id=start.run_id,
                scheduled_ms=start.scheduled_ms or 0,
                status=status,
            )
        )

    @property
    def rec(self) -> ScheduleRecord:
        assert self.record is not None
        return self.record


# -- create and the cadence ----------------------------------------------------------------------


def test_create_arms_the_first_tick_and_answers() -> None:
    w = World()
    assert w.rec.next_tick_ms == at("2026-12-07T10:01:00")
    assert list(w.timers) == [at("2026-12-07T10:01:00")]
    (_to, reply) = w.last.replies[0]
    assert reply.ok and reply.payload == {"next_tick_ms": at("2026-12-07T10:01:00")}


def test_each_tick_starts_one_run_with_its_id_and_time() -> None:
    w = World()
    trs = w.advance(at("2026-12-07T10:01:00"))
    (start,) = w.starts(trs)
    assert start.wf_id == "s:2026-12-07T10:01:00Z"
    assert (start.wf_type, start.schedule_id, start.scheduled_ms) == ("report", "s", at("2026-12-07T10:01:00"))
    assert w.rec.last_tick_ms == at("2026-12-07T10:01:00")
    assert w.rec.next_tick_ms == at("2026-12-07T10:02:00")
    assert w.rec.running == [(start.wf_id, start.run_id)]
    assert trs[0].fired == [(at("2026-12-07T10:01:00"), 0)]


def test_a_timer_applied_twice_fires_nothing_the_second_time() -> None:
    w = World()
    timer = w.timers[at("2026-12-07T10:01:00")]
    w.now = timer.due_ms
    w.keep(w.machine.on_due(w.record, timer, w.now))
    again = w.machine.on_due(w.record, timer, w.now)
    assert again.skipped and not again.sends


def test_a_directive_redelivered_is_skipped() -> None:
    w = World()
    cmd = SchedulePauseCmd(wf_id="s", note="x")
    first = w.machine.apply(w.record, cmd, 5, w.now)
    w.keep(first)
    assert w.machine.apply(w.record, cmd, 5, w.now).skipped


def test_run_ids_are_ulids_and_the_same_for_the_same_tick() -> None:
    from ulid import ULID

    tick = at("2026-12-07T10:01:00")
    run_id = tick_run_ulid("s", tick, tick + 5, "scheduled")
    assert ULID.from_str(run_id).milliseconds == tick + 5
    assert run_id == tick_run_ulid("s", tick, tick + 5, "scheduled")
    assert run_id != tick_run_ulid("s", tick + MINUTE, tick + 5, "scheduled")


def test_id_template() -> None:
    w = World(id_template="nightly-{tick}")
    (start,) = w.starts(w.advance(at("2026-12-07T10:01:00")))
    assert start.wf_id == "nightly-2026-12-07T10:01:00Z"


def test_jitter_delays_the_firing_not_the_tick() -> None:
    w = World(spec=ScheduleSpec(cron=("* * * * *",), jitter_ms=30_000))
    tick = at("2026-12-07T10:01:00")
    delay = jitter_ms("s", tick, 30_000)
    assert w.rec.next_fire_ms == tick + delay
    assert not w.starts(w.advance(tick + delay - 1))
    (start,) = w.starts(w.advance(tick + delay))
    assert start.scheduled_ms == tick and start.wf_id == f"s:{tick_iso(tick)}"


# -- the lead: a tick's run committed ahead of its time ------------------------------------------

LEAD = 5_000


def test_a_tick_is_fired_ahead_by_the_lead_and_its_run_waits_for_the_tick() -> None:
    w = World(lead_ms=LEAD)
    tick = at("2026-12-07T10:01:00")
    # Created at 10:00:30: the first tick's timer is armed the lead (at most half the wait) ahead.
    assert w.rec.next_tick_ms == tick and list(w.timers) == [tick - LEAD]
    assert not w.starts(w.advance(tick - LEAD - 1))
    trs = w.advance(tick - LEAD)
    (start,) = w.starts(trs)
    assert (start.scheduled_ms, start.not_before_ms) == (tick, tick)
    assert start.wf_id == "s:2026-12-07T10:01:00Z"
    assert trs[0].fired == [(tick, -LEAD)]  # committed 5 s before its time
    assert (w.rec.last_tick_ms, w.rec.next_tick_ms) == (tick, tick + MINUTE)
    assert list(w.timers) == [tick + MINUTE - LEAD]
    # Nothing more at the tick itself: the tick was dealt with once.
    assert not w.starts(w.advance(tick + 1))


def test_the_lead_is_at_most_half_the_time_to_the_tick() -> None:
    w = World(lead_ms=LEAD, spec=ScheduleSpec(intervals=(IntervalSpec(every_ms=1000),)))
    first = w.rec.next_tick_ms
    assert first == T0 + 1000 and list(w.timers) == [T0 + 500]
    (start,) = w.starts(w.advance(T0 + 500))
    assert start.not_before_ms == T0 + 1000
    w.end(start)
    # Armed at 10:00:30.5 for the tick at :32: 750 ms ahead (half of 1.5 s).
    assert list(w.timers) == [T0 + 2000 - 750]


def test_a_running_run_holds_the_tick_until_its_time_then_the_overlap_policy_decides() -> None:
    w = World(lead_ms=LEAD)
    tick = at("2026-12-07T10:01:00")
    (first,) = w.starts(w.advance(tick - LEAD))
    # The run of 10:01 is still running when the 10:02 tick's lead comes: not fired ahead.
    (tr,) = w.advance(tick + MINUTE - LEAD)
    assert not tr.sends and list(w.timers) == [tick + MINUTE]
    assert w.rec.next_fire_ms == tick + MINUTE
    # It ends before the tick: the tick fires at its time (skip would have skipped it ahead).
    w.end(first)
    (second,) = w.starts(w.advance(tick + MINUTE))
    assert (second.scheduled_ms, second.not_before_ms) == (tick + MINUTE, None)


def test_a_held_tick_whose_run_is_still_running_at_its_time_is_skipped() -> None:
    w = World(lead_ms=LEAD)
    tick = at("2026-12-07T10:01:00")
    w.advance(tick - LEAD)
    assert not w.starts(w.advance(tick + MINUTE))
    assert (w.rec.skipped, w.rec.recent[-1].action) == (1, "skipped")


def test_allow_all_fires_ahead_while_a_run_is_running() -> None:
    w = World(lead_ms=LEAD, overlap=OverlapPolicy.allow_all)
    tick = at("2026-12-07T10:01:00")
    w.advance(tick - LEAD)
    (second,) = w.starts(w.advance(tick + MINUTE - LEAD))
    assert second.not_before_ms == tick + MINUTE and len(w.rec.running) == 2


def test_jitter_and_lead_the_run_waits_for_the_tick_plus_its_jitter() -> None:
    w = World(lead_ms=LEAD, spec=ScheduleSpec(cron=("* * * * *",), jitter_ms=30_000))
    tick = at("2026-12-07T10:01:00")
    fire = tick + jitter_ms("s", tick, 30_000)
    assert w.rec.next_fire_ms == fire - min(LEAD, (fire - T0) // 2)
    (start,) = w.starts(w.advance(w.rec.next_fire_ms))
    assert (start.scheduled_ms, start.not_before_ms) == (tick, fire)


def test_a_fired_ahead_timer_applied_twice_fires_nothing_the_second_time() -> None:
    w = World(lead_ms=LEAD)
    timer = w.timers[at("2026-12-07T10:01:00") - LEAD]
    w.now = timer.due_ms
    w.keep(w.machine.on_due(w.record, timer, w.now))
    again = w.machine.on_due(w.record, timer, w.now)
    assert again.skipped and not again.sends


@pytest.mark.parametrize("how", ["pause", "delete", "update"])
def test_a_run_fired_ahead_is_withdrawn_if_the_schedule_changes_before_the_tick(how: str) -> None:
    w = World(lead_ms=LEAD)
    tick = at("2026-12-07T10:01:00")
    (start,) = w.starts(w.advance(tick - LEAD))
    w.now = tick - 1000
    if how == "pause":
        tr = w.send(SchedulePauseCmd(wf_id="s", note="maintenance"))
    elif how == "delete":
        tr = w.send(ScheduleDeleteCmd(wf_id="s"))
    else:
        tr = w.send(ScheduleUpdateCmd(wf_id="s", spec=ScheduleSpec(cron=("*/5 * * * *",))))
    (cancel,) = [c for c in tr.sends if isinstance(c, CancelCmd)]
    assert (cancel.wf_id, cancel.run_id, cancel.terminate) == (start.wf_id, start.run_id, False)
    assert "withdrawn" in (cancel.reason or "") and tr.withdrawn == 1
    if how != "delete":
        assert w.rec.running == [] and w.rec.fired == 0
        assert [(e.tick_ms, e.action) for e in w.rec.recent] == [(tick, "withdrawn")]


def test_a_run_whose_tick_has_come_is_not_withdrawn() -> None:
    w = World(lead_ms=LEAD)
    tick = at("2026-12-07T10:01:00")
    w.advance(tick - LEAD)
    w.now = tick
    tr = w.send(SchedulePauseCmd(wf_id="s", note="after the tick"))
    assert not tr.sends and tr.withdrawn == 0 and w.rec.recent[-1].action == "started"


def test_a_day_of_ticks_fired_ahead_starts_each_tick_once_in_order() -> None:
    w = World(lead_ms=LEAD)
    ticks: list[int] = []
    for minute in range(1, 24 * 60 + 1):
        for start in w.starts(w.advance(at("2026-12-07T10:00:00") + minute * MINUTE)):
            assert start.not_before_ms == start.scheduled_ms
            ticks.append(start.scheduled_ms or 0)
            w.end(start)
    # The runs end at once, so every tick is fired ahead, through the last one whose lead has come.
    assert ticks == [at("2026-12-07T10:00:00") + m * MINUTE for m in range(1, 24 * 60 + 1)]


# -- overlap policies ----------------------------------------------------------------------------


def test_skip_while_the_run_is_running_then_fire_again() -> None:
    w = World()
    (first,) = w.starts(w.advance(at("2026-12-07T10:01:00")))
    assert not w.starts(w.advance(at("2026-12-07T10:02:00")))
    assert (w.rec.skipped, w.rec.recent[-1].action) == (1, "skipped")
    w.end(first)
    assert w.rec.running == []
    assert w.rec.recent[0].status == "completed"
    assert len(w.starts(w.advance(at("2026-12-07T10:03:00")))) == 1


def test_buffer_one_keeps_one_and_skips_the_rest() -> None:
    w = World(overlap=OverlapPolicy.buffer_one)
    (first,) = w.starts(w.advance(at("2026-12-07T10:01:00")))
    w.advance(at("2026-12-07T10:03:00"))
    assert w.rec.buffered == [at("2026-12-07T10:02:00")]
    assert (w.rec.buffered_total, w.rec.skipped) == (1, 1)
    tr = w.end(first)
    (second,) = [c for c in tr.sends if isinstance(c, StartCmd)]
    assert second.scheduled_ms == at("2026-12-07T10:02:00") and w.rec.buffered == []


def test_buffer_all_keeps_every_tick_in_order() -> None:
    w = World(overlap=OverlapPolicy.buffer_all)
    (run,) = w.starts(w.advance(at("2026-12-07T10:01:00")))
    w.advance(at("2026-12-07T10:04:00"))
    assert w.rec.buffered == [at("2026-12-07T10:02:00"), at("2026-12-07T10:03:00"), at("2026-12-07T10:04:00")]
    order = []
    for _ in range(3):
        (run,) = [c for c in w.end(run).sends if isinstance(c, StartCmd)]
        order.append(tick_iso(run.scheduled_ms or 0))
    assert order == ["2026-12-07T10:02:00Z", "2026-12-07T10:03:00Z", "2026-12-07T10:04:00Z"]


def test_cancel_other_cancels_and_starts_after_the_end() -> None:
    w = World(overlap=OverlapPolicy.cancel_other)
    (first,) = w.starts(w.advance(at("2026-12-07T10:01:00")))
    (tr,) = w.advance(at("2026-12-07T10:02:00"))
    (cancel,) = tr.sends
    assert isinstance(cancel, CancelCmd) and not cancel.terminate
    assert (cancel.wf_id, cancel.run_id) == (first.wf_id, first.run_id)
    (second,) = [c for c in w.end(first, "cancelled").sends if isinstance(c, StartCmd)]
    assert second.scheduled_ms == at("2026-12-07T10:02:00")


def test_terminate_other_terminates_and_starts_at_once() -> None:
    w = World(overlap=OverlapPolicy.terminate_other)
    (first,) = w.starts(w.advance(at("2026-12-07T10:01:00")))
    (tr,) = w.advance(at("2026-12-07T10:02:00"))
    cancel, start = tr.sends
    assert isinstance(cancel, CancelCmd) and cancel.terminate and cancel.wf_id == first.wf_id
    assert isinstance(start, StartCmd) and w.rec.running == [(start.wf_id, start.run_id)]
    w.end(first, "terminated")  # the old run's end changes nothing for the new one
    assert w.rec.running == [(start.wf_id, start.run_id)]


def test_allow_all_starts_every_tick() -> None:
    w = World(overlap=OverlapPolicy.allow_all)
    assert len(w.starts(w.advance(at("2026-12-07T10:03:00")))) == 3
    assert len(w.rec.running) == 3


def test_a_rejected_start_frees_the_schedule() -> None:
    w = World()
    (first,) = w.starts(w.advance(at("2026-12-07T10:01:00")))
    w.end(first, "rejected")
    assert w.rec.running == []


# -- catch-up and missed counting ----------------------------------------------------------------


def test_catch_up_after_an_outage_fires_ticks_within_the_window_and_counts_the_rest() -> None:
    w = World(catchup_ms=10 * MINUTE, overlap=OverlapPolicy.allow_all)
    # No worker from 10:00:30 to 11:00:00: 60 ticks are due, 10 within the window.
    trs = w.outage(at("2026-12-07T11:00:00"))
    # The first firing after the outage deals with all of them at once.
    starts = w.starts(trs)
    assert [tick_iso(s.scheduled_ms or 0) for s in starts][:2] == ["2026-12-07T10:50:00Z", "2026-12-07T10:51:00Z"]
    assert len(starts) == 11  # 10:50 ... 11:00 (the window is inclusive)
    assert w.rec.missed == 49
    assert sum(tr.missed_ticks for tr in trs) == 49
    assert w.rec.next_tick_ms == at("2026-12-07T11:01:00")


def test_catch_up_with_skip_starts_one_and_skips_the_others() -> None:
    w = World(catchup_ms=5 * MINUTE)
    w.outage(at("2026-12-07T10:30:00"))
    assert (w.rec.fired, w.rec.skipped, w.rec.missed) == (1, 5, 24)


def test_a_long_outage_is_dealt_with_in_bounded_transitions() -> None:
    w = World(spec=ScheduleSpec(intervals=(IntervalSpec(every_ms=1000),)), catchup_ms=10_000)
    w.timers.clear()
    w.now = at("2026-12-07T12:00:00")  # 2 hours: 7170 ticks of a second
    timer = TimerEntry(wf_id="s", run_id="", kind=TimerKind.schedule, seq=0, due_ms=w.rec.next_fire_ms or 0)
    tr = w.keep(w.machine.on_due(w.record, timer, w.now))
    assert tr.missed_ticks == MAX_TICKS_PER_TRANSITION and not tr.fired
    assert list(w.timers) == [w.now]  # due at once for the rest
    trs = w.outage(w.now)
    assert w.rec.missed == 7170 - 10 - 1 and len(w.starts(trs)) == 1
    assert len(w.rec.recent) == MAX_RECENT
    assert len(encoder.encode(w.rec)) < 4096  # bounded state


# -- pause, resume, trigger, update, delete, backfill --------------------------------------------


def test_pause_disarms_and_resume_does_not_catch_up_the_paused_ticks() -> None:
    w = World()
    w.send(SchedulePauseCmd(wf_id="s", note="maintenance", reply_to=TO))
    assert w.rec.paused and w.rec.note == "maintenance" and w.timers == {}
    assert not w.advance(at("2026-12-07T10:10:00"))
    w.send(SchedulePauseCmd(wf_id="s", resume=True))
    assert not w.rec.paused and w.rec.next_tick_ms == at("2026-12-07T10:11:00")
    (start,) = w.starts(w.advance(at("2026-12-07T10:11:00")))
    assert start.scheduled_ms == at("2026-12-07T10:11:00")


def test_trigger_starts_now_even_while_paused() -> None:
    w = World(paused=True)
    w.now = T0 + 417
    tr = w.send(ScheduleTriggerCmd(wf_id="s", reply_to=TO))
    (start,) = w.starts([tr])
    assert start.scheduled_ms == T0 + 417  # the trigger's own millisecond
    assert start.wf_id == "s:2026-12-07T10:00:30.417Z"
    assert tr.replies[0][1].payload["action"] == "started"
    assert w.rec.recent[-1].how == "trigger"


def test_a_trigger_in_the_second_of_a_tick_starts_a_run_of_its_own() -> None:
    w = World(overlap=OverlapPolicy.allow_all)
    (tick,) = w.starts(w.advance(at("2026-12-07T10:01:00")))
    assert tick.wf_id == "s:2026-12-07T10:01:00Z"
    (trig,) = w.starts([w.send(ScheduleTriggerCmd(wf_id="s", reply_to=TO))])  # at 10:01:00.000 exactly
    assert trig.wf_id == "s:2026-12-07T10:01:00.001Z" and trig.run_id != tick.run_id
    w.now += 250
    (later,) = w.starts([w.send(ScheduleTriggerCmd(wf_id="s", reply_to=TO))])
    assert later.wf_id == "s:2026-12-07T10:01:00.250Z"


def test_update_spec_rearms_and_keeps_the_old_era() -> None:
    w = World()
    old_fire = w.rec.next_fire_ms
    tr = w.send(ScheduleUpdateCmd(wf_id="s", spec=ScheduleSpec(cron=("0 * * * *",)), reply_to=TO))
    assert [t.due_ms for t in tr.timers_clear] == [old_fire]
    assert w.rec.next_tick_ms == at("2026-12-07T11:00:00")
    assert [e.spec.cron for e in w.rec.eras] == [("* * * * *",), ("0 * * * *",)]


def test_update_input_and_overlap_only() -> None:
    w = World()
    w.send(ScheduleUpdateCmd(wf_id="s", input={"x": 1}, set_input=True, overlap=OverlapPolicy.allow_all))
    assert (w.rec.input, w.rec.overlap) == ({"x": 1}, OverlapPolicy.allow_all)
    (start,) = w.starts(w.advance(at("2026-12-07T10:01:00")))
    assert start.input == {"x": 1}


def test_delete_removes_the_schedule_and_its_timer() -> None:
    w = World()
    tr = w.send(ScheduleDeleteCmd(wf_id="s", reply_to=TO))
    assert tr.delete and w.record is None and w.timers == {}
    again = w.send(ScheduleDeleteCmd(wf_id="s", reply_to=TO))
    assert again.replies[0][1].code == ReplyCode.schedule_not_found


def test_backfill_uses_the_spec_in_force_at_each_tick() -> None:
    w = World(spec=ScheduleSpec(cron=("0 * * * *",)), overlap=OverlapPolicy.allow_all)
    w.now = at("2026-12-07T12:00:30")
    w.send(ScheduleUpdateCmd(wf_id="s", spec=ScheduleSpec(cron=("*/30 * * * *",))))
    w.now = at("2026-12-07T14:00:30")
    tr = w.send(
        ScheduleBackfillCmd(wf_id="s", from_ms=at("2026-12-07T08:00:00"), to_ms=at("2026-12-07T14:00:00"), reply_to=TO)
    )
    ticks = [tick_iso(s.scheduled_ms or 0)[11:16] for s in w.starts([tr])]
    # Hourly before the update at 12:00:30, every 30 minutes after it.
    assert ticks == ["08:00", "09:00", "10:00", "11:00", "12:00", "12:30", "13:00", "13:30", "14:00"]
    assert tr.replies[0][1].payload == {"ticks": 9, "started": 9, "skipped": 0}


def test_backfill_bad_ranges_are_refused() -> None:
    w = World()
    future = w.send(ScheduleBackfillCmd(wf_id="s", from_ms=T0, to_ms=T0 + MINUTE, reply_to=TO))
    assert "future" in future.replies[0][1].message
    backwards = w.send(ScheduleBackfillCmd(wf_id="s", from_ms=T0 - 1, to_ms=T0 - 2, reply_to=TO))
    assert "ends before it starts" in backwards.replies[0][1].message
    too_long = w.send(ScheduleBackfillCmd(wf_id="s", from_ms=T0 - 10 * 24 * 3_600_000, to_ms=T0, reply_to=TO))
    assert "split it" in too_long.replies[0][1].message


# -- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "code", "says"),
    [
        ({"wf_type": "nope"}, ReplyCode.type_not_registered, "'nope' is not served"),
        ({"spec": ScheduleSpec(cron=("0 2 * *",))}, ReplyCode.invalid_schedule, "4 fields"),
        ({"spec": ScheduleSpec(cron=("@daily",), time_zone="Mars/Olympus")}, ReplyCode.invalid_schedule, "time zone"),
        ({"catchup_ms": 1000}, ReplyCode.invalid_schedule, "at least 10s"),
        ({"id_template": "fixed"}, ReplyCode.invalid_schedule, "no '{tick}'"),
        (
            {"spec": ScheduleSpec(cron=tuple(f"{m} * * * *" for m in range(60)) * 3)},
            ReplyCode.invalid_schedule,
            "bytes",
        ),
    ],
)
def test_bad_creates_are_refused_with_a_reason(fields: dict[str, object], code: str, says: str) -> None:
    machine = ScheduleMachine(Types("report"))
    args: dict[str, object] = {"wf_type": "report", "spec": ScheduleSpec(cron=("@daily",))}
    args.update(fields)
    tr = machine.apply(None, ScheduleCreateCmd(wf_id="s", reply_to=TO, **args), 1, T0)  # type: ignore[arg-type]
    (reply,) = [r for _, r in tr.replies]
    assert tr.record is None and not reply.ok and reply.code == code and says in reply.message


def test_duplicate_schedule_id_is_refused() -> None:
    w = World()
    tr = w.send(ScheduleCreateCmd(wf_id="s", wf_type="report", spec=ScheduleSpec(cron=("@daily",)), reply_to=TO))
    assert tr.replies[0][1].code == ReplyCode.schedule_exists and tr.record is None


# -- the run side: the run records its tick and tells its schedule of its end ----------------------


class Catalog:
    def has_type(self, wf_type: str) -> bool:
        return True

    def versions(self, wf_type: str) -> list[int]:
        return [1]

    def upgrade_auto(self, wf_type: str, version: int) -> bool:
        return False

    def has_step(self, wf_type: str, version: int, step: str) -> bool:
        return True

    def step_timeout_ms(self, wf_type: str, version: int, step: str) -> int | None:
        return None

    def has_event(self, wf_type: str, version: int, name: str) -> bool | None:
        return True

    def events(self, wf_type: str, version: int) -> list[str]:
        return []

    def retention_ms(self, wf_type: str) -> int:
        return 1000

    def results_topic(self, wf_type: str) -> str | None:
        return None


def test_a_tick_run_records_its_tick_and_its_end_tells_the_schedule() -> None:
    machine = Machine(Catalog(), "w")
    start = StartCmd(
        wf_id="s:t", run_id="01J0000000000000000000000A", wf_type="report", schedule_id="s", scheduled_ms=T0
    )
    tr = machine.apply(None, start, 1, T0 + 5, lambda _: None)
    run = tr.run
    assert isinstance(run, RunRecord) and (run.schedule_id, run.scheduled_ms) == ("s", T0)
    ended = machine.on_cancel(run, CancelCmd(wf_id="s:t", terminate=True), T0 + 10)
    (notice,) = [c for c in ended.sends if type(c).__name__ == "ScheduleRunEndedCmd"]
    assert msgspec.structs.asdict(notice) | {} == {
        "wf_id": "s",
        "v": 1,
        "run_wf_id": "s:t",
        "run_id": start.run_id,
        "scheduled_ms": T0,
        "status": RunStatus.terminated.value,
    }


def test_a_rejected_tick_run_tells_the_schedule() -> None:
    machine = Machine(Catalog(), "w")
    first = StartCmd(wf_id="s:t", run_id="01J0000000000000000000000A", wf_type="report")
    run = machine.apply(None, first, 1, T0, lambda _: None).run
    dup = StartCmd(wf_id="s:t", run_id="01J0000000000000000000000B", wf_type="report", schedule_id="s", scheduled_ms=T0)
    tr = machine.apply(run, dup, 2, T0, lambda _: None)
    (notice,) = [c for c in tr.sends if type(c).__name__ == "ScheduleRunEndedCmd"]
    assert notice.status == "rejected" and notice.run_id == dup.run_id  # type: ignore[union-attr]


def test_state_after_a_day_of_minute_ticks_is_bounded() -> None:
    """A day of ticks (simulated clock): the record stops growing once its ring is full."""
    w = World(overlap=OverlapPolicy.allow_all, spec=ScheduleSpec(cron=("* * * * *",), jitter_ms=20_000))
    sizes = []
    for hour in range(24):
        for start in w.starts(w.advance(T0 + (hour + 1) * 3_600_000)):
            w.end(start)
        sizes.append(len(encoder.encode(w.rec)))
    assert w.rec.fired == 24 * 60 and w.rec.running == []
    assert len(w.rec.recent) == MAX_RECENT
    # Only the counters' and offsets' encodings widen (a few bytes); nothing grows with the ticks.
    assert sizes[-1] - sizes[1] <= 8 and max(sizes) < 4096, sizes


def test_an_update_still_fires_the_old_specs_ticks_already_due() -> None:
    w = World(overlap=OverlapPolicy.allow_all)
    # The 10:01 tick is due, its timer not fired yet (a busy worker), when the update arrives.
    w.now = at("2026-12-07T10:01:02")
    tr = w.send(ScheduleUpdateCmd(wf_id="s", spec=ScheduleSpec(cron=("0 * * * *",))))
    (start,) = w.starts([tr])
    assert start.scheduled_ms == at("2026-12-07T10:01:00")
    assert w.rec.last_tick_ms == at("2026-12-07T10:01:00") and w.rec.next_tick_ms == at("2026-12-07T11:00:00")
    assert list(w.timers) == [at("2026-12-07T11:00:00")]


# -- who did it (issue 31: identity on operator actions) ------------------------------------------


def test_the_schedule_records_who_created_and_who_changed_it_last() -> None:
    w = World(identity="ana@ops")
    assert (w.rec.created_by, w.rec.updated_by) == ("ana@ops", "ana@ops")
    w.send(SchedulePauseCmd(wf_id="s", note="maintenance", identity="bo@ops"))
    assert (w.rec.created_by, w.rec.updated_by) == ("ana@ops", "bo@ops")
    w.send(SchedulePauseCmd(wf_id="s", resume=True, identity="cy@ops"))
    w.send(ScheduleUpdateCmd(wf_id="s", overlap=OverlapPolicy.allow_all, identity="di@ops"))
    assert (w.rec.created_by, w.rec.updated_by) == ("ana@ops", "di@ops")


def test_a_trigger_and_a_backfill_record_who_asked_on_the_tick_and_its_run() -> None:
    w = World(overlap=OverlapPolicy.allow_all)
    tr = w.send(ScheduleTriggerCmd(wf_id="s", identity="ana@ops"))
    (start,) = w.starts([tr])
    assert start.identity == "ana@ops" and w.rec.recent[-1].by == "ana@ops"
    w.now = at("2026-12-07T10:05:30")
    tr = w.send(
        ScheduleBackfillCmd(
            wf_id="s", from_ms=at("2026-12-07T10:01:00"), to_ms=at("2026-12-07T10:02:00"), identity="bo@ops"
        )
    )
    assert {s.identity for s in w.starts([tr])} == {"bo@ops"}
    # The cadence's own ticks name nobody.
    ticks = w.starts(w.advance(at("2026-12-07T10:06:00")))
    assert ticks and all(t.identity is None for t in ticks) and w.rec.recent[-1].by == ""


def test_an_identity_over_the_limit_is_cut() -> None:
    w = World(identity="x" * 500)
    assert w.rec.created_by is not None and len(w.rec.created_by) == 200
