"""The run state machine, without a broker: every transition of DESIGN.md §3 and BEHAVIOUR.md §2.1."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from grctl import defaults
from grctl.engine.machine import Emit, Machine, StepOutcome, Transition
from grctl.engine.records import (
    CancelCmd,
    ChildDoneCmd,
    EventCmd,
    InboxEntry,
    ParentRef,
    ReplyTo,
    RunRecord,
    StartCmd,
    TimerEntry,
    encoder,
)

RETENTION_MS = 7 * 24 * 3600 * 1000


class Cat:
    results: dict[str, str] = {}  # set per test

    def has_type(self, wf_type: str) -> bool:
        return wf_type in ("Order", "Child")

    def versions(self, wf_type: str) -> list[int]:
        return [1] if self.has_type(wf_type) else []

    def upgrade_auto(self, wf_type: str, version: int) -> bool:
        return False

    def has_step(self, wf_type: str, version: int, step: str) -> bool:
        return version in self.versions(wf_type)  # every step name the tests use

    def step_timeout_ms(self, wf_type: str, version: int, step: str) -> int | None:
        return {"charge": 10_000, "finish": None}.get(step)

    def has_event(self, wf_type: str, version: int, name: str) -> bool | None:
        if version not in self.versions(wf_type):
            return None
        return name in ("finish", "approve", "on_child")

    def events(self, wf_type: str, version: int) -> list[str]:
        return ["approve"] if version in self.versions(wf_type) else []

    def retention_ms(self, wf_type: str) -> int:
        return RETENTION_MS

    def results_topic(self, wf_type: str) -> str | None:
        return self.results.get(wf_type)


M = Machine(Cat(), "w_test")
T0 = 1_000_000


def no_inbox(_seq: int) -> InboxEntry | None:
    return None


def start(wf_id: str = "wf-1", run_id: str = "run-1", wf_type: str = "Order", **kw: Any) -> Transition:
    return M.apply(None, StartCmd(wf_id=wf_id, run_id=run_id, wf_type=wf_type, **kw), 0, T0, no_inbox)


def kinds(tr: Transition) -> list[str]:
    return [h.kind for h in tr.history]


def running_run() -> RunRecord:
    tr = start(input={"x": 1})
    assert tr.run is not None
    return tr.run


def test_start_creates_run_and_schedules_start_step() -> None:
    tr = start(input={"x": 1})
    run = tr.run
    assert run is not None
    assert (run.status, run.state, run.step, run.seq, run.step_payload) == (
        "running",
        "step",
        "start",
        1,
        {"x": 1},
    )
    assert kinds(tr) == ["run.started"]
    assert tr.sends == []  # the committed run record is the due step: no record of its own
    assert tr.execute
    assert run.step_timeout_ms == defaults.STEP_TIMEOUT_MS  # enforced by the executing worker
    assert tr.timers_set == []
    assert run.last_offset == 0


def test_start_duplicate_active_id_is_rejected() -> None:
    run = running_run()
    tr = M.apply(run, StartCmd(wf_id="wf-1", run_id="run-2", wf_type="Order"), 5, T0, no_inbox)
    assert kinds(tr) == ["run.rejected"]
    assert tr.history[0].run_id == "run-2"
    assert tr.history[0].msg is not None and tr.history[0].msg["code"] == "already_running"
    assert tr.history[0].msg["existing_run_id"] == "run-1"
    assert not tr.execute


def test_start_same_run_twice_is_skipped() -> None:
    run = running_run()
    tr = M.apply(run, StartCmd(wf_id="wf-1", run_id="run-1", wf_type="Order"), 7, T0, no_inbox)
    assert tr.skipped


def test_start_unknown_type_is_rejected() -> None:
    tr = start(wf_type="Nope")
    assert kinds(tr) == ["run.rejected"]
    assert tr.history[0].msg is not None and tr.history[0].msg["code"] == "type_not_registered"
    assert tr.run is None


def test_redelivered_record_is_skipped_by_offset() -> None:
    run = running_run()
    run.last_offset = 10
    tr = M.apply(run, EventCmd(wf_id="wf-1", event_name="finish"), 10, T0, no_inbox)
    assert tr.skipped


def test_start_after_terminal_run_starts_new_run() -> None:
    run = running_run()
    done = M.on_step_outcome(run, StepOutcome(run_id="run-1", seq=1, next_kind="complete", result="ok"), T0, no_inbox)
    assert done.run is not None and done.run.status == "completed"
    tr = M.apply(done.run, StartCmd(wf_id="wf-1", run_id="run-2", wf_type="Order"), 3, T0, no_inbox)
    assert tr.run is not None and tr.run.run_id == "run-2" and tr.run.seq == 1


def test_step_outcome_next_step() -> None:
    run = running_run()
    out = StepOutcome(run_id="run-1", seq=1, next_kind="step", next_step="charge", store={"k": b"\x01"})
    tr = M.on_step_outcome(run, out, T0 + 5, no_inbox)
    assert tr.run is not None
    assert (tr.run.step, tr.run.seq, tr.run.state) == ("charge", 2, "step")
    assert kinds(tr) == ["step.completed"]
    assert tr.store == {"k": b"\x01"}
    assert tr.sends == [] and tr.execute
    assert tr.run.step_timeout_ms == 10_000


def test_step_outcome_complete_and_fail_and_error() -> None:
    run = running_run()
    tr = M.on_step_outcome(run, StepOutcome(run_id="run-1", seq=1, next_kind="complete", result=42), T0, no_inbox)
    assert kinds(tr) == ["step.completed", "run.completed"]
    assert tr.history[1].msg is not None and tr.history[1].msg["result"] == 42
    err = {"type": "ValueError", "message": "boom"}
    tr = M.on_step_outcome(run, StepOutcome(run_id="run-1", seq=1, next_kind="error", error=err), T0, no_inbox)
    assert kinds(tr) == ["step.failed", "run.failed"]
    assert tr.run is not None and tr.run.status == "failed" and tr.run.error == err
    tr = M.on_step_outcome(run, StepOutcome(run_id="run-1", seq=1, next_kind="fail", error=err), T0, no_inbox)
    assert kinds(tr) == ["step.completed", "run.failed"]


def test_failed_step_store_writes_are_not_saved() -> None:
    run = running_run()
    out = StepOutcome(run_id="run-1", seq=1, next_kind="error", error={"type": "E", "message": ""}, store={"k": b"1"})
    assert M.on_step_outcome(run, out, T0, no_inbox).store == {}


def test_stale_step_outcome_is_skipped() -> None:
    run = running_run()
    assert M.on_step_outcome(run, StepOutcome(run_id="run-1", seq=7, next_kind="complete"), T0, no_inbox).skipped
    assert M.on_step_outcome(run, StepOutcome(run_id="other", seq=1, next_kind="complete"), T0, no_inbox).skipped


def wait_run(timeout_ms: int | None = None, on_timeout: str | None = None) -> RunRecord:
    run = running_run()
    out = StepOutcome(run_id="run-1", seq=1, next_kind="wait", wait_timeout_ms=timeout_ms, wait_on_timeout=on_timeout)
    tr = M.on_step_outcome(run, out, T0, no_inbox)
    assert tr.run is not None
    return tr.run


def test_wait_then_event_dispatches_handler() -> None:
    run = wait_run()
    assert run.state == "wait" and run.timer_due_ms is None  # no timeout: waits without limit
    tr = M.apply(run, EventCmd(wf_id="wf-1", event_name="finish", payload={"result": "x"}), 4, T0, no_inbox)
    assert kinds(tr) == ["event.received"]
    assert tr.run is not None and (tr.run.state, tr.run.step, tr.run.step_payload) == (
        "step",
        "finish",
        {"result": "x"},
    )
    assert tr.execute and not tr.inbox_put


def test_events_during_step_are_queued_then_delivered_in_order() -> None:
    run = running_run()
    tr1 = M.apply(run, EventCmd(wf_id="wf-1", event_name="approve", payload=1), 2, T0, no_inbox)
    assert tr1.run is not None and tr1.inbox_put and tr1.run.state == "step"
    tr2 = M.apply(tr1.run, EventCmd(wf_id="wf-1", event_name="finish", payload=2), 3, T0, no_inbox)
    assert tr2.run is not None
    inbox = {**tr1.inbox_put, **tr2.inbox_put}
    out = StepOutcome(run_id="run-1", seq=1, next_kind="wait")
    tr3 = M.on_step_outcome(tr2.run, out, T0, inbox.get)
    assert tr3.run is not None and tr3.run.step == "approve" and tr3.run.step_payload == 1
    assert tr3.inbox_delete == [0]
    tr4 = M.on_step_outcome(tr3.run, StepOutcome(run_id="run-1", seq=2, next_kind="wait"), T0, inbox.get)
    assert tr4.run is not None and tr4.run.step == "finish" and tr4.run.step_payload == 2


def test_event_errors_are_replied() -> None:
    to = ReplyTo(client_id="c", request_id="r", partition=0)
    tr = M.apply(None, EventCmd(wf_id="nope", event_name="finish", reply_to=to), 1, T0, no_inbox)
    assert tr.replies[0][1].code == "not_found"
    run = running_run()
    tr = M.apply(run, EventCmd(wf_id="wf-1", event_name="unknown", reply_to=to), 1, T0, no_inbox)
    assert tr.replies[0][1].code == "unknown_event"
    done = M.on_step_outcome(run, StepOutcome(run_id="run-1", seq=1, next_kind="complete"), T0, no_inbox).run
    tr = M.apply(done, EventCmd(wf_id="wf-1", event_name="finish", reply_to=to), 1, T0, no_inbox)
    assert tr.replies[0][1].code == "finished"


def test_cancel_in_step_waits_for_step_then_cancels() -> None:
    run = running_run()
    tr = M.apply(run, CancelCmd(wf_id="wf-1", reason="r"), 2, T0, no_inbox)
    assert kinds(tr) == ["run.cancel_received"]
    assert tr.run is not None and tr.run.cancel_pending
    out = StepOutcome(run_id="run-1", seq=1, next_kind="step", next_step="charge", store={"k": b"v"})
    tr2 = M.on_step_outcome(tr.run, out, T0, no_inbox)
    assert kinds(tr2) == ["step.completed", "run.cancelled"]
    assert tr2.store == {"k": b"v"}
    assert tr2.run is not None and tr2.run.status == "cancelled"


def test_cancel_in_wait_is_immediate() -> None:
    tr = M.apply(wait_run(), CancelCmd(wf_id="wf-1"), 2, T0, no_inbox)
    assert kinds(tr) == ["run.cancelled"]


def test_terminate_cancels_running_step() -> None:
    tr = M.apply(running_run(), CancelCmd(wf_id="wf-1", terminate=True, reason="stop"), 2, T0, no_inbox)
    assert kinds(tr) == ["run.terminated"] and tr.cancel_running
    assert tr.run is not None and tr.run.status == "terminated"


def test_cancel_of_finished_run_is_an_error_reply() -> None:
    run = running_run()
    done = M.on_step_outcome(run, StepOutcome(run_id="run-1", seq=1, next_kind="complete"), T0, no_inbox).run
    to = ReplyTo(client_id="c", request_id="r", partition=0)
    tr = M.apply(done, CancelCmd(wf_id="wf-1", reply_to=to), 9, T0, no_inbox)
    assert tr.replies[0][1].ok is False and tr.replies[0][1].code == "finished"


def test_step_timeout_outcome_fails_run() -> None:
    run = running_run()
    tr = M.on_step_outcome(run, StepOutcome(run_id="run-1", seq=1, next_kind="timeout"), T0, no_inbox)
    assert kinds(tr) == ["step.timeout", "run.failed"]
    assert tr.run is not None and tr.run.error == {"type": "StepTimeout", "message": "step start timed out"}


def test_step_timers_are_not_durable() -> None:
    run = running_run()
    assert M.on_timer(run, TimerEntry(wf_id="wf-1", run_id="run-1", kind="step", seq=1, due_ms=T0), T0 + 1).skipped


def test_stale_timer_is_skipped() -> None:
    run = running_run()
    assert M.on_timer(run, TimerEntry(wf_id="wf-1", run_id="run-1", kind="step", seq=0, due_ms=1), T0).skipped


@pytest.mark.parametrize(
    ("on_timeout", "expected"), [("finish", ["wait.timed_out"]), (None, ["wait.timed_out", "run.failed"])]
)
def test_wait_timer(on_timeout: str | None, expected: list[str]) -> None:
    run = wait_run(100, on_timeout)
    assert run.timer_due_ms == T0 + 100
    tr = M.on_timer(run, TimerEntry(wf_id="wf-1", run_id="run-1", kind="wait", seq=1, due_ms=T0 + 100), T0 + 100)
    assert kinds(tr) == expected
    if on_timeout:
        assert tr.run is not None and tr.run.step == "finish" and tr.execute
    else:
        assert tr.run is not None and tr.run.error is not None and tr.run.error["type"] == "WaitTimeout"


def test_workflow_timeout() -> None:
    tr = start(timeout_ms=2000)
    run = tr.run
    assert run is not None and run.deadline_ms == T0 + 2000
    assert {t.kind for t in tr.timers_set} == {"workflow"}
    tr2 = M.on_timer(run, TimerEntry(wf_id="wf-1", run_id="run-1", kind="workflow", seq=0, due_ms=T0 + 2000), T0 + 2000)
    assert kinds(tr2) == ["run.timeout"]
    assert tr2.run is not None and tr2.run.status == "timed_out"


def test_child_completion_notifies_parent() -> None:
    parent = ParentRef(wf_id="p", run_id="pr", wf_type="Order", callback_step="on_child")
    tr = start(wf_id="c", run_id="cr", wf_type="Child", parent=parent)
    assert tr.run is not None
    done = M.on_step_outcome(tr.run, StepOutcome(run_id="cr", seq=1, next_kind="complete", result="r"), T0, no_inbox)
    cmd = done.sends[0]
    assert isinstance(cmd, ChildDoneCmd)
    assert (cmd.wf_id, cmd.event_name, cmd.outcome["status"], cmd.outcome["result"]) == (
        "p",
        "on_child",
        "completed",
        "r",
    )


def test_suspend_arms_resume_timer_and_resume_re_executes_same_step() -> None:
    run = running_run()
    tr = M.on_step_outcome(
        run, StepOutcome(run_id="run-1", seq=1, next_kind="suspend", resume_at_ms=T0 + 5000), T0, no_inbox
    )
    assert tr.run is not None and tr.run.suspended_until_ms == T0 + 5000 and tr.run.seq == 1
    assert [(t.kind, t.due_ms) for t in tr.timers_set] == [("resume", T0 + 5000)]
    assert not tr.history and not tr.execute
    resumed = M.on_timer(tr.run, tr.timers_set[0], T0 + 5000)
    assert resumed.execute and resumed.run is not None
    assert resumed.run.suspended_until_ms is None and resumed.run.seq == 1 and resumed.run.step == "start"


def test_cancel_of_suspended_step_is_immediate() -> None:
    run = running_run()
    tr = M.on_step_outcome(
        run, StepOutcome(run_id="run-1", seq=1, next_kind="suspend", resume_at_ms=T0 + 5000), T0, no_inbox
    )
    cancelled = M.apply(tr.run, CancelCmd(wf_id="wf-1"), 3, T0, no_inbox)
    assert kinds(cancelled) == ["run.cancelled"]
    assert [(t.kind, t.due_ms) for t in cancelled.timers_clear] == [("resume", T0 + 5000)]


def test_a_start_not_before_a_later_time_waits_for_it_then_executes() -> None:
    """A schedule's tick committed ahead: the run exists, its start step waits for the tick."""
    later = T0 + 5000
    tr = start(input={"x": 1}, timeout_ms=60_000, not_before_ms=later, schedule_id="s", scheduled_ms=later)
    run = tr.run
    assert run is not None and not tr.execute
    assert (run.state, run.step, run.seq, run.suspended_until_ms, run.started_ms) == ("step", "start", 1, later, later)
    assert kinds(tr) == ["run.started"] and tr.history[0].msg["not_before_ms"] == later
    # The workflow timeout counts from the run's start (the tick), not from its firing.
    assert sorted((t.kind, t.due_ms) for t in tr.timers_set) == [("resume", later), ("workflow", later + 60_000)]
    (resume,) = [t for t in tr.timers_set if t.kind == "resume"]
    resumed = M.on_timer(run, resume, later)
    assert resumed.execute and resumed.run is not None and resumed.run.suspended_until_ms is None
    assert (resumed.run.step, resumed.run.seq, resumed.run.step_payload) == ("start", 1, {"x": 1})


