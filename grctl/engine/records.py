"""Wire records of the engine: what travels on the namespace topics and sits in the state tables.

Every record is msgpack (msgspec) with a type tag; `v` is the schema version for future
evolution. Keys are bytes: the workflow id for `directives` and `history`, a table prefix plus
workflow id (plus sub-key) for `state` (every layout in `grctl.engine.keys`).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Final

import msgspec

from grctl.engine.schedule_spec import ScheduleSpec
from grctl.models.limits import DEFAULT_PRIORITY, LimitSpec
from grctl.models.limits import HeldPermit as HeldPermit  # re-exported: part of the run record
from grctl.models.limits import PendingAcquire as PendingAcquire  # re-exported: part of the run record
from grctl.models.remote_task import RemoteTask as RemoteTask  # re-exported: part of the run record
from grctl.models.run_info import RunStateKind, RunStatus

SCHEMA_VERSION = 1
#: What decoding bytes read from a topic may raise: not msgpack, not the record's shape
#: (`msgspec.ValidationError` is a `DecodeError`), or nested deeper than the interpreter's
#: recursion limit (an `Any` field, e.g. a start input, holding a list inside a list ... 5,000
#: deep). Every reader of records catches exactly these and treats the record as undecodable.
DECODE_ERRORS: Final = (msgspec.DecodeError, RecursionError)


class ParentRef(msgspec.Struct, kw_only=True, omit_defaults=True, gc=False):
    """The parent of a child run, and the step to run in the parent when the child ends."""

    wf_id: str
    run_id: str
    wf_type: str
    callback_step: str | None = None


class ReplyTo(msgspec.Struct, kw_only=True, omit_defaults=True, gc=False):
    """Where the answer to a client request goes: the client's partition of `replies`."""

    client_id: str
    request_id: str
    partition: int


# --------------------------------------------------------------------------- directives topic


class _Cmd(msgspec.Struct, kw_only=True, omit_defaults=True, tag_field="t"):
    wf_id: str
    v: int = SCHEMA_VERSION


class StartCmd(_Cmd, tag="start"):
    """Start a new run of `wf_type` with id `wf_id` (from a client or a parent step)."""

    run_id: str
    wf_type: str
    input: Any = None
    timeout_ms: int | None = None
    parent: ParentRef | None = None
    reply_to: ReplyTo | None = None
    #: W3C trace context of the span that started the run (`grctl.tracing`); None: untraced.
    traceparent: str | None = None
    #: The version of `wf_type` to start on (None: the newest the owning worker serves).
    version: int | None = None
    #: A schedule's tick: the schedule that starts the run (told when it ends) and the tick's time.
    schedule_id: str | None = None
    scheduled_ms: int | None = None
    #: How the tick came: scheduled (the cadence, or a buffered tick), trigger or backfill.
    schedule_how: str | None = None
    #: The run's first step waits until this time (epoch ms): a schedule commits a tick's run up to
    #: its lead ahead of the tick (`grctl.engine.schedules.FIRE_LEAD_MS`). None: at once.
    not_before_ms: int | None = None
    #: Who asked (`Client(identity=...)`, `grctl --identity`, the UI's user); recorded in history.
    identity: str | None = None
    #: The run's priority for limiters (1 first .. 5 last; None: 3, or a parent's own).
    priority: int | None = None


class NextCmd(_Cmd, tag="next"):
    """Written by workers before due steps were read from the run index: execute step `seq` of `run_id`.

    No worker writes it any more (a committed run record in state `step` is the due step); it
    is still read, so that a namespace's `directives` written by an older worker stay valid.
    """

    run_id: str
    seq: int


class EventCmd(_Cmd, tag="event"):
    """Deliver an event to the latest run of `wf_id` (or to `run_id` if given)."""

    event_name: str
    payload: Any = None
    event_id: str = ""
    run_id: str | None = None
    reply_to: ReplyTo | None = None
    #: Who asked (`Client(identity=...)`, `grctl --identity`, the UI's user); recorded in history.
    identity: str | None = None


