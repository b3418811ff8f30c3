"""The exactly-once checker behind `grctl verify`: lost and duplicated transitions in a namespace.

Pure: the caller feeds it every history record it read (`add_history`) and the latest value of
every state key (`add_state`; None for a key whose last record is a tombstone), then asks for the
`VerifyReport`. Reading Kafka is `grctl.client.verify`'s job.

What counts as what, per run (a run id seen with `run.started` in the history read):

- **duplicated**: two `run.started`; two terminal events (`run.completed`, `run.failed`,
  `run.cancelled`, `run.terminated`, `run.timeout`); two `step.completed` for one step number
  (the number of the `step.started` before it); two `task.completed` for one task id; for a
  remote task (`remote` in the event), two applied outcomes (`task.completed` or `task.failed`)
  for one task id, or two `task.attempt_failed` for one attempt (one applied answer per attempt).
- **lost**: a run with no terminal event whose state is gone, belongs to another run, or says it
  ended; a run whose state says it ended without its terminal event in the history; a settled
  run (no event for `settle_ms`) whose state has a step due and whose last event is a
  `step.completed` (nothing started the next step); a waiting run with accepted events left
  in its inbox (accepted, never handled); a completed run with a remote task that was sent
  (`task.started`) and never got its outcome applied.
- **orphaned state**: store values, journal entries and child outcomes of a run that has
  neither the workflow id's run record nor a timer (an ended run keeps its keys until its
  retention timer deletes them); inbox entries and timers of a workflow id without a run record.

Schedules (`keys.SCHEDULE_PREFIX`, `grctl.engine.schedules`):

- **duplicated**: two runs started by a schedule's cadence for the same tick (`run.started`
  with the same `schedule_id` and `scheduled_ms`; triggers and backfills may re-run a tick).
- **lost**: a schedule whose record says its next tick fires at a time with no timer armed
  for it (it would never fire again); a settled tick of an `allow_all` schedule's current spec,
  between the first tick of it the history read shows and its `last_tick_ms`, with no run
  started and not counted as missed (other policies skip ticks on purpose, and their skipped
  ticks are only counted).
- **orphaned**: a schedule timer of a schedule id without a schedule record.

Limiters (`keys.LIMITER_PREFIX`, `grctl.engine.limiters`, `grctl.engine.permits`), judged once the
run concerned has been quiet for the settle time (a release may still be on its way before that):

- **leaked**: a permit the limiter counts (`H/`) for a run that does not hold it: the run's state
  is gone, is of another run, has ended, or does not list the permit; a limiter whose counts
  (`in_use`, `waiting`) differ from the permits and requests it keeps.
- **lost**: a permit a run holds that its limiter does not count (the limit could be exceeded); a
  request a run waits with that its limiter neither keeps waiting nor granted;
  requests waiting while the limiter has permits free and nothing to wait for (no rate, no
  per-key limit), or a rate's requests waiting with no timer armed to grant them.

Runs whose `run.started` lies before the history read (`--since`) are not judged, and
`run.rejected` starts never began a run, so they have nothing to lose.

May import: `grctl.engine`, `grctl.models`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from grctl.engine import keys
from grctl.engine.records import (
    DECODE_ERRORS,
    HistoryRecord,
    LimiterRecord,
    LimitHolder,
    OverlapPolicy,
    RunRecord,
    ScheduleRecord,
    TimerKind,
    holder_decoder,
    limiter_decoder,
    run_decoder,
    schedule_decoder,
    timer_decoder,
    waiter_decoder,
)
from grctl.engine.schedules import compiled
from grctl.models.history import TERMINAL_KINDS, HistoryKind
from grctl.models.run_info import TERMINAL_STATUSES, RunStateKind

__all__ = ["DEFAULT_SETTLE_MS", "Checker", "Finding", "VerifyReport"]

#: A run without an event for this long is settled: nothing is about to happen to it.
DEFAULT_SETTLE_MS: Final = 30_000
#: Findings kept in a report (the counts cover all of them).
MAX_FINDINGS: Final = 1000

FindingKind = Literal["lost", "duplicated", "orphaned", "leaked"]
_TERMINAL = {k.value for k in TERMINAL_KINDS}
_REMOTE_KINDS = frozenset(
    {HistoryKind.task_started, HistoryKind.task_completed, HistoryKind.task_failed, HistoryKind.task_attempt_failed}
)


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing wrong: its kind, the run (or workflow id) it belongs to, and what was seen."""

    kind: FindingKind
    wf_id: str
    run_id: str
    what: str

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "wf_id": self.wf_id, "run_id": self.run_id, "what": self.what}