def test_a_start_not_before_a_past_time_executes_at_once() -> None:
    tr = start(not_before_ms=T0 - 1)
    assert tr.execute and tr.run is not None and tr.run.suspended_until_ms is None and tr.run.started_ms == T0


def test_a_start_waiting_for_its_time_is_cancelled_at_once() -> None:
    tr = start(not_before_ms=T0 + 5000)
    cancelled = M.apply(tr.run, CancelCmd(wf_id="wf-1", run_id="run-1", reason="withdrawn"), 3, T0 + 1, no_inbox)
    assert kinds(cancelled) == ["run.cancelled"] and cancelled.run is not None
    assert cancelled.run.status == "cancelled" and not cancelled.execute
    assert [(t.kind, t.due_ms) for t in cancelled.timers_clear] == [("resume", T0 + 5000)]


def test_machine_never_mutates_the_run_it_is_given() -> None:
    """Workers cache decoded run records and hand the same object to the machine again."""
    parent = ParentRef(wf_id="p", run_id="pr", wf_type="Order", callback_step=None)
    waiting = wait_run(timeout_ms=5000, on_timeout="finish")
    child = start(wf_id="c", run_id="cr", wf_type="Child", parent=parent).run
    assert child is not None and waiting.timer_due_ms is not None
    timer = TimerEntry(wf_id="wf-1", run_id="run-1", kind="wait", seq=1, due_ms=waiting.timer_due_ms)
    child_done = ChildDoneCmd(
        wf_id="wf-1", run_id="run-1", event_name="", child_wf_id="c", child_run_id="cr", outcome={}
    )
    cases: list[tuple[RunRecord, Callable[[RunRecord], Transition]]] = [
        (running_run(), lambda r: M.apply(r, EventCmd(wf_id="wf-1", event_name="approve"), 7, T0, no_inbox)),
        (waiting, lambda r: M.apply(r, EventCmd(wf_id="wf-1", event_name="finish"), 7, T0, no_inbox)),
        (running_run(), lambda r: M.apply(r, child_done, 7, T0, no_inbox)),
        (running_run(), lambda r: M.apply(r, CancelCmd(wf_id="wf-1"), 7, T0, no_inbox)),
        (waiting, lambda r: M.apply(r, CancelCmd(wf_id="wf-1", terminate=True), 7, T0, no_inbox)),
        (
            running_run(),
            lambda r: M.on_step_outcome(
                r, StepOutcome(run_id="run-1", seq=1, next_kind="wait", wait_timeout_ms=10), T0, no_inbox
            ),
        ),
        (waiting, lambda r: M.on_timer(r, timer, T0 + 5000)),
        (
            child,
            lambda r: M.on_step_outcome(
                r, StepOutcome(run_id="cr", seq=1, next_kind="complete", result="r"), T0, no_inbox
            ),
        ),
    ]
    for run, transition in cases:
        before = encoder.encode(run)
        tr = transition(run)
        assert not tr.skipped and tr.run is not None
        assert encoder.encode(run) == before, f"the machine changed its input run: {tr!r}"
        assert tr.run is not run


