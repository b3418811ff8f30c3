"""The exactly-once checker (`grctl.engine.verify`) on histories and states built by hand."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from grctl.engine import keys
from grctl.engine.records import HistoryRecord, RunRecord, TimerEntry, TimerKind
from grctl.engine.verify import Checker, VerifyReport
from grctl.models.run_info import RunStateKind, RunStatus

NOW = 1_800_000_000_000
OLD = NOW - 120_000  # quiet for two minutes: settled
RECENT = NOW - 1_000


def ev(kind: str, run_id: str = "R1", wf_id: str = "wf-1", ts: int = OLD, **msg: Any) -> HistoryRecord:
    return HistoryRecord(kind=kind, wf_id=wf_id, run_id=run_id, ts_ms=ts, msg=msg or None)


def record(status: RunStatus, state: RunStateKind, run_id: str = "R1", wf_id: str = "wf-1", **kw: Any) -> bytes:
    rec = RunRecord(run_id=run_id, wf_id=wf_id, wf_type="T", status=status, state=state, **kw)
    return msgspec.msgpack.encode(rec)


def check(history: list[HistoryRecord], state: dict[bytes, bytes | None]) -> VerifyReport:
    checker = Checker(NOW, settle_ms=30_000)
    for rec in history:
        checker.add_history(rec)
    for key, value in state.items():
        checker.add_state(key, value)
    return checker.report()


def whats(report: VerifyReport) -> list[tuple[str, str]]:
    return [(f.kind, f.what) for f in report.findings]


def a_completed_run(run_id: str = "R1", wf_id: str = "wf-1") -> list[HistoryRecord]:
    return [
        ev("run.started", run_id, wf_id),
        ev("step.started", run_id, wf_id, step_name="start", seq=1),
        ev("task.started", run_id, wf_id, task_id="quote:0"),
        ev("task.completed", run_id, wf_id, task_id="quote:0"),
        ev("step.completed", run_id, wf_id, step_name="start"),
        ev("step.started", run_id, wf_id, step_name="ship", seq=2),
        ev("step.completed", run_id, wf_id, step_name="ship"),
        ev("run.completed", run_id, wf_id),
    ]


def test_a_completed_run_with_its_record_is_clean() -> None:
    report = check(a_completed_run(), {keys.run_key("wf-1"): record(RunStatus.completed, RunStateKind.complete)})
    assert report.clean and report.runs == 1 and report.history_records == 8 and report.state_keys == 1
    assert report.findings == []


def test_a_completed_run_deleted_by_its_retention_is_clean() -> None:
    state: dict[bytes, bytes | None] = {keys.run_key("wf-1"): None, keys.store_key("wf-1", "R1", "k"): None}
    assert check(a_completed_run(), state).clean


@pytest.mark.parametrize(
    ("extra", "what"),
    [
        ([ev("run.started")], "run.started written 2 times"),
        ([ev("run.failed")], "2 terminal events: run.failed, run.completed"),
        ([ev("step.completed", step_name="ship")], "step.completed written 2 times for step number 2"),
        ([ev("task.completed", task_id="quote:0")], "task.completed written 2 times for task 'quote:0'"),
    ],
)
def test_a_transition_written_twice_is_duplicated(extra: list[HistoryRecord], what: str) -> None:
    history = a_completed_run()
    history[-1:-1] = extra  # before run.completed
    report = check(history, {keys.run_key("wf-1"): record(RunStatus.completed, RunStateKind.complete)})
    assert whats(report) == [("duplicated", what)]
    assert report.counts == {"lost": 0, "duplicated": 1, "orphaned": 0, "leaked": 0} and not report.clean


def test_a_step_re_executed_after_a_crash_is_not_a_duplicate() -> None:
    history = a_completed_run()
    history.insert(5, ev("step.started", step_name="ship", seq=2))  # started twice, completed once
    assert check(history, {keys.run_key("wf-1"): record(RunStatus.completed, RunStateKind.complete)}).clean


def test_a_run_that_started_and_vanished_is_lost() -> None:
    report = check(a_completed_run()[:-1], {})
    assert whats(report) == [("lost", "started, never ended, and no run record")]


def test_a_run_whose_record_belongs_to_a_newer_run_without_ending_is_lost() -> None:
    report = check(a_completed_run()[:-1], {keys.run_key("wf-1"): record(RunStatus.running, RunStateKind.wait, "R2")})
    assert whats(report) == [("lost", "started, never ended, and the run record is of run R2")]


def test_state_and_history_disagreeing_on_the_end_is_lost() -> None:
    ended_in_state = check(a_completed_run()[:-1], {keys.run_key("wf-1"): record(RunStatus.failed, RunStateKind.fail)})
    assert whats(ended_in_state) == [("lost", "its state says failed, its history has no terminal event")]
    ended_in_history = check(a_completed_run(), {keys.run_key("wf-1"): record(RunStatus.running, RunStateKind.wait)})
    assert whats(ended_in_history) == [("lost", "its history ended it (run.completed), its state says running")]


def test_a_due_step_nobody_started_is_lost_once_the_run_is_settled() -> None:
    history = a_completed_run()[:5]  # ... step.completed of step 1, then nothing
    state = {keys.run_key("wf-1"): record(RunStatus.running, RunStateKind.step, seq=2, step="ship")}
    report = check(history, state)
    assert whats(report) == [("lost", "step 'ship' (number 2) is due and nothing started it in 120s")]
    history[-1] = ev("step.completed", step_name="start", ts=RECENT)  # just now: the worker is about to start it
    assert check(history, state).clean


def test_a_running_step_and_a_waiting_run_are_not_lost() -> None:
    running = a_completed_run()[:6]  # step 2 started, not completed: it may be a long step
    state = {keys.run_key("wf-1"): record(RunStatus.running, RunStateKind.step, seq=2, step="ship")}
    assert check(running, state).clean
    waiting = [*a_completed_run()[:5], ev("wait.started")]
    assert check(waiting, {keys.run_key("wf-1"): record(RunStatus.running, RunStateKind.wait)}).clean


def test_a_waiting_run_with_accepted_events_left_in_its_inbox_is_lost() -> None:
    history = [*a_completed_run()[:5], ev("wait.started"), ev("event.received", event_name="approve")]
    state = {
        keys.run_key("wf-1"): record(RunStatus.running, RunStateKind.wait, inbox_head=0, inbox_next=1),
        keys.inbox_key("wf-1", 0): b"entry",
    }
    assert whats(check(history, state)) == [("lost", "waiting with 1 accepted event(s) never handled")]


def test_state_of_no_run_is_orphaned_and_an_ended_runs_state_under_retention_is_not() -> None:
    retention = TimerEntry(wf_id="wf-1", run_id="R1", kind=TimerKind.retention, seq=3, due_ms=NOW + 60_000)
    state: dict[bytes, bytes | None] = {
        # wf-1: run R1 ended and was followed by R2; R1's store waits for R1's retention timer.
        keys.run_key("wf-1"): record(RunStatus.running, RunStateKind.wait, "R2"),
        keys.store_key("wf-1", "R1", "kept"): b"1",
        keys.timer_key(NOW + 60_000, "wf-1", "retention"): msgspec.msgpack.encode(retention),
        keys.store_key("wf-1", "R2", "mine"): b"1",
        # Left behind: a store value and a journal entry of R0 (no timer), an inbox entry and a
        # timer of a workflow id that has no run record.
        keys.store_key("wf-1", "R0", "lost"): b"1",
        keys.journal_key(keys.journal_prefix("wf-1", "R0", 1), 0): b"1",
        keys.inbox_key("ghost", 0): b"1",
        keys.timer_key(NOW, "ghost", "wait"): msgspec.msgpack.encode(
            TimerEntry(wf_id="ghost", run_id="G1", kind=TimerKind.wait, seq=1, due_ms=NOW)
        ),
    }
    report = check([], state)
    assert sorted(whats(report)) == [
        ("orphaned", "a journal entry of a run that has no run record and no timer"),
        ("orphaned", "a store value of a run that has no run record and no timer"),
        ("orphaned", "a wait timer of a workflow id without a run record"),
        ("orphaned", "an inbox entry of a workflow id without a run record"),
    ]
    assert {(f.wf_id, f.run_id) for f in report.findings} == {("wf-1", "R0"), ("ghost", ""), ("ghost", "G1")}


def test_runs_started_before_the_read_and_rejected_starts_are_not_judged() -> None:
    history = [ev("step.completed", "OLD"), ev("run.completed", "OLD"), ev("run.rejected", "REJ", code="x")]
    report = check(history, {})
    assert report.clean and report.runs == 0 and report.history_records == 3


def test_undecodable_state_is_counted_not_judged() -> None:
    report = check([], {keys.run_key("wf-1"): b"\xc1 not msgpack"})
    assert report.clean and report.undecodable == 1


def test_findings_come_lost_first_and_the_report_is_json_ready() -> None:
    history = [*a_completed_run("R1", "a"), ev("run.completed", "R1", "a"), *a_completed_run("R2", "b")[:-1]]
    state = {keys.run_key("a"): record(RunStatus.completed, RunStateKind.complete, "R1", "a")}
    report = check(history, state)
    assert [f.kind for f in report.findings] == ["lost", "duplicated"]
    body = report.to_dict()
    assert body["clean"] is False and body["counts"] == {"lost": 1, "duplicated": 1, "orphaned": 0, "leaked": 0}
    assert body["findings"][0] == {"kind": "lost", "wf_id": "b", "run_id": "R2",
                                   "what": "started, never ended, and no run record"}  # fmt: skip


# -- schedules (issue 27) ---------------------------------------------------------------------------

MIN = 60_000


def schedule_state(
    sid: str = "s", *, last_tick: int, next_fire: int | None, timer: bool = True, **kw: Any
) -> dict[bytes, bytes | None]:
    from grctl.engine.records import OverlapPolicy, ScheduleRecord, SpecEra
    from grctl.engine.schedule_spec import ScheduleSpec

    spec = ScheduleSpec(cron=("* * * * *",))
    kw.setdefault("overlap", OverlapPolicy.allow_all)
    rec = ScheduleRecord(
        schedule_id=sid, wf_type="T", spec=spec, last_tick_ms=last_tick, next_tick_ms=next_fire, next_fire_ms=next_fire,
        eras=[SpecEra(since_ms=0, spec=spec)], **kw,
    )  # fmt: skip
    state: dict[bytes, bytes | None] = {keys.schedule_key(sid): msgspec.msgpack.encode(rec)}
    if timer and next_fire is not None:
        entry = TimerEntry(wf_id=sid, run_id="", kind=TimerKind.schedule, seq=0, due_ms=next_fire)
        state[keys.timer_key(next_fire, sid, "schedule")] = msgspec.msgpack.encode(entry)
    return state


def tick_runs(sid: str, ticks: list[int], *, how: str = "scheduled", prefix: str = "R") -> list[HistoryRecord]:
    history = []
    for i, tick in enumerate(ticks):
        run_id, wf_id = f"{prefix}{i}", f"{sid}:{tick}"
        history += [
            ev("run.started", run_id, wf_id, schedule_id=sid, scheduled_ms=tick, how=how),
            ev("run.completed", run_id, wf_id),
        ]
    return history


def run_records(sid: str, ticks: list[int], prefix: str = "R") -> dict[bytes, bytes | None]:
    return {
        keys.run_key(f"{sid}:{t}"): record(RunStatus.completed, RunStateKind.complete, f"{prefix}{i}", f"{sid}:{t}")
        for i, t in enumerate(ticks)
    }


T = (NOW // MIN - 10) * MIN  # ten minutes ago, on a minute


def test_a_schedule_with_a_run_per_tick_and_its_timer_is_clean() -> None:
    ticks = [T + i * MIN for i in range(5)]
    report = check(
        tick_runs("s", ticks),
        {**schedule_state(last_tick=ticks[-1], next_fire=ticks[-1] + MIN), **run_records("s", ticks)},
    )
    assert report.clean, whats(report)


def test_a_tick_started_twice_is_duplicated_but_a_backfill_may_rerun_it() -> None:
    ticks = [T, T + MIN]
    history = tick_runs("s", ticks) + tick_runs("s", [T], prefix="D") + tick_runs("s", [T], how="backfill", prefix="B")
    state = {**schedule_state(last_tick=ticks[-1], next_fire=ticks[-1] + MIN), **run_records("s", ticks)}
    state[keys.run_key(f"s:{T}")] = record(RunStatus.completed, RunStateKind.complete, "B0", f"s:{T}")
    report = check(history, state)
    assert [w for k, w in whats(report) if k == "duplicated"] == [f"tick {T} of schedule 's' started 2 runs"]


def test_a_missing_tick_and_a_schedule_without_its_timer_are_lost() -> None:
    ticks = [T, T + MIN, T + 3 * MIN]  # T + 2 min started nothing
    report = check(
        tick_runs("s", ticks),
        {**schedule_state(last_tick=ticks[-1], next_fire=ticks[-1] + MIN, timer=False), **run_records("s", ticks)},
    )
    assert sorted(whats(report)) == [
        ("lost", f"its next tick fires at {ticks[-1] + MIN} and no timer is armed"),
        ("lost", f"tick {T + 2 * MIN} of schedule 's' started no run"),
    ]


def test_ticks_not_yet_settled_and_skipping_policies_are_not_judged() -> None:
    from grctl.engine.records import OverlapPolicy

    recent_tick = (NOW // MIN) * MIN  # its run may not have started yet
    ticks = [T]
    report = check(
        tick_runs("s", ticks),
        {**schedule_state(last_tick=recent_tick, next_fire=recent_tick + MIN), **run_records("s", ticks)},
    )
    assert [w for _, w in whats(report)] == [f"tick {T + i * MIN} of schedule 's' started no run" for i in range(1, 10)]
    skipping = schedule_state(last_tick=T + 5 * MIN, next_fire=T + 6 * MIN, overlap=OverlapPolicy.skip)
    assert check(tick_runs("s", ticks), {**skipping, **run_records("s", ticks)}).clean


def test_a_schedule_timer_without_its_schedule_is_orphaned() -> None:
    state = schedule_state(last_tick=T, next_fire=T + MIN)
    del state[keys.schedule_key("s")]
    assert whats(check([], state)) == [
        ("orphaned", f"a schedule timer (due {T + MIN}) of a schedule id without a record")
    ]


# --------------------------------------------------------------------------- remote tasks (issue 28)


def a_run_with_a_remote_task(*middle: HistoryRecord) -> list[HistoryRecord]:
    return [
        ev("run.started"),
        ev("step.started", step_name="start", seq=1),
        ev("task.started", task_id="1.0", remote=True, queue="q"),
        *middle,
        ev("task.completed", task_id="1.0", remote=True, attempt=2),
        ev("step.started", step_name="start", seq=1),
        ev("step.completed", step_name="start"),
        ev("run.completed"),
    ]


DONE = {keys.run_key("wf-1"): record(RunStatus.completed, RunStateKind.complete)}


def test_a_remote_task_answered_once_per_attempt_is_clean() -> None:
    assert check(a_run_with_a_remote_task(ev("task.attempt_failed", task_id="1.0", attempt=1, remote=True)), DONE).clean


@pytest.mark.parametrize(
    ("extra", "what"),
    [
        (ev("task.completed", task_id="1.0", remote=True), "2 outcomes applied for remote task '1.0'"),
        (ev("task.failed", task_id="1.0", remote=True), "2 outcomes applied for remote task '1.0'"),
        (
            ev("task.attempt_failed", task_id="1.0", attempt=1, remote=True),
            "attempt 1 of remote task '1.0' failed 2 times",
        ),
    ],
)
def test_a_remote_answer_applied_twice_is_duplicated(extra: HistoryRecord, what: str) -> None:
    history = a_run_with_a_remote_task(ev("task.attempt_failed", task_id="1.0", attempt=1, remote=True), extra)
    assert whats(check(history, DONE)) == [("duplicated", what)]


def test_a_completed_run_whose_remote_task_never_got_its_outcome_is_lost() -> None:
    history = [e for e in a_run_with_a_remote_task() if e.kind != "task.completed"]
    assert whats(check(history, DONE)) == [("lost", "remote task '1.0' was sent, its outcome never applied")]


# --------------------------------------------------------------------------- permits (issue 29)


def _limiter(name: str = "api", in_use: int = 0, waiting: int = 0, **spec: Any) -> tuple[bytes, bytes]:
    from grctl.engine.records import LimiterRecord
    from grctl.models.limits import make_spec

    rec = LimiterRecord(name=name, spec=make_spec(**(spec or {"concurrency": 2})), in_use=in_use, waiting=waiting)
    return keys.limiter_key(name), msgspec.msgpack.encode(rec)


def _holder(run_id: str, wf_id: str = "wf-1", acquire_id: str = "1.0", name: str = "api") -> tuple[bytes, bytes]:
    from grctl.engine.records import LimitHolder

    holder = f"{run_id}/{acquire_id}"
    return keys.holder_key(name, holder), msgspec.msgpack.encode(LimitHolder(holder=holder, wf_id=wf_id, run_id=run_id))


def test_a_permit_counted_for_an_ended_run_is_a_leak_once_the_run_is_quiet() -> None:
    from grctl.engine.records import HeldPermit

    history = a_completed_run()
    ended = record(RunStatus.completed, RunStateKind.complete)
    state = dict([_limiter(in_use=1), _holder("R1"), (keys.run_key("wf-1"), ended)])
    report = check(history, state)
    assert report.counts["leaked"] == 1 and not report.clean
    assert "limiter 'api' counts permit 'R1/1.0': the run completed without it" in whats(report)[0][1]
    # The same while the run moved a moment ago: its release may be on its way, not judged yet.
    recent = [msgspec.structs.replace(e, ts_ms=RECENT) for e in history]
    assert check(recent, state).clean
    # A run that holds it (listed in its permits): clean.
    holding = record(RunStatus.running, RunStateKind.step, step="start", seq=1,
                     permits=(HeldPermit(limiter="api", acquire_id="1.0", seq=1),))  # fmt: skip
    running = [ev("run.started"), ev("step.started", step_name="start", seq=1)]
    assert check(running, dict([_limiter(in_use=1), _holder("R1"), (keys.run_key("wf-1"), holding)])).clean
    # The run holds it but the limiter does not count it: lost (the limit could be exceeded).
    report = check(running, dict([_limiter(in_use=0), (keys.run_key("wf-1"), holding)]))
    assert [k for k, _ in whats(report)] == ["lost"] and "which does not count it" in whats(report)[0][1]


def test_a_limiter_whose_counts_disagree_with_its_tables_or_that_sits_on_free_permits_is_reported() -> None:
    report = check([], dict([_limiter(in_use=3)]))
    assert whats(report) == [("leaked", "limiter 'api' says 3 in use and 0 waiting; it keeps 0 permits and 0 requests")]
    waiter_key = keys.waiter_key("api", 0)
    from grctl.engine.records import LimitWaiter

    waiter = msgspec.msgpack.encode(
        LimitWaiter(holder="R9/1.0", wf_id="wf-9", run_id="R9", acquire_id="1.0", arrival=0)
    )
    report = check([], dict([_limiter(waiting=1), (waiter_key, waiter)]))
    assert whats(report) == [("lost", "limiter 'api': 1 requests wait while permits are free")]
    rated = check([], dict([_limiter(waiting=1, rate="1/s"), (waiter_key, waiter)]))
    assert whats(rated) == [("lost", "limiter 'api': 1 requests wait for its rate and no timer is armed")]
    timer = TimerEntry(wf_id="api", run_id="", kind=TimerKind.limiter, seq=0, due_ms=NOW)
    timed = dict([_limiter(waiting=1, rate="1/s"), (waiter_key, waiter)])
    timed[keys.timer_key(NOW, "api", "limiter")] = msgspec.msgpack.encode(timer)
    assert check([], timed).clean  # the timer grants it: nothing stuck, and the timer is no orphan


def test_a_run_waiting_for_a_request_its_limiter_never_heard_of_is_lost() -> None:
    from grctl.engine.records import LimitWaiter, PendingAcquire

    waiting = record(RunStatus.running, RunStateKind.step, step="start", seq=1,
                     acquire=PendingAcquire(limiter="api", acquire_id="1.2", position=2))  # fmt: skip
    history = [ev("run.started"), ev("step.started", step_name="start", seq=1)]
    report = check(history, dict([_limiter(), (keys.run_key("wf-1"), waiting)]))
    assert whats(report) == [("lost", "waits for a permit of limiter 'api' ('R1/1.2') that the limiter never heard of")]
    # The same run once its limiter keeps its request waiting (behind a permit another run holds): clean.
    from grctl.engine.records import HeldPermit

    waiter = LimitWaiter(holder="R1/1.2", wf_id="wf-1", run_id="R1", acquire_id="1.2", arrival=0)
    holding = record(RunStatus.running, RunStateKind.step, run_id="R9", wf_id="wf-9", step="start", seq=1,
                     permits=(HeldPermit(limiter="api", acquire_id="1.0", seq=1),))  # fmt: skip
    state = dict([_limiter(in_use=1, waiting=1, concurrency=1), (keys.run_key("wf-1"), waiting),
                  (keys.run_key("wf-9"), holding), _holder("R9", wf_id="wf-9")])  # fmt: skip
    state[keys.waiter_key("api", 0)] = msgspec.msgpack.encode(waiter)
    assert check(history, state).clean, whats(check(history, state))
