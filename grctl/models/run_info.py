"""Run metadata: `RunInfo`, `RunStatus`, `RunStateKind`."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

import msgspec


class RunStatus(StrEnum):
    """The status of one run, as `describe` and `ChildOutcome` report it."""

    pending = "pending"
    scheduled = "scheduled"
    running = "running"
    #: The run needs code no worker owning it serves (a version, a step, an event handler): it is
    #: parked, not failed, and resumes once a worker that serves it owns its partition.
    awaiting_code = "awaiting_code"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"
    timed_out = "timed_out"
    terminated = "terminated"

    @property
    def is_terminal(self) -> bool:
        """True for completed, failed, cancelled, timed_out and terminated."""
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset(
    {RunStatus.completed, RunStatus.failed, RunStatus.cancelled, RunStatus.timed_out, RunStatus.terminated}
)


class RunStateKind(StrEnum):
    """Where a run is in its state machine. Exactly one at a time."""

    start = "start"
    step = "step"
    wait = "wait"
    complete = "complete"
    fail = "fail"
    cancel = "cancel"
    terminate = "terminate"
    timeout = "timeout"


class RunInfo(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What is known about one run of a workflow id.

    Attributes:
        id: the run id (a ULID), unique per execution.
        wf_id: the caller-chosen workflow id.
        wf_type: the workflow type.
        status: the run's status.
        state: where the run is in its state machine.
        current_step: the step running or scheduled now, if any.
        timeout: workflow timeout in seconds, if one was set.
        version: the version of its workflow type the run executes on.
        awaiting: with status `awaiting_code`, the code it waits for ("step 'ship' of Order v1").
        schedule_id: the schedule that started the run, if one did.
        scheduled_at: the time of the schedule's tick the run serves (UTC), if a schedule started it.
        remote_task: the remote task its step waits for, if any: task, queue, attempt, deadline
            (`deadline_ms`, and which timeout), `last_heartbeat_ms` and its `details`.
        started_by: the identity of the client that started the run (None: a parent or a schedule did).
        cancel_by: the identity that cancelled or terminated it (or asked to), if one did.
        priority: its priority for limiters, 1 (first) to 5 (last); children inherit it.
        permits: the limiter permit its suspended step waits for (`waiting_for`: limiter, key,
            since_ms, and `position`, how many requests are ahead of it) and the permits it
            holds (`holding`), if any (docs/tutorials/flow-control.md).
    """

    id: str
    wf_id: str
    wf_type: str
    status: RunStatus = RunStatus.pending
    state: RunStateKind | None = None
    current_step: str | None = None
    step_seq: int = 0
    parent_wf_id: str | None = None
    parent_run_id: str | None = None
    parent_wf_type: str | None = None
    parent_callback_step: str | None = None
    timeout: float | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    result: Any = None
    error: Any = None
    waiting_for_event: bool = False
    wait_deadline: datetime | None = None
    pending_events: int = 0
    history_seq_id: int = 0
    version: int = 1
    awaiting: str | None = None
    schedule_id: str | None = None
    scheduled_at: datetime | None = None
    remote_task: dict[str, Any] | None = None
    started_by: str | None = None
    cancel_by: str | None = None
    priority: int = 3
    permits: dict[str, Any] | None = None
