"""Schedules from the client's side: building specs from friendly values, `ScheduleHandle`, descriptions.

A schedule lives in the partition that owns its id (`grctl.engine.schedules`); every change is
a directive sent there and answered on the client's `replies` partition, as a run's start is.
Specs are checked here before anything is sent (`ScheduleSpecError` names the part at fault),
and again by the worker.

May import (of grctl): errors, defaults, models, codec, engine, kafka, and the client's modules.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from grctl.engine.records import (
    OverlapPolicy,
    Reply,
    ReplyCode,
    ScheduleBackfillCmd,
    ScheduleDeleteCmd,
    ScheduleDescribeCmd,
    SchedulePauseCmd,
    ScheduleRecord,
    ScheduleTriggerCmd,
    ScheduleUpdateCmd,
    schedule_decoder,
)
from grctl.engine.schedule_spec import (
    CalendarSpec,
    IntervalSpec,
    ScheduleSpec,
    compile_spec,
    parse_duration_ms,
    parse_interval,
)
from grctl.engine.schedules import MIN_CATCHUP_MS, run_wf_id
from grctl.errors import (
    InvalidArgumentError,
    ScheduleAlreadyExistsError,
    ScheduleError,
    ScheduleNotFoundError,
    ScheduleSpecError,
    WorkflowTypeNotRegisteredError,
)

if TYPE_CHECKING:
    from grctl.client.client import Client

#: Durations a schedule takes: a timedelta, seconds, or text ("30s", "5m", "1h30m").
Duration = timedelta | int | float | str
#: How many of its next ticks `describe` shows.
NEXT_TICKS = 10


def duration_ms(value: Duration, field_name: str) -> int:
    """A duration in milliseconds.

    Raises:
        ScheduleSpecError: not a duration, or negative.
    """
    if isinstance(value, timedelta):
        ms = round(value.total_seconds() * 1000)
    elif isinstance(value, bool):
        raise ScheduleSpecError(f"{field_name} {value!r} is not a duration", field=field_name, value=value)
    elif isinstance(value, int | float):
        ms = round(value * 1000)
    elif isinstance(value, str):
        ms = parse_duration_ms(value, field=field_name)
    else:
        raise ScheduleSpecError(
            f"{field_name} {value!r} is not a duration: give a timedelta, seconds or text such as '30s'",
            field=field_name,
            value=value,
        )
    if ms < 0:
        raise ScheduleSpecError(f"{field_name} {value!r} is negative", field=field_name, value=value)
    return ms


def _moment_ms(value: datetime | None, field_name: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise ScheduleSpecError(
            f"{field_name} {value!r} must be an aware datetime (with a tzinfo, e.g. datetime(..., tzinfo=UTC))",
            field=field_name,
            value=value,
        )
    return round(value.timestamp() * 1000)


def _strings(value: str | Iterable[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


def build_spec(
    *,
    cron: str | Iterable[str] | None = None,
    interval: str | timedelta | IntervalSpec | Iterable[str | timedelta | IntervalSpec] | None = None,
    calendars: Sequence[CalendarSpec] = (),
    exclude: Sequence[CalendarSpec] = (),
    time_zone: str = "UTC",
    start: datetime | None = None,
    end: datetime | None = None,
    jitter: Duration | None = None,
) -> ScheduleSpec:
    """A checked `ScheduleSpec` from friendly values.

    Raises:
        ScheduleSpecError: a part cannot be used (the error names it).
    """
    intervals: list[IntervalSpec] = []
    items: Iterable[Any] = (
        () if interval is None else [interval] if isinstance(interval, str | timedelta | IntervalSpec) else interval
    )
    for item in items:
        if isinstance(item, IntervalSpec):
            intervals.append(item)
        elif isinstance(item, timedelta):
            intervals.append(IntervalSpec(every_ms=duration_ms(item, "interval")))
        else:
            intervals.append(parse_interval(str(item)))
    spec = ScheduleSpec(
        cron=_strings(cron),
        calendars=tuple(calendars),
        intervals=tuple(intervals),
        exclude=tuple(exclude),
        time_zone=time_zone,
        start_ms=_moment_ms(start, "start"),
        end_ms=_moment_ms(end, "end"),
        jitter_ms=duration_ms(jitter, "jitter") if jitter is not None else 0,
    )
    compile_spec(spec)
    return spec


def overlap_policy(value: str | OverlapPolicy | None) -> OverlapPolicy | None:
    """An `OverlapPolicy` from its name (`skip`, `buffer_one`, ...; dashes allowed).

    Raises:
        InvalidArgumentError: no such policy.
    """
    if value is None or isinstance(value, OverlapPolicy):
        return value
    try:
        return OverlapPolicy(str(value).replace("-", "_").lower())
    except ValueError:
        names = ", ".join(p.value for p in OverlapPolicy)
        raise InvalidArgumentError(
            f"unknown overlap policy {value!r}: use one of {names}", argument="overlap"
        ) from None


def catchup_ms(value: Duration | None) -> int | None:
    """A catch-up window in ms (at least 10 s).

    Raises:
        ScheduleSpecError: not a duration, or shorter than 10 s.
    """
    if value is None:
        return None
    ms = duration_ms(value, "catchup")
    if ms < MIN_CATCHUP_MS:
        raise ScheduleSpecError(
            f"catch-up window {value!r} is shorter than {MIN_CATCHUP_MS // 1000}s: give at least 10s",
            field="catchup",
            value=value,
        )
    return ms


def raise_for(reply: Reply, schedule_id: str, wf_type: str | None = None) -> None:
    """Raise the error a refused schedule request stands for (nothing if it was accepted)."""
    if reply.ok:
        return
    code, text = reply.code, reply.message or "refused"
    if code == ReplyCode.schedule_not_found:
        raise ScheduleNotFoundError(text, schedule_id=schedule_id, code=code)
    if code == ReplyCode.schedule_exists:
        raise ScheduleAlreadyExistsError(text, schedule_id=schedule_id, code=code)
    if code == ReplyCode.type_not_registered:
        raise WorkflowTypeNotRegisteredError(text, wf_type=wf_type or "")
    raise ScheduleError(f"schedule {schedule_id!r}: {text}", schedule_id=schedule_id, code=code)


def _dt(ms: int | None) -> datetime | None:
    return datetime.fromtimestamp(ms / 1000, UTC) if ms is not None else None


@dataclass(frozen=True)
class TickInfo:
    """One recent tick of a schedule: what it did, and its run's id and end once known."""

    tick: datetime
    action: str
    how: str
    at: datetime | None
    run_wf_id: str | None
    run_id: str | None
    status: str | None
    #: Who triggered or backfilled it (None: the cadence).
    by: str | None = None