class CancelCmd(_Cmd, tag="cancel"):
    """Cancel (or, with `terminate`, terminate) the latest run of `wf_id`."""

    reason: str | None = None
    terminate: bool = False
    run_id: str | None = None
    reply_to: ReplyTo | None = None
    #: Who asked (`Client(identity=...)`, `grctl --identity`, the UI's user); recorded in history.
    identity: str | None = None


class ChildDoneCmd(_Cmd, tag="child_done"):
    """A child run ended: deliver its outcome to the parent run as an event."""

    run_id: str
    event_name: str
    child_wf_id: str
    child_run_id: str
    outcome: dict[str, Any]


class TaskStartedCmd(_Cmd, tag="task_started"):
    """A task worker took attempt `attempt` of remote task `task_id` of run `run_id` (docs/remote-tasks.md).

    Ends the schedule-to-start wait: the start-to-close and heartbeat deadlines run from here.
    """

    run_id: str
    task_id: str
    attempt: int
    worker: str = ""


class TaskHeartbeatCmd(_Cmd, tag="task_heartbeat"):
    """A task worker is still working on the attempt: the heartbeat deadline moves on."""

    run_id: str
    task_id: str
    attempt: int
    details: Any = None
    worker: str = ""


class TaskResultCmd(_Cmd, tag="task_result"):
    """The answer of attempt `attempt` of remote task `task_id`: a result (`ok`) or an error.

    Applied only if it answers the run's current attempt of that task; late and duplicate
    answers are dropped and counted. `error` is `{"type", "message", "retryable"?}`; an error
    with `retryable: false` is never retried, whatever the task's retry policy says.
    """

    run_id: str
    task_id: str
    attempt: int
    ok: bool = True
    result: Any = None
    error: dict[str, Any] | None = None
    worker: str = ""


TASK_COMMANDS: Final = (TaskStartedCmd, TaskHeartbeatCmd, TaskResultCmd)
TaskCommand = TaskStartedCmd | TaskHeartbeatCmd | TaskResultCmd


class WatchCmd(_Cmd, tag="watch"):
    """Answer with the latest run's info and, if it is still active, send its outcome to `reply_to`
    when it ends (`Client.get_workflow_handle`: interest registered in the same transition)."""

    reply_to: ReplyTo


class ListCmd(_Cmd, tag="list"):
    """Answer with one partition's page of the run index (`Client.list_workflows`, scatter-gather).

    Sent to every partition; `wf_id` is empty and `partition` names the one that answers.
    `after` is the page cursor (`grctl.engine.keys.index_position` of the last run already
    shown); a partition answers runs after it, newest first, up to `limit`.
    """

    partition: int
    reply_to: ReplyTo
    statuses: list[str] | None = None
    wf_types: list[str] | None = None
    started_after_ms: int | None = None
    text: str | None = None
    limit: int = 50
    after: bytes | None = None
    counts: bool = False


class DescribeCmd(_Cmd, tag="describe"):
    """Answer with the latest run's info on `replies`."""

    reply_to: ReplyTo


class QueryCmd(_Cmd, tag="query"):
    """Run a query handler of the latest run on committed state; answer on `replies`."""

    name: str
    reply_to: ReplyTo
    payload: Any = None


# --------------------------------------------------------------------------- schedule directives


class OverlapPolicy(StrEnum):
    """What a tick does while a run the schedule started has not ended (Temporal's names)."""

    skip = "skip"  # the tick is skipped (counted)
    buffer_one = "buffer_one"  # the tick starts when the running run ends; one kept at most, more skipped
    buffer_all = "buffer_all"  # every tick waits its turn (bounded: `MAX_BUFFERED`, more skipped)
    cancel_other = "cancel_other"  # the running run is cancelled; the tick starts when it has ended
    terminate_other = "terminate_other"  # the running run is terminated; the tick starts at once
    allow_all = "allow_all"  # the tick starts at once, however many run


