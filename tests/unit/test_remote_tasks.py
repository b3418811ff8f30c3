"""Remote tasks in the pure state machine (issue 28, docs/remote-tasks.md), without a broker.

A step suspends on `ctx.remote_task`; the transition publishes the request, arms the attempt's
deadline; answers are applied only for the current attempt; errors and timeouts retry by the
task's policy with the attempt bumped; a run that ends tells the queue.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from grctl.engine.machine import StepOutcome, Transition
from grctl.engine.records import (
    CancelCmd,
    RemoteTask,
    RunRecord,
    StartCmd,
    TaskHeartbeatCmd,
    TaskResultCmd,
    TaskStartedCmd,
    TimerEntry,
    TimerKind,
    decode_directive,
)
from grctl.engine.remote import (
    JOURNAL_REMOTE,
    TaskCancel,
    TaskRequest,
    attempt_deadline,
    idempotency_key,
    jitter,
)
from grctl.models.retry import RetryPolicy
from tests.unit.test_machine import T0, M, kinds, no_inbox, running_run

POSITION = 2
TIMEOUT = 30_000


def call(**kw: Any) -> RemoteTask:
    fields: dict[str, Any] = {
        "task_id": "",
        "name": "score",
        "queue": "scoring",
        "position": POSITION,
        "payload": {"x": 1},
        "start_to_close_ms": TIMEOUT,
    }
    fields.update(kw)
    return RemoteTask(**fields)


def suspend(run: RunRecord | None = None, now: int = T0, **kw: Any) -> Transition:
    run = run or running_run()
    out = StepOutcome(run_id=run.run_id, seq=run.seq, next_kind="remote", remote=call(**kw))
    return M.on_step_outcome(run, out, now, no_inbox)


def waiting(**kw: Any) -> RunRecord:
    tr = suspend(**kw)
    assert tr.run is not None and tr.run.remote is not None
    return tr.run


def result(run: RunRecord, *, attempt: int | None = None, ok: bool = True, **kw: Any) -> TaskResultCmd:
    assert run.remote is not None
    return TaskResultCmd(
        wf_id=run.wf_id,
        run_id=run.run_id,
        task_id=run.remote.task_id,
        attempt=run.remote.attempt if attempt is None else attempt,
        ok=ok,
        **kw,
    )


def answer(run: RunRecord, cmd: Any, now: int = T0 + 100, offset: int = 50) -> Transition:
    return M.apply(run, cmd, offset, now, no_inbox)


def fire(run: RunRecord, now: int) -> Transition:
    assert run.remote is not None and run.remote.due_ms is not None
    timer = TimerEntry(wf_id=run.wf_id, run_id=run.run_id, kind=TimerKind.task, seq=run.seq, due_ms=run.remote.due_ms)
    return M.on_timer(run, timer, now)


def after_backoff(tr: Transition, now: int = T0 + TIMEOUT + 10_000) -> Transition:
    """The retry back-off ends: the transition that sends the next attempt."""
    assert tr.run is not None and tr.run.remote is not None and tr.run.remote.backoff
    return fire(tr.run, now)


def requests(tr: Transition) -> list[TaskRequest]:
    return [t.record for t in tr.tasks if isinstance(t.record, TaskRequest)]


# --------------------------------------------------------------------------- scheduling


def test_a_suspended_step_publishes_the_request_and_arms_the_attempt_deadline() -> None:
    run = running_run()
    tr = suspend(run)
    assert tr.run is not None and tr.run.remote is not None
    rt = tr.run.remote
    assert (rt.task_id, rt.attempt, rt.due_ms) == (f"{run.seq}.{POSITION}", 1, T0 + TIMEOUT)
    assert tr.run.state == "step" and tr.run.seq == run.seq and not tr.execute
    [req] = requests(tr)
    assert (req.task, req.attempt, req.payload, req.wf_id, req.run_id) == ("score", 1, {"x": 1}, "wf-1", "run-1")
    assert req.idempotency_key == idempotency_key("run-1", rt.task_id) == f"run-1:{rt.task_id}"
    assert tr.tasks[0].queue == "scoring" and tr.tasks[0].key == b"wf-1"
    assert [t.due_ms for t in tr.timers_set] == [T0 + TIMEOUT]
    assert tr.timers_set[0].kind == TimerKind.task
    assert kinds(tr) == ["task.started"]
    assert tr.store == {} and tr.emits == []  # the step did not complete: it re-executes


def test_a_step_cancelled_while_it_ran_sends_no_request() -> None:
    run = msgspec.structs.replace(running_run(), cancel_pending=True, cancel_reason="stop")
    tr = suspend(run)
    assert tr.run is not None and tr.run.status == "cancelled"
    assert tr.tasks == []


def test_the_request_and_the_step_record_travel_as_json() -> None:
    tr = suspend()
    raw = msgspec.json.encode(tr.tasks[0].record)
    decoded = msgspec.json.decode(raw)
    assert decoded["type"] == "task_request" and decoded["task"] == "score" and decoded["v"] == 1


# --------------------------------------------------------------------------- results


def test_a_result_of_the_current_attempt_is_journaled_and_the_step_runs_again() -> None:
    run = waiting()
    tr = answer(run, result(run, result={"score": 0.9}))
    assert tr.task_dropped is None
    assert tr.journal == [
        (run.seq, POSITION, [JOURNAL_REMOTE, "score", {"ok": True, "result": {"score": 0.9}, "attempt": 1}])
    ]
    assert tr.run is not None and tr.run.remote is None and tr.run.state == "step" and tr.run.seq == run.seq
    assert tr.execute
    assert [t.due_ms for t in tr.timers_clear] == [T0 + TIMEOUT]
    assert kinds(tr) == ["task.completed"]
    assert tr.run.last_offset == 50


def test_a_duplicate_answer_is_dropped_and_counted() -> None:
    run = waiting()
    cmd = result(run, result=1)
    first = answer(run, cmd, offset=50)
    assert first.run is not None
    again = answer(first.run, cmd, offset=51)  # the same answer produced twice (a retried send)
    assert again.task_dropped == "duplicate"
    assert again.journal == [] and not again.execute and again.history == []


def test_a_redelivered_answer_record_is_skipped_by_offset() -> None:
    run = waiting()
    first = answer(run, result(run, result=1), offset=50)
    assert first.run is not None
    assert answer(first.run, result(run, result=1), offset=50).skipped


def test_an_answer_for_an_attempt_never_sent_is_dropped() -> None:
    run = waiting()
    tr = answer(run, result(run, attempt=7, result=1))
    assert tr.task_dropped == "unknown_task" and tr.journal == []


def test_an_answer_for_an_older_run_of_the_id_is_dropped() -> None:
    run = waiting()
    cmd = msgspec.structs.replace(result(run, result=1), run_id="run-0")
    assert answer(run, cmd).task_dropped == "run_ended"


def test_an_answer_for_an_ended_run_is_dropped() -> None:
    run = waiting()
    cancelled = M.apply(run, CancelCmd(wf_id="wf-1"), 40, T0 + 1, no_inbox).run
    assert cancelled is not None and cancelled.status == "cancelled"
    tr = answer(cancelled, TaskResultCmd(wf_id="wf-1", run_id="run-1", task_id=run.remote.task_id, attempt=1))  # type: ignore[union-attr]
    assert tr.task_dropped == "run_ended" and not tr.execute


# --------------------------------------------------------------------------- failures and retries

POLICY = msgspec.to_builtins(RetryPolicy(max_attempts=3, initial_delay_ms=1000, backoff_multiplier=2.0))


def test_an_error_is_retried_by_the_policy_with_the_attempt_bumped_at_once() -> None:
    run = waiting(retry=POLICY)
    err = {"type": "ValueError", "message": "bad"}
    tr = answer(run, result(run, ok=False, error=err), now=T0 + 100)
    assert tr.run is not None and tr.run.remote is not None
    rt = tr.run.remote
    assert (rt.attempt, rt.backoff, rt.due_ms) == (2, True, T0 + 100 + 1000)
    assert tr.tasks == [] and tr.journal == [] and not tr.execute
    assert kinds(tr) == ["task.attempt_failed"]
    # An answer of attempt 1 arriving now is late (fenced), even an "ok" one.
    late = answer(tr.run, result(run, attempt=1, result="late"), offset=60)
    assert late.task_dropped == "late" and late.journal == []
    # The back-off ends: attempt 2 is sent, its deadline armed.
    sent = fire(tr.run, T0 + 1100)
    assert sent.run is not None and sent.run.remote is not None
    assert [r.attempt for r in requests(sent)] == [2]
    assert sent.run.remote.due_ms == T0 + 1100 + TIMEOUT and not sent.run.remote.backoff
    done = answer(sent.run, result(sent.run, result="ok"), offset=70)
    assert done.execute and done.journal[0][2][2] == {"ok": True, "result": "ok", "attempt": 2}


def test_the_retry_delay_follows_the_policy_with_a_deterministic_jitter() -> None:
    policy = msgspec.to_builtins(RetryPolicy(max_attempts=5, initial_delay_ms=1000, jitter=0.5))
    run = waiting(retry=policy)
    tr1 = answer(run, result(run, ok=False, error={"type": "E"}), now=T0)
    tr2 = answer(run, result(run, ok=False, error={"type": "E"}), now=T0)
    assert tr1.run is not None and tr2.run is not None
    assert tr1.run.remote == tr2.run.remote  # the same transition however often it is computed
    delay = tr1.run.remote.due_ms - T0  # type: ignore[union-attr, operator]
    assert delay == int(1000 * (1 + jitter("run-1", run.remote.task_id, 1) * 0.5))  # type: ignore[union-attr]


def test_a_non_retryable_error_is_journaled_and_the_step_runs_again() -> None:
    run = waiting(retry=POLICY)
    err = {"type": "ValueError", "message": "bad", "retryable": False}
    tr = answer(run, result(run, ok=False, error=err))
    assert tr.execute and tr.run is not None and tr.run.remote is None
    [(_seq, _pos, entry)] = tr.journal
    assert entry[2]["ok"] is False and entry[2]["error"]["type"] == "ValueError"
    assert kinds(tr) == ["task.failed"]


def test_an_error_the_policy_filters_out_is_not_retried() -> None:
    policy = msgspec.to_builtins(RetryPolicy(max_attempts=3, non_retryable_errors=["ValueError"]))
    run = waiting(retry=policy)
    tr = answer(run, result(run, ok=False, error={"type": "ValueError"}))
    assert tr.execute and kinds(tr) == ["task.failed"]


def test_without_a_policy_the_first_error_is_final() -> None:
    run = waiting()
    tr = answer(run, result(run, ok=False, error={"type": "RuntimeError", "message": "x"}))
    assert tr.execute and kinds(tr) == ["task.failed"]


def test_attempts_run_out() -> None:
    policy = msgspec.to_builtins(RetryPolicy(max_attempts=2, initial_delay_ms=1))
    run = waiting(retry=policy)
    tr = after_backoff(answer(run, result(run, ok=False, error={"type": "E"})))
    assert tr.run is not None and tr.run.remote is not None and tr.run.remote.attempt == 2
    assert [r.attempt for r in requests(tr)] == [2]
    last = answer(tr.run, result(tr.run, ok=False, error={"type": "E"}), offset=60)
    assert last.execute and kinds(last) == ["task.failed"]
    assert last.journal[0][2][2]["attempt"] == 2


# --------------------------------------------------------------------------- timeouts and heartbeats


def test_start_to_close_timeout_fails_the_attempt_and_is_journaled_as_a_timeout() -> None:
    run = waiting()
    tr = fire(run, T0 + TIMEOUT)
    assert tr.execute and kinds(tr) == ["task.failed"]
    err = tr.journal[0][2][2]["error"]
    assert err["type"] == "StartToCloseTimeout" and err["timeout"] == "start_to_close"
    [cancel] = [t.record for t in tr.tasks]  # the task worker still on it may stop
    assert isinstance(cancel, TaskCancel) and cancel.attempt == 1 and cancel.reason == "start_to_close timeout"


def test_a_timeout_is_retried_with_the_attempt_bumped() -> None:
    run = waiting(retry=msgspec.to_builtins(RetryPolicy(max_attempts=2, initial_delay_ms=1)))
    timed = fire(run, T0 + TIMEOUT)
    assert kinds(timed) == ["task.attempt_failed"]
    tr = after_backoff(timed)
    assert tr.run is not None and tr.run.remote is not None and tr.run.remote.attempt == 2
    assert [r.attempt for r in requests(tr)] == [2]
    assert [type(t.record).__name__ for t in timed.tasks] == ["TaskCancel"]
    late = answer(tr.run, result(run, attempt=1, result="slow but done"), offset=61)
    assert late.task_dropped == "late"


def test_schedule_to_start_runs_until_a_worker_reports_the_start() -> None:
    run = waiting(schedule_to_start_ms=1000, start_to_close_ms=TIMEOUT)
    assert run.remote is not None and run.remote.due_ms == T0 + 1000
    started = answer(
        run, TaskStartedCmd(wf_id="wf-1", run_id="run-1", task_id=run.remote.task_id, attempt=1), now=T0 + 500
    )
    assert started.run is not None and started.run.remote is not None
    assert started.run.remote.due_ms == T0 + 500 + TIMEOUT  # from the start now
    assert [t.due_ms for t in started.timers_clear] == [T0 + 1000]
    assert [t.due_ms for t in started.timers_set] == [T0 + 500 + TIMEOUT]


def test_schedule_to_start_timeout() -> None:
    run = waiting(schedule_to_start_ms=1000)
    tr = fire(run, T0 + 1000)
    assert tr.journal[0][2][2]["error"]["type"] == "ScheduleToStartTimeout"


def test_heartbeats_extend_the_deadline_and_keep_their_details() -> None:
    run = waiting(heartbeat_ms=2000, start_to_close_ms=60_000)
    assert run.remote is not None
    tid = run.remote.task_id
    hb = TaskHeartbeatCmd(wf_id="wf-1", run_id="run-1", task_id=tid, attempt=1, details={"done": 10})
    tr = answer(run, hb, now=T0 + 100)
    assert tr.run is not None and tr.run.remote is not None
    assert tr.run.remote.due_ms == T0 + 100 + 2000 and tr.run.remote.details == {"done": 10}
    tr2 = answer(tr.run, msgspec.structs.replace(hb, details={"done": 20}), now=T0 + 1900, offset=51)
    assert tr2.run is not None and tr2.run.remote is not None and tr2.run.remote.due_ms == T0 + 1900 + 2000
    desc = M.describe(tr2.run, _to())[1].payload["remote_task"]
    assert desc["last_heartbeat_ms"] == T0 + 1900 and desc["details"] == {"done": 20}
    assert desc["deadline"] == "heartbeat" and desc["attempt"] == 1 and desc["queue"] == "scoring"
    # Silence: the heartbeat deadline fires.
    timed = fire(tr2.run, T0 + 3900)
    assert timed.journal[0][2][2]["error"]["type"] == "HeartbeatTimeout"


def test_oversized_heartbeat_details_are_not_kept() -> None:
    run = waiting(heartbeat_ms=2000)
    assert run.remote is not None
    hb = TaskHeartbeatCmd(wf_id="wf-1", run_id="run-1", task_id=run.remote.task_id, attempt=1, details="x" * 10_000)
    tr = answer(run, hb)
    assert tr.run is not None and tr.run.remote is not None and "note" in tr.run.remote.details


def test_a_heartbeat_of_an_old_attempt_moves_nothing() -> None:
    run = waiting(heartbeat_ms=2000, retry=msgspec.to_builtins(RetryPolicy(max_attempts=2, initial_delay_ms=1)))
    retried = after_backoff(fire(run, T0 + TIMEOUT)).run
    assert retried is not None and retried.remote is not None
    hb = TaskHeartbeatCmd(wf_id="wf-1", run_id="run-1", task_id=retried.remote.task_id, attempt=1)
    tr = answer(retried, hb)
    assert tr.task_dropped == "late" and tr.timers_set == []


def test_a_stale_task_timer_changes_nothing() -> None:
    run = waiting()
    timer = TimerEntry(wf_id="wf-1", run_id="run-1", kind=TimerKind.task, seq=run.seq, due_ms=T0 + 5)
    assert M.on_timer(run, timer, T0 + 10).skipped


# --------------------------------------------------------------------------- cancel and other ends


def test_cancelling_a_run_that_waits_on_a_task_ends_it_at_once_and_tells_the_queue() -> None:
    run = waiting()
    tr = M.apply(run, CancelCmd(wf_id="wf-1", reason="user"), 40, T0 + 1, no_inbox)
    assert tr.run is not None and tr.run.status == "cancelled" and tr.run.remote is None
    [out] = tr.tasks
    assert isinstance(out.record, TaskCancel) and out.queue == "scoring"
    assert (out.record.task_id, out.record.attempt) == (run.remote.task_id, 1)  # type: ignore[union-attr]
    assert T0 + TIMEOUT in [t.due_ms for t in tr.timers_clear if t.kind == TimerKind.task]


def test_a_workflow_timeout_tells_the_queue_too() -> None:
    tr0 = M.apply(None, StartCmd(wf_id="wf-1", run_id="run-1", wf_type="Order", timeout_ms=5000), 0, T0, no_inbox)
    assert tr0.run is not None
    run = waiting(run=tr0.run)
    timer = TimerEntry(wf_id="wf-1", run_id="run-1", kind=TimerKind.workflow, seq=0, due_ms=T0 + 5000)
    tr = M.on_timer(run, timer, T0 + 5000)
    assert tr.run is not None and tr.run.status == "timed_out"
    assert [type(t.record).__name__ for t in tr.tasks] == ["TaskCancel"]


# --------------------------------------------------------------------------- wire


@pytest.mark.parametrize(
    "raw",
    [
        b'{"t":"task_result","wf_id":"w","run_id":"r","task_id":"1.0","attempt":1,"ok":true,"result":{"a":1}}',
        b'{"t":"task_heartbeat","wf_id":"w","run_id":"r","task_id":"1.0","attempt":1,"details":"50%"}',
        b'{"t":"task_started","wf_id":"w","run_id":"r","task_id":"1.0","attempt":2,"worker":"go-1"}',
    ],
)
def test_task_workers_answer_in_json_on_directives(raw: bytes) -> None:
    rec = decode_directive(raw)
    assert isinstance(rec, TaskResultCmd | TaskHeartbeatCmd | TaskStartedCmd)
    assert rec.wf_id == "w" and rec.task_id == "1.0"


@pytest.mark.parametrize("raw", [b'{"t":"task_result"}', b"{not json", b'{"t":"nope","wf_id":"w"}'])
def test_a_malformed_json_answer_is_undecodable(raw: bytes) -> None:
    with pytest.raises(msgspec.DecodeError):
        decode_directive(raw)


def test_attempt_deadline_picks_the_first() -> None:
    rt = call(schedule_to_start_ms=100, start_to_close_ms=1000, heartbeat_ms=50, scheduled_ms=0)
    assert attempt_deadline(rt) == (100, "schedule_to_start")
    started = msgspec.structs.replace(rt, started_ms=80)
    assert attempt_deadline(started) == (130, "heartbeat")
    assert attempt_deadline(call(start_to_close_ms=None)) == (None, None)


def _to() -> Any:
    from grctl.engine.records import ReplyTo

    return ReplyTo(client_id="c", request_id="q", partition=0)


def test_describe_shows_the_waiting_task_in_the_cli() -> None:
    from grctl.cli.render import remote_task_text

    run = waiting(heartbeat_ms=2000)
    assert run.remote is not None
    hb = TaskHeartbeatCmd(wf_id="wf-1", run_id="run-1", task_id=run.remote.task_id, attempt=1, details={"done": 3})
    after = answer(run, msgspec.structs.replace(hb, worker="go-1")).run
    info = M.describe(after, _to())[1].payload["remote_task"]
    text = remote_task_text(info)
    assert text.startswith("score on queue scoring, attempt 1; heartbeat deadline ")
    assert '{"done":3}' in text.replace(" ", "") and text.endswith("worker go-1")
