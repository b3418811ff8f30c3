"""The partition processor: applies the `directives` of one partition to its runs.

One per owned partition. It consumes records in offset order, applies them through the pure
state machine, stages the resulting state writes and records in the open batch (the
`Outbox`), starts the steps they dispatch (at once on the uncommitted state, or once the
transition that dispatched them has committed: `ProcessorServices.pipeline_steps`), and fires
due timers.

Offsets: `position` is the next offset to read, and the offset committed with each
transaction: `directives` carries only inputs from outside a run, each applied as one
transition, and a step is not a record. A run's due step is its committed run record (state
`step`, number `seq`): it starts when dispatched (see `apply`), or from the run index when
the partition is assigned (`start`). Records past the committed offset that were already
applied are recognised on re-delivery (per-run `last_offset`) and skipped.

Input that cannot be applied (undecodable, on the wrong partition, `InvalidRecordError`) goes
to dead-letter. Anything else raised while applying a record is an engine bug: it propagates,
fails the session loudly, and nothing of the record was staged (a transition is staged only
once it is complete, see `apply`).

It is served through its ports (`.ports`: the outbox, the observer, the services) and serves
the step executor and the query answerer as a `StepHost`: it imports nothing of the session.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec

from grctl.engine import keys
from grctl.engine.limiters import LimiterMachine, LimiterState, LimiterTransition
from grctl.engine.machine import StepOutcome, Transition
from grctl.engine.records import (
    DECODE_ERRORS,
    LIMITER_COMMANDS,
    SCHEDULE_COMMANDS,
    TASK_COMMANDS,
    CancelCmd,
    DescribeCmd,
    EventCmd,
    HistoryRecord,
    InboxEntry,
    LimitAcquireCmd,
    LimiterDescribeCmd,
    LimiterListCmd,
    LimitGrantCmd,
    LimitReleaseCmd,
    ListCmd,
    NextCmd,
    ParentRef,
    QueryCmd,
    Reply,
    ReplyCode,
    ReplyTo,
    RunRecord,
    ScheduleDescribeCmd,
    ScheduleListCmd,
    ScheduleRecord,
    StartCmd,
    TimerEntry,
    TimerKind,
    decode_directive,
    encoder,
    holder_decoder,
    inbox_decoder,
    limiter_decoder,
    run_decoder,
    schedule_decoder,
    timer_decoder,
    waiter_decoder,
)
from grctl.engine.remote import TaskRequest
from grctl.engine.schedules import ScheduleMachine, ScheduleTransition
from grctl.errors import InternalError, InvalidRecordError, PayloadTooLargeError
from grctl.kafka.limits import HISTORY_PREVIEW_BYTES, preview
from grctl.kafka.partitioner import partition_for
from grctl.models.history import HistoryKind
from grctl.models.run_info import TERMINAL_STATUSES, RunStateKind, RunStatus
from grctl.state.partition_store import PartitionStore
from grctl.worker._partition.dead_letter import dead_letter_record
from grctl.worker._partition.listing import list_page
from grctl.worker._partition.ports import LocalTarget, ProcessorServices, Refusal, RunningStep
from grctl.worker._partition.timer_queue import TimerQueue
from grctl.workflow.runtime import JournalEntry, StepRuntime

if TYPE_CHECKING:
    from confluent_kafka import Message

logger = logging.getLogger(__name__)

#: Decoded run records kept per partition (the machine never mutates a record it was given).
RUN_CACHE_SIZE = 4_096
#: The field of a step's history event that only describes a value kept elsewhere in full.
DESCRIBED_FIELDS: dict[str, str] = {
    HistoryKind.task_started: "args",
    HistoryKind.child_started: "input",
    HistoryKind.parent_event_sent: "payload",
}

#: Step tasks start eagerly (Python 3.12+, `StepExecutor.start`): a step may finish inside
#: `maybe_start`, so a transition must not start its step from inside `apply`.
_EAGER_TASKS = sys.version_info >= (3, 12)
#: The statuses of runs that may have a due step (the run index is searched under these).
ACTIVE_STATUSES = tuple(s for s in RunStatus if s not in TERMINAL_STATUSES)

#: The directives a run's transition may apply in place when this worker owns their partition.
LOCAL_COMMANDS = (LimitAcquireCmd, LimitReleaseCmd, LimitGrantCmd)

count_decoder = msgspec.msgpack.Decoder(int)
journal_entry_encoder = msgspec.msgpack.Encoder()
journal_entry_decoder = msgspec.msgpack.Decoder(list[Any])
#: Task queue records are JSON, for task workers in any language (docs/remote-tasks.md).
task_json_encoder = msgspec.json.Encoder()


class PartitionProcessor:
    """Processes one partition of `directives` and owns its state store.

    Args:
        partition: the partition number.
        store: the partition's state store, already restored.
        services: the session's shared parts.
    """

    def __init__(self, partition: int, store: PartitionStore, services: ProcessorServices) -> None:
        self.partition = partition
        self.store = store
        self.services = services
        self._outbox = services.outbox
        self._now = services.now_ms
        self.position: int | None = None  # next offset to read; None until the first record
        self.running: dict[str, RunningStep] = {}
        now = self._now()
        #: The runs' own timers due soon (wait timeouts, resumes, workflow timeouts, and the
        #: retention of runs that ended before the expiry table existed).
        self.timers = TimerQueue(store, keys.TIMER_PREFIX, now)
        #: The retention timers of ended runs due soon: background work (`grctl.worker._session.timers`).
        self.expiries = TimerQueue(store, keys.EXPIRY_PREFIX, now)
        self.closing = False
        self.child_waiters: dict[tuple[str, str], list[asyncio.Future[dict[str, Any]]]] = {}
        # Decoded run records, committed or staged: a step reads its run 3-4 times (record,
        # start, outcome, next start); decoding each time cost ~9 % of a worker's CPU in the
        # chain benchmark. Every write of a run record goes through `apply`, which updates it.
        self._runs: dict[str, RunRecord] = {}
        # Prefixes of the step journals this partition holds (committed or staged), by the
        # prefix of their run's journals. Most steps have none; knowing it saves a RocksDB
        # iterator per step execution, and a purge finds its run's among them at once.
        self._journals: dict[bytes, set[bytes]] = {}
        limits = services.limits
        self._state_limit = limits.record_limit(services.topics.state)
        self._record_limits = {t: limits.record_limit(t) for t in services.topics.partitioned()}
        self._history_limit = limits.record_limit(services.topics.history)
        #: The partition's schedules go through their own pure machine (`grctl.engine.schedules`).
        self.schedules = ScheduleMachine(services.machine.catalog)
        #: The partition's limiters: their own pure machine, and each one's state once touched.
        self.limiters = LimiterMachine()
        self._limiters: dict[str, LimiterState | None] = {}
        self._load_journal_index()

    # ------------------------------------------------------------------ reads

    def get_run(self, wf_id: str) -> RunRecord | None:
        """The run record of `wf_id` (including uncommitted writes of this worker)."""
        run = self._runs.get(wf_id)
        if run is not None:
            return run
        raw = self.store.get(keys.run_key(wf_id))
        if raw is None:
            return None
        run = run_decoder.decode(raw)
        self._remember(wf_id, run)
        return run

    def get_schedule(self, schedule_id: str) -> ScheduleRecord | None:
        """The record of schedule `schedule_id` (including uncommitted writes)."""
        raw = self.store.get(keys.schedule_key(schedule_id))
        return schedule_decoder.decode(raw) if raw is not None else None

    def get_limiter(self, name: str) -> LimiterState | None:
        """The state of limiter `name` (its record with its queue and permits, uncommitted writes included).

        Read from the tables the first time, then kept: every change goes through `apply_limiter`.
        """
        if name in self._limiters:
            return self._limiters[name]
        raw = self.store.get(keys.limiter_key(name))
        state = None
        if raw is not None:
            waiters = [waiter_decoder.decode(v) for _k, v in self.store.scan(keys.waiter_prefix(name))]
            holders = [holder_decoder.decode(v) for _k, v in self.store.scan(keys.holder_prefix(name))]
            state = LimiterState.load(limiter_decoder.decode(raw), waiters, holders)
        self._limiters[name] = state
        return state

    def get_committed_run(self, wf_id: str) -> RunRecord | None:
        """The committed run record of `wf_id` (what queries answer from)."""
        raw = self.store.get_committed(keys.run_key(wf_id))
        return run_decoder.decode(raw) if raw is not None else None

    # StepHost (what the step executor and the query answerer see of the partition)

    @property
    def value_limit(self) -> int:
        """The largest value the namespace's topics take."""
        return self.services.limits.value_bytes

    def read_store(self, wf_id: str, run_id: str, key: str) -> bytes | None:
        """A store value of a run, staged writes included (a step's read)."""
        return self.store.get(keys.store_key(wf_id, run_id, key))

    def read_committed_store(self, wf_id: str, run_id: str, key: str) -> bytes | None:
        """A committed store value of a run (a query's read)."""
        return self.store.get_committed(keys.store_key(wf_id, run_id, key))

    def send_reply(self, to: ReplyTo, value: bytes, wf_id: str) -> None:
        """Produce an encoded reply to a client's partition of `replies` in the open batch."""
        self.emit(self.services.topics.replies, to.partition, to.client_id.encode(), value, None, wf_id)

    def _remember(self, wf_id: str, run: RunRecord) -> None:
        runs = self._runs
        if len(runs) >= RUN_CACHE_SIZE:
            runs.clear()  # cheap and rare; the store still has every record
        runs[wf_id] = run

    def _inbox_reader(self, wf_id: str) -> Callable[[int], InboxEntry | None]:
        def read(seq: int) -> InboxEntry | None:
            raw = self.store.get(keys.inbox_key(wf_id, seq))
            return inbox_decoder.decode(raw) if raw is not None else None

        return read

    def low_watermark(self) -> int | None:
        """The offset to commit: the next to read (every record before it is applied and staged)."""
        return self.position

    # ------------------------------------------------------------------ staging

    def stage(self, key: bytes, value: bytes | None) -> None:
        """Write a state key in the open batch (a store layer now, RocksDB after commit)."""
        if self.closing:
            return  # revoked: a step still unwinding must not publish anything (it runs again elsewhere)
        self._outbox.stage(self.partition, key, value)

    def emit(
        self, topic: str, partition: int, key: bytes, value: bytes, headers: Any = None, origin: str | None = None
    ) -> None:
        """Add a record to the open batch (nothing once the partition is closing)."""
        if not self.closing:
            self._outbox.produce(topic, partition, key, value, headers, origin)

    def apply(self, tr: Transition, wf_id: str, *, replacing: bool = False) -> None:
        """Stage everything a transition changes, all or nothing.

        Every value is encoded first; only then is anything staged, so a transition that
        cannot be encoded (an engine bug) leaves nothing behind. A transition with a record
        larger than its topic takes (or of a quarantined run) is replaced by one that fails
        the run (`replacing` is set for that replacement).
        """
        if tr.skipped or self.closing:
            return
        s = self.services
        if not replacing and s.quarantine and wf_id in s.quarantine:
            self.apply(self._fail_instead(tr, wf_id, s.quarantine[wf_id]), wf_id, replacing=True)
            return
        run = tr.run
        topics = s.topics
        # 1. Encode every write and record (the branches keep the common transition, a step
        #    dispatch, free of empty loops: this runs once per step).
        writes: list[tuple[bytes, bytes | None]] = []
        if run is not None or tr.purge is not None:
            before = self.get_run(wf_id)  # not remembered yet: the run before this transition
            after = None if tr.purge is not None and tr.purge[1] else (run or before)
            if before is not after and (
                before is None
                or after is None
                or before.status != after.status
                or before.run_id != after.run_id
                or before.started_ms != after.started_ms
                or before.version != after.version
            ):
                writes.extend(self._index_writes(wf_id, before, after))
        if run is not None:
            writes.append((keys.run_key(wf_id), encoder.encode(run)))
            if tr.store:
                run_id = run.run_id
                for k, v in tr.store.items():
                    writes.append((keys.store_key(wf_id, run_id, k), v))
            if tr.child_done is not None:
                child_wf_id, _child_run_id, outcome = tr.child_done
                writes.append((keys.child_key(wf_id, run.run_id, child_wf_id), encoder.encode(outcome)))
            if tr.journal:
                for seq, pos, journal_entry in tr.journal:
                    prefix = keys.journal_prefix(wf_id, run.run_id, seq)
                    writes.append((keys.journal_key(prefix, pos), journal_entry_encoder.encode(journal_entry)))
        if tr.inbox_put:
            for seq, entry in tr.inbox_put.items():
                writes.append((keys.inbox_key(wf_id, seq), encoder.encode(entry)))
        if tr.inbox_delete:
            for seq in tr.inbox_delete:
                writes.append((keys.inbox_key(wf_id, seq), None))
        if tr.timers_clear:
            for t in tr.timers_clear:
                writes.append((keys.timer_key(t.due_ms, t.wf_id, t.kind), None))
        armed: list[tuple[int, bytes]] = []
        if tr.timers_set:
            for t in tr.timers_set:
                key = keys.timer_key(t.due_ms, t.wf_id, t.kind)
                armed.append((t.due_ms, key))
                writes.append((key, encoder.encode(t)))
        history, p = topics.history, self.partition
        records = [(history, p, h.wf_id.encode(), encoder.encode(h)) for h in tr.history]
        local_sends: list[tuple[LocalTarget, Any]] = []
        if tr.sends:
            n = s.num_partitions
            local = s.local
            for cmd in tr.sends:
                part = p if cmd.wf_id == wf_id else partition_for(cmd.wf_id, n)
                if local is not None and isinstance(cmd, LOCAL_COMMANDS) and (target := local.target(part)) is not None:
                    local_sends.append((target, cmd))  # applied in this batch (`LocalInputs`)
                    continue
                records.append((topics.directives, part, cmd.wf_id.encode(), encoder.encode(cmd)))
        if tr.replies:
            for to, reply in tr.replies:
                records.append((topics.replies, to.partition, to.client_id.encode(), encoder.encode(reply)))
        if tr.tasks:
            for out in tr.tasks:
                task_record = out.record
                if isinstance(task_record, TaskRequest):
                    task_record = msgspec.structs.replace(task_record, reply_topic=topics.directives, reply_partition=p)
                records.append((topics.task_queue(out.queue), -1, out.key, task_json_encoder.encode(task_record)))
        if tr.purge is not None:
            writes.extend(self._purge_writes(wf_id, *tr.purge))
        # 2. Nothing goes out that Kafka would refuse: such a transition fails its run instead.
        too_large = self._too_large(writes, records)
        if too_large is not None:
            if replacing:
                raise InternalError(
                    f"the failure transition of wf_id {wf_id!r} is too large itself: {too_large.message}"
                )
            self.apply(self._fail_instead(tr, wf_id, too_large), wf_id, replacing=True)
            return
        # 3. Stage them.
        outbox = self._outbox
        for key, value in writes:
            outbox.stage(p, key, value)
        for topic, part, key, value in records:
            outbox.produce(topic, part, key, value, None, wf_id)
        if tr.emits:
            for e in tr.emits:  # partition -1: the producer's partitioner places it by key
                outbox.produce(e.topic, -1, e.key, e.value, e.headers, wf_id)
        if s.observer is not None:
            s.observer.transition_staged(tr)
        if tr.task_dropped is not None:
            logger.info("partition %d: a task answer for wf_id %r was dropped (%s)", p, wf_id, tr.task_dropped)
        # 4. Local bookkeeping that follows the staged transition.
        if run is not None:
            self._remember(wf_id, run)
            for seq, _pos, _entry in tr.journal:
                self._note_journal(keys.journal_prefix(wf_id, run.run_id, seq))
        if tr.purge is not None:
            run_id, with_record = tr.purge
            if with_record:
                self._runs.pop(wf_id, None)
            self._journals.pop(keys.journal_run_prefix(wf_id, run_id), None)
        for due_ms, key in armed:
            queue = self.expiries if key.startswith(keys.EXPIRY_PREFIX) else self.timers
            if queue.armed(due_ms, key):
                s.timer_armed(due_ms)
        if tr.child_done is not None and run is not None:
            child_wf_id, _child_run_id, outcome = tr.child_done
            for fut in self.child_waiters.pop((run.run_id, child_wf_id), []):
                if not fut.done():
                    fut.set_result(outcome)
        if tr.cancel_running:
            self.cancel_step(wf_id, "the run ended while the step was running")
        if local_sends and s.local is not None:
            for target, cmd in local_sends:
                s.local.put(target, cmd)
            s.local.drain()
        if tr.execute and run is not None:
            seq = run.seq
            # At once, on the uncommitted state (docs/engine.md "Pipelined steps"), unless the
            # open batch is full: then after its commit, so that a run that steps without end (or
            # every run, while a commit is slow) cannot grow the batch past its bound.
            if s.pipeline_steps and not outbox.full:
                if _EAGER_TASKS:  # the step's task would run inside this call: start it from the loop
                    asyncio.get_running_loop().call_soon(self.maybe_start, wf_id, seq)
                else:  # its task is created here and first runs from the loop
                    self.maybe_start(wf_id, seq)
            else:
                outbox.after_commit(lambda: self.maybe_start(wf_id, seq))

    def _purge_writes(self, wf_id: str, run_id: str, with_record: bool) -> list[tuple[bytes, None]]:
        """Tombstones for every key an ended run holds (its retention is over)."""
        prefixes = (
            keys.store_prefix(wf_id, run_id),
            keys.journal_run_prefix(wf_id, run_id),
            keys.child_prefix(wf_id, run_id),
        )
        out: list[tuple[bytes, None]] = [(key, None) for prefix in prefixes for key, _ in self.store.scan(prefix)]
        if with_record:
            out.append((keys.run_key(wf_id), None))
        return out

    def _index_writes(
        self, wf_id: str, before: RunRecord | None, after: RunRecord | None
    ) -> list[tuple[bytes, bytes | None]]:
        """The run index and count changes of a run record going from `before` to `after`."""
        out: list[tuple[bytes, bytes | None]] = []
        deltas: dict[bytes, int] = {}
        if before is not None:
            out.append((keys.index_key(before.status, before.started_ms, wf_id), None))
            key = keys.count_key(before.status, before.wf_type)
            deltas[key] = deltas.get(key, 0) - 1
        if after is not None:
            out.append((keys.index_key(after.status, after.started_ms, wf_id), after.run_id.encode()))
            key = keys.count_key(after.status, after.wf_type)
            deltas[key] = deltas.get(key, 0) + 1
        for key, delta in deltas.items():
            if delta:
                raw = self.store.get(key)
                n = (count_decoder.decode(raw) if raw is not None else 0) + delta
                out.append((key, encoder.encode(n) if n > 0 else None))
        # The drain counts: runs not ended, by type, version and status (kept at 0).
        vdeltas: dict[bytes, int] = {}
        if before is not None and before.status not in TERMINAL_STATUSES:
            key = keys.version_count_key(before.wf_type, before.version, before.status)
            vdeltas[key] = vdeltas.get(key, 0) - 1
        if after is not None and after.status not in TERMINAL_STATUSES:
            key = keys.version_count_key(after.wf_type, after.version, after.status)
            vdeltas[key] = vdeltas.get(key, 0) + 1
        for key, delta in vdeltas.items():
            if delta:
                raw = self.store.get(key)
                n = (count_decoder.decode(raw) if raw is not None else 0) + delta
                out.append((key, encoder.encode(max(n, 0))))
        return out

    def start(self) -> int:
        """Work due once the partition is owned (its store attached to the group committer).

        Starts the due step of every active run (returns how many): after a crash, a revoke or
        a failed commit, the committed run record in state `step` is all that says a step is
        due, and the run index finds those runs without reading every run the partition holds.
        """
        self._upgrade_tables()
        due = [
            (wf_id, run.seq)
            for status in ACTIVE_STATUSES
            for key, _ in self.store.scan(keys.index_prefix(status))
            if (run := self.get_run(wf_id := keys.index_wf_id(key))) is not None
            and run.state == RunStateKind.step
            and run.suspended_until_ms is None  # its resume timer starts it
            and run.remote is None  # its remote task's answer starts it
            and run.acquire is None  # its limiter's grant starts it
        ]
        for wf_id, seq in due:
            self.maybe_start(wf_id, seq)
        return len(due)

    def _upgrade_tables(self) -> None:
        """Once per partition (the markers travel with the changelog), for runs of older workers.

        Ended runs without a retention timer get one (`keys.RETENTION_MARKER`), and every run
        gets its entry in the run index and counts (`keys.INDEX_MARKER`).
        """
        retention = self.store.get(keys.RETENTION_MARKER) is None
        index = self.store.get(keys.INDEX_MARKER) is None
        versions = self.store.get(keys.VERSIONS_MARKER) is None
        if not (retention or index or versions):
            return
        now = self._now()
        armed = 0
        counts: dict[bytes, int] = {}
        open_runs: dict[bytes, int] = {}
        for key, raw in self.store.scan(keys.RUN_PREFIX):
            run = run_decoder.decode(raw)
            wf_id = keys.wf_id_of_run_key(key)
            if index:
                self.stage(keys.index_key(run.status, run.started_ms, wf_id), run.run_id.encode())
                count = keys.count_key(run.status, run.wf_type)
                counts[count] = counts.get(count, 0) + 1
            if versions and run.status not in TERMINAL_STATUSES:
                vkey = keys.version_count_key(run.wf_type, run.version, run.status)
                open_runs[vkey] = open_runs.get(vkey, 0) + 1
            if retention:
                tr = self.services.machine.arm_retention(run, now)
                if not tr.skipped:
                    self.apply(tr, wf_id)
                    armed += 1
        if index:
            for count, n in counts.items():
                self.stage(count, encoder.encode(n))
            self.stage(keys.INDEX_MARKER, b"1")
        if retention:
            self.stage(keys.RETENTION_MARKER, b"1")
        if versions:
            for vkey, n in open_runs.items():
                self.stage(vkey, encoder.encode(n))
            self.stage(keys.VERSIONS_MARKER, b"1")
        if armed or counts:
            logger.info(
                "partition %d: indexed %d runs, armed retention for %d that ended before it existed",
                self.partition, sum(counts.values()), armed,
            )  # fmt: skip

    def _too_large(
        self, writes: list[tuple[bytes, bytes | None]], records: list[tuple[str, int, bytes, bytes]]
    ) -> Refusal | None:
        """Why one of a transition's records is larger than its topic takes (None: all fit)."""
        limit = self._state_limit
        for key, value in writes:
            if value is not None and len(key) + len(value) > limit:
                size = len(key) + len(value)
                what = f"its state record {key[:2].decode()}... of {size:,} bytes is over {limit:,}"
                return Refusal("too_large", self.services.topics.state, what)
        for topic, _part, key, value in records:
            limit = self._record_limits.get(topic, self._state_limit)
            if len(key) + len(value) > limit:
                what = f"its record for {topic} of {len(key) + len(value):,} bytes is over {limit:,}"
                return Refusal("too_large", topic, what)
        return None

    def _fail_instead(self, tr: Transition, wf_id: str, refusal: Refusal) -> Transition:
        """The transition that fails the run, in place of `tr`, which cannot be published."""
        before = self.get_run(wf_id)  # nothing of `tr` is staged: this is the run before it
        why = refusal.message
        kind = refusal.error_type
        error = {"type": kind, "message": f"the run's next transition cannot be published: {why}"}
        failed = self.services.machine.fail_run(before, error, self._now())
        failed.emits = []  # not even a results-topic record: that topic may be the one refused
        if failed.skipped or (failed.run is not None and tr.run is not None and failed.run.run_id != tr.run.run_id):
            raise InternalError(
                f"partition {self.partition}: a transition of wf_id {wf_id!r} cannot be published ({why}) and "
                f"there is no active run to fail instead; the value checks at the inputs missed it"
            )
        logger.error(
            "partition %d: run %s of wf_id %r fails: %s (%s)",
            self.partition, failed.run.run_id if failed.run else "?", wf_id, why, kind,
        )  # fmt: skip
        quarantine = self.services.quarantine
        if wf_id in quarantine:
            self._outbox.after_commit(lambda: _forget(quarantine, wf_id))
        return failed

    # ------------------------------------------------------------------ input records

    def on_record(self, msg: Message) -> None:
        """Apply one `directives` record; input that cannot be applied goes to dead-letter."""
        offset = msg.offset() or 0
        self.position = offset + 1
        self._outbox.offsets_moved()
        try:
            self._apply_record(msg, offset)
        except InvalidRecordError as exc:
            self.dead_letter(msg, exc.reason)

    def _apply_record(self, msg: Message, offset: int) -> None:
        try:
            rec = decode_directive(msg.value() or b"")
        except DECODE_ERRORS as exc:
            raise InvalidRecordError(f"undecodable directive record: {exc}") from None
        if isinstance(rec, ListCmd):
            self._answer_list(rec)
            return
        if isinstance(rec, ScheduleListCmd):
            self._answer_schedule_list(rec)
            return
        if isinstance(rec, LimiterListCmd):
            self._answer_limiter_list(rec)
            return
        if partition_for(rec.wf_id, self.services.num_partitions) != self.partition:
            raise InvalidRecordError(f"record for wf_id {rec.wf_id!r} is on the wrong partition {self.partition}")
        if isinstance(rec, NextCmd):  # an older worker's: its step is due if the run record says so
            self.maybe_start(rec.wf_id, rec.seq, rec.run_id)
        elif isinstance(rec, QueryCmd):
            self.services.answer_query(self, rec)
        elif isinstance(rec, LIMITER_COMMANDS):
            # The bucket moves with the record's own time (never a worker's clock): re-applied, it decides the same.
            ts_type, ts = msg.timestamp()
            now = ts if ts_type and ts > 0 else self._now()
            ltr, state = self.limiters.apply(self.get_limiter(rec.wf_id), rec, offset, now)
            self.apply_limiter(ltr, rec.wf_id, state)
        elif isinstance(rec, LimiterDescribeCmd):
            self._answer_limiter(rec)
        elif isinstance(rec, SCHEDULE_COMMANDS):
            self.apply_schedule(self.schedules.apply(self.get_schedule(rec.wf_id), rec, offset, self._now()), rec.wf_id)
        elif isinstance(rec, ScheduleDescribeCmd):
            record = self.get_schedule(rec.wf_id)
            to = rec.reply_to
            if record is None:
                answer = Reply(
                    request_id=to.request_id,
                    client_id=to.client_id,
                    ok=False,
                    code=ReplyCode.schedule_not_found,
                    message=f"no schedule with id {rec.wf_id!r}",
                )
            else:
                answer = Reply(request_id=to.request_id, client_id=to.client_id, payload=record)
            self.emit(self.services.topics.replies, to.partition, to.client_id.encode(), encoder.encode(answer))
        elif isinstance(rec, DescribeCmd):
            to, reply = self.services.machine.describe(self.get_run(rec.wf_id), rec.reply_to)
            self.emit(
                self.services.topics.replies,
                to.partition,
                to.client_id.encode(),
                encoder.encode(reply),
                None,
                rec.wf_id,
            )
        else:
            if len(msg.value() or b"") > self.services.limits.value_bytes and self._refuse_oversized(rec):
                return
            run = self.get_run(rec.wf_id)
            if run is None and isinstance(rec, TASK_COMMANDS):
                raise InvalidRecordError(
                    f"a task worker's answer ({type(rec).__name__}) for task {rec.task_id!r} of run "
                    f"{rec.run_id!r}: there is no run of wf_id {rec.wf_id!r} on this partition"
                )
            tr = self.services.machine.apply(run, rec, offset, self._now(), self._inbox_reader(rec.wf_id))
            self.apply(tr, rec.wf_id)

    def _answer_list(self, cmd: ListCmd) -> None:
        """Answer one partition's page of a listing (`grctl.worker._partition.listing`)."""
        if cmd.partition != self.partition:
            raise InvalidRecordError(f"a listing for partition {cmd.partition} is on partition {self.partition}")
        to = cmd.reply_to
        page = list_page(self.store, cmd)
        limit = self._record_limits[self.services.topics.replies]
        while True:
            value = encoder.encode(Reply(request_id=to.request_id, client_id=to.client_id, payload=page))
            if len(value) <= limit or len(page["runs"]) <= 1:
                break
            page["runs"] = page["runs"][: len(page["runs"]) // 2]  # a shorter page, marked as such
            page["full"] = True
        self.emit(self.services.topics.replies, to.partition, to.client_id.encode(), value)

    def _answer_schedule_list(self, cmd: ScheduleListCmd) -> None:
        """Answer one partition's schedules, in id order, after `cmd.after`, up to `cmd.limit`."""
        if cmd.partition != self.partition:
            raise InvalidRecordError(f"a listing for partition {cmd.partition} is on partition {self.partition}")
        to = cmd.reply_to
        after = keys.schedule_key(cmd.after) if cmd.after is not None else None
        found: list[ScheduleRecord] = []
        more = False
        for _key, raw in self.store.scan(keys.SCHEDULE_PREFIX, after):
            if len(found) == cmd.limit:
                more = True
                break
            found.append(schedule_decoder.decode(raw))
        limit = self._record_limits[self.services.topics.replies]
        while True:  # a shorter page if the answer is over the record limit (the client pages on)
            payload = {"schedules": found, "more": more}
            value = encoder.encode(Reply(request_id=to.request_id, client_id=to.client_id, payload=payload))
            if len(value) <= limit or len(found) <= 1:
                break
            found, more = found[: len(found) // 2], True
        self.emit(self.services.topics.replies, to.partition, to.client_id.encode(), value)

    def _answer_limiter_list(self, cmd: LimiterListCmd) -> None:
        """Answer one partition's limiters (their records: limits, in use, waiting, counters)."""
        if cmd.partition != self.partition:
            raise InvalidRecordError(f"a listing for partition {cmd.partition} is on partition {self.partition}")
        to = cmd.reply_to
        # Without the stride scheduler's passes: a listing stays small however many tenants wait.
        found = [
            msgspec.structs.replace(limiter_decoder.decode(raw), passes={})
            for _key, raw in self.store.scan(keys.LIMITER_PREFIX)
        ]
        value = encoder.encode(Reply(request_id=to.request_id, client_id=to.client_id, payload={"limiters": found}))
        self.emit(self.services.topics.replies, to.partition, to.client_id.encode(), value)

    def _answer_limiter(self, cmd: LimiterDescribeCmd) -> None:
        """Answer a limiter's record and queue summary (and a request's place in line, if asked)."""
        to = cmd.reply_to
        state = self.get_limiter(cmd.wf_id)
        if state is None:
            answer = Reply(
                request_id=to.request_id, client_id=to.client_id, ok=False, code=ReplyCode.limiter_not_found,
                message=f"no limiter named {cmd.wf_id!r}",
            )  # fmt: skip
        else:
            payload: dict[str, Any] = {"record": state.record, **state.queue_summary()}
            if cmd.holder is not None:
                payload["position"] = state.position(cmd.holder)
                payload["holding"] = cmd.holder in state.holders
            answer = Reply(request_id=to.request_id, client_id=to.client_id, payload=payload)
        self.emit(self.services.topics.replies, to.partition, to.client_id.encode(), encoder.encode(answer))

    def apply_limiter(self, tr: LimiterTransition, name: str, state: LimiterState | None) -> None:
        """Stage everything a limiter's transition changes (its record, queue, permits, timer, grants).

        A grant goes to the run's partition in the same transaction as the permit counted and the
        offsets: a permit is handed over once or not at all.
        """
        if tr.skipped or self.closing:
            return
        s = self.services
        p = self.partition
        self._limiters[name] = state
        writes = list(tr.writes)
        if tr.delete:
            writes.append((keys.limiter_key(name), None))
        elif tr.record is not None:
            writes.append((keys.limiter_key(name), encoder.encode(tr.record)))
        armed = _timer_writes(writes, tr.timers_clear, tr.timers_set)
        outbox = self._outbox
        for key, value in writes:
            outbox.stage(p, key, value)
        n = s.num_partitions
        local = s.local
        queued = False
        for cmd in tr.sends:
            part = partition_for(cmd.wf_id, n)
            if local is not None and (target := local.target(part)) is not None:
                local.put(target, cmd)  # a grant for a run this worker owns: applied in this batch
                queued = True
                continue
            outbox.produce(s.topics.directives, part, cmd.wf_id.encode(), encoder.encode(cmd), None, name)
        for to, reply in tr.replies:
            outbox.produce(s.topics.replies, to.partition, to.client_id.encode(), encoder.encode(reply), None, name)
        if s.observer is not None:
            s.observer.limiter_staged(name, tr, state)
        self._arm(armed)
        if queued and local is not None:
            local.drain()

    def apply_local(self, cmd: Any) -> None:
        """Apply a limiter request, release or grant that a partition of this worker addressed to this one.

        As `on_record` would, without an offset (nothing was consumed): the limiter's and the run's
        own checks (a request waiting or held already, a grant for a request the run no longer
        waits for) make a repeated application harmless.
        """
        if self.closing:
            raise InternalError(f"partition {self.partition} is closing: a local record must be produced instead")
        if isinstance(cmd, LimitGrantCmd):
            run = self.get_run(cmd.wf_id)
            self.apply(self.services.machine.apply(run, cmd, -1, self._now(), self._inbox_reader(cmd.wf_id)), cmd.wf_id)
            return
        state = self.get_limiter(cmd.wf_id)
        if state is None and isinstance(cmd, LimitAcquireCmd):
            # Perhaps not created yet: its creation may be a record of this partition not read yet
            # (a worker's declaration). Through Kafka, the request is read after it.
            self.emit(self.services.topics.directives, self.partition, cmd.wf_id.encode(), encoder.encode(cmd))
            return
        ltr, state = self.limiters.apply(state, cmd, -1, self._now())
        self.apply_limiter(ltr, cmd.wf_id, state)

    def apply_schedule(self, tr: ScheduleTransition, schedule_id: str) -> None:
        """Stage everything a schedule's transition changes (its record, its timer, the runs it starts).

        The starts of tick runs go to their own partitions in the same transaction as the
        schedule's new state and the offsets: a tick is started once or not at all.
        """
        if tr.skipped or self.closing:
            return
        s = self.services
        p = self.partition
        writes: list[tuple[bytes, bytes | None]] = []
        if tr.delete:
            writes.append((keys.schedule_key(schedule_id), None))
        elif tr.record is not None:
            writes.append((keys.schedule_key(schedule_id), encoder.encode(tr.record)))
        armed = _timer_writes(writes, tr.timers_clear, tr.timers_set)
        records = []
        n = s.num_partitions
        for cmd in tr.sends:
            part = p if cmd.wf_id == schedule_id else partition_for(cmd.wf_id, n)
            records.append((s.topics.directives, part, cmd.wf_id.encode(), encoder.encode(cmd)))
        for to, reply in tr.replies:
            records.append((s.topics.replies, to.partition, to.client_id.encode(), encoder.encode(reply)))
        outbox = self._outbox
        for key, value in writes:
            outbox.stage(p, key, value)
        for topic, part, key, value in records:
            outbox.produce(topic, part, key, value, None, schedule_id)
        if s.observer is not None:
            s.observer.schedule_staged(tr)
        self._arm(armed)

    def _arm(self, armed: list[tuple[int, bytes]]) -> None:
        """Put staged run-table timers in memory (and wake the timer loop if one is due sooner)."""
        for due_ms, key in armed:
            if self.timers.armed(due_ms, key):
                self.services.timer_armed(due_ms)

    def _refuse_oversized(self, rec: Any) -> bool:
        """Refuse a start or an event whose value is over the value limit (True if refused).

        The client checks before it sends; this catches records written by other producers.
        """
        if isinstance(rec, StartCmd):
            what, value = "start input", rec.input
        elif isinstance(rec, EventCmd):
            what, value = f"payload of event {rec.event_name!r}", rec.payload
        else:
            return False
        size, limit = len(encoder.encode(value)), self.services.limits.value_bytes
        if size <= limit:
            return False
        err = PayloadTooLargeError(what, size=size, limit=limit, wf_id=rec.wf_id)
        logger.warning("partition %d: refused: %s", self.partition, err)
        self.apply(self.services.machine.refuse(rec, self._now(), ReplyCode.payload_too_large, str(err)), rec.wf_id)
        return True

    def dead_letter(self, msg: Message, reason: str) -> None:
        """Send an input record to `dead-letter` with the reason in its headers."""
        logger.warning("partition %d offset %d -> dead-letter: %s", self.partition, msg.offset(), reason)
        if self.services.observer is not None:
            self.services.observer.dead_lettered(self.partition)
        limit = self._record_limits.get(self.services.topics.dead_letter, self._state_limit) - 8 * 1024
        key, value, headers = dead_letter_record(msg, reason, self.partition, limit)
        self.emit(self.services.topics.dead_letter, self.partition, key, value, headers)

    # ------------------------------------------------------------------ steps

    def maybe_start(self, wf_id: str, seq: int, run_id: str | None = None) -> None:
        """Start step `seq` of the run unless it is stale or already running here."""
        if self.closing:
            return
        run = self.get_run(wf_id)
        if (
            run is None
            or run.state != RunStateKind.step
            or run.seq != seq
            or (run_id is not None and run.run_id != run_id)
            or run.suspended_until_ms is not None
            or run.remote is not None
            or run.acquire is not None
        ):
            return  # stale (the run moved on), or suspended: its resume timer, task answer or permit starts it
        cur = self.running.get(wf_id)
        if cur is not None and cur.seq == seq and cur.run_id == run.run_id and not cur.cancelled:
            return
        # The step may have been made due by a worker with other code: this one must serve the
        # run's version and step, else the run parks (or moves to a newer version, or resumes).
        decision = self.services.machine.ensure_served(run, self._now())
        if not decision.skipped:
            self.apply(decision, wf_id)  # a resumed or upgraded run starts from there
            return
        if run.status == RunStatus.awaiting_code:
            return  # parked, and still not served here
        if cur is not None:
            self.cancel_step(wf_id, "superseded")
        rs = RunningStep(wf_id=wf_id, run_id=run.run_id, seq=seq)
        self.running[wf_id] = rs
        rs.task = self.services.start_step(self, rs, run)

    def cancel_step(self, wf_id: str, why: str) -> None:
        """Cancel the step running for `wf_id` (its outcome will be ignored).

        A step cancelled because its partition is revoked stays due in the committed run
        record: the next owner starts it from its run index.
        """
        rs = self.running.pop(wf_id, None)
        if rs is None:
            return
        rs.cancelled = True
        if rs.task is not None and not rs.task.done():
            logger.debug("cancel step %s seq %d of %s: %s", rs.run_id, rs.seq, wf_id, why)
            rs.task.cancel()

    def step_finished(self, rs: RunningStep, outcome: StepOutcome) -> None:
        """Apply a step's outcome (called on the event loop when its task ends)."""
        if rs.cancelled or self.running.get(rs.wf_id) is not rs:
            return
        del self.running[rs.wf_id]
        if self.closing:
            return
        run = self.get_run(rs.wf_id)
        tr = self.services.machine.on_step_outcome(run, outcome, self._now(), self._inbox_reader(rs.wf_id))
        self.apply(tr, rs.wf_id)
        if rs.runtime is not None and outcome.next_kind not in ("suspend", "remote") and rs.runtime.journal_length:
            prefix = keys.journal_prefix(rs.wf_id, rs.run_id, rs.seq)
            for pos in range(rs.runtime.journal_length):
                self.stage(keys.journal_key(prefix, pos), None)
            self._forget_journal(prefix)

    def _load_journal_index(self) -> None:
        for key, _raw in self.store.scan(keys.JOURNAL_PREFIX):
            self._note_journal(keys.journal_prefix_of(key))

    def _note_journal(self, prefix: bytes) -> None:
        run_prefix = keys.journal_run_prefix_of(prefix)
        steps = self._journals.get(run_prefix)
        if steps is None:
            self._journals[run_prefix] = {prefix}
        else:
            steps.add(prefix)

    def _forget_journal(self, prefix: bytes) -> None:
        run_prefix = keys.journal_run_prefix_of(prefix)
        steps = self._journals.get(run_prefix)
        if steps is not None:
            steps.discard(prefix)
            if not steps:
                del self._journals[run_prefix]

    def load_journal(self, wf_id: str, run_id: str, seq: int) -> list[JournalEntry]:
        """The journal entries recorded by earlier executions of a step."""
        if not self._journals:
            return []  # the common case, no journal in the partition: no key built per step
        prefix = keys.journal_prefix(wf_id, run_id, seq)
        if prefix not in self._journals.get(keys.journal_run_prefix(wf_id, run_id), ()):
            return []
        out = []
        for _key, raw in self.store.scan(prefix):
            kind, name, value = journal_entry_decoder.decode(raw)
            out.append(JournalEntry(kind, name, value))
        return out

    # JournalSink
    def journal_append(self, runtime: StepRuntime, position: int, entry: JournalEntry) -> None:
        """Stage a journal entry; it commits with the next batch, even while the step runs.

        Raises:
            PayloadTooLargeError: the entry (a task's result, ...) is over the value limit: the
                call that recorded it fails, in the step.
        """
        prefix = keys.journal_prefix(runtime.wf_id, runtime.run_id, runtime.seq)
        value = journal_entry_encoder.encode([entry.kind, entry.name, entry.value])
        limit = self.services.limits.value_bytes
        if len(value) > limit:
            raise PayloadTooLargeError(
                f"the recorded {entry.kind} {entry.name!r}", size=len(value), limit=limit, wf_id=runtime.wf_id
            )
        self.stage(keys.journal_key(prefix, position), value)
        self._note_journal(prefix)

    def history_append(
        self, runtime: StepRuntime, kind: str, msg: dict[str, Any] | None, operation_id: str = ""
    ) -> None:
        """Stage a history event of a running step.

        What history only describes (a task's arguments, a child's input, a payload sent to the
        parent: each is kept in full where it acts) is cut to a preview past
        `HISTORY_PREVIEW_BYTES`; any event that would still be larger than the history topic
        takes keeps previews of all its values. A step never fails for its history.
        """
        s = self.services
        rec = HistoryRecord(
            kind=kind, wf_id=runtime.wf_id, run_id=runtime.run_id, ts_ms=self._now(), msg=msg, worker_id=s.worker_id,
            op=operation_id,
        )  # fmt: skip
        value = encoder.encode(rec)
        key = runtime.wf_id.encode()
        if msg and len(value) > HISTORY_PREVIEW_BYTES:
            field = DESCRIBED_FIELDS.get(kind)
            if field in msg:
                cut = dict(msg)
                cut[field] = preview(msg[field], len(encoder.encode(msg[field])))
                value = encoder.encode(msgspec.structs.replace(rec, msg=cut))
            if len(key) + len(value) > self._history_limit:
                cut = {k: preview(v, len(encoder.encode(v))) for k, v in msg.items()}
                value = encoder.encode(msgspec.structs.replace(rec, msg=cut))
        self.emit(s.topics.history, self.partition, key, value, None, runtime.wf_id)

    def start_child(
        self,
        runtime: StepRuntime,
        *,
        wf_type: str,
        wf_id: str,
        run_id: str,
        input: Any,
        timeout_ms: int | None,
        callback_step: str | None,
        traceparent: str | None,
    ) -> None:
        """Stage the start of a child of the running step's run (`StepPort`)."""
        parent = ParentRef(
            wf_id=runtime.wf_id, run_id=runtime.run_id, wf_type=runtime.wf_type, callback_step=callback_step
        )
        own = self.get_run(runtime.wf_id)
        cmd = StartCmd(
            wf_id=wf_id, run_id=run_id, wf_type=wf_type, input=input, timeout_ms=timeout_ms, parent=parent,
            traceparent=traceparent, priority=own.priority if own is not None and own.priority != 3 else None,
        )  # fmt: skip
        self.send_directive(runtime, cmd)

    def send_event(
        self, runtime: StepRuntime, *, wf_id: str, run_id: str | None, event_name: str, payload: Any, event_id: str
    ) -> None:
        """Stage an event for another run (`StepPort`)."""
        cmd = EventCmd(wf_id=wf_id, run_id=run_id, event_name=event_name, payload=payload, event_id=event_id)
        self.send_directive(runtime, cmd)

    def cancel_run(
        self, runtime: StepRuntime, *, wf_id: str, run_id: str | None, reason: str | None, terminate: bool
    ) -> None:
        """Stage the cancellation or termination of another run (`StepPort`)."""
        self.send_directive(runtime, CancelCmd(wf_id=wf_id, run_id=run_id, reason=reason, terminate=terminate))

    def send_directive(self, runtime: StepRuntime, cmd: Any) -> None:
        """Stage a directive for another run (child start, event, cancel) in the open batch.

        Raises:
            PayloadTooLargeError: the directive (a child's input, an event's payload) is over
                the value limit: the call that sends it fails, in the step.
        """
        s = self.services
        value = encoder.encode(cmd)
        if len(value) > s.limits.value_bytes:
            what = "child input" if isinstance(cmd, StartCmd) else "event payload"
            raise PayloadTooLargeError(what, size=len(value), limit=s.limits.value_bytes, wf_id=cmd.wf_id)
        part = partition_for(cmd.wf_id, s.num_partitions)
        self.emit(s.topics.directives, part, cmd.wf_id.encode(), value, None, runtime.wf_id)

    def child_outcome(self, runtime: StepRuntime, child_wf_id: str) -> asyncio.Future[dict[str, Any]]:
        """A future resolved with the outcome of a child of the running step's run."""
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        raw = self.store.get(keys.child_key(runtime.wf_id, runtime.run_id, child_wf_id))
        if raw is not None:
            fut.set_result(msgspec.msgpack.decode(raw))
        else:
            self.child_waiters.setdefault((runtime.run_id, child_wf_id), []).append(fut)
        return fut

    # ------------------------------------------------------------------ timers

    def load_timers(self, now: int) -> None:
        """Read the timers the horizon reached since the last call into memory (both tables).

        The timer loop calls this every round: a table's timers armed beyond the loaded horizon
        (every retention timer: it falls due a retention after the run ended) are in memory only
        once a load has reached them, and only what is in memory can fall due.
        """
        self.timers.maybe_load(now)
        self.expiries.maybe_load(now)

    def next_timer_due(self) -> int | None:
        """Due time of the earliest run timer in memory."""
        return self.timers.next_due()

    def next_expiry_due(self) -> int | None:
        """Due time of the earliest retention timer in memory."""
        return self.expiries.next_due()

    def fire_due_timers(self, now: int, limit: int) -> int:
        """Fire up to `limit` due run timers as transitions; returns how many fired."""
        return self._fire(self.timers, now, limit)

    def fire_due_expiries(self, now: int, limit: int) -> int:
        """Purge up to `limit` ended runs whose retention is over; returns how many timers fired."""
        return self._fire(self.expiries, now, limit)

    def _fire(self, queue: TimerQueue, now: int, limit: int) -> int:
        queue.maybe_load(now)
        fired = 0
        while fired < limit and not self.closing:
            key = queue.pop_due(now)
            if key is None:
                break
            raw = self.store.get(key)
            if raw is None:
                continue  # disarmed meanwhile
            entry: TimerEntry = timer_decoder.decode(raw)
            self.stage(key, None)
            if entry.kind == TimerKind.schedule:
                self.apply_schedule(self.schedules.on_due(self.get_schedule(entry.wf_id), entry, now), entry.wf_id)
                fired += 1
                continue
            if entry.kind == TimerKind.limiter:
                state = self.get_limiter(entry.wf_id)
                self.apply_limiter(self.limiters.on_due(state, entry), entry.wf_id, state)
                fired += 1
                continue
            run = self.get_run(entry.wf_id)
            tr = self.services.machine.on_timer(run, entry, now)
            self.apply(tr, entry.wf_id)
            fired += 1
        return fired

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Stop: cancel running steps; the store is closed by the session after the final commit."""
        self.closing = True
        for wf_id in list(self.running):
            self.cancel_step(wf_id, "partition revoked")


def _timer_writes(
    writes: list[tuple[bytes, bytes | None]], clear: list[TimerEntry], armed: list[TimerEntry]
) -> list[tuple[int, bytes]]:
    """Add the state writes of a schedule's or a limiter's timers to `writes`; the (due, key) of those armed."""
    for t in clear:
        writes.append((keys.timer_key(t.due_ms, t.wf_id, t.kind), None))
    out: list[tuple[int, bytes]] = []
    for t in armed:
        key = keys.timer_key(t.due_ms, t.wf_id, t.kind)
        out.append((t.due_ms, key))
        writes.append((key, encoder.encode(t)))
    return out


def _forget(quarantine: dict[str, Refusal], wf_id: str) -> None:
    quarantine.pop(wf_id, None)