class ScheduleCreateCmd(_Cmd, tag="schedule_create"):
    """Create schedule `wf_id` (a schedule id shares the key space of workflow ids)."""

    wf_type: str
    spec: ScheduleSpec
    input: Any = None
    overlap: OverlapPolicy = OverlapPolicy.skip
    catchup_ms: int = 365 * 24 * 3_600_000
    paused: bool = False
    note: str = ""
    #: The workflow id of a tick's run: `{schedule_id}` and `{tick}` (ISO, UTC) are replaced.
    id_template: str | None = None
    reply_to: ReplyTo | None = None
    #: Who asked (`Client(identity=...)`, `grctl --identity`); recorded on the schedule.
    identity: str | None = None


class ScheduleUpdateCmd(_Cmd, tag="schedule_update"):
    """Change what a schedule starts and when (fields left None keep their value)."""

    spec: ScheduleSpec | None = None
    wf_type: str | None = None
    input: Any = None
    set_input: bool = False
    overlap: OverlapPolicy | None = None
    catchup_ms: int | None = None
    reply_to: ReplyTo | None = None
    #: Who asked (`Client(identity=...)`, `grctl --identity`); recorded on the schedule.
    identity: str | None = None


class SchedulePauseCmd(_Cmd, tag="schedule_pause"):
    """Pause (or, with `resume`, resume) a schedule; a note says why."""

    resume: bool = False
    note: str = ""
    reply_to: ReplyTo | None = None
    #: Who asked (`Client(identity=...)`, `grctl --identity`); recorded on the schedule.
    identity: str | None = None


class ScheduleTriggerCmd(_Cmd, tag="schedule_trigger"):
    """Start a run now, as a tick at the time the record is applied (the overlap policy applies)."""

    overlap: OverlapPolicy | None = None
    reply_to: ReplyTo | None = None
    #: Who asked (`Client(identity=...)`, `grctl --identity`); recorded on the schedule.
    identity: str | None = None


class ScheduleBackfillCmd(_Cmd, tag="schedule_backfill"):
    """Fire the ticks in `[from_ms, to_ms]`, each of the spec that was in force at its time."""

    from_ms: int
    to_ms: int
    overlap: OverlapPolicy | None = None
    reply_to: ReplyTo | None = None
    #: Who asked (`Client(identity=...)`, `grctl --identity`); recorded on the schedule.
    identity: str | None = None


class ScheduleDeleteCmd(_Cmd, tag="schedule_delete"):
    """Delete a schedule (the runs it started go on)."""

    reply_to: ReplyTo | None = None
    #: Who asked (`Client(identity=...)`, `grctl --identity`); recorded on the schedule.
    identity: str | None = None


class ScheduleDescribeCmd(_Cmd, tag="schedule_describe"):
    """Answer with the schedule's record on `replies`."""

    reply_to: ReplyTo


class ScheduleListCmd(_Cmd, tag="schedule_list"):
    """Answer with one partition's schedules (`wf_id` empty; `partition` names the one that answers)."""

    partition: int
    reply_to: ReplyTo
    after: str | None = None
    limit: int = 200


class ScheduleRunEndedCmd(_Cmd, tag="schedule_run_ended"):
    """A run a schedule started has ended (sent by the run's end, as a child's end to its parent)."""

    run_wf_id: str
    run_id: str
    scheduled_ms: int
    status: str


SCHEDULE_COMMANDS: Final = (
    ScheduleCreateCmd,
    ScheduleUpdateCmd,
    SchedulePauseCmd,
    ScheduleTriggerCmd,
    ScheduleBackfillCmd,
    ScheduleDeleteCmd,
    ScheduleRunEndedCmd,
)
ScheduleCommand = (
    ScheduleCreateCmd
    | ScheduleUpdateCmd
    | SchedulePauseCmd
    | ScheduleTriggerCmd
    | ScheduleBackfillCmd
    | ScheduleDeleteCmd
    | ScheduleRunEndedCmd
)

# --------------------------------------------------------------------------- limiter directives


class LimitAcquireCmd(_Cmd, tag="limit_acquire"):
    """A run's step asks limiter `wf_id` for a permit (sent in the transaction of its suspension).

    `holder` names the permit (`<run_id>/<acquire_id>`); the grant goes to the run's partition.
    """

    run_wf_id: str
    run_id: str
    acquire_id: str
    key: str = ""
    fairness: str = ""
    priority: int = DEFAULT_PRIORITY


