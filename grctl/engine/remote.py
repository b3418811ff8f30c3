"""Remote tasks in the run state machine: pure transitions, no I/O, no clock (docs/remote-tasks.md).

A step that calls `ctx.remote_task(...)` suspends; its outcome ("remote") names the call. From
there everything is a transition of the run, committed like any other:

1. The suspension publishes the task's request (attempt 1) to the queue's topic, records the
   pending task in the run record (`RunRecord.remote`) and arms one durable timer: the first
   deadline of the attempt (schedule-to-start, start-to-close, heartbeat).
2. A task worker's answers (`TaskStartedCmd`, `TaskHeartbeatCmd`, `TaskResultCmd`) are input
   records on the run's partition of `directives`. Each is applied only if it names the run's
   pending task and its current attempt; anything else is dropped (`Transition.task_dropped`
   says why, the processor counts it). A started or heartbeat record moves the timer.
3. A result (or a final error) is written into the step's journal at the call's position and
   the step is made due again: it re-executes, replays its journal, and `ctx.remote_task`
   returns the recorded result without asking again.
4. An error or a timeout bumps the attempt at once (fencing any late answer of the old one) and,
   if the task's `RetryPolicy` allows, sends the new attempt after its back-off (a durable timer
   of kind `task` with `backoff` set); otherwise the error is journaled as the call's outcome.
5. A run that ends while a task is pending (cancel, terminate, workflow timeout), and an
   attempt that times out, publish a cancel record to the queue, so a task worker can stop the
   work nobody waits for.

The back-off jitter is derived from the run id, the task id and the attempt (a hash), not drawn:
the machine has no randomness of its own, and a replayed transition draws the same.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

import msgspec

from grctl.engine.records import (
    SCHEMA_VERSION,
    HistoryRecord,
    RemoteTask,
    RunRecord,
    TaskHeartbeatCmd,
    TaskResultCmd,
    TaskStartedCmd,
    TimerEntry,
    TimerKind,
)
from grctl.engine.retry import retry_delay_ms, should_retry
from grctl.models.history import HistoryKind
from grctl.models.retry import RetryPolicy

if TYPE_CHECKING:
    from grctl.engine.machine import Transition

#: The journal entry kind of a remote task's outcome.
JOURNAL_REMOTE: Final = "remote_task"
#: What a task's answer is dropped as (`Transition.task_dropped`, metrics label).
DropReason = Literal["late", "duplicate", "unknown_task", "run_ended"]
#: The error types a timed-out attempt fails with (the retry policy filters on these names).
TIMEOUT_ERRORS: Final = {
    "schedule_to_start": "ScheduleToStartTimeout",
    "start_to_close": "StartToCloseTimeout",
    "heartbeat": "HeartbeatTimeout",
}
#: Largest heartbeat details kept on the run (bigger ones are replaced by a note).
MAX_DETAILS_BYTES: Final = 4096

_details_encoder = msgspec.json.Encoder()


class TaskRequest(msgspec.Struct, kw_only=True):
    """A task request on `grctl.<ns>.tasks.<queue>` (JSON; docs/remote-tasks.md is the contract)."""

    type: str = "task_request"
    v: int = SCHEMA_VERSION
    wf_id: str
    run_id: str
    wf_type: str
    step: str
    task_id: str
    task: str
    attempt: int
    payload: Any = None
    idempotency_key: str
    scheduled_ms: int
    #: The run's priority for limiters, 1 (first) to 5 (last), inherited by its remote tasks.
    priority: int = 3
    schedule_to_start_ms: int | None = None
    start_to_close_ms: int | None = None
    heartbeat_ms: int | None = None
    #: Where the answers go: the namespace's `directives` topic, the run's partition of it.
    reply_topic: str = ""
    reply_partition: int = -1


class TaskCancel(msgspec.Struct, kw_only=True):
    """A cancel record on the queue's topic: the run no longer waits for this task."""

    type: str = "task_cancel"
    v: int = SCHEMA_VERSION
    wf_id: str
    run_id: str
    task_id: str
    attempt: int
    idempotency_key: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class TaskOut:
    """A record for a task queue: the processor fills the reply address and publishes it."""

    queue: str
    key: bytes
    record: TaskRequest | TaskCancel


def task_id_of(seq: int, position: int) -> str:
    """The id of a remote task call inside its run: the step's number and the call's journal position."""
    return f"{seq}.{position}"