@dataclass(slots=True)
class VerifyReport:
    """What `verify` found.

    Attributes:
        runs: runs judged (started within the history read).
        history_records: history records read.
        state_keys: live state keys read.
        undecodable: records that could not be decoded (history or state), skipped.
        counts: findings by kind (all of them, also those past `MAX_FINDINGS`).
        findings: the first findings, lost first, then duplicated, leaked, orphaned.
        operator_actions: the first `MAX_FINDINGS` history events that carry an identity (who
            started, signalled, cancelled or terminated a run), in the order read.
        operator_action_count: all of them.
    """

    runs: int = 0
    history_records: int = 0
    state_keys: int = 0
    undecodable: int = 0
    counts: dict[str, int] = field(default_factory=lambda: {"lost": 0, "duplicated": 0, "orphaned": 0, "leaked": 0})
    findings: list[Finding] = field(default_factory=list)
    operator_actions: list[dict[str, Any]] = field(default_factory=list)
    operator_action_count: int = 0

    @property
    def clean(self) -> bool:
        """True when nothing was lost, duplicated, leaked or orphaned."""
        return not any(self.counts.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "clean": self.clean,
            "runs": self.runs,
            "history_records": self.history_records,
            "state_keys": self.state_keys,
            "undecodable": self.undecodable,
            "counts": dict(self.counts),
            "findings": [f.to_dict() for f in self.findings],
            "operator_action_count": self.operator_action_count,
            "operator_actions": list(self.operator_actions),
        }


@dataclass(slots=True)
class _Trace:
    """What the history says of one run."""

    wf_id: str
    started: int = 0
    terminal: list[str] = field(default_factory=list)
    seq: int = 0  # the step number of the latest step.started
    steps_completed: dict[int, int] = field(default_factory=dict)
    tasks_completed: dict[str, int] = field(default_factory=dict)
    #: Remote tasks: ids sent, outcomes applied per id, failed attempts per (id, attempt).
    remote_sent: set[str] = field(default_factory=set)
    remote_outcomes: dict[str, int] = field(default_factory=dict)
    remote_attempts: dict[tuple[str, int], int] = field(default_factory=dict)
    last_kind: str = ""
    last_ms: int = 0