class LimitReleaseCmd(_Cmd, tag="limit_release"):
    """Give back permit `holder` of limiter `wf_id`, or withdraw its request if it still waits.

    Sent in the transaction that ends the limited work (the section, its step or its run); a
    release of a permit the limiter does not know (already released, or never granted) is ignored.
    """

    holder: str


class LimitGrantCmd(_Cmd, tag="limit_grant"):
    """Limiter `limiter` granted (or, with `ok` false, refused) the permit run `run_id` waits for."""

    run_id: str
    acquire_id: str
    limiter: str
    ok: bool = True
    error: dict[str, Any] | None = None
    #: When the limiter received the request and when it granted it (its record times, epoch ms).
    requested_ms: int = 0
    granted_ms: int = 0


class LimiterSetCmd(_Cmd, tag="limiter_set"):
    """Create limiter `wf_id`, or change what it allows (the limiter's name shares the key space of ids).

    A declaration in code (`declared` is its fingerprint) applies only if it differs from the last
    one applied, so a change made at runtime stands until the code's declaration changes.
    """

    spec: LimitSpec
    declared: str | None = None
    reply_to: ReplyTo | None = None
    identity: str | None = None


class LimiterDeleteCmd(_Cmd, tag="limiter_delete"):
    """Delete limiter `wf_id`; refused while permits are held or requested unless `force`.

    With `force`, waiting requests are refused (their `ctx.limit` raises `LimiterNotFoundError`)
    and the releases of held permits are ignored.
    """

    force: bool = False
    reply_to: ReplyTo | None = None
    identity: str | None = None


class LimiterDescribeCmd(_Cmd, tag="limiter_describe"):
    """Answer with the limiter's record and its queue (or, with `holder`, that request's place in line)."""

    reply_to: ReplyTo
    holder: str | None = None


class LimiterListCmd(_Cmd, tag="limiter_list"):
    """Answer with one partition's limiters (`wf_id` empty; `partition` names the one that answers)."""

    partition: int
    reply_to: ReplyTo


LIMITER_COMMANDS: Final = (LimitAcquireCmd, LimitReleaseCmd, LimiterSetCmd, LimiterDeleteCmd)
LimiterCommand = LimitAcquireCmd | LimitReleaseCmd | LimiterSetCmd | LimiterDeleteCmd


DirectiveRecord = (
    StartCmd
    | NextCmd
    | EventCmd
    | CancelCmd
    | ChildDoneCmd
    | DescribeCmd
    | QueryCmd
    | WatchCmd
    | ListCmd
    | ScheduleCreateCmd
    | ScheduleUpdateCmd
    | SchedulePauseCmd
    | ScheduleTriggerCmd
    | ScheduleBackfillCmd
    | ScheduleDeleteCmd
    | ScheduleDescribeCmd
    | ScheduleListCmd
    | ScheduleRunEndedCmd
    | TaskStartedCmd
    | TaskHeartbeatCmd
    | TaskResultCmd
    | LimitAcquireCmd
    | LimitReleaseCmd
    | LimitGrantCmd
    | LimiterSetCmd
    | LimiterDeleteCmd
    | LimiterDescribeCmd
    | LimiterListCmd
)

directive_decoder = msgspec.msgpack.Decoder(DirectiveRecord)  # type: ignore[arg-type]
#: Task workers in other languages write their answers as JSON (a record whose first byte is
#: `{`: never the first byte of a msgpack directive, a map). Same records, same tags.
directive_json_decoder = msgspec.json.Decoder(DirectiveRecord)  # type: ignore[arg-type]


def decode_directive(value: bytes) -> DirectiveRecord:
    """Decode a `directives` record: msgpack (the engine's own), or JSON (a task worker's answer).

    Raises:
        msgspec.DecodeError: neither (see `DECODE_ERRORS`).
    """
    if value[:1] == b"{":
        return directive_json_decoder.decode(value)  # type: ignore[no-any-return]
    return directive_decoder.decode(value)  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- history topic


