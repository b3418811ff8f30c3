"""History events: the append-only log of every run, as read from the `history` topic."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final

import msgspec

from grctl.models.errors import ErrorDetails
from grctl.models.run_info import RunStatus


class HistoryKind(StrEnum):
    """Every kind of history event, with its wire string."""

    run_scheduled = "run.scheduled"
    run_started = "run.started"
    run_completed = "run.completed"
    run_failed = "run.failed"
    run_cancel_received = "run.cancel_received"
    run_cancelled = "run.cancelled"
    run_terminated = "run.terminated"
    run_timeout = "run.timeout"
    run_rejected = "run.rejected"
    run_parked = "run.parked"
    run_resumed = "run.resumed"
    run_upgraded = "run.upgraded"
    wait_started = "wait.started"
    wait_timed_out = "wait.timed_out"
    event_received = "event.received"
    step_started = "step.started"
    step_completed = "step.completed"
    step_failed = "step.failed"
    step_cancelled = "step.cancelled"
    step_timeout = "step.timeout"
    task_started = "task.started"
    task_completed = "task.completed"
    task_failed = "task.failed"
    task_attempt_failed = "task.attempt_failed"
    task_cancelled = "task.cancelled"
    timestamp_recorded = "timestamp.recorded"
    random_recorded = "random.recorded"
    uuid_recorded = "uuid.recorded"
    sleep_recorded = "sleep.recorded"
    child_started = "child.started"
    parent_event_sent = "parent.event_sent"
    child_event_sent = "child.event_sent"
    child_cancel_requested = "child.cancel_requested"
    child_completed = "child.completed"
    patch_recorded = "patch.recorded"
    permit_requested = "permit.requested"
    permit_granted = "permit.granted"
    permit_refused = "permit.refused"
    permit_released = "permit.released"


#: The history kinds that end a run, and the status each leaves the run in: the one table of
#: it (history readers, metrics and traces all look it up here). Keys and values are `StrEnum`s,
#: so the wire strings work too: ``RUN_END_STATUS.get("run.timeout") == "timed_out"``.
RUN_END_STATUS: Final[Mapping[HistoryKind, RunStatus]] = MappingProxyType(
    {
        HistoryKind.run_completed: RunStatus.completed,
        HistoryKind.run_failed: RunStatus.failed,
        HistoryKind.run_cancelled: RunStatus.cancelled,
        HistoryKind.run_terminated: RunStatus.terminated,
        HistoryKind.run_timeout: RunStatus.timed_out,
    }
)
#: The history kinds that end a run (the keys of `RUN_END_STATUS`).
TERMINAL_KINDS: Final = frozenset(RUN_END_STATUS)


class _Payload(msgspec.Struct, kw_only=True, omit_defaults=True):
    pass


class RunScheduled(_Payload):
    pass


class RunStarted(_Payload):
    wf_type: str = ""
    input: Any = None
    parent_wf_id: str | None = None
    parent_run_id: str | None = None
    timeout_ms: int | None = None
    version: int = 1
    #: Started by a schedule: its id, the tick the run serves, and how the tick came.
    schedule_id: str | None = None
    scheduled_ms: int | None = None
    how: str | None = None
    #: Who started it (the client's identity); None for a child or a schedule's tick.
    identity: str | None = None


class RunCompleted(_Payload):
    result: Any = None
    duration_ms: int = 0


class RunFailed(_Payload):
    error: ErrorDetails | None = None
    duration_ms: int = 0


class RunCancelReceived(_Payload):
    reason: str | None = None
    identity: str | None = None


class RunCancelled(_Payload):
    reason: str | None = None
    duration_ms: int = 0
    identity: str | None = None


class RunTerminated(_Payload):
    reason: str | None = None
    duration_ms: int = 0
    identity: str | None = None


class RunTimeout(_Payload):
    duration_ms: int = 0


class RunRejected(_Payload):
    """grctl extension: a start was refused (duplicate id or unknown type)."""

    code: str = ""
    message: str = ""
    existing_run_id: str | None = None


class WaitStarted(_Payload):
    timeout_ms: int | None = None
    on_timeout: str | None = None


class WaitTimedOut(_Payload):
    on_timeout: str | None = None


class EventReceived(_Payload):
    event_name: str = ""
    payload: Any = None
    identity: str | None = None


class StepStarted(_Payload):
    step_name: str = ""
    seq: int = 0
    attempt: int = 0


class StepCompleted(_Payload):
    step_name: str = ""
    duration_ms: int = 0


class StepFailed(_Payload):
    step_name: str = ""
    error: ErrorDetails | None = None


class StepCancelled(_Payload):
    step_name: str = ""
    reason: str | None = None


class StepTimeout(_Payload):
    step_name: str = ""


class TaskStarted(_Payload):
    task_id: str = ""
    task_name: str = ""
    args: Any = None
    step_name: str = ""
    #: A remote task (`ctx.remote_task`): its queue.
    remote: bool = False
    queue: str = ""


class TaskCompleted(_Payload):
    task_id: str = ""
    task_name: str = ""
    output: Any = None
    duration_ms: int = 0
    #: A remote task: the attempt that answered, and the task worker's name.
    remote: bool = False
    attempt: int | None = None
    worker: str = ""


class TaskFailed(_Payload):
    task_id: str = ""
    task_name: str = ""
    error: ErrorDetails | None = None
    duration_ms: int = 0
    remote: bool = False
    attempt: int | None = None


class TaskAttemptFailed(_Payload):
    task_id: str = ""
    task_name: str = ""
    attempt: int = 0
    max_attempts: int = 1
    error: ErrorDetails | None = None
    next_retry_delay_ms: int = 0
    duration_ms: int = 0
    remote: bool = False


class TaskCancelled(_Payload):
    task_id: str = ""
    task_name: str = ""


class TimestampRecorded(_Payload):
    value: datetime | None = None


class RandomRecorded(_Payload):
    value: float = 0.0


class UuidRecorded(_Payload):
    value: str = ""


class SleepRecorded(_Payload):
    """Written when a `ctx.sleep` has ended: its duration and its wake-up deadline (epoch ms)."""

    duration_ms: int = 0
    until_ms: int | None = None


class ChildWorkflowStarted(_Payload):
    run_id: str = ""
    wf_type: str = ""
    wf_id: str = ""
    input: Any = None


class ParentEventSent(_Payload):
    event_name: str = ""
    payload: Any = None
    parent_wf_type: str | None = None
    parent_wf_id: str | None = None


class RunParked(_Payload):
    """grctl extension: the run needs code no worker owning it serves; it waits for it (status awaiting_code)."""

    missing: str = ""
    version: int = 1


class RunResumed(_Payload):
    """grctl extension: a worker that serves the run's code resumed it."""

    version: int = 1