class Checker:
    """Feed it a namespace's history and state, then ask for the `report`.

    Args:
        now_ms: the time of the check (runs quiet since `now_ms - settle_ms` are settled).
        settle_ms: how long a run must be quiet before a due step that never started is lost.
    """

    def __init__(self, now_ms: int, settle_ms: int = DEFAULT_SETTLE_MS) -> None:
        self._now_ms = now_ms
        self._settle_ms = settle_ms
        self._traces: dict[str, _Trace] = {}
        self._seen_runs: set[str] = set()  # every run id in the history read, started or not
        self._runs: dict[str, RunRecord] = {}  # wf_id -> the latest run's record
        self._timer_runs: set[tuple[str, str]] = set()  # (wf_id, run_id) with a timer
        self._timers: list[tuple[str, str, str]] = []  # (wf_id, run_id, kind) of every timer
        self._keys: list[bytes] = []  # store, journal, child and inbox keys, judged at the end
        self._schedules: dict[str, ScheduleRecord] = {}
        self._schedule_timers: set[tuple[str, int]] = set()  # (schedule id, due ms)
        #: (schedule id, tick) -> run ids started for it by the cadence.
        self._ticks: dict[tuple[str, int], list[str]] = {}
        self._limiters: dict[str, LimiterRecord] = {}
        self._holders: dict[str, list[LimitHolder]] = {}  # limiter -> permits it counts
        self._waiters: dict[str, int] = {}  # limiter -> requests waiting
        self._waiting: set[str] = set()  # the holder ids of the requests waiting, every limiter
        self._limiter_timers: set[str] = set()
        self._report = VerifyReport()

    # ------------------------------------------------------------------ input

    def add_history(self, rec: HistoryRecord) -> None:
        """One history record, in partition order."""
        self._report.history_records += 1
        self._seen_runs.add(rec.run_id)
        kind = rec.kind
        who = rec.msg.get("identity") if isinstance(rec.msg, dict) else None
        if who:
            self._report.operator_action_count += 1
            if len(self._report.operator_actions) < MAX_FINDINGS:
                action = {"kind": kind, "wf_id": rec.wf_id, "run_id": rec.run_id, "identity": who, "ts_ms": rec.ts_ms}
                self._report.operator_actions.append(action)
        trace = self._traces.get(rec.run_id)
        if kind == HistoryKind.run_started:
            started = rec.msg or {}
            if started.get("schedule_id") and started.get("how") in (None, "scheduled"):
                tick = (str(started["schedule_id"]), int(started.get("scheduled_ms") or 0))
                self._ticks.setdefault(tick, []).append(rec.run_id)
            if trace is None:
                trace = self._traces[rec.run_id] = _Trace(wf_id=rec.wf_id)
            trace.started += 1
        if trace is None:
            return  # a run started before the read, or a rejected start: not judged
        msg = rec.msg or {}
        if kind in _TERMINAL:
            trace.terminal.append(kind)
        elif kind == HistoryKind.step_started:
            trace.seq = int(msg.get("seq", 0))
        elif kind == HistoryKind.step_completed:
            trace.steps_completed[trace.seq] = trace.steps_completed.get(trace.seq, 0) + 1
        elif msg.get("remote") and kind in _REMOTE_KINDS:
            task_id = str(msg.get("task_id", ""))
            if kind == HistoryKind.task_started:
                trace.remote_sent.add(task_id)
            elif kind == HistoryKind.task_attempt_failed:
                at = (task_id, int(msg.get("attempt") or 0))
                trace.remote_attempts[at] = trace.remote_attempts.get(at, 0) + 1
            else:
                trace.remote_outcomes[task_id] = trace.remote_outcomes.get(task_id, 0) + 1
        elif kind == HistoryKind.task_completed:
            task_id = str(msg.get("task_id", ""))
            trace.tasks_completed[task_id] = trace.tasks_completed.get(task_id, 0) + 1
        trace.last_kind = kind
        trace.last_ms = max(trace.last_ms, rec.ts_ms)

    def add_undecodable(self) -> None:
        """A record that could not be decoded (counted, not judged)."""
        self._report.undecodable += 1

    def add_state(self, key: bytes, value: bytes | None) -> None:
        """The latest value of one state key (None: deleted)."""
        if value is None:
            return
        self._report.state_keys += 1
        table = key[:2]
        try:
            if table == keys.RUN_PREFIX:
                self._runs[keys.wf_id_of_run_key(key)] = run_decoder.decode(value)
            elif table == keys.SCHEDULE_PREFIX:
                self._schedules[keys.schedule_id_of_key(key)] = schedule_decoder.decode(value)
            elif table == keys.LIMITER_PREFIX:
                self._limiters[keys.limiter_name_of_key(key)] = limiter_decoder.decode(value)
            elif table == keys.HOLDER_PREFIX:
                name = key[2:].split(keys.SEP, 1)[0].decode()
                self._holders.setdefault(name, []).append(holder_decoder.decode(value))
            elif table == keys.WAITER_PREFIX:
                name = key[2:].split(keys.SEP, 1)[0].decode()
                self._waiters[name] = self._waiters.get(name, 0) + 1
                self._waiting.add(waiter_decoder.decode(value).holder)
            elif table in (keys.TIMER_PREFIX, keys.EXPIRY_PREFIX):
                timer = timer_decoder.decode(value)
                if timer.kind == TimerKind.schedule:
                    self._schedule_timers.add((timer.wf_id, timer.due_ms))
                    return
                if timer.kind == TimerKind.limiter:
                    self._limiter_timers.add(timer.wf_id)
                    return
                self._timer_runs.add((timer.wf_id, timer.run_id))
                self._timers.append((timer.wf_id, timer.run_id, str(timer.kind)))
            elif table in (keys.STORE_PREFIX, keys.JOURNAL_PREFIX, keys.CHILD_PREFIX, keys.INBOX_PREFIX):
                self._keys.append(key)
        except (*DECODE_ERRORS, UnicodeDecodeError):
            self._report.undecodable += 1

    # ------------------------------------------------------------------ judgement

    def report(self) -> VerifyReport:
        """Judge what was fed; call once."""
        found: list[Finding] = []
        for run_id, trace in self._traces.items():
            found.extend(self._judge(run_id, trace))
        found.extend(self._orphans())
        found.extend(self._judge_schedules())
        found.extend(self._judge_permits())
        order = {"lost": 0, "duplicated": 1, "leaked": 2, "orphaned": 3}
        found.sort(key=lambda f: order[f.kind])
        report = self._report
        report.runs = len(self._traces)
        for f in found:
            report.counts[f.kind] += 1
        report.findings = found[:MAX_FINDINGS]
        return report

    def _judge(self, run_id: str, t: _Trace) -> Iterable[Finding]:
        wf_id = t.wf_id
        if t.started > 1:
            yield Finding("duplicated", wf_id, run_id, f"run.started written {t.started} times")
        if len(t.terminal) > 1:
            yield Finding("duplicated", wf_id, run_id, f"{len(t.terminal)} terminal events: {', '.join(t.terminal)}")
        for seq, n in sorted(t.steps_completed.items()):
            if n > 1:
                yield Finding("duplicated", wf_id, run_id, f"step.completed written {n} times for step number {seq}")
        for task_id, n in sorted(t.tasks_completed.items()):
            if n > 1:
                yield Finding("duplicated", wf_id, run_id, f"task.completed written {n} times for task {task_id!r}")
        for task_id, n in sorted(t.remote_outcomes.items()):
            if n > 1:
                yield Finding("duplicated", wf_id, run_id, f"{n} outcomes applied for remote task {task_id!r}")
        for (task_id, attempt), n in sorted(t.remote_attempts.items()):
            if n > 1:
                yield Finding(
                    "duplicated", wf_id, run_id, f"attempt {attempt} of remote task {task_id!r} failed {n} times"
                )
        if HistoryKind.run_completed in t.terminal:
            for task_id in sorted(t.remote_sent - set(t.remote_outcomes)):
                yield Finding("lost", wf_id, run_id, f"remote task {task_id!r} was sent, its outcome never applied")
        rec = self._runs.get(wf_id)
        mine = rec is not None and rec.run_id == run_id
        if not t.terminal:
            if not mine:
                held = "no run record" if rec is None else f"the run record is of run {rec.run_id}"
                yield Finding("lost", wf_id, run_id, f"started, never ended, and {held}")
                return
            assert rec is not None
            if rec.status in TERMINAL_STATUSES:
                yield Finding("lost", wf_id, run_id, f"its state says {rec.status}, its history has no terminal event")
                return
            settled = self._now_ms - t.last_ms >= self._settle_ms
            if (
                settled
                and rec.state == RunStateKind.step
                and t.last_kind == HistoryKind.step_completed
                and rec.suspended_until_ms is None
            ):
                quiet = (self._now_ms - t.last_ms) / 1000
                yield Finding(
                    "lost",
                    wf_id,
                    run_id,
                    f"step {rec.step!r} (number {rec.seq}) is due and nothing started it in {quiet:.0f}s",
                )
            if settled and rec.state == RunStateKind.wait and rec.inbox_head < rec.inbox_next:
                n = rec.inbox_next - rec.inbox_head
                yield Finding("lost", wf_id, run_id, f"waiting with {n} accepted event(s) never handled")
        elif mine:
            assert rec is not None
            if rec.status not in TERMINAL_STATUSES:
                yield Finding(
                    "lost", wf_id, run_id, f"its history ended it ({t.terminal[0]}), its state says {rec.status}"
                )

    def _judge_schedules(self) -> Iterable[Finding]:
        for (sid, tick), run_ids in sorted(self._ticks.items()):
            if len(run_ids) > 1:
                yield Finding(
                    "duplicated", sid, run_ids[-1], f"tick {tick} of schedule {sid!r} started {len(run_ids)} runs"
                )
        for sid, due in sorted(self._schedule_timers):
            if sid not in self._schedules:
                yield Finding("orphaned", sid, "", f"a schedule timer (due {due}) of a schedule id without a record")
        seen: dict[str, int] = {}
        for sid, tick in self._ticks:
            seen[sid] = min(seen.get(sid, tick), tick)
        for sid, record in sorted(self._schedules.items()):
            if record.next_fire_ms is not None and (sid, record.next_fire_ms) not in self._schedule_timers:
                yield Finding("lost", sid, "", f"its next tick fires at {record.next_fire_ms} and no timer is armed")
            if record.overlap != OverlapPolicy.allow_all or sid not in seen or record.last_tick_ms is None:
                continue
            since = record.eras[-1].since_ms if record.eras else record.created_ms
            first = max(seen[sid], since)
            # A tick's start is applied on its run's partition after the firing committed: judge
            # settled ticks only. Ticks counted as missed (older than the catch-up window when
            # fired) started nothing on purpose; the ring of recent ticks names the latest.
            missed = {e.tick_ms for e in record.recent if e.action == "missed"}
            oldest_known = record.recent[0].tick_ms if record.recent else None
            last = min(record.last_tick_ms, self._now_ms - self._settle_ms)
            for tick in compiled(record.spec).ticks(first - 1, last):
                if (sid, tick) in self._ticks or tick in missed:
                    continue
                if record.missed and (oldest_known is None or tick < oldest_known):
                    continue  # perhaps missed: the ring no longer says
                yield Finding("lost", sid, "", f"tick {tick} of schedule {sid!r} started no run")

    def _quiet(self, run_id: str) -> bool:
        """The run had no event for the settle time (or none in the history read)."""
        trace = self._traces.get(run_id)
        return trace is None or self._now_ms - trace.last_ms >= self._settle_ms

    def _judge_permits(self) -> Iterable[Finding]:
        counted: set[str] = set()
        for name, holders in sorted(self._holders.items()):
            for h in holders:
                counted.add(h.holder)
                rec = self._runs.get(h.wf_id)
                acquire_id = h.holder.rpartition("/")[2]
                if rec is not None and rec.run_id == h.run_id and any(p.acquire_id == acquire_id for p in rec.permits):
                    continue
                if not self._quiet(h.run_id):
                    continue  # its release may be on its way
                why = (
                    "its run's state is gone" if rec is None
                    else f"the run record is of run {rec.run_id}" if rec.run_id != h.run_id
                    else f"the run {rec.status} without it" if rec.status in TERMINAL_STATUSES
                    else "the run does not list it"
                )  # fmt: skip
                yield Finding("leaked", h.wf_id, h.run_id, f"limiter {name!r} counts permit {h.holder!r}: {why}")
        for wf_id, rec in sorted(self._runs.items()):
            acq = rec.acquire
            if acq is not None and rec.status not in TERMINAL_STATUSES and self._quiet(rec.run_id):
                holder = f"{rec.run_id}/{acq.acquire_id}"
                if holder not in self._waiting and holder not in counted:
                    what = f"waits for a permit of limiter {acq.limiter!r} ({holder!r}) that the limiter never heard of"
                    yield Finding("lost", wf_id, rec.run_id, what)
            for p in rec.permits:
                if p.limiter not in self._limiters:
                    continue  # deleted with force: its permits are no longer counted, on purpose
                holder = f"{rec.run_id}/{p.acquire_id}"
                if holder not in counted and self._quiet(rec.run_id):
                    what = f"holds permit {holder!r} of limiter {p.limiter!r}, which does not count it"
                    yield Finding("lost", wf_id, rec.run_id, what)
        for name, lim in sorted(self._limiters.items()):
            held, waiting = len(self._holders.get(name, [])), self._waiters.get(name, 0)
            if (lim.in_use, lim.waiting) != (held, waiting):
                what = (
                    f"limiter {name!r} says {lim.in_use} in use and {lim.waiting} waiting; "
                    f"it keeps {held} permits and {waiting} requests"
                )
                yield Finding("leaked", name, "", what)
            spec = lim.spec
            free = spec.concurrency is None or held < spec.concurrency
            if waiting and free and spec.per_key is None:
                if spec.rate_n is None:
                    what = f"limiter {name!r}: {waiting} requests wait while permits are free"
                    yield Finding("lost", name, "", what)
                elif name not in self._limiter_timers:
                    what = f"limiter {name!r}: {waiting} requests wait for its rate and no timer is armed"
                    yield Finding("lost", name, "", what)

    def _orphans(self) -> Iterable[Finding]:
        for wf_id, run_id, kind in self._timers:
            if wf_id not in self._runs:
                yield Finding("orphaned", wf_id, run_id, f"a {kind} timer of a workflow id without a run record")
        for key in self._keys:
            table = key[:2]
            parts = key[2:].split(keys.SEP)
            wf_id = parts[0].decode(errors="replace")
            rec = self._runs.get(wf_id)
            if table == keys.INBOX_PREFIX:
                if rec is None:
                    yield Finding("orphaned", wf_id, "", "an inbox entry of a workflow id without a run record")
                continue
            run_id = parts[1].decode(errors="replace") if len(parts) > 1 else ""
            if (rec is not None and rec.run_id == run_id) or (wf_id, run_id) in self._timer_runs:
                continue
            what = {keys.STORE_PREFIX: "a store value", keys.JOURNAL_PREFIX: "a journal entry"}.get(
                table, "a child's outcome"
            )
            yield Finding("orphaned", wf_id, run_id, f"{what} of a run that has no run record and no timer")