class HistoryRecord(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One history event as written to the `history` topic (see `grctl.models.HistoryEvent`)."""

    kind: str
    wf_id: str
    run_id: str
    ts_ms: int
    msg: dict[str, Any] | None = None
    worker_id: str = ""
    op: str = ""
    v: int = SCHEMA_VERSION


history_decoder = msgspec.msgpack.Decoder(HistoryRecord)


# --------------------------------------------------------------------------- replies topic


class ReplyCode(StrEnum):
    """Why a request was refused (`Reply.code`, and `code` of a `run.rejected` history event)."""

    not_found = "not_found"  # no run of the workflow id
    finished = "finished"  # the run (or the addressed older run) already ended
    unknown_event = "unknown_event"  # the run's workflow has no handler for the event
    unknown_query = "unknown_query"  # the run's workflow has no such query
    query_failed = "query_failed"  # the query handler raised
    already_running = "already_running"  # start with the id of an active run
    type_not_registered = "type_not_registered"  # start of a type the workers do not serve
    payload_too_large = "payload_too_large"  # a value over the size limit (PayloadTooLargeError)
    schedule_exists = "schedule_exists"  # create with the id of an existing schedule
    schedule_not_found = "schedule_not_found"  # no schedule with that id
    invalid_schedule = "invalid_schedule"  # a spec or a range that cannot be used
    limiter_not_found = "limiter_not_found"  # no limiter with that name
    limiter_in_use = "limiter_in_use"  # delete of a limiter with permits held or requested
    invalid_limiter = "invalid_limiter"  # a limit that cannot be used (≤ 0, a rate without period)


class Reply(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A record for one client on `replies`: the answer to a request, or a watched run's outcome.

    `kind` is "" for an answer (to `request_id`; `code` is a `ReplyCode` when `ok` is false)
    and "outcome" for the end of a run the client watches (`run_id`; `payload` holds status,
    result, error and duration_ms).
    """

    request_id: str
    client_id: str
    ok: bool = True
    code: str = ""
    message: str = ""
    payload: Any = None
    kind: str = ""
    run_id: str = ""
    v: int = SCHEMA_VERSION


#: `Reply.kind` of a watched run's end.
OUTCOME = "outcome"


reply_decoder = msgspec.msgpack.Decoder(Reply)


# --------------------------------------------------------------------------- state tables


class RunRecord(msgspec.Struct, kw_only=True, omit_defaults=True, gc=False):
    """The latest run of one workflow id (table `r/`).

    `state` is where the run is: `step` (step `step` number `seq` is scheduled or running),
    `wait` (waiting for an event), or a terminal state. `last_offset` is the offset of the last
    `directives` record applied to this run, so a re-delivered record is never applied twice.

    The record holds at most one user value at a time (the payload of the step it runs, or
    the run's result) next to ids and a bounded error, so a value under the value limit always
    fits (`grctl.kafka.limits`). The start input is the start step's payload; records written
    before this rule may still carry an `input` field, which decoding ignores.

    Not tracked by Python's garbage collector (`gc=False`; `ReplyTo` and `ParentRef` too): a
    worker caches thousands of decoded records, and a collector walking them made each full
    collection a pause of 100-300 ms every few seconds at full load (benchmarks/README.md, soak).
    A record never refers back to anything that refers to it, so it cannot be part of a cycle.
    """

    run_id: str
    wf_id: str
    wf_type: str
    status: RunStatus
    state: RunStateKind
    seq: int = 0
    step: str | None = None
    step_payload: Any = None
    step_timeout_ms: int | None = None
    result: Any = None
    error: dict[str, Any] | None = None
    created_ms: int = 0
    started_ms: int = 0
    ended_ms: int = 0
    timeout_ms: int | None = None
    parent: ParentRef | None = None
    last_offset: int = -1
    cancel_reason: str | None = None
    cancel_pending: bool = False
    #: Who started the run, and who asked to cancel or terminate it (the directives' `identity`).
    started_by: str | None = None
    cancel_by: str | None = None
    wait_timeout_ms: int | None = None
    wait_on_timeout: str | None = None
    inbox_next: int = 0
    inbox_head: int = 0
    timer_due_ms: int | None = None
    deadline_ms: int | None = None
    suspended_until_ms: int | None = None
    retain_until_ms: int | None = None
    watchers: tuple[ReplyTo, ...] = ()
    #: The start directive's trace context, so every step joins the run's trace (`grctl.tracing`).
    traceparent: str | None = None
    #: The version of its workflow type the run executes on (pinned), and whether it moves to
    #: the newest version served at its next step (its version declared `upgrade="auto"`).
    version: int = 1
    upgrade_auto: bool = False
    #: With status awaiting_code: the code the run waits for (a version, a step, an event handler).
    missing: str | None = None
    #: While it waits: the events its version handles (the deploy check compares them with new code).
    awaits: list[str] | None = None
    #: Started by a schedule: its id (told when the run ends) and the tick the run serves.
    schedule_id: str | None = None
    scheduled_ms: int | None = None
    #: The remote task the run's suspended step waits for (docs/remote-tasks.md).
    remote: RemoteTask | None = None
    #: Its priority for limiters (1 first .. 5 last), inherited by its children.
    priority: int = DEFAULT_PRIORITY
    #: The permit its suspended step waits for, and the permits it holds (docs/tutorials/flow-control.md).
    acquire: PendingAcquire | None = None
    #: A tuple, not a list: msgspec gives every record a list of its own, and a list is always
    #: tracked by the garbage collector (the cached records' empty lists were 47,000 of the
    #: 99,500 objects a soak worker's full collections walked, issue 32).
    permits: tuple[HeldPermit, ...] = ()
    v: int = SCHEMA_VERSION


class InboxEntry(msgspec.Struct, kw_only=True, omit_defaults=True):
    """An event waiting in a run's inbox (table `i/`)."""

    run_id: str
    event_name: str
    payload: Any = None
    event_id: str = ""
    timeout_ms: int | None = None


class TimerKind(StrEnum):
    """What a durable timer is for."""

    wait = "wait"  # the wait timeout of a waiting run
    resume = "resume"  # the end of a long task retry back-off: re-execute the suspended step
    workflow = "workflow"  # the workflow timeout
    retention = "retention"  # an ended run's retention is over: delete its state
    schedule = "schedule"  # a schedule's next tick fires (`wf_id` is the schedule id)
    task = "task"  # a remote task's attempt times out, or its retry back-off ends
    limiter = "limiter"  # a limiter's bucket has a permit again for its waiting requests (`wf_id`: its name)


class TimerEntry(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A durable timer (table `t/`, keyed by due time)."""

    wf_id: str
    run_id: str
    kind: TimerKind
    seq: int
    due_ms: int


run_decoder = msgspec.msgpack.Decoder(RunRecord)
inbox_decoder = msgspec.msgpack.Decoder(InboxEntry)
timer_decoder = msgspec.msgpack.Decoder(TimerEntry)
encoder = msgspec.msgpack.Encoder()

#: Run states in which a run can still move (the others are terminal).
ACTIVE_STATES = frozenset({RunStateKind.step, RunStateKind.wait})


class SpecEra(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A spec and the time it took force (a schedule keeps its last few, for backfills)."""

    since_ms: int
    spec: ScheduleSpec


class TickEntry(msgspec.Struct, kw_only=True, omit_defaults=True, gc=False):
    """One tick of a schedule, as kept in its bounded ring of recent ticks.

    `action` is what the tick did: started (with `run_wf_id`), skipped, buffered, missed,
    cancel_other (started after the other run ended), withdrawn (started ahead of its time, then
    cancelled before it because the schedule was paused, deleted or given a new spec). `status`
    is the run's end, once known.
    `how`: scheduled, trigger or backfill.
    """

    tick_ms: int
    action: str
    at_ms: int = 0
    how: str = "scheduled"
    run_wf_id: str = ""
    run_id: str = ""
    status: str = ""
    #: Who triggered or backfilled it (empty: the cadence).
    by: str = ""


class ScheduleRecord(msgspec.Struct, kw_only=True, omit_defaults=True, gc=False):
    """A schedule (table `k/`): what it starts, when, and what its recent ticks did.

    Every field is bounded: `eras` (the specs in force, newest last), `running` (runs started
    and not ended), `buffered` (ticks waiting for the running run to end) and `recent` (the
    ring of the last ticks) each have a cap in `grctl.engine.schedules`.
    """

    schedule_id: str
    wf_type: str
    spec: ScheduleSpec
    input: Any = None
    overlap: OverlapPolicy = OverlapPolicy.skip
    catchup_ms: int = 365 * 24 * 3_600_000
    id_template: str | None = None
    paused: bool = False
    note: str = ""
    created_ms: int = 0
    updated_ms: int = 0
    #: Who created it, and who changed it last (update, pause, resume): operator identities.
    created_by: str | None = None
    updated_by: str | None = None
    #: The last tick the cadence has dealt with (fired, skipped, buffered or missed).
    last_tick_ms: int | None = None
    #: The next tick, and when the schedule's timer deals with it: the tick's time plus its
    #: jitter, less the lead by which its run may be committed ahead (`schedules.FIRE_LEAD_MS`).
    next_tick_ms: int | None = None
    next_fire_ms: int | None = None
    eras: list[SpecEra] = []
    #: (workflow id, run id) of each run started and not known to have ended.
    running: list[tuple[str, str]] = []
    buffered: list[int] = []
    recent: list[TickEntry] = []
    fired: int = 0
    skipped: int = 0
    buffered_total: int = 0
    missed: int = 0
    last_offset: int = -1
    v: int = SCHEMA_VERSION


schedule_decoder = msgspec.msgpack.Decoder(ScheduleRecord)


# --------------------------------------------------------------------------- limiters


class LimiterRecord(msgspec.Struct, kw_only=True, omit_defaults=True, gc=False):
    """A limiter (table `L/`): what it allows and its counters.

    Its waiting requests (`W/`) and held permits (`H/`) are records of their own, so the limiter's
    record stays small however long its queue is. `tokens_u` is the rate's bucket in millionths of
    a permit, as of `tokens_at_ms` (a record timestamp: the bucket moves with the inputs, not with a
    worker's clock). `passes` and `vtime` are the stride scheduler's state across fairness keys.
    """

    name: str
    spec: LimitSpec
    declared: str | None = None
    created_ms: int = 0
    updated_ms: int = 0
    created_by: str | None = None
    updated_by: str | None = None
    in_use: int = 0
    waiting: int = 0
    tokens_u: int = 0
    tokens_at_ms: int = 0
    passes: dict[str, int] = {}
    vtime: int = 0
    arrivals: int = 0
    granted: int = 0
    released: int = 0
    refused: int = 0
    #: Total wait of the granted requests (ms), for the mean wait `describe` shows.
    waited_ms: int = 0
    timer_due_ms: int | None = None
    last_offset: int = -1
    v: int = SCHEMA_VERSION


class LimitWaiter(msgspec.Struct, kw_only=True, omit_defaults=True, gc=False):
    """A request waiting for a permit (table `W/`, in arrival order)."""

    holder: str
    wf_id: str
    run_id: str
    acquire_id: str
    arrival: int
    key: str = ""
    fairness: str = ""
    priority: int = DEFAULT_PRIORITY
    since_ms: int = 0


class LimitHolder(msgspec.Struct, kw_only=True, omit_defaults=True, gc=False):
    """A permit held (table `H/`)."""

    holder: str
    wf_id: str
    run_id: str
    key: str = ""
    fairness: str = ""
    priority: int = DEFAULT_PRIORITY
    since_ms: int = 0


limiter_decoder = msgspec.msgpack.Decoder(LimiterRecord)
waiter_decoder = msgspec.msgpack.Decoder(LimitWaiter)
holder_decoder = msgspec.msgpack.Decoder(LimitHolder)