class RunUpgraded(_Payload):
    """grctl extension: a run of a type declared `upgrade="auto"` moved to a newer version at its next step."""

    from_version: int = 1
    to_version: int = 1


class ChildEventSent(_Payload):
    """grctl extension: a step sent an event to one of its children (`handle.send`)."""

    child_wf_id: str = ""
    event_name: str = ""
    payload: Any = None


class ChildCancelRequested(_Payload):
    """grctl extension: a step cancelled or terminated one of its children."""

    child_wf_id: str = ""
    reason: str | None = None
    terminate: bool = False


class ChildCompleted(_Payload):
    """grctl extension: a child without a callback step ended; its outcome is kept for the awaiting step."""

    child_wf_id: str = ""
    child_run_id: str = ""
    outcome: Any = None


class PatchRecorded(_Payload):
    """grctl extension: a step took the new branch of a patch (`ctx.patched`)."""

    patch_id: str = ""


class PermitEvent(_Payload):
    """grctl extension: a step's request for a permit of a limiter (`ctx.limit`), and what became of it.

    `permit.requested` when the step suspends for it; `permit.granted` (with `waited_ms`) or
    `permit.refused` (with `error`) when the limiter answered; `permit.released` (with `held_ms`)
    when the section, its step or its run ended.
    """

    limiter: str = ""
    acquire_id: str = ""
    step_name: str = ""
    key: str = ""
    fairness: str = ""
    priority: int | None = None
    waited_ms: int | None = None
    #: When the limiter received the request and granted it (its own record times, epoch ms).
    requested_ms: int | None = None
    granted_ms: int | None = None
    held_ms: int | None = None
    error: Any = None


PAYLOAD_TYPES: dict[HistoryKind, type[_Payload]] = {
    HistoryKind.run_scheduled: RunScheduled,
    HistoryKind.run_started: RunStarted,
    HistoryKind.run_completed: RunCompleted,
    HistoryKind.run_failed: RunFailed,
    HistoryKind.run_cancel_received: RunCancelReceived,
    HistoryKind.run_cancelled: RunCancelled,
    HistoryKind.run_terminated: RunTerminated,
    HistoryKind.run_timeout: RunTimeout,
    HistoryKind.run_rejected: RunRejected,
    HistoryKind.wait_started: WaitStarted,
    HistoryKind.wait_timed_out: WaitTimedOut,
    HistoryKind.event_received: EventReceived,
    HistoryKind.step_started: StepStarted,
    HistoryKind.step_completed: StepCompleted,
    HistoryKind.step_failed: StepFailed,
    HistoryKind.step_cancelled: StepCancelled,
    HistoryKind.step_timeout: StepTimeout,
    HistoryKind.task_started: TaskStarted,
    HistoryKind.task_completed: TaskCompleted,
    HistoryKind.task_failed: TaskFailed,
    HistoryKind.task_attempt_failed: TaskAttemptFailed,
    HistoryKind.task_cancelled: TaskCancelled,
    HistoryKind.timestamp_recorded: TimestampRecorded,
    HistoryKind.random_recorded: RandomRecorded,
    HistoryKind.uuid_recorded: UuidRecorded,
    HistoryKind.sleep_recorded: SleepRecorded,
    HistoryKind.child_started: ChildWorkflowStarted,
    HistoryKind.parent_event_sent: ParentEventSent,
    HistoryKind.run_parked: RunParked,
    HistoryKind.run_resumed: RunResumed,
    HistoryKind.run_upgraded: RunUpgraded,
    HistoryKind.child_event_sent: ChildEventSent,
    HistoryKind.child_cancel_requested: ChildCancelRequested,
    HistoryKind.patch_recorded: PatchRecorded,
    HistoryKind.child_completed: ChildCompleted,
    HistoryKind.permit_requested: PermitEvent,
    HistoryKind.permit_granted: PermitEvent,
    HistoryKind.permit_refused: PermitEvent,
    HistoryKind.permit_released: PermitEvent,
}


class HistoryEvent(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One history event of one run.

    Attributes:
        wf_id: the workflow id.
        run_id: the run id.
        kind: what happened.
        msg: the kind's payload (`RunCompleted`, `StepStarted`, ...).
        timestamp: when the worker recorded it (UTC).
        worker_id: the worker that wrote it ("" for engine transitions without one).
        operation_id: the journal operation this event records, if any.
        partition: the `history` partition it was read from (-1 if not read from Kafka).
        offset: its offset in that partition (-1 if not read from Kafka).
    """

    wf_id: str
    run_id: str
    kind: HistoryKind
    msg: Any = None
    timestamp: datetime | None = None
    worker_id: str = ""
    operation_id: str = ""
    partition: int = -1
    offset: int = -1