# --------------------------------------------------------------------------------------------
# Emits (ctx.emit) and the results topic (issue 17)


def test_a_completed_step_carries_its_emits_and_a_failed_one_none() -> None:
    emit = Emit("shipments", b"o-1", b'{"id":"o-1"}', [("h", b"v")])
    run = running_run()
    out = StepOutcome(run_id="run-1", seq=1, next_kind="step", next_step="finish", emits=[emit])
    assert M.on_step_outcome(run, out, T0, no_inbox).emits == [emit]
    done = StepOutcome(run_id="run-1", seq=1, next_kind="complete", result=1, emits=[emit])
    assert M.on_step_outcome(run, done, T0, no_inbox).emits == [emit]
    err = {"type": "ValueError", "message": "x"}
    failed = StepOutcome(run_id="run-1", seq=1, next_kind="error", error=err, emits=[emit])
    assert M.on_step_outcome(run, failed, T0, no_inbox).emits == []


def test_an_ended_run_publishes_its_outcome_to_the_results_topic(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Cat, "results", {"Order": "order-results"})
    run = running_run()
    tr = M.on_step_outcome(run, StepOutcome(run_id="run-1", seq=1, next_kind="complete", result={"n": 2}), T0, no_inbox)
    (rec,) = tr.emits
    assert (rec.topic, rec.key, rec.headers) == ("order-results", b"wf-1", [("grctl.status", b"completed")])
    value = msgspec.json.decode(rec.value)
    assert value["status"] == "completed" and value["result"] == {"n": 2} and value["run_id"] == "run-1"
    assert value["ended_ms"] == T0 and value["duration_ms"] == T0 - run.started_ms
    err = {"type": "ValueError", "message": "x"}
    tr = M.on_step_outcome(
        running_run(), StepOutcome(run_id="run-1", seq=1, next_kind="error", error=err), T0, no_inbox
    )
    (rec,) = tr.emits
    assert msgspec.json.decode(rec.value)["error"] == err
    assert rec.headers == [("grctl.status", b"failed")]


