"""Wire records of the engine: what travels on the namespace topics and sits in the state tables.

Every record is msgpack (msgspec) with a type tag; `v` is the schema version for future
evolution. Keys are bytes: the workflow id for `directives` and `history`, a table prefix plus
workflow id (plus sub-key) for `state` (every layout in `grctl.engine.keys`).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Final

import msgspec

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


class CancelCmd(_Cmd, tag="cancel"):
    """Cancel (or, with `terminate`, terminate) the latest run of `wf_id`."""

    reason: str | None = None
    terminate: bool = False
    run_id: str | None = None
    reply_to: ReplyTo | None = None


class ChildDoneCmd(_Cmd, tag="child_done"):
    """A child run ended: deliver its outcome to the parent run as an event."""

    run_id: str
    event_name: str
    child_wf_id: str
    child_run_id: str
    outcome: dict[str, Any]


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


DirectiveRecord = StartCmd | NextCmd | EventCmd | CancelCmd | ChildDoneCmd | DescribeCmd | QueryCmd | WatchCmd | ListCmd

directive_decoder = msgspec.msgpack.Decoder(DirectiveRecord)  # type: ignore[arg-type]


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