def idempotency_key(run_id: str, task_id: str) -> str:
    """The key a task's own side effects can be deduplicated with (the same for every attempt)."""
    return f"{run_id}:{task_id}"


def attempt_deadline(rt: RemoteTask) -> tuple[int | None, str | None]:
    """The first deadline of the current attempt and which timeout it is (None: no deadline).

    Schedule-to-start runs from the request until a worker reports it started; start-to-close
    from the start (from the request if the worker never reports a start); heartbeat from the
    start or the last heartbeat, once started.
    """
    found: list[tuple[int, str]] = []
    if rt.started_ms is None and rt.schedule_to_start_ms:
        found.append((rt.scheduled_ms + rt.schedule_to_start_ms, "schedule_to_start"))
    if rt.start_to_close_ms:
        found.append(((rt.started_ms or rt.scheduled_ms) + rt.start_to_close_ms, "start_to_close"))
    if rt.started_ms is not None and rt.heartbeat_ms:
        found.append(((rt.heartbeat_at_ms or rt.started_ms) + rt.heartbeat_ms, "heartbeat"))
    if not found:
        return None, None
    due, kind = min(found)
    return due, kind


def jitter(run_id: str, task_id: str, attempt: int) -> float:
    """A number in [0, 1) fixed by the attempt (the machine draws nothing)."""
    digest = hashlib.blake2b(f"{run_id}:{task_id}:{attempt}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def policy_of(rt: RemoteTask) -> RetryPolicy | None:
    """The task's retry policy (None: one attempt)."""
    return msgspec.convert(rt.retry, RetryPolicy) if rt.retry else None


def timer_of(run: RunRecord, due_ms: int) -> TimerEntry:
    """The durable timer of a run's pending task."""
    return TimerEntry(wf_id=run.wf_id, run_id=run.run_id, kind=TimerKind.task, seq=run.seq, due_ms=due_ms)


def _rearm(tr: Transition, run: RunRecord, rt: RemoteTask, due_ms: int | None) -> RemoteTask:
    """Move the task's timer from `rt.due_ms` to `due_ms` (None: disarm)."""
    if rt.due_ms == due_ms:
        return rt
    if rt.due_ms is not None:
        tr.timers_clear.append(timer_of(run, rt.due_ms))
    if due_ms is not None:
        tr.timers_set.append(timer_of(run, due_ms))
    return msgspec.structs.replace(rt, due_ms=due_ms)


def send_attempt(tr: Transition, run: RunRecord, rt: RemoteTask, now_ms: int) -> RemoteTask:
    """Publish the request of `rt.attempt` and arm its first deadline; returns the task as it waits."""
    rt = msgspec.structs.replace(
        rt, scheduled_ms=now_ms, started_ms=None, heartbeat_at_ms=None, details=None, backoff=False, worker=""
    )
    request = TaskRequest(
        wf_id=run.wf_id,
        run_id=run.run_id,
        wf_type=run.wf_type,
        step=run.step or "",
        task_id=rt.task_id,
        task=rt.name,
        attempt=rt.attempt,
        payload=rt.payload,
        idempotency_key=idempotency_key(run.run_id, rt.task_id),
        scheduled_ms=now_ms,
        priority=run.priority,
        schedule_to_start_ms=rt.schedule_to_start_ms,
        start_to_close_ms=rt.start_to_close_ms,
        heartbeat_ms=rt.heartbeat_ms,
    )
    tr.tasks.append(TaskOut(rt.queue, run.wf_id.encode(), request))
    due, _kind = attempt_deadline(rt)
    return _rearm(tr, run, rt, due)


def schedule(tr: Transition, run: RunRecord, call: RemoteTask, now_ms: int, worker_id: str) -> RunRecord:
    """A step suspended on a remote task call: send attempt 1 and wait (step 1 of the module docstring)."""
    rt = msgspec.structs.replace(call, task_id=task_id_of(run.seq, call.position), attempt=1, due_ms=None)
    tr.history.append(
        _hist(
            run, HistoryKind.task_started, now_ms, worker_id,
            {"task_id": rt.task_id, "task_name": rt.name, "args": rt.payload, "step_name": run.step or "",
             "queue": rt.queue, "remote": True},
            _op(rt),
        )
    )  # fmt: skip
    rt = send_attempt(tr, run, rt, now_ms)
    return msgspec.structs.replace(run, remote=rt)


def _fence(run: RunRecord | None, cmd: TaskStartedCmd | TaskHeartbeatCmd | TaskResultCmd) -> DropReason | None:
    """Why an answer is not for the run's current attempt of its pending task (None: it is)."""
    if run is None:
        return "unknown_task"
    if run.run_id != cmd.run_id:
        return "run_ended"  # a newer run has the workflow id
    rt = run.remote
    if rt is None or rt.task_id != cmd.task_id:
        return "duplicate"  # answered already (or the run moved on, or ended)
    if cmd.attempt < rt.attempt or (cmd.attempt == rt.attempt and rt.backoff):
        return "late"
    if cmd.attempt > rt.attempt:
        return "unknown_task"  # an attempt never sent: not from a task worker that read a request
    return None


def on_started(tr: Transition, run: RunRecord | None, cmd: TaskStartedCmd | TaskHeartbeatCmd, now_ms: int) -> None:
    """A worker started the attempt, or heartbeats: the deadlines move (step 2)."""
    why = _fence(run, cmd)
    if why is not None or run is None or run.remote is None:
        tr.task_dropped = why or "unknown_task"
        return
    rt = run.remote
    started = rt.started_ms if rt.started_ms is not None else now_ms
    rt = msgspec.structs.replace(rt, started_ms=started, worker=cmd.worker or rt.worker)
    if isinstance(cmd, TaskHeartbeatCmd):
        details = cmd.details
        if details is not None and len(_details_encoder.encode(details)) > MAX_DETAILS_BYTES:
            details = {"note": f"heartbeat details over {MAX_DETAILS_BYTES} bytes are not kept"}
        rt = msgspec.structs.replace(rt, heartbeat_at_ms=now_ms, details=details)
    due, _kind = attempt_deadline(rt)
    rt = _rearm(tr, run, rt, due)
    tr.run = msgspec.structs.replace(run, remote=rt)


def on_result(tr: Transition, run: RunRecord | None, cmd: TaskResultCmd, now_ms: int, worker_id: str) -> bool:
    """An answer: apply it if it is for the current attempt (steps 3-4). True if the step is due again."""
    why = _fence(run, cmd)
    if why is not None or run is None or run.remote is None:
        tr.task_dropped = why or "unknown_task"
        return False
    rt = run.remote
    duration = max(0, now_ms - (rt.started_ms or rt.scheduled_ms))
    if cmd.ok:
        tr.history.append(
            _hist(
                run, HistoryKind.task_completed, now_ms, worker_id,
                {"task_id": rt.task_id, "task_name": rt.name, "output": {"result": cmd.result},
                 "duration_ms": duration, "attempt": rt.attempt, "worker": cmd.worker, "remote": True},
                _op(rt),
            )
        )  # fmt: skip
        _journal(tr, run, rt, {"ok": True, "result": cmd.result, "attempt": rt.attempt})
        tr.run = _clear(tr, run, rt)
        return True
    error = dict(cmd.error or {})
    error.setdefault("type", "RemoteTaskError")
    error.setdefault("message", "")
    return _failed(
        tr, run, rt, error, retryable=error.get("retryable") is not False, now_ms=now_ms, worker_id=worker_id
    )


def on_timer(tr: Transition, run: RunRecord, timer: TimerEntry, now_ms: int, worker_id: str) -> bool:
    """The task's timer fired: a back-off ended (send the attempt) or the attempt timed out. True if the step is due."""
    rt = run.remote
    if rt is None or timer.seq != run.seq or rt.due_ms != timer.due_ms:
        tr.skipped = True
        return False
    if rt.backoff:
        rt = msgspec.structs.replace(rt, due_ms=None)  # this timer has fired: nothing to clear
        tr.run = msgspec.structs.replace(run, remote=send_attempt(tr, run, rt, now_ms))
        return False
    _due, kind = attempt_deadline(rt)
    kind = kind or "start_to_close"
    error = {
        "type": TIMEOUT_ERRORS[kind],
        "message": f"attempt {rt.attempt} of remote task {rt.name!r} on queue {rt.queue!r} timed out ({kind})",
        "timeout": kind,
    }
    rt = msgspec.structs.replace(rt, due_ms=None)
    # Nobody waits for this attempt any more: a task worker still on it may stop.
    tr.tasks.append(TaskOut(rt.queue, run.wf_id.encode(), _cancel(run, rt, f"{kind} timeout")))
    return _failed(tr, run, rt, error, retryable=True, now_ms=now_ms, worker_id=worker_id)


def _failed(
    tr: Transition,
    run: RunRecord,
    rt: RemoteTask,
    error: dict[str, Any],
    *,
    retryable: bool,
    now_ms: int,
    worker_id: str,
) -> bool:
    """An attempt failed (an error answer or a timeout): retry by the policy, or journal the error."""
    policy = policy_of(rt)
    max_attempts = policy.effective_max_attempts if policy else 1
    if retryable and should_retry(policy, rt.attempt, str(error["type"])):
        assert policy is not None
        delay = retry_delay_ms(policy, rt.attempt, jitter(run.run_id, rt.task_id, rt.attempt))
        tr.history.append(
            _hist(
                run, HistoryKind.task_attempt_failed, now_ms, worker_id,
                {"task_id": rt.task_id, "task_name": rt.name, "attempt": rt.attempt, "max_attempts": max_attempts,
                 "error": error, "next_retry_delay_ms": delay, "remote": True},
                _op(rt),
            )
        )  # fmt: skip
        # The attempt moves on now: any answer of the failed one is late from here.
        nxt = msgspec.structs.replace(rt, attempt=rt.attempt + 1, started_ms=None, heartbeat_at_ms=None, details=None)
        if delay <= 0:
            tr.run = msgspec.structs.replace(run, remote=send_attempt(tr, run, nxt, now_ms))
        else:
            nxt = msgspec.structs.replace(nxt, backoff=True)
            tr.run = msgspec.structs.replace(run, remote=_rearm(tr, run, nxt, now_ms + delay))
        return False
    tr.history.append(
        _hist(
            run, HistoryKind.task_failed, now_ms, worker_id,
            {"task_id": rt.task_id, "task_name": rt.name, "error": error, "attempt": rt.attempt, "remote": True},
            _op(rt),
        )
    )  # fmt: skip
    _journal(tr, run, rt, {"ok": False, "error": error, "attempt": rt.attempt})
    tr.run = _clear(tr, run, rt)
    return True


def on_run_end(tr: Transition, run: RunRecord, reason: str) -> None:
    """The run ends while a task is pending: disarm its timer, tell the queue (step 5)."""
    rt = run.remote
    if rt is None:
        return
    if rt.due_ms is not None:
        tr.timers_clear.append(timer_of(run, rt.due_ms))
    tr.tasks.append(TaskOut(rt.queue, run.wf_id.encode(), _cancel(run, rt, reason)))


def _cancel(run: RunRecord, rt: RemoteTask, reason: str) -> TaskCancel:
    return TaskCancel(
        wf_id=run.wf_id,
        run_id=run.run_id,
        task_id=rt.task_id,
        attempt=rt.attempt,
        idempotency_key=idempotency_key(run.run_id, rt.task_id),
        reason=reason,
    )


def _op(rt: RemoteTask) -> str:
    """The operation id of a task's history events: its journal position (as a step's calls have)."""
    return f"{JOURNAL_REMOTE}:{rt.position}"


def _journal(tr: Transition, run: RunRecord, rt: RemoteTask, value: dict[str, Any]) -> None:
    tr.journal.append((run.seq, rt.position, [JOURNAL_REMOTE, rt.name, value]))


def _clear(tr: Transition, run: RunRecord, rt: RemoteTask) -> RunRecord:
    if rt.due_ms is not None:
        tr.timers_clear.append(timer_of(run, rt.due_ms))
    return msgspec.structs.replace(run, remote=None)


def _hist(run: RunRecord, kind: str, now_ms: int, worker_id: str, msg: dict[str, Any], op: str) -> HistoryRecord:
    return HistoryRecord(
        kind=kind, wf_id=run.wf_id, run_id=run.run_id, ts_ms=now_ms, msg=msg, worker_id=worker_id, op=op
    )


def describe(rt: RemoteTask | None) -> dict[str, Any] | None:
    """What describe and the UI show of a pending task."""
    if rt is None:
        return None
    due, kind = attempt_deadline(rt)
    return {
        "task_id": rt.task_id,
        "task": rt.name,
        "queue": rt.queue,
        "attempt": rt.attempt,
        "scheduled_ms": rt.scheduled_ms,
        "started_ms": rt.started_ms,
        "last_heartbeat_ms": rt.heartbeat_at_ms,
        "details": rt.details,
        "deadline_ms": rt.due_ms if rt.backoff else due,
        "deadline": "backoff" if rt.backoff else kind,
        "worker": rt.worker,
    }