def test_no_results_topic_no_record() -> None:
    tr = M.on_step_outcome(running_run(), StepOutcome(run_id="run-1", seq=1, next_kind="complete"), T0, no_inbox)
    assert tr.emits == []


def test_identity_of_operator_actions_is_recorded_and_bounded() -> None:
    """Start, event, cancel (also when it waits for the step) and terminate record who asked."""
    tr = M.apply(None, StartCmd(wf_id="wf-9", run_id="run-9", wf_type="Order", identity="svc-a"), 0, T0, no_inbox)
    assert tr.history[0].msg["identity"] == "svc-a" and tr.run is not None and tr.run.started_by == "svc-a"
    untold = M.apply(None, StartCmd(wf_id="wf-8", run_id="run-8", wf_type="Order"), 0, T0, no_inbox)
    assert "identity" not in untold.history[0].msg  # a parent's or a schedule's start names nobody

    tr = M.apply(wait_run(), EventCmd(wf_id="wf-1", event_name="approve", identity="bob"), 2, T0, no_inbox)
    assert tr.history[0].kind == "event.received" and tr.history[0].msg["identity"] == "bob"

    tr = M.apply(running_run(), CancelCmd(wf_id="wf-1", reason="r", identity="carol"), 2, T0, no_inbox)
    assert tr.history[0].msg["identity"] == "carol"
    assert tr.run is not None and tr.run.cancel_by == "carol"
    out = StepOutcome(run_id="run-1", seq=1, next_kind="step", next_step="charge")
    tr2 = M.on_step_outcome(tr.run, out, T0, no_inbox)
    assert kinds(tr2) == ["step.completed", "run.cancelled"] and tr2.history[-1].msg["identity"] == "carol"

    long = "x" * 500
    tr = M.apply(running_run(), CancelCmd(wf_id="wf-1", terminate=True, identity=long), 2, T0, no_inbox)
    who = tr.history[0].msg["identity"]
    assert len(who) == 200 and who.endswith("…")
    assert tr.run is not None and tr.run.cancel_by == who
    _to, reply = Machine.describe(tr.run, ReplyTo(client_id="c", request_id="r", partition=0))
    assert reply.payload["cancel_by"] == who