@dataclass(frozen=True)
class ScheduleDescription:
    """A schedule as its partition's owner holds it, with its next ticks computed from its spec."""

    id: str
    workflow_type: str
    spec: ScheduleSpec
    input: Any
    overlap: str
    catchup: timedelta
    paused: bool
    note: str
    next_ticks: list[datetime]
    recent: list[TickInfo]
    fired: int
    skipped: int
    buffered: int
    missed: int
    running: list[str]
    waiting: list[datetime]
    created_at: datetime | None
    updated_at: datetime | None
    record: ScheduleRecord = field(repr=False)
    #: Who created the schedule, and who changed it last (update, pause, resume).
    created_by: str | None = None
    updated_by: str | None = None

    @classmethod
    def of(cls, record: ScheduleRecord, now: datetime | None = None) -> ScheduleDescription:
        """Describe a schedule record (next ticks from `now`, default the current time)."""
        compiled = compile_spec(record.spec)
        after = round((now or datetime.now(UTC)).timestamp() * 1000)
        if record.next_tick_ms is not None:
            after = min(after, record.next_tick_ms - 1)
        next_ticks = [] if record.paused else [_dt(t) for t in compiled.ticks(after, limit=NEXT_TICKS)]
        return cls(
            id=record.schedule_id,
            workflow_type=record.wf_type,
            spec=record.spec,
            input=record.input,
            overlap=str(record.overlap.value if isinstance(record.overlap, OverlapPolicy) else record.overlap),
            catchup=timedelta(milliseconds=record.catchup_ms),
            paused=record.paused,
            note=record.note,
            next_ticks=[t for t in next_ticks if t is not None],
            recent=[
                TickInfo(
                    tick=_dt(e.tick_ms) or datetime.min.replace(tzinfo=UTC),
                    action=e.action,
                    how=e.how,
                    at=_dt(e.at_ms),
                    run_wf_id=e.run_wf_id or None,
                    run_id=e.run_id or None,
                    status=e.status or None,
                    by=e.by or None,
                )
                for e in record.recent
            ],
            fired=record.fired,
            skipped=record.skipped,
            buffered=record.buffered_total,
            missed=record.missed,
            running=[wf_id for wf_id, _run_id in record.running],
            waiting=[t for t in (_dt(ms) for ms in record.buffered) if t is not None],
            created_at=_dt(record.created_ms),
            updated_at=_dt(record.updated_ms),
            record=record,
            created_by=record.created_by,
            updated_by=record.updated_by,
        )

    def run_id_for(self, tick: datetime) -> str:
        """The workflow id of the run a tick starts."""
        return run_wf_id(self.record, round(tick.timestamp() * 1000))


