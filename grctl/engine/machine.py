"""The run state machine: pure functions from (run, input) to a `Transition`.

No I/O, no clock, no asyncio. The partition processor feeds it directive records, step
outcomes and fired timers, and publishes the transitions it returns in one Kafka transaction.

Step numbering: every dispatch of a step increments `RunRecord.seq`. A dispatch writes no
record of its own: the committed run record (state `step`, its `seq`) is what says the step is
due, and the processor starts it after the commit, or from its run index after an assign
(docs/engine.md, "Due steps"). A `NextCmd` from an older worker carries the number, so it is
recognised as current or stale.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, Literal, Protocol

import msgspec

from grctl import defaults
from grctl.engine import permits, remote
from grctl.engine.records import (
    ACTIVE_STATES,
    OUTCOME,
    CancelCmd,
    ChildDoneCmd,
    DirectiveRecord,
    EventCmd,
    HistoryRecord,
    InboxEntry,
    LimitGrantCmd,
    PendingAcquire,
    RemoteTask,
    Reply,
    ReplyCode,
    ReplyTo,
    RunRecord,
    ScheduleRunEndedCmd,
    StartCmd,
    TaskHeartbeatCmd,
    TaskResultCmd,
    TaskStartedCmd,
    TimerEntry,
    TimerKind,
    WatchCmd,
)
from grctl.errors import InternalError
from grctl.models.directive import START_STEP_NAME
from grctl.models.emit import Emit
from grctl.models.history import HistoryKind
from grctl.models.limits import DEFAULT_PRIORITY
from grctl.models.outcome import terminal_error
from grctl.models.run_info import RunStateKind, RunStatus

#: What a finished step execution asks for (`StepOutcome.next_kind`).
NextKind = Literal["step", "wait", "complete", "fail", "error", "timeout", "suspend", "remote", "limit"]

#: Clients that may watch one run at once (a handle per process, typically one or two).
MAX_WATCHERS: Final = 32

#: The state a run ends in, for each terminal status.
TERMINAL_STATE: Final[dict[RunStatus, RunStateKind]] = {
    RunStatus.completed: RunStateKind.complete,
    RunStatus.failed: RunStateKind.fail,
    RunStatus.cancelled: RunStateKind.cancel,
    RunStatus.terminated: RunStateKind.terminate,
    RunStatus.timed_out: RunStateKind.timeout,
}


class Catalog(Protocol):
    """What the state machine needs to know about the workflow definitions a worker serves.

    A workflow type may be served in several versions (`Workflow(..., version=2)`); a run
    executes on the version it records (pinned), or moves to the newest served one at its next
    step when its version was declared `upgrade="auto"`.
    """

    def has_type(self, wf_type: str) -> bool:
        """True if this worker serves some version of `wf_type`."""
        ...

    def versions(self, wf_type: str) -> list[int]:
        """The versions of `wf_type` this worker serves, oldest first (empty: none)."""
        ...

    def upgrade_auto(self, wf_type: str, version: int) -> bool:
        """True if that version of `wf_type` declared `upgrade="auto"` (False if not served)."""
        ...

    def has_step(self, wf_type: str, version: int, step: str) -> bool:
        """True if this worker serves that version of `wf_type` with a handler named `step`."""
        ...

    def step_timeout_ms(self, wf_type: str, version: int, step: str) -> int | None:
        """The timeout of a step or event handler of that version (None: the engine default)."""
        ...

    def has_event(self, wf_type: str, version: int, name: str) -> bool | None:
        """Whether `name` is an event handler of that version (None: the version is not served here)."""
        ...

    def events(self, wf_type: str, version: int) -> list[str]:
        """The event handlers of that version (empty if not served)."""
        ...

    def retention_ms(self, wf_type: str) -> int:
        """How long the state of an ended run of `wf_type` is kept."""
        ...

    def results_topic(self, wf_type: str) -> str | None:
        """The topic each ended run of `wf_type` publishes its outcome to (None: none)."""
        ...


class StepOutcome(msgspec.Struct, frozen=True):
    """What a finished step execution reports to the state machine.

    Built for every step, as `Transition` is built for every input: msgspec's C constructor
    costs about a fifth of a frozen dataclass's (0.5 against 3 µs with these 16 fields).

    `next_kind` (a `NextKind`) is one of "step", "wait", "complete", "fail", "error" (an
    exception escaped), "timeout" (the step ran past its deadline), "suspend" (a task waits
    for a long retry back-off: re-execute the same step at `resume_at_ms`).
    """

    run_id: str
    seq: int
    next_kind: NextKind
    duration_ms: int = 0
    next_step: str | None = None
    next_step_timeout_ms: int | None = None
    wait_timeout_ms: int | None = None
    wait_on_timeout: str | None = None
    result: Any = None
    error: dict[str, Any] | None = None
    store: dict[str, bytes] = msgspec.field(default_factory=dict)
    resume_at_ms: int | None = None
    emits: list[Emit] = msgspec.field(default_factory=list)
    #: With "remote": the remote task call the step waits for (`grctl.engine.remote`).
    remote: RemoteTask | None = None
    #: With "limit": the permit the step waits for (`grctl.engine.permits`).
    acquire: PendingAcquire | None = None
    #: The permits (acquire ids) whose `ctx.limit` sections this execution left.
    released: tuple[str, ...] = ()


_json_encoder = msgspec.json.Encoder()


def outcome_record(
    topic: str,
    run: RunRecord,
    status: RunStatus,
    now_ms: int,
    result: Any = None,
    error: dict[str, Any] | None = None,
    reason: str | None = None,
) -> Emit:
    """The results-topic record of an ended run: JSON, keyed by workflow id, status in a header."""
    value = {
        "wf_id": run.wf_id,
        "run_id": run.run_id,
        "wf_type": run.wf_type,
        "status": status.value,
        "result": result,
        "error": error,
        "reason": reason,
        "started_ms": run.started_ms,
        "ended_ms": now_ms,
        "duration_ms": max(0, now_ms - run.started_ms),
        "parent_wf_id": run.parent.wf_id if run.parent is not None else None,
    }
    return Emit(topic, run.wf_id.encode(), _json_encoder.encode(value), [("grctl.status", status.value.encode())])


class Transition(msgspec.Struct):
    """Everything one input changes: all of it is published in one transaction.

    Attributes:
        run: the new run record, or None if unchanged.
        history: history events to append.
        sends: directive records for runs (on this or other partitions).
        replies: answers to client requests.
        store: store values to write (key → encoded value) for `run`.
        inbox_put: inbox entries to append (seq → entry).
        inbox_delete: inbox sequence numbers consumed.
        timers_set: timers to arm.
        timers_clear: timers to disarm.
        execute: the run's current step must start once this transition is committed.
        cancel_running: the step task running for this run (if any) must be cancelled.
        skipped: the input was stale or a duplicate; nothing changed.
        child_done: (child wf_id, child run_id, outcome) of a child the parent may be awaiting.
        purge: (run id, whether the run record goes too): the retention of an ended run is
            over; every key it holds is deleted.
        emits: records for topics outside the namespace (a step's `ctx.emit`, a results topic).
        tasks: records for task queues (requests, cancels; `grctl.engine.remote`).
        journal: (step seq, position, entry) journal entries to write (a remote task's outcome).
        task_dropped: a task worker's answer was not applied, and why (late, duplicate, ...).
        permit_dropped: a limiter's answer was for a request nobody waits for (given back).
        permit_waited_ms: a permit was granted after this wait.
    """

    run: RunRecord | None = None
    history: list[HistoryRecord] = msgspec.field(default_factory=list)
    sends: list[DirectiveRecord] = msgspec.field(default_factory=list)
    replies: list[tuple[ReplyTo, Reply]] = msgspec.field(default_factory=list)
    store: dict[str, bytes] = msgspec.field(default_factory=dict)
    inbox_put: dict[int, InboxEntry] = msgspec.field(default_factory=dict)
    inbox_delete: list[int] = msgspec.field(default_factory=list)
    timers_set: list[TimerEntry] = msgspec.field(default_factory=list)
    timers_clear: list[TimerEntry] = msgspec.field(default_factory=list)
    execute: bool = False
    cancel_running: bool = False
    skipped: bool = False
    child_done: tuple[str, str, dict[str, Any]] | None = None
    purge: tuple[str, bool] | None = None
    emits: list[Emit] = msgspec.field(default_factory=list)
    tasks: list[remote.TaskOut] = msgspec.field(default_factory=list)
    journal: list[tuple[int, int, list[Any]]] = msgspec.field(default_factory=list)
    task_dropped: str | None = None
    permit_dropped: bool = False
    permit_waited_ms: int | None = None


SKIP = Transition(skipped=True)

InboxReader = Callable[[int], InboxEntry | None]


class Machine:
    """Applies inputs to runs. One instance per worker; stateless apart from its catalog.

    Args:
        catalog: the workflow definitions the worker serves.
        worker_id: written into history events.
    """

    def __init__(self, catalog: Catalog, worker_id: str) -> None:
        self.catalog = catalog
        self.worker_id = worker_id

    # ------------------------------------------------------------------ helpers

    def _hist(self, run: RunRecord, kind: HistoryKind, now_ms: int, msg: dict[str, Any] | None = None) -> HistoryRecord:
        return HistoryRecord(
            kind=kind, wf_id=run.wf_id, run_id=run.run_id, ts_ms=now_ms, msg=msg, worker_id=self.worker_id
        )

    def _step_timeout(self, wf_type: str, version: int, step: str) -> int:
        t = self.catalog.step_timeout_ms(wf_type, version, step)
        return t if t else defaults.STEP_TIMEOUT_MS

    def _dispatch(
        self,
        tr: Transition,
        run: RunRecord,
        step: str,
        payload: Any,
        now_ms: int,
        timeout_ms: int | None = None,
    ) -> RunRecord:
        """Make `step` the run's due step; it executes at once if this worker serves its code, else the run parks.

        The step timeout bounds each execution of the step and is enforced by the executing
        worker (not a durable timer armed here): a worker crash must not eat into the budget
        of the step's re-execution on the next owner.
        """
        if run.timer_due_ms is not None:
            tr.timers_clear.append(self._timer(run, run.timer_due_ms))
        seq = run.seq + 1
        run = msgspec.structs.replace(
            run,
            state=RunStateKind.step,
            seq=seq,
            step=step,
            step_payload=payload,
            step_timeout_ms=timeout_ms,
            wait_timeout_ms=None,
            wait_on_timeout=None,
            timer_due_ms=None,
            awaits=None,
        )
        return self._run_or_park(tr, run, now_ms, keep_timeout=timeout_ms is not None)

    def _run_or_park(self, tr: Transition, run: RunRecord, now_ms: int, *, keep_timeout: bool = False) -> RunRecord:
        """The due step of `run` (state step) executes on the code its run needs, or the run parks.

        1. A run whose version declared `upgrade="auto"` moves to the newest version this worker
           serves with a handler for the step (never back to an older one).
        2. If this worker serves the run's version with that handler, the step executes
           (`execute`); a parked run resumes.
        3. Otherwise the run parks: status awaiting_code, with what is missing; nothing fails,
           its timers and inbox go on, and a worker that serves the code resumes it
           (`ensure_served`, before it starts the due step: at its partition's assignment).
        """
        cat = self.catalog
        step = run.step or ""
        # 1. Auto-upgrade.
        if run.upgrade_auto:
            newer = [v for v in cat.versions(run.wf_type) if v > run.version and cat.has_step(run.wf_type, v, step)]
            if newer:
                to = newer[-1]
                tr.history.append(
                    self._hist(run, HistoryKind.run_upgraded, now_ms, {"from_version": run.version, "to_version": to})
                )
                run = msgspec.structs.replace(run, version=to, upgrade_auto=cat.upgrade_auto(run.wf_type, to))
        # 2. Served: execute.
        if cat.has_step(run.wf_type, run.version, step):
            if run.status == RunStatus.awaiting_code:
                tr.history.append(self._hist(run, HistoryKind.run_resumed, now_ms, {"version": run.version}))
            timeout = run.step_timeout_ms if keep_timeout and run.step_timeout_ms else None
            run = msgspec.structs.replace(
                run,
                status=RunStatus.running,
                missing=None,
                step_timeout_ms=timeout or self._step_timeout(run.wf_type, run.version, step),
                upgrade_auto=cat.upgrade_auto(run.wf_type, run.version),
            )
            tr.execute = True
            return run
        # 3. Not served here: park.
        missing = self._missing(run, step)
        if run.status != RunStatus.awaiting_code or run.missing != missing:
            tr.history.append(
                self._hist(run, HistoryKind.run_parked, now_ms, {"missing": missing, "version": run.version})
            )
        tr.execute = False
        return msgspec.structs.replace(run, status=RunStatus.awaiting_code, missing=missing)

    def _missing(self, run: RunRecord, step: str) -> str:
        """What a worker must serve for the run's due step."""
        if run.version not in self.catalog.versions(run.wf_type):
            return f"version {run.version} of workflow type {run.wf_type!r}"
        return f"step {step!r} of workflow type {run.wf_type!r} version {run.version}"

    def ensure_served(self, run: RunRecord, now_ms: int) -> Transition:
        """Before a due step starts here: SKIP if this worker serves it as the run stands, else the
        transition that parks the run, moves it to a newer version, or resumes it (executing)."""
        step = run.step or ""
        newer = run.upgrade_auto and any(
            v > run.version and self.catalog.has_step(run.wf_type, v, step) for v in self.catalog.versions(run.wf_type)
        )
        if run.status == RunStatus.running and not newer and self.catalog.has_step(run.wf_type, run.version, step):
            return SKIP
        tr = Transition()
        tr.run = self._run_or_park(tr, run, now_ms)
        if not tr.execute and not tr.history:
            return SKIP
        return tr

    @staticmethod
    def _timer(run: RunRecord, due_ms: int) -> TimerEntry:
        kind = TimerKind.resume if run.state == RunStateKind.step else TimerKind.wait
        return TimerEntry(wf_id=run.wf_id, run_id=run.run_id, kind=kind, seq=run.seq, due_ms=due_ms)

    def _finish(
        self,
        tr: Transition,
        run: RunRecord,
        status: RunStatus,
        now_ms: int,
        *,
        result: Any = None,
        error: dict[str, Any] | None = None,
        reason: str | None = None,
        identity: str | None = None,
    ) -> RunRecord:
        """End the run: terminal history event, timers cleared, parent and watchers told, retention armed."""
        duration = max(0, now_ms - run.started_ms)
        if status == RunStatus.completed:
            msg: dict[str, Any] = {"result": result, "duration_ms": duration}
            tr.history.append(self._hist(run, HistoryKind.run_completed, now_ms, msg))
        elif status == RunStatus.failed:
            tr.history.append(
                self._hist(run, HistoryKind.run_failed, now_ms, {"error": error, "duration_ms": duration})
            )
        elif status == RunStatus.cancelled:
            msg = {"reason": reason, "duration_ms": duration, **_by(identity)}
            tr.history.append(self._hist(run, HistoryKind.run_cancelled, now_ms, msg))
        elif status == RunStatus.terminated:
            msg = {"reason": reason, "duration_ms": duration, **_by(identity)}
            tr.history.append(self._hist(run, HistoryKind.run_terminated, now_ms, msg))
        elif status == RunStatus.timed_out:
            tr.history.append(self._hist(run, HistoryKind.run_timeout, now_ms, {"duration_ms": duration}))
        if run.timer_due_ms is not None:
            tr.timers_clear.append(self._timer(run, run.timer_due_ms))
        if run.deadline_ms is not None:
            tr.timers_clear.append(
                TimerEntry(wf_id=run.wf_id, run_id=run.run_id, kind=TimerKind.workflow, seq=0, due_ms=run.deadline_ms)
            )
        # Events nobody will handle any more; a remote task nobody waits for.
        tr.inbox_delete.extend(range(run.inbox_head, run.inbox_next))
        if run.remote is not None:
            remote.on_run_end(tr, run, f"run {status.value}")
        if run.permits or run.acquire is not None:
            run = permits.on_run_end(tr, run, now_ms, self.worker_id)
        results = self.catalog.results_topic(run.wf_type)
        if results is not None:
            tr.emits.append(outcome_record(results, run, status, now_ms, result, error, reason))
        retain_until = now_ms + self.catalog.retention_ms(run.wf_type)
        tr.timers_set.append(
            TimerEntry(wf_id=run.wf_id, run_id=run.run_id, kind=TimerKind.retention, seq=run.seq, due_ms=retain_until)
        )
        if run.watchers:
            payload = {"status": status, "result": result, "error": error, "duration_ms": duration}
            for w in run.watchers:
                outcome_reply = Reply(
                    request_id=w.request_id, client_id=w.client_id, kind=OUTCOME, run_id=run.run_id, payload=payload
                )
                tr.replies.append((w, outcome_reply))
        if run.schedule_id is not None:
            # The schedule learns that its run ended as a parent learns of its child's end.
            tr.sends.append(
                ScheduleRunEndedCmd(
                    wf_id=run.schedule_id,
                    run_wf_id=run.wf_id,
                    run_id=run.run_id,
                    scheduled_ms=run.scheduled_ms or 0,
                    status=status.value,
                )
            )
        if run.parent is not None:
            # Every child reports its end to its parent: as an event for the callback step if
            # it named one, else to the parent's table of child outcomes (awaited futures).
            outcome_error = terminal_error(status, error=error, reason=reason)
            outcome: dict[str, Any] = {"status": status, "result": result, "error": outcome_error}
            tr.sends.append(
                ChildDoneCmd(
                    wf_id=run.parent.wf_id,
                    run_id=run.parent.run_id,
                    event_name=run.parent.callback_step or "",
                    child_wf_id=run.wf_id,
                    child_run_id=run.run_id,
                    outcome=outcome,
                )
            )
        return msgspec.structs.replace(
            run,
            status=status,
            state=TERMINAL_STATE[status],
            result=result,
            error=error,
            ended_ms=now_ms,
            step_payload=None,
            timer_due_ms=None,
            deadline_ms=None,
            cancel_pending=False,
            suspended_until_ms=None,
            inbox_head=run.inbox_next,
            retain_until_ms=retain_until,
            watchers=(),
            remote=None,
        )

    def fail_run(self, run: RunRecord | None, error: dict[str, Any], now_ms: int) -> Transition:
        """End the active `run` as failed with `error`, whatever it was doing.

        For what the worker cannot publish (a record of the run's next transition is larger
        than Kafka takes): the run's record keeps no payload, its running step (if any) is
        cancelled. SKIP if there is no active run.
        """
        if run is None or (run.state not in ACTIVE_STATES and run.state != RunStateKind.start):
            return SKIP
        tr = Transition(cancel_running=run.state == RunStateKind.step)
        if run.state == RunStateKind.step:
            tr.history.append(self._hist(run, HistoryKind.step_failed, now_ms, {"step_name": run.step, "error": error}))
        tr.run = self._finish(tr, run, RunStatus.failed, now_ms, error=error)
        return tr

    def refuse(self, rec: DirectiveRecord, now_ms: int, code: ReplyCode, message: str) -> Transition:
        """Refuse an input that cannot be accepted as it is (a value over the size limit).

        A start is rejected like a duplicate (`run.rejected`, the parent told); an event or a
        cancel is answered with an error if it asked for an answer. No run changes.
        """
        tr = Transition()
        if isinstance(rec, StartCmd):
            self._reject(tr, rec, now_ms, code, message)
        elif isinstance(rec, EventCmd | CancelCmd) and rec.reply_to is not None:
            tr.replies.append(self._error_reply(rec.reply_to, code, message))
        return tr

    # ------------------------------------------------------------------ directive records

    def apply(
        self, run: RunRecord | None, rec: DirectiveRecord, offset: int, now_ms: int, inbox: InboxReader
    ) -> Transition:
        """Apply one `directives` record (not an older worker's `NextCmd`, which the processor handles itself)."""
        if run is not None and offset >= 0 and offset <= run.last_offset:
            return SKIP  # re-delivered after a crash: already applied
        if isinstance(rec, StartCmd):
            tr = self.on_start(run, rec, now_ms)
        elif isinstance(rec, EventCmd):
            tr = self.on_event(run, rec, now_ms, inbox)
        elif isinstance(rec, CancelCmd):
            tr = self.on_cancel(run, rec, now_ms)
        elif isinstance(rec, WatchCmd):
            tr = self.on_watch(run, rec)
        elif isinstance(rec, TaskStartedCmd | TaskHeartbeatCmd | TaskResultCmd):
            tr = self.on_task_answer(run, rec, now_ms)
        elif isinstance(rec, LimitGrantCmd):
            tr = self.on_limit_grant(run, rec, now_ms)
        elif isinstance(rec, ChildDoneCmd) and not rec.event_name:
            tr = self.on_child_done(run, rec, now_ms)
        elif isinstance(rec, ChildDoneCmd):
            tr = self.on_event(
                run,
                EventCmd(wf_id=rec.wf_id, run_id=rec.run_id, event_name=rec.event_name, payload=rec.outcome),
                now_ms,
                inbox,
                from_child=True,
            )
        else:
            raise InternalError(f"Machine.apply() does not take {type(rec).__name__} records")
        if tr.run is not None and offset >= 0:
            if tr.run is run:  # never mutate the caller's record (workers cache decoded records)
                tr.run = msgspec.structs.replace(run, last_offset=offset)
            else:
                tr.run.last_offset = offset
        elif run is not None and offset >= 0 and not tr.skipped and tr.run is None:
            tr.run = msgspec.structs.replace(run, last_offset=offset)
        return tr

    def on_start(self, run: RunRecord | None, cmd: StartCmd, now_ms: int) -> Transition:
        """A start request: create the run, or reject a duplicate or an unknown type."""
        tr = Transition()
        if run is not None and run.run_id == cmd.run_id:
            return SKIP  # the same start delivered twice (client retry)
        if run is not None and run.state in ACTIVE_STATES:
            self._reject(
                tr, cmd, now_ms, ReplyCode.already_running,
                f"workflow id {cmd.wf_id!r} already has an active run {run.run_id} "
                f"(type {run.wf_type!r}); wait for it to end, cancel it, or use another id",
                existing=run.run_id,
            )  # fmt: skip
            return tr
        if not self.catalog.has_type(cmd.wf_type):
            self._reject(
                tr, cmd, now_ms, ReplyCode.type_not_registered,
                f"workflow type {cmd.wf_type!r} is not served by the workers of this namespace; "
                f"register it in a Worker(workflows=[...]) and restart the workers",
            )  # fmt: skip
            return tr
        # The version asked for, else the newest this worker serves (a run asked on a version
        # not served here starts, and parks until a worker that serves it owns its partition).
        version = cmd.version if cmd.version is not None else self.catalog.versions(cmd.wf_type)[-1]
        new = RunRecord(
            run_id=cmd.run_id,
            wf_id=cmd.wf_id,
            wf_type=cmd.wf_type,
            status=RunStatus.running,
            state=RunStateKind.start,
            created_ms=now_ms,
            started_ms=now_ms,
            timeout_ms=cmd.timeout_ms,
            parent=cmd.parent,
            watchers=(cmd.reply_to,) if cmd.reply_to is not None else (),
            traceparent=cmd.traceparent,
            version=version,
            upgrade_auto=self.catalog.upgrade_auto(cmd.wf_type, version),
            schedule_id=cmd.schedule_id,
            scheduled_ms=cmd.scheduled_ms,
            started_by=bounded_identity(cmd.identity),
            priority=cmd.priority if cmd.priority is not None and 1 <= cmd.priority <= 5 else DEFAULT_PRIORITY,
        )
        if cmd.reply_to is not None:
            to = cmd.reply_to
            ack = Reply(
                request_id=to.request_id, client_id=to.client_id, run_id=cmd.run_id, payload={"version": version}
            )
            tr.replies.append((to, ack))
        tr.history.append(
            self._hist(
                new,
                HistoryKind.run_started,
                now_ms,
                {
                    "wf_type": cmd.wf_type,
                    "input": cmd.input,
                    "parent_wf_id": cmd.parent.wf_id if cmd.parent else None,
                    "parent_run_id": cmd.parent.run_id if cmd.parent else None,
                    "timeout_ms": cmd.timeout_ms,
                    "version": version,
                    **(
                        {"schedule_id": cmd.schedule_id, "scheduled_ms": cmd.scheduled_ms, "how": cmd.schedule_how}
                        if cmd.schedule_id
                        else {}
                    ),
                    **({"not_before_ms": cmd.not_before_ms} if cmd.not_before_ms is not None else {}),
                    **({"priority": new.priority} if new.priority != DEFAULT_PRIORITY else {}),
                    **_by(new.started_by),
                },
            )
        )
        later = cmd.not_before_ms if cmd.not_before_ms is not None and cmd.not_before_ms > now_ms else None
        if later is not None:
            new.started_ms = later  # the run starts at its time (a schedule's tick committed ahead)
        if cmd.timeout_ms:
            new.deadline_ms = new.started_ms + cmd.timeout_ms
            tr.timers_set.append(
                TimerEntry(wf_id=new.wf_id, run_id=new.run_id, kind=TimerKind.workflow, seq=0, due_ms=new.deadline_ms)
            )
        tr.run = self._dispatch(tr, new, START_STEP_NAME, cmd.input, now_ms)
        if later is not None and tr.execute:
            # The start step is due at `later`: suspended until then, as after a long back-off.
            tr.execute = False
            tr.run = msgspec.structs.replace(tr.run, suspended_until_ms=later, timer_due_ms=later)
            tr.timers_set.append(
                TimerEntry(wf_id=new.wf_id, run_id=new.run_id, kind=TimerKind.resume, seq=tr.run.seq, due_ms=later)
            )
        return tr

    def _reject(
        self, tr: Transition, cmd: StartCmd, now_ms: int, code: str, message: str, existing: str | None = None
    ) -> None:
        tr.history.append(
            HistoryRecord(
                kind=HistoryKind.run_rejected,
                wf_id=cmd.wf_id,
                run_id=cmd.run_id,
                ts_ms=now_ms,
                worker_id=self.worker_id,
                msg={"code": code, "message": message, "existing_run_id": existing},
            )
        )
        if cmd.reply_to is not None:
            to = cmd.reply_to
            refusal = Reply(
                request_id=to.request_id, client_id=to.client_id, ok=False, code=code, message=message,
                run_id=cmd.run_id, payload={"existing_run_id": existing},
            )  # fmt: skip
            tr.replies.append((to, refusal))
        if cmd.schedule_id is not None:
            # A tick's run that cannot start must not stay "running" in its schedule's eyes.
            tr.sends.append(
                ScheduleRunEndedCmd(
                    wf_id=cmd.schedule_id,
                    run_wf_id=cmd.wf_id,
                    run_id=cmd.run_id,
                    scheduled_ms=cmd.scheduled_ms or 0,
                    status="rejected",
                )
            )
        if cmd.parent is not None:
            # A child that cannot start is reported to its parent (the original swallowed it).
            tr.sends.append(
                ChildDoneCmd(
                    wf_id=cmd.parent.wf_id,
                    run_id=cmd.parent.run_id,
                    event_name=cmd.parent.callback_step or "",
                    child_wf_id=cmd.wf_id,
                    child_run_id=cmd.run_id,
                    outcome={"status": RunStatus.failed, "result": None, "error": {"type": code, "message": message}},
                )
            )

    def on_event(
        self,
        run: RunRecord | None,
        cmd: EventCmd,
        now_ms: int,
        inbox: InboxReader,
        from_child: bool = False,
    ) -> Transition:
        """An event: append it to the inbox; if the run waits and nothing is queued, run it now."""
        tr = Transition()
        if not self._addresses(tr, run, cmd) or run is None:
            return tr
        if run.state not in ACTIVE_STATES and run.state != RunStateKind.start:
            if cmd.reply_to:
                tr.replies.append(
                    self._error_reply(
                        cmd.reply_to,
                        ReplyCode.finished,
                        f"run {run.run_id} of workflow id {run.wf_id!r} already ended ({run.status}); "
                        f"events can only be sent to active runs",
                    )
                )
            return tr
        if not from_child and not self._accepts_event(run, cmd.event_name):
            if cmd.reply_to:
                tr.replies.append(
                    self._error_reply(
                        cmd.reply_to,
                        ReplyCode.unknown_event,
                        f"workflow type {run.wf_type!r} has no event handler {cmd.event_name!r}",
                    )
                )
            return tr
        tr.history.append(
            self._hist(
                run,
                HistoryKind.event_received,
                now_ms,
                {"event_name": cmd.event_name, "payload": cmd.payload, **_by(bounded_identity(cmd.identity))},
            )
        )
        seq = run.inbox_next
        entry = InboxEntry(run_id=run.run_id, event_name=cmd.event_name, payload=cmd.payload, event_id=cmd.event_id)
        run = msgspec.structs.replace(run, inbox_next=seq + 1)
        if run.state == RunStateKind.wait and run.inbox_head == seq:
            # Nothing older is queued: hand the event to its handler straight away.
            run = msgspec.structs.replace(run, inbox_head=seq + 1)
            run = self._dispatch(tr, run, entry.event_name, entry.payload, now_ms)
        else:
            tr.inbox_put[seq] = entry
        tr.run = run
        if cmd.reply_to:
            tr.replies.append(
                (cmd.reply_to, Reply(request_id=cmd.reply_to.request_id, client_id=cmd.reply_to.client_id))
            )
        return tr

    def _accepts_event(self, run: RunRecord, name: str) -> bool:
        """An event the run's code handles, or that it cannot judge (its version is not served here:
        the event is accepted and buffered, the run parks when it would handle it)."""
        cat = self.catalog
        known = cat.has_event(run.wf_type, run.version, name)
        if known is None or known:
            return True
        # A run that upgrades at its next step handles the event on the newest version.
        return run.upgrade_auto and any(
            cat.has_event(run.wf_type, v, name) for v in cat.versions(run.wf_type) if v > run.version
        )

    def on_watch(self, run: RunRecord | None, cmd: WatchCmd) -> Transition:
        """Describe the latest run, and if it is active, tell `reply_to` its outcome when it ends.

        Registering and describing in one transition leaves no gap in which the run could end
        unseen. Each watch (a client's handle) gets the outcome under its own request id; past
        `MAX_WATCHERS` the oldest watch of the run is dropped.
        """
        tr = Transition()
        to, reply = self.describe(run, cmd.reply_to)
        tr.replies.append((to, reply))
        if run is None or (run.state not in ACTIVE_STATES and run.state != RunStateKind.start):
            return tr
        watchers = [w for w in run.watchers if w != to]
        if len(watchers) >= MAX_WATCHERS:
            watchers = watchers[1:]  # the oldest interest goes: its client gets no outcome
        tr.run = msgspec.structs.replace(run, watchers=(*watchers, to))
        return tr

    def arm_retention(self, run: RunRecord, now_ms: int) -> Transition:
        """Give an ended run without a retention timer (ended before retention existed) one."""
        if run.state in ACTIVE_STATES or run.state == RunStateKind.start or run.retain_until_ms is not None:
            return SKIP
        due = max(now_ms, (run.ended_ms or now_ms) + self.catalog.retention_ms(run.wf_type))
        tr = Transition(run=msgspec.structs.replace(run, retain_until_ms=due))
        tr.timers_set.append(
            TimerEntry(wf_id=run.wf_id, run_id=run.run_id, kind=TimerKind.retention, seq=run.seq, due_ms=due)
        )
        return tr

    def on_child_done(self, run: RunRecord | None, cmd: ChildDoneCmd, now_ms: int) -> Transition:
        """A child without a callback step ended: keep its outcome for the parent's awaiting step.

        Its history event lets a replay give the awaiting step the same outcome.
        """
        if run is None or run.run_id != cmd.run_id or run.state not in ACTIVE_STATES:
            return SKIP  # the parent moved on: nobody can await this child any more
        tr = Transition(child_done=(cmd.child_wf_id, cmd.child_run_id, cmd.outcome))
        tr.history.append(
            self._hist(
                run,
                HistoryKind.child_completed,
                now_ms,
                {"child_wf_id": cmd.child_wf_id, "child_run_id": cmd.child_run_id, "outcome": cmd.outcome},
            )
        )
        tr.run = run
        return tr

    def on_task_answer(
        self, run: RunRecord | None, cmd: TaskStartedCmd | TaskHeartbeatCmd | TaskResultCmd, now_ms: int
    ) -> Transition:
        """A task worker's answer: applied only for the current attempt of the pending task, else dropped.

        A result (or a final error) is journaled at the call's position and the step is due
        again; it re-executes and replays it (`grctl.engine.remote`).
        """
        tr = Transition()
        active = run if run is not None and run.state == RunStateKind.step else None
        if active is None and run is not None and run.run_id == cmd.run_id:
            tr.task_dropped = "run_ended"
            return tr
        if isinstance(cmd, TaskResultCmd):
            if remote.on_result(tr, active or run, cmd, now_ms, self.worker_id):
                assert tr.run is not None
                tr.run = self._run_or_park(tr, tr.run, now_ms, keep_timeout=True)
        else:
            remote.on_started(tr, active or run, cmd, now_ms)
        return tr

    def on_limit_grant(self, run: RunRecord | None, cmd: LimitGrantCmd, now_ms: int) -> Transition:
        """A limiter's answer: the step waiting for it is due again; a permit nobody waits for goes back."""
        tr = Transition()
        active = run if run is not None and run.state == RunStateKind.step else None
        if permits.on_grant(tr, active, cmd, now_ms, self.worker_id):
            assert tr.run is not None
            tr.run = self._run_or_park(tr, tr.run, now_ms, keep_timeout=True)
        return tr

    def on_cancel(self, run: RunRecord | None, cmd: CancelCmd, now_ms: int) -> Transition:
        """Cancel or terminate the latest run."""
        tr = Transition()
        if not self._addresses(tr, run, cmd) or run is None:
            return tr
        what = "terminate" if cmd.terminate else "cancel"
        who = bounded_identity(cmd.identity)
        if run.state not in ACTIVE_STATES:
            if cmd.reply_to:
                tr.replies.append(
                    self._error_reply(
                        cmd.reply_to,
                        ReplyCode.finished,
                        f"cannot {what} run {run.run_id} of workflow id {run.wf_id!r}: it already ended ({run.status})",
                    )
                )
            return tr
        if cmd.terminate:
            tr.cancel_running = True
            run = msgspec.structs.replace(run, cancel_by=who)
            tr.run = self._finish(tr, run, RunStatus.terminated, now_ms, reason=cmd.reason, identity=who)
        elif (
            run.state == RunStateKind.wait
            or run.suspended_until_ms is not None
            or run.remote is not None
            or run.acquire is not None
        ):
            # Nothing runs (waiting, suspended in a retry back-off, on a remote task or for a permit): cancel at once.
            run = msgspec.structs.replace(run, cancel_by=who)
            tr.run = self._finish(tr, run, RunStatus.cancelled, now_ms, reason=cmd.reason, identity=who)
        else:
            msg = {"reason": cmd.reason, **_by(who)}
            tr.history.append(self._hist(run, HistoryKind.run_cancel_received, now_ms, msg))
            tr.run = msgspec.structs.replace(run, cancel_pending=True, cancel_reason=cmd.reason, cancel_by=who)
        if cmd.reply_to:
            tr.replies.append(
                (cmd.reply_to, Reply(request_id=cmd.reply_to.request_id, client_id=cmd.reply_to.client_id))
            )
        return tr

    def _addresses(self, tr: Transition, run: RunRecord | None, cmd: EventCmd | CancelCmd) -> bool:
        """Whether `cmd` is for `run`; if not, answer why (no run, or an older run of the id)."""
        if run is None:
            if cmd.reply_to:
                tr.replies.append(
                    self._error_reply(cmd.reply_to, ReplyCode.not_found, f"no run of workflow id {cmd.wf_id!r}")
                )
            return False
        if cmd.run_id is not None and cmd.run_id != run.run_id:
            if cmd.reply_to:
                tr.replies.append(self._stale_run_reply(cmd.reply_to, cmd.run_id, run))
            return False
        return True

    @staticmethod
    def _stale_run_reply(to: ReplyTo, run_id: str, latest: RunRecord) -> tuple[ReplyTo, Reply]:
        return Machine._error_reply(
            to,
            ReplyCode.finished,
            f"run {run_id} of workflow id {latest.wf_id!r} has ended; the latest run is {latest.run_id} "
            f"({latest.status}): use client.get_workflow_handle({latest.wf_id!r}) for it",
        )

    @staticmethod
    def _error_reply(to: ReplyTo, code: str, message: str) -> tuple[ReplyTo, Reply]:
        return to, Reply(request_id=to.request_id, client_id=to.client_id, ok=False, code=code, message=message)

    # ------------------------------------------------------------------ step outcomes

    def on_step_outcome(self, run: RunRecord | None, out: StepOutcome, now_ms: int, inbox: InboxReader) -> Transition:
        """A step finished: record it and move the run on as its directive says."""
        if run is None or run.run_id != out.run_id or run.seq != out.seq or run.state != RunStateKind.step:
            return SKIP  # the run moved on (terminated, timed out) while the step ran
        tr = Transition()
        step = run.step or ""
        kind = out.next_kind
        if run.permits:
            # The permits of the sections the step left go back with this outcome; all of them if the step ended.
            suspends = kind in ("suspend", "remote", "limit")
            if not suspends or out.released:
                run = permits.release(tr, run, out.released if suspends else None, now_ms, self.worker_id)
                tr.run = run
        if kind == "error":
            tr.history.append(self._hist(run, HistoryKind.step_failed, now_ms, {"step_name": step, "error": out.error}))
            tr.run = self._finish(tr, run, RunStatus.failed, now_ms, error=out.error)
            return tr
        if kind == "suspend":
            # The step's journal stays; a durable timer re-executes the same step (same seq).
            due = out.resume_at_ms or now_ms
            tr.run = msgspec.structs.replace(run, suspended_until_ms=due, timer_due_ms=due)
            tr.timers_set.append(
                TimerEntry(wf_id=run.wf_id, run_id=run.run_id, kind=TimerKind.resume, seq=run.seq, due_ms=due)
            )
            return tr
        if kind == "remote":
            assert out.remote is not None
            if run.cancel_pending:  # cancelled while the step ran: no task is sent for it
                tr.run = self._finish(tr, run, RunStatus.cancelled, now_ms, reason=run.cancel_reason)
                return tr
            tr.run = remote.schedule(tr, run, out.remote, now_ms, self.worker_id)
            return tr
        if kind == "limit":
            assert out.acquire is not None
            if run.cancel_pending:  # cancelled while the step ran: no permit is asked for it
                tr.run = self._finish(tr, run, RunStatus.cancelled, now_ms, reason=run.cancel_reason)
                return tr
            tr.run = permits.request(tr, run, out.acquire, now_ms, self.worker_id)
            return tr
        if kind == "timeout":
            tr.history.append(self._hist(run, HistoryKind.step_timeout, now_ms, {"step_name": step}))
            err = {"type": "StepTimeout", "message": f"step {step} timed out"}
            tr.run = self._finish(tr, run, RunStatus.failed, now_ms, error=err)
            return tr
        tr.store = out.store
        tr.emits = out.emits
        tr.history.append(
            self._hist(run, HistoryKind.step_completed, now_ms, {"step_name": step, "duration_ms": out.duration_ms})
        )
        if run.cancel_pending:
            tr.run = self._finish(
                tr, run, RunStatus.cancelled, now_ms, reason=run.cancel_reason, identity=run.cancel_by
            )
            return tr
        if kind == "step":
            assert out.next_step is not None
            tr.run = self._dispatch(tr, run, out.next_step, None, now_ms, out.next_step_timeout_ms)
        elif kind == "wait":
            tr.run = self._enter_wait(tr, run, out, now_ms, inbox)
        elif kind == "complete":
            tr.run = self._finish(tr, run, RunStatus.completed, now_ms, result=out.result)
        elif kind == "fail":
            tr.run = self._finish(tr, run, RunStatus.failed, now_ms, error=out.error)
        else:
            raise InternalError(f"unknown step outcome kind {kind!r}")
        return tr

    def _enter_wait(
        self, tr: Transition, run: RunRecord, out: StepOutcome, now_ms: int, inbox: InboxReader
    ) -> RunRecord:
        if run.timer_due_ms is not None:
            tr.timers_clear.append(self._timer(run, run.timer_due_ms))
        tr.history.append(
            self._hist(
                run,
                HistoryKind.wait_started,
                now_ms,
                {"timeout_ms": out.wait_timeout_ms, "on_timeout": out.wait_on_timeout},
            )
        )
        run = msgspec.structs.replace(
            run,
            state=RunStateKind.wait,
            step=None,
            step_payload=None,
            timer_due_ms=None,
            wait_timeout_ms=out.wait_timeout_ms,
            wait_on_timeout=out.wait_on_timeout,
            awaits=self.catalog.events(run.wf_type, run.version) or None,
        )
        if run.inbox_head < run.inbox_next:
            # Events arrived while the step ran: handle the oldest one now, in arrival order.
            entry = inbox(run.inbox_head)
            tr.inbox_delete.append(run.inbox_head)
            run = msgspec.structs.replace(run, inbox_head=run.inbox_head + 1)
            if entry is not None:
                return self._dispatch(tr, run, entry.event_name, entry.payload, now_ms)
        if out.wait_timeout_ms:
            due = now_ms + out.wait_timeout_ms
            run.timer_due_ms = due
            tr.timers_set.append(
                TimerEntry(wf_id=run.wf_id, run_id=run.run_id, kind=TimerKind.wait, seq=run.seq, due_ms=due)
            )
        return run

    # ------------------------------------------------------------------ timers

    def on_timer(self, run: RunRecord | None, timer: TimerEntry, now_ms: int) -> Transition:
        """A durable timer fired. Stale timers (the run moved on) change nothing."""
        if timer.kind == TimerKind.retention:
            if run is None or run.run_id != timer.run_id:
                return Transition(purge=(timer.run_id, False))  # a newer run has the id: only the old run's keys
            if run.retain_until_ms == timer.due_ms and run.state not in ACTIVE_STATES:
                return Transition(purge=(run.run_id, True))
            return SKIP
        if run is None or run.run_id != timer.run_id or run.state not in ACTIVE_STATES:
            return SKIP
        tr = Transition()
        if timer.kind == TimerKind.workflow:
            if run.deadline_ms != timer.due_ms:
                return SKIP
            tr.cancel_running = run.state == RunStateKind.step
            tr.run = self._finish(tr, run, RunStatus.timed_out, now_ms)
            return tr
        if timer.kind == TimerKind.task:
            if run.state != RunStateKind.step:
                return SKIP
            if remote.on_timer(tr, run, timer, now_ms, self.worker_id):
                tr.run = self._run_or_park(tr, tr.run or run, now_ms, keep_timeout=True)
            return SKIP if tr.skipped else tr
        if run.seq != timer.seq or run.timer_due_ms != timer.due_ms:
            return SKIP
        if timer.kind == TimerKind.resume and run.state == RunStateKind.step and run.suspended_until_ms is not None:
            run = msgspec.structs.replace(run, suspended_until_ms=None, timer_due_ms=None)
            tr.run = self._run_or_park(tr, run, now_ms, keep_timeout=True)
            return tr
        if timer.kind == TimerKind.wait and run.state == RunStateKind.wait:
            tr.history.append(self._hist(run, HistoryKind.wait_timed_out, now_ms, {"on_timeout": run.wait_on_timeout}))
            run = msgspec.structs.replace(run, timer_due_ms=None)
            if run.wait_on_timeout:
                tr.run = self._dispatch(tr, run, run.wait_on_timeout, None, now_ms)
            else:
                err = {"type": "WaitTimeout", "message": "wait timed out without a timeout step"}
                tr.run = self._finish(tr, run, RunStatus.failed, now_ms, error=err)
            return tr
        return SKIP

    # ------------------------------------------------------------------ describe

    @staticmethod
    def describe(run: RunRecord | None, to: ReplyTo) -> tuple[ReplyTo, Reply]:
        """Answer a describe request from the committed run record."""
        if run is None:
            return Machine._error_reply(to, ReplyCode.not_found, "no run with this workflow id")
        info = {
            "id": run.run_id,
            "wf_id": run.wf_id,
            "wf_type": run.wf_type,
            "status": run.status,
            "state": run.state,
            "current_step": run.step,
            "step_seq": run.seq,
            "created_ms": run.created_ms,
            "started_ms": run.started_ms,
            "ended_ms": run.ended_ms,
            "timeout_ms": run.timeout_ms,
            "result": run.result,
            "error": run.error,
            "parent": msgspec.to_builtins(run.parent) if run.parent else None,
            "waiting": run.state == RunStateKind.wait,
            "wait_due_ms": run.timer_due_ms if run.state == RunStateKind.wait else None,
            "pending_events": run.inbox_next - run.inbox_head,
            "retain_until_ms": run.retain_until_ms,
            "version": run.version,
            "awaiting": run.missing,
            "started_by": run.started_by,
            "cancel_by": run.cancel_by,
        }
        if run.remote is not None:
            info["remote_task"] = remote.describe(run.remote)
        held = permits.describe(run)
        if held is not None:
            info["permits"] = held
        if run.priority != DEFAULT_PRIORITY:
            info["priority"] = run.priority
        if run.schedule_id is not None:
            info["schedule_id"] = run.schedule_id
            info["scheduled_ms"] = run.scheduled_ms
        return to, Reply(request_id=to.request_id, client_id=to.client_id, payload=info)


#: Characters of an identity kept (Temporal's identity is a short string too; a longer one is cut
#: with a mark, so a wrong client cannot grow every history event of a run).
MAX_IDENTITY_CHARS = 200


def bounded_identity(identity: str | None) -> str | None:
    """`identity` cut to `MAX_IDENTITY_CHARS` (None or empty: None)."""
    if not identity:
        return None
    return identity if len(identity) <= MAX_IDENTITY_CHARS else identity[: MAX_IDENTITY_CHARS - 1] + "…"


def _by(identity: str | None) -> dict[str, str]:
    """The ``identity`` field of a history event's message, left out when unknown."""
    return {"identity": identity} if identity else {}
