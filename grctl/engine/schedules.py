"""The schedule state machine: pure functions from (schedule, input) to a `ScheduleTransition`.

A schedule is a record of its partition (`keys.schedule_key`), like a run. Its inputs are the
schedule directives (`records.ScheduleCreateCmd` ...), the end of a run it started
(`ScheduleRunEndedCmd`, sent by the run's end as a child's end is sent to its parent) and its
timer (`TimerKind.schedule`, due when its next tick fires). The processor stages what a
transition returns with the consumed offsets in one transaction, so a firing is one
transaction: the `StartCmd` of the tick's run, the schedule's new last and next tick, the
offsets. A crash before the commit fires the tick again from the committed state (the same
tick, the same run id); after it, the tick is the schedule's `last_tick_ms` and never fires again.

The cadence (`on_due`): every tick whose firing time has come is dealt with in order, at most
`MAX_TICKS_PER_TRANSITION` per transition (the timer is re-armed at once for the rest). A tick
older than the catch-up window is counted as missed; any other goes to the overlap policy
(`OverlapPolicy`): started, skipped, or buffered until the running run ends. A paused schedule
arms no timer; on resume its next tick is the first after the resume (paused ticks are not
caught up, as Temporal does).

May import (of grctl): errors, defaults, models, engine.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import msgspec

from grctl.engine.machine import bounded_identity
from grctl.engine.records import (
    CancelCmd,
    DirectiveRecord,
    OverlapPolicy,
    Reply,
    ReplyCode,
    ReplyTo,
    ScheduleBackfillCmd,
    ScheduleCommand,
    ScheduleCreateCmd,
    ScheduleDeleteCmd,
    SchedulePauseCmd,
    ScheduleRecord,
    ScheduleRunEndedCmd,
    ScheduleTriggerCmd,
    ScheduleUpdateCmd,
    SpecEra,
    StartCmd,
    TickEntry,
    TimerEntry,
    TimerKind,
    encoder,
)
from grctl.engine.schedule_spec import CompiledSpec, ScheduleSpec, compile_spec, tick_iso
from grctl.errors import InternalError, ScheduleSpecError

#: Recent ticks a schedule keeps (its ring: `describe` shows them).
MAX_RECENT: Final = 20
#: Ticks a buffering schedule keeps waiting; more are skipped (and counted).
MAX_BUFFERED: Final = 1000
#: Runs a schedule tracks as running (allow_all may start more; the oldest are forgotten).
MAX_RUNNING: Final = 1000
#: Specs kept with the time they took force, so a backfill uses the one in force at each tick.
MAX_ERAS: Final = 4
#: The largest spec (encoded) and schedule id a schedule takes. With the ring and the eras they
#: keep a schedule's record, besides its input, within the envelope every engine record has
#: beside its one user value (`grctl.kafka.limits.ENVELOPE_RESERVE_BYTES`, 16 KiB).
MAX_SPEC_BYTES: Final = 1024
MAX_ID_CHARS: Final = 200
#: Ticks one transition deals with; more (after a long outage) follow in the next transitions.
MAX_TICKS_PER_TRANSITION: Final = 1000
#: Ticks one backfill may fire (a longer range is refused: split it).
MAX_BACKFILL_TICKS: Final = 1000
#: The shortest catch-up window, and the default (a year, as Temporal since its change).
MIN_CATCHUP_MS: Final = 10_000
DEFAULT_CATCHUP_MS: Final = 365 * 24 * 3_600_000

#: How far ahead of its time a tick's run may be committed: its start step waits for the tick
#: (`StartCmd.not_before_ms`), so a burst of ticks due together (thousands of schedules on one
#: cron line) is fired over the seconds before it instead of after it. A tick is fired ahead only
#: when no run of the schedule is running or buffered (otherwise the overlap policy decides at
#: the tick's time), at most one tick ahead, and at most half the time from the arming of its
#: timer to the tick (a schedule every second fires up to 0.5 s ahead).
FIRE_LEAD_MS: Final = 5_000

#: The statuses a tick's run can end in that `ScheduleRunEndedCmd` carries, besides run statuses.
REJECTED: Final = "rejected"


class TypeCatalog(Protocol):
    """What the schedule machine needs to know of the served workflow types."""

    def has_type(self, wf_type: str) -> bool:
        """True if this worker serves some version of `wf_type`."""
        ...


@dataclass(slots=True)
class ScheduleTransition:
    """Everything one input changes for a schedule: all of it is published in one transaction.

    Attributes:
        record: the schedule's new record (None: unchanged, or deleted).
        delete: the schedule is deleted.
        sends: directive records (the starts of tick runs; cancels of the other run).
        replies: answers to client requests.
        timers_set: timers to arm (the schedule's next firing).
        timers_clear: timers to disarm.
        skipped: the input was stale or a duplicate; nothing changed.
        fired: (tick, lateness ms) of each run started, for metrics.
        skipped_ticks: ticks skipped by the overlap policy.
        buffered_ticks: ticks buffered.
        missed_ticks: ticks older than the catch-up window.
        withdrawn: runs fired ahead of their tick and cancelled before it (pause, delete, new spec).
    """

    record: ScheduleRecord | None = None
    delete: bool = False
    sends: list[DirectiveRecord] = field(default_factory=list)
    replies: list[tuple[ReplyTo, Reply]] = field(default_factory=list)
    timers_set: list[TimerEntry] = field(default_factory=list)
    timers_clear: list[TimerEntry] = field(default_factory=list)
    skipped: bool = False
    fired: list[tuple[int, int]] = field(default_factory=list)
    skipped_ticks: int = 0
    buffered_ticks: int = 0
    missed_ticks: int = 0
    withdrawn: int = 0


SKIP_SCHEDULE: Final = ScheduleTransition(skipped=True)


@functools.lru_cache(maxsize=8192)
def compiled(spec: ScheduleSpec) -> CompiledSpec:
    """`compile_spec`, once per distinct spec (specs are frozen, so they key a cache)."""
    return compile_spec(spec)


def run_wf_id(record: ScheduleRecord, tick_ms: int) -> str:
    """The workflow id of a tick's run: `<schedule id>:<tick ISO UTC>`, or the schedule's template."""
    if record.id_template:
        return record.id_template.replace("{schedule_id}", record.schedule_id).replace("{tick}", tick_iso(tick_ms))
    return f"{record.schedule_id}:{tick_iso(tick_ms)}"


_CROCKFORD: Final = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def tick_run_ulid(schedule_id: str, tick_ms: int, now_ms: int, how: str) -> str:
    """A run id (a ULID, as every run id) for a tick: its time part `now_ms`, the rest a hash of the tick.

    The same tick applied again (a crash before the commit) gets the same id, so its start is
    recognised as a duplicate by the run's partition.
    """
    digest = hashlib.blake2b(f"{schedule_id}\x00{tick_ms}\x00{how}".encode(), digest_size=10).digest()
    value = (now_ms & (2**48 - 1)) << 80 | int.from_bytes(digest, "big")
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


def check_create(cmd: ScheduleCreateCmd | ScheduleUpdateCmd) -> None:
    """Check a create's or an update's values (the client checks first; the machine again).

    Raises:
        ScheduleSpecError: a spec, a catch-up window or an id template that cannot be used.
    """
    if len(cmd.wf_id) > MAX_ID_CHARS:
        raise ScheduleSpecError(
            f"schedule id of {len(cmd.wf_id)} characters: give at most {MAX_ID_CHARS}", field="id", value=cmd.wf_id
        )
    if cmd.spec is not None:
        compile_spec(cmd.spec)
        size = len(encoder.encode(cmd.spec))
        if size > MAX_SPEC_BYTES:
            raise ScheduleSpecError(
                f"the spec takes {size} bytes encoded, more than {MAX_SPEC_BYTES}: use fewer or shorter "
                "cron lines and calendar specs (or several schedules)",
                field="spec",
                value=size,
            )
    if cmd.catchup_ms is not None and cmd.catchup_ms < MIN_CATCHUP_MS:
        raise ScheduleSpecError(
            f"catch-up window of {cmd.catchup_ms} ms: give at least {MIN_CATCHUP_MS // 1000}s",
            field="catchup",
            value=cmd.catchup_ms,
        )
    template = getattr(cmd, "id_template", None)
    if template is not None and len(template) > MAX_ID_CHARS:
        raise ScheduleSpecError(
            f"id template of {len(template)} characters: give at most {MAX_ID_CHARS}",
            field="id_template",
            value=template,
        )
    if template is not None and "{tick}" not in template:
        raise ScheduleSpecError(
            f"id template {template!r} has no '{{tick}}': every tick needs a workflow id of its own "
            "(e.g. '{schedule_id}-{tick}')",
            field="id_template",
            value=template,
        )


class ScheduleMachine:
    """Applies inputs to schedules. One per worker; stateless apart from its catalog.

    Args:
        catalog: the workflow types the worker serves (a create of an unknown type is refused).
        lead_ms: how far ahead of its time a tick's run may be committed (`FIRE_LEAD_MS`; 0: at
            its time).
    """

    def __init__(self, catalog: TypeCatalog, lead_ms: int = FIRE_LEAD_MS) -> None:
        self.catalog = catalog
        self.lead_ms = lead_ms

    # ------------------------------------------------------------------ directives

    def apply(
        self, record: ScheduleRecord | None, cmd: ScheduleCommand, offset: int, now_ms: int
    ) -> ScheduleTransition:
        """Apply one schedule directive."""
        if record is not None and 0 <= offset <= record.last_offset:
            return SKIP_SCHEDULE  # re-delivered after a crash: already applied
        if isinstance(cmd, ScheduleCreateCmd):
            tr = self.on_create(record, cmd, now_ms)
        elif record is None:
            tr = ScheduleTransition()
            if not isinstance(cmd, ScheduleRunEndedCmd) and cmd.reply_to is not None:
                tr.replies.append(
                    _error(cmd.reply_to, ReplyCode.schedule_not_found, f"no schedule with id {cmd.wf_id!r}")
                )
            return tr
        elif isinstance(cmd, ScheduleUpdateCmd):
            tr = self.on_update(record, cmd, now_ms)
        elif isinstance(cmd, SchedulePauseCmd):
            tr = self.on_pause(record, cmd, now_ms)
        elif isinstance(cmd, ScheduleTriggerCmd):
            tr = self.on_trigger(record, cmd, now_ms)
        elif isinstance(cmd, ScheduleBackfillCmd):
            tr = self.on_backfill(record, cmd, now_ms)
        elif isinstance(cmd, ScheduleDeleteCmd):
            tr = self.on_delete(record, cmd, now_ms)
        elif isinstance(cmd, ScheduleRunEndedCmd):
            tr = self.on_run_ended(record, cmd, now_ms)
        else:
            raise InternalError(f"ScheduleMachine.apply() does not take {type(cmd).__name__} records")
        if tr.record is not None and offset >= 0:
            tr.record.last_offset = offset
        return tr

    def on_create(self, record: ScheduleRecord | None, cmd: ScheduleCreateCmd, now_ms: int) -> ScheduleTransition:
        """Create a schedule: refused if the id exists, the type is not served or the spec is invalid."""
        tr = ScheduleTransition()
        if record is not None:
            if cmd.reply_to is not None:
                tr.replies.append(
                    _error(
                        cmd.reply_to,
                        ReplyCode.schedule_exists,
                        f"a schedule with id {cmd.wf_id!r} already exists (type {record.wf_type!r}); "
                        "update it, delete it first, or use another id",
                    )
                )
            return tr
        if not self.catalog.has_type(cmd.wf_type):
            if cmd.reply_to is not None:
                tr.replies.append(
                    _error(
                        cmd.reply_to,
                        ReplyCode.type_not_registered,
                        f"workflow type {cmd.wf_type!r} is not served by the workers of this namespace; "
                        "register it in a Worker(workflows=[...]) before scheduling it",
                    )
                )
            return tr
        try:
            check_create(cmd)
        except ScheduleSpecError as exc:
            if cmd.reply_to is not None:
                tr.replies.append(_error(cmd.reply_to, ReplyCode.invalid_schedule, str(exc)))
            return tr
        new = ScheduleRecord(
            schedule_id=cmd.wf_id,
            wf_type=cmd.wf_type,
            spec=cmd.spec,
            input=cmd.input,
            overlap=cmd.overlap,
            catchup_ms=cmd.catchup_ms,
            id_template=cmd.id_template,
            paused=cmd.paused,
            note=cmd.note,
            created_ms=now_ms,
            updated_ms=now_ms,
            created_by=bounded_identity(cmd.identity),
            updated_by=bounded_identity(cmd.identity),
            eras=[SpecEra(since_ms=now_ms, spec=cmd.spec)],
        )
        tr.record = self._arm(tr, new, now_ms)
        if cmd.reply_to is not None:
            tr.replies.append(_ok(cmd.reply_to, {"next_tick_ms": tr.record.next_tick_ms}))
        return tr

    def on_update(self, record: ScheduleRecord, cmd: ScheduleUpdateCmd, now_ms: int) -> ScheduleTransition:
        """Change a schedule; a new spec takes force now (its next tick is the first after now)."""
        tr = ScheduleTransition()
        if cmd.wf_type is not None and not self.catalog.has_type(cmd.wf_type):
            if cmd.reply_to is not None:
                tr.replies.append(
                    _error(
                        cmd.reply_to,
                        ReplyCode.type_not_registered,
                        f"workflow type {cmd.wf_type!r} is not served by the workers of this namespace",
                    )
                )
            return tr
        try:
            check_create(cmd)
        except ScheduleSpecError as exc:
            if cmd.reply_to is not None:
                tr.replies.append(_error(cmd.reply_to, ReplyCode.invalid_schedule, str(exc)))
            return tr
        changes: dict[str, Any] = {"updated_ms": now_ms, "updated_by": bounded_identity(cmd.identity)}
        base = record
        if cmd.spec is not None and cmd.spec != record.spec and not record.paused:
            # Ticks of the old spec already due (the timer not fired yet) still fire, as the old spec's.
            base = _copy(record)
            self._due_ticks(tr, base, now_ms)
            _withdraw_ahead(tr, base, now_ms, "given a new spec")
        if cmd.spec is not None and cmd.spec != record.spec:
            changes["spec"] = cmd.spec
            changes["eras"] = [*record.eras, SpecEra(since_ms=now_ms, spec=cmd.spec)][-MAX_ERAS:]
        if cmd.wf_type is not None:
            changes["wf_type"] = cmd.wf_type
        if cmd.set_input:
            changes["input"] = cmd.input
        if cmd.overlap is not None:
            changes["overlap"] = cmd.overlap
        if cmd.catchup_ms is not None:
            changes["catchup_ms"] = cmd.catchup_ms
        new = msgspec.structs.replace(base, **changes)
        if "spec" in changes:
            self._disarm(tr, record)
            new = self._arm(tr, msgspec.structs.replace(new, next_tick_ms=None, next_fire_ms=None), now_ms)
        tr.record = new
        if cmd.reply_to is not None:
            tr.replies.append(_ok(cmd.reply_to, {"next_tick_ms": new.next_tick_ms}))
        return tr

    def on_pause(self, record: ScheduleRecord, cmd: SchedulePauseCmd, now_ms: int) -> ScheduleTransition:
        """Pause (no timer; ticks while paused are not fired) or resume (the next tick after now)."""
        tr = ScheduleTransition()
        if cmd.resume:
            new = msgspec.structs.replace(
                record, paused=False, note=cmd.note, updated_ms=now_ms, updated_by=bounded_identity(cmd.identity)
            )
            if record.paused:
                new = self._arm(tr, msgspec.structs.replace(new, next_tick_ms=None, next_fire_ms=None), now_ms)
        else:
            self._disarm(tr, record)
            new = msgspec.structs.replace(
                _copy(record), paused=True, note=cmd.note, updated_ms=now_ms, next_tick_ms=None, next_fire_ms=None,
                updated_by=bounded_identity(cmd.identity),
            )  # fmt: skip
            _withdraw_ahead(tr, new, now_ms, "paused")
        tr.record = new
        if cmd.reply_to is not None:
            tr.replies.append(_ok(cmd.reply_to, {"paused": new.paused, "next_tick_ms": new.next_tick_ms}))
        return tr

    def on_trigger(self, record: ScheduleRecord, cmd: ScheduleTriggerCmd, now_ms: int) -> ScheduleTransition:
        """Start a run now, through the overlap policy; works while paused.

        The trigger's tick is its own millisecond, never a whole second (those are the spec's
        ticks): its run's id (`<schedule>:<ISO to the ms>`) cannot be the id of the run a tick
        of the same second started, which would make it a duplicate start, not a new run.
        """
        tr = ScheduleTransition()
        tick = now_ms if now_ms % 1000 else now_ms + 1
        who = bounded_identity(cmd.identity)
        new = self._act(tr, _copy(record), tick, now_ms, "trigger", cmd.overlap or record.overlap, who)
        tr.record = new
        if cmd.reply_to is not None:
            entry = new.recent[-1]
            tr.replies.append(
                _ok(cmd.reply_to, {"tick_ms": tick, "action": entry.action, "run_wf_id": entry.run_wf_id})
            )
        return tr

    def on_backfill(self, record: ScheduleRecord, cmd: ScheduleBackfillCmd, now_ms: int) -> ScheduleTransition:
        """Fire the ticks in `[from_ms, to_ms]` of the spec in force at each, through the overlap policy."""
        tr = ScheduleTransition()
        if cmd.to_ms < cmd.from_ms or cmd.to_ms > now_ms:
            why = "ends before it starts" if cmd.to_ms < cmd.from_ms else "ends in the future"
            if cmd.reply_to is not None:
                tr.replies.append(
                    _error(
                        cmd.reply_to,
                        ReplyCode.invalid_schedule,
                        f"backfill range {tick_iso(cmd.from_ms)} .. {tick_iso(cmd.to_ms)} {why}: "
                        "give a range in the past, its start before its end",
                    )
                )
            return tr
        ticks = backfill_ticks(record, cmd.from_ms, cmd.to_ms, limit=MAX_BACKFILL_TICKS + 1)
        if len(ticks) > MAX_BACKFILL_TICKS:
            if cmd.reply_to is not None:
                tr.replies.append(
                    _error(
                        cmd.reply_to,
                        ReplyCode.invalid_schedule,
                        f"backfill range {tick_iso(cmd.from_ms)} .. {tick_iso(cmd.to_ms)} holds more than "
                        f"{MAX_BACKFILL_TICKS} ticks: split it into shorter ranges",
                    )
                )
            return tr
        new = _copy(record)
        who = bounded_identity(cmd.identity)
        for tick in ticks:
            new = self._act(tr, new, tick, now_ms, "backfill", cmd.overlap or record.overlap, who)
        tr.record = new
        if cmd.reply_to is not None:
            tr.replies.append(
                _ok(cmd.reply_to, {"ticks": len(ticks), "started": len(tr.fired), "skipped": tr.skipped_ticks})
            )
        return tr

    def on_delete(self, record: ScheduleRecord, cmd: ScheduleDeleteCmd, now_ms: int) -> ScheduleTransition:
        """Delete the schedule and its timer; runs it started go on (a run fired ahead of its tick is withdrawn)."""
        tr = ScheduleTransition(delete=True)
        self._disarm(tr, record)
        _withdraw_ahead(tr, _copy(record), now_ms, "deleted")
        if cmd.reply_to is not None:
            tr.replies.append(_ok(cmd.reply_to, {"deleted": record.schedule_id}))
        return tr

    def on_run_ended(self, record: ScheduleRecord, cmd: ScheduleRunEndedCmd, now_ms: int) -> ScheduleTransition:
        """A run of the schedule ended: note its outcome; a buffered tick may start now."""
        tr = ScheduleTransition()
        new = _copy(record)
        new.running = [r for r in new.running if r != (cmd.run_wf_id, cmd.run_id)]
        for entry in new.recent:
            if entry.run_wf_id == cmd.run_wf_id and entry.run_id == cmd.run_id:
                entry.status = cmd.status
        if not new.running and new.buffered:
            tick, new.buffered = new.buffered[0], new.buffered[1:]
            new = self._start(tr, new, tick, now_ms, "buffered")
        tr.record = new
        return tr

    # ------------------------------------------------------------------ the cadence

    def on_due(self, record: ScheduleRecord | None, timer: TimerEntry, now_ms: int) -> ScheduleTransition:
        """The schedule's timer fired: deal with every tick whose time has come, arm the next."""
        if record is None or record.paused or record.next_fire_ms != timer.due_ms:
            return SKIP_SCHEDULE  # deleted, paused or re-armed meanwhile: a stale timer
        tr = ScheduleTransition()
        new = _copy(record)
        spec = compiled(new.spec)
        tick = self._due_ticks(tr, new, now_ms)
        held = False  # the next tick is within its lead but may not be fired ahead
        if tick is not None and (fire := spec.fire_at(new.schedule_id, tick)) - self.lead_ms <= now_ms < fire:
            if new.buffered or (new.running and new.overlap != OverlapPolicy.allow_all):
                held = True  # a run of the schedule is running: the overlap policy decides at the tick
            else:
                new = self._start(tr, new, tick, now_ms, "scheduled", not_before_ms=fire)
                new.last_tick_ms = tick
                tick = spec.next_tick(tick)
        new.next_tick_ms = tick
        new.next_fire_ms = None
        if tick is not None:
            fire = spec.fire_at(new.schedule_id, tick)
            # Past ticks left over (a long outage) are due at once, in the next transition.
            due = max(now_ms, fire if held else fire - self._lead(fire, now_ms))
            tr.timers_set.append(_timer(new.schedule_id, due))
            new.next_fire_ms = due
        tr.record = new
        return tr

    # ------------------------------------------------------------------ helpers

    def _due_ticks(self, tr: ScheduleTransition, new: ScheduleRecord, now_ms: int) -> int | None:
        """Deal with the ticks of `new`'s spec whose firing time has come (at most
        `MAX_TICKS_PER_TRANSITION`): missed beyond the catch-up window, else through the overlap
        policy. Returns the first tick not dealt with (`new` is the transition's own copy)."""
        spec = compiled(new.spec)
        tick = new.next_tick_ms
        handled = 0
        while tick is not None and spec.fire_at(new.schedule_id, tick) <= now_ms:
            if handled == MAX_TICKS_PER_TRANSITION:
                break
            if now_ms - tick > new.catchup_ms:
                new.missed += 1
                tr.missed_ticks += 1
                _remember(new, TickEntry(tick_ms=tick, action="missed", at_ms=now_ms))
            else:
                new = self._act(tr, new, tick, now_ms, "scheduled", new.overlap)
            new.last_tick_ms = tick
            tick = spec.next_tick(tick)
            handled += 1
        return tick

    def _arm(self, tr: ScheduleTransition, record: ScheduleRecord, now_ms: int) -> ScheduleRecord:
        """Arm the timer of the first tick after now (none while paused)."""
        if record.paused:
            return record
        spec = compiled(record.spec)
        tick = spec.next_tick(now_ms)
        if tick is None:
            return msgspec.structs.replace(record, next_tick_ms=None, next_fire_ms=None)
        fire = spec.fire_at(record.schedule_id, tick)
        due = fire - self._lead(fire, now_ms)
        tr.timers_set.append(_timer(record.schedule_id, due))
        return msgspec.structs.replace(record, next_tick_ms=tick, next_fire_ms=due)

    def _lead(self, fire_ms: int, now_ms: int) -> int:
        """How far ahead of `fire_ms` a timer armed at `now_ms` deals with its tick (see `FIRE_LEAD_MS`)."""
        return min(self.lead_ms, max(0, (fire_ms - now_ms) // 2))

    @staticmethod
    def _disarm(tr: ScheduleTransition, record: ScheduleRecord) -> None:
        if record.next_fire_ms is not None:
            tr.timers_clear.append(_timer(record.schedule_id, record.next_fire_ms))

    def _act(
        self,
        tr: ScheduleTransition,
        record: ScheduleRecord,
        tick: int,
        now_ms: int,
        how: str,
        overlap: OverlapPolicy,
        by: str | None = None,
    ) -> ScheduleRecord:
        """One tick through the overlap policy (`record` is the transition's own copy; `by`: who asked for it)."""
        if not record.running or overlap == OverlapPolicy.allow_all:
            return self._start(tr, record, tick, now_ms, how, by=by)
        if overlap == OverlapPolicy.terminate_other:
            self._stop_running(tr, record, terminate=True)
            record.running = []  # their end is told later; the tick does not wait for it
            return self._start(tr, record, tick, now_ms, how, by=by)
        if overlap == OverlapPolicy.cancel_other:
            self._stop_running(tr, record, terminate=False)
            record.buffered = [tick]  # starts once the cancelled run has ended
            return self._buffered(tr, record, tick, now_ms, how, by)
        if overlap == OverlapPolicy.buffer_one and not record.buffered:
            record.buffered = [tick]
            return self._buffered(tr, record, tick, now_ms, how, by)
        if overlap == OverlapPolicy.buffer_all and len(record.buffered) < MAX_BUFFERED:
            record.buffered = [*record.buffered, tick]
            return self._buffered(tr, record, tick, now_ms, how, by)
        record.skipped += 1
        tr.skipped_ticks += 1
        _remember(record, TickEntry(tick_ms=tick, action="skipped", at_ms=now_ms, how=how, by=by or ""))
        return record

    @staticmethod
    def _buffered(
        tr: ScheduleTransition, record: ScheduleRecord, tick: int, now_ms: int, how: str, by: str | None
    ) -> ScheduleRecord:
        record.buffered_total += 1
        tr.buffered_ticks += 1
        _remember(record, TickEntry(tick_ms=tick, action="buffered", at_ms=now_ms, how=how, by=by or ""))
        return record

    @staticmethod
    def _stop_running(tr: ScheduleTransition, record: ScheduleRecord, *, terminate: bool) -> None:
        verb = "terminated" if terminate else "cancelled"
        for wf_id, run_id in record.running:
            tr.sends.append(
                CancelCmd(
                    wf_id=wf_id,
                    run_id=run_id,
                    terminate=terminate,
                    reason=f"{verb} by schedule {record.schedule_id!r} (overlap policy)",
                )
            )

    @staticmethod
    def _start(
        tr: ScheduleTransition,
        record: ScheduleRecord,
        tick: int,
        now_ms: int,
        how: str,
        not_before_ms: int | None = None,
        by: str | None = None,
    ) -> ScheduleRecord:
        wf_id = run_wf_id(record, tick)
        run_id = tick_run_ulid(record.schedule_id, tick, now_ms, how)
        tr.sends.append(
            StartCmd(
                wf_id=wf_id,
                run_id=run_id,
                wf_type=record.wf_type,
                input=record.input,
                schedule_id=record.schedule_id,
                scheduled_ms=tick,
                schedule_how="scheduled" if how == "buffered" else how,
                not_before_ms=not_before_ms,
                identity=by,
            )
        )
        tr.fired.append((tick, now_ms - (not_before_ms or tick)))
        record.fired += 1
        record.running = [*record.running, (wf_id, run_id)][-MAX_RUNNING:]
        _remember(
            record,
            TickEntry(
                tick_ms=tick, action="started", at_ms=now_ms, how=how, run_wf_id=wf_id, run_id=run_id, by=by or ""
            ),
        )
        return record


def backfill_ticks(record: ScheduleRecord, from_ms: int, to_ms: int, *, limit: int) -> list[int]:
    """The ticks in `[from_ms, to_ms]`, each of the spec in force at its time (at most `limit`).

    The spec in force at a time is the newest era that took force at or before it; ticks before
    the first era (the schedule's creation) use the first spec.
    """
    eras = record.eras or [SpecEra(since_ms=record.created_ms, spec=record.spec)]
    found: list[int] = []
    for index, era in enumerate(eras):
        start = from_ms if index == 0 else max(from_ms, era.since_ms)
        end = to_ms if index == len(eras) - 1 else min(to_ms, eras[index + 1].since_ms - 1)
        if end < start:
            continue
        found.extend(compiled(era.spec).ticks(start - 1, end, limit=limit - len(found)))
        if len(found) >= limit:
            break
    return found


def _copy(record: ScheduleRecord) -> ScheduleRecord:
    """A copy the transition may change (workers cache decoded records: never mutate one)."""
    return msgspec.structs.replace(record, recent=[msgspec.structs.replace(e) for e in record.recent])


def _withdraw_ahead(tr: ScheduleTransition, record: ScheduleRecord, now_ms: int, why: str) -> None:
    """Cancel the run of a tick fired ahead whose time has not come (`record` is the transition's copy).

    The schedule was paused, deleted or given a new spec before the tick: its run has not begun
    (its start step waits for the tick), so it is withdrawn as the tick would not have fired.
    """
    spec = compiled(record.spec)
    for entry in record.recent:
        if entry.action != "started" or not entry.run_wf_id:
            continue
        if spec.fire_at(record.schedule_id, entry.tick_ms) <= now_ms:
            continue
        tr.sends.append(
            CancelCmd(
                wf_id=entry.run_wf_id,
                run_id=entry.run_id,
                reason=f"withdrawn: schedule {record.schedule_id!r} was {why} before the tick's time",
            )
        )
        entry.action = "withdrawn"
        record.fired -= 1
        record.running = [r for r in record.running if r != (entry.run_wf_id, entry.run_id)]
        tr.withdrawn += 1


def _remember(record: ScheduleRecord, entry: TickEntry) -> None:
    record.recent = [*record.recent, entry][-MAX_RECENT:]


def _timer(schedule_id: str, due_ms: int) -> TimerEntry:
    return TimerEntry(wf_id=schedule_id, run_id="", kind=TimerKind.schedule, seq=0, due_ms=due_ms)


def _ok(to: ReplyTo, payload: Any) -> tuple[ReplyTo, Reply]:
    return to, Reply(request_id=to.request_id, client_id=to.client_id, payload=payload)


def _error(to: ReplyTo, code: str, message: str) -> tuple[ReplyTo, Reply]:
    return to, Reply(request_id=to.request_id, client_id=to.client_id, ok=False, code=code, message=message)