class ScheduleHandle:
    """A schedule of the namespace: describe it, pause, resume, trigger, backfill, update, delete.

    Args:
        client: the client that sends the requests.
        schedule_id: the schedule's id.
    """

    def __init__(self, client: Client, schedule_id: str) -> None:
        self.client = client
        self.id = schedule_id

    def __repr__(self) -> str:
        return f"ScheduleHandle({self.id!r})"

    async def describe(self) -> ScheduleDescription:
        """The schedule's spec, next ticks, recent ticks with their runs, and counts.

        Raises:
            ScheduleNotFoundError: no such schedule.
        """
        reply = await self.client._request(self.id, lambda to: ScheduleDescribeCmd(wf_id=self.id, reply_to=to))
        raise_for(reply, self.id)
        record = schedule_decoder.decode(_reencode(reply.payload))
        return ScheduleDescription.of(record)

    async def pause(self, note: str = "", *, identity: str | None = None) -> None:
        """Pause: no tick fires until `resume` (ticks meanwhile are not caught up).

        `identity` (default: the client's) is recorded as who changed the schedule.
        """
        who = self.client._identity(identity)
        reply = await self.client._request(
            self.id, lambda to: SchedulePauseCmd(wf_id=self.id, note=note, reply_to=to, identity=who)
        )
        raise_for(reply, self.id)

    async def resume(self, note: str = "", *, identity: str | None = None) -> None:
        """Resume: the next tick is the first after now (`identity` as for `pause`)."""
        who = self.client._identity(identity)
        reply = await self.client._request(
            self.id, lambda to: SchedulePauseCmd(wf_id=self.id, resume=True, note=note, reply_to=to, identity=who)
        )
        raise_for(reply, self.id)

    async def trigger(
        self, overlap: str | OverlapPolicy | None = None, *, identity: str | None = None
    ) -> dict[str, Any]:
        """Start a run now, as a tick of its own millisecond (the overlap policy applies; works while paused).

        `identity` (default: the client's) is recorded with the tick.

        Returns:
            `tick_ms`, `action` (started, skipped or buffered) and `run_wf_id` when started.
        """
        policy = overlap_policy(overlap)
        who = self.client._identity(identity)
        reply = await self.client._request(
            self.id, lambda to: ScheduleTriggerCmd(wf_id=self.id, overlap=policy, reply_to=to, identity=who)
        )
        raise_for(reply, self.id)
        return dict(reply.payload)

    async def backfill(
        self, start: datetime, end: datetime, overlap: str | OverlapPolicy | None = None
    ) -> dict[str, Any]:
        """Fire the ticks in `[start, end]`, each of the spec in force at its time.

        Returns:
            `ticks`, `started`, `skipped`.

        Raises:
            ScheduleError: the range is in the future, backwards or holds more than 1000 ticks.
        """
        from_ms, to_ms = _moment_ms(start, "start"), _moment_ms(end, "end")
        assert from_ms is not None and to_ms is not None
        policy = overlap_policy(overlap)
        reply = await self.client._request(
            self.id,
            lambda to: ScheduleBackfillCmd(
                wf_id=self.id,
                from_ms=from_ms,
                to_ms=to_ms,
                overlap=policy,
                reply_to=to,
                identity=self.client.identity,
            ),
        )
        raise_for(reply, self.id)
        return dict(reply.payload)

    async def update(
        self,
        *,
        spec: ScheduleSpec | None = None,
        workflow_type: str | None = None,
        input: Any = ...,
        overlap: str | OverlapPolicy | None = None,
        catchup: Duration | None = None,
    ) -> None:
        """Change the schedule (what is not given stays); a new spec takes force now.

        Raises:
            ScheduleSpecError: the new spec cannot be used.
            ScheduleNotFoundError: no such schedule.
        """
        if spec is not None:
            compile_spec(spec)
        policy = overlap_policy(overlap)
        window = catchup_ms(catchup)
        set_input = input is not ...
        raw = self.client.codec.to_primitive(input) if set_input else None
        reply = await self.client._request(
            self.id,
            lambda to: ScheduleUpdateCmd(
                wf_id=self.id,
                spec=spec,
                wf_type=workflow_type,
                input=raw,
                set_input=set_input,
                overlap=policy,
                catchup_ms=window,
                reply_to=to,
                identity=self.client.identity,
            ),
            what="schedule input" if set_input else None,
            value=raw,
        )
        raise_for(reply, self.id, workflow_type)

    async def delete(self) -> None:
        """Delete the schedule (the runs it started go on).

        Raises:
            ScheduleNotFoundError: no such schedule.
        """
        reply = await self.client._request(
            self.id, lambda to: ScheduleDeleteCmd(wf_id=self.id, reply_to=to, identity=self.client.identity)
        )
        raise_for(reply, self.id)


def _reencode(payload: Any) -> bytes:
    """A reply's payload (decoded as builtins) back to the bytes of the record it was."""
    from grctl.engine.records import encoder

    return encoder.encode(payload)
