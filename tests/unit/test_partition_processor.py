"""The partition processor without a broker: records in, staged transitions and steps out.

Real state machine, real RocksDB store (tmp_path), real group committer; the Kafka
transaction is `InMemoryPublisher`, and the records are real `confluent_kafka.Message`s.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from confluent_kafka import Message

from grctl.engine import keys
from grctl.engine.machine import Machine, StepOutcome, Transition
from grctl.engine.records import (
    HistoryRecord,
    NextCmd,
    QueryCmd,
    ReplyTo,
    RunRecord,
    StartCmd,
    TimerEntry,
    TimerKind,
    encoder,
    history_decoder,
    run_decoder,
)
from grctl.errors import PayloadTooLargeError
from grctl.kafka.limits import TOPIC_DEFAULT_MAX_BYTES, RecordLimits
from grctl.kafka.partitioner import partition_for
from grctl.kafka.topics import TopicNames
from grctl.models.run_info import RunStateKind, RunStatus
from grctl.state.partition_store import PartitionStore
from grctl.worker._partition import timer_queue as timer_queue_module
from grctl.worker._partition.ports import ProcessorServices, Refusal, RunningStep, now_ms
from grctl.worker._partition.processor import PartitionProcessor
from grctl.worker._session.commit import MAX_BATCH_RECORDS, GroupCommitter
from grctl.worker._session.errors import SessionRestart
from grctl.worker.runtime import StepRuntime
from tests.unit.publisher import InMemoryPublisher

N = 4
TOPICS = TopicNames("unit")


RETENTION_MS = 7 * 24 * 3600 * 1000


class Catalog:
    results: dict[str, str] = {}  # set per test

    def has_type(self, wf_type: str) -> bool:
        return wf_type == "Order"

    def versions(self, wf_type: str) -> list[int]:
        return [1] if self.has_type(wf_type) else []

    def upgrade_auto(self, wf_type: str, version: int) -> bool:
        return False

    def has_step(self, wf_type: str, version: int, step: str) -> bool:
        return version in self.versions(wf_type)  # every step name the tests use

    def step_timeout_ms(self, wf_type: str, version: int, step: str) -> int | None:
        return None

    def has_event(self, wf_type: str, version: int, name: str) -> bool | None:
        return name == "approve" if version in self.versions(wf_type) else None

    def events(self, wf_type: str, version: int) -> list[str]:
        return ["approve"] if version in self.versions(wf_type) else []

    def retention_ms(self, wf_type: str) -> int:
        return RETENTION_MS

    def results_topic(self, wf_type: str) -> str | None:
        return self.results.get(wf_type)


class BuggyMachine(Machine):
    """A state machine with a bug: what the processor must not turn into a dead letter."""

    def __init__(self, bug: str) -> None:
        super().__init__(Catalog(), "w_unit")
        self.bug = bug

    def apply(self, run: RunRecord | None, rec: Any, offset: int, now_ms: int, inbox: Any) -> Transition:
        tr = super().apply(run, rec, offset, now_ms, inbox)
        if self.bug == "raises":
            raise RuntimeError("engine bug")
        # A transition that cannot be encoded half-way (after the run record encodes fine).
        tr.history.append(HistoryRecord(kind="x", wf_id=rec.wf_id, run_id="r", ts_ms=0, msg={"bad": object()}))
        return tr


class Harness:
    def __init__(
        self,
        tmp_path: Path,
        machine: Machine | None = None,
        partition: int = 0,
        limits: RecordLimits | None = None,
        pipeline_steps: bool = False,
    ) -> None:
        # Steps start after the commit unless a test asks for pipelining: the processor's other
        # tests then see each step start at a known point (the flush).
        self.quarantine: dict[str, Refusal] = {}
        self.pub = InMemoryPublisher()
        self.committer = GroupCommitter(self.pub)
        self.started: list[tuple[str, int]] = []
        self.queries: list[QueryCmd] = []
        self.store = PartitionStore(tmp_path / str(partition))
        services = ProcessorServices(
            outbox=self.committer,
            machine=machine or Machine(Catalog(), "w_unit"),
            topics=TOPICS,
            num_partitions=N,
            worker_id="w_unit",
            start_step=self._start_step,
            answer_query=lambda proc, cmd: self.queries.append(cmd),
            timer_armed=lambda due_ms: None,
            limits=limits or RecordLimits.compute(dict.fromkeys(TOPICS.all(), TOPIC_DEFAULT_MAX_BYTES)),
            quarantine=self.quarantine,
            pipeline_steps=pipeline_steps,
        )
        self.proc = PartitionProcessor(partition, self.store, services)
        self.committer.attach(partition, self.store, self.proc.low_watermark)
        self.offset = 0

    def _start_step(self, proc: PartitionProcessor, rs: RunningStep, run: RunRecord) -> asyncio.Task[None] | None:
        self.started.append((run.wf_id, run.seq))
        return None

    def feed(self, value: bytes, wf_id: str = "k") -> int:
        offset = self.offset
        self.offset += 1
        self.proc.on_record(
            Message(
                topic=TOPICS.directives, partition=self.proc.partition, offset=offset, key=wf_id.encode(), value=value
            )
        )
        return offset

    def open_records(self) -> list[Any]:
        return list(self.committer._batch.records)

    def open_state(self) -> dict[bytes, bytes | None]:
        return dict(self.committer._batch.state.get(self.proc.partition, {}))


def wf_ids_on(partition: int) -> Iterator[str]:
    i = 0
    while True:
        wf_id = f"wf-{i}"
        if partition_for(wf_id, N) == partition:
            yield wf_id
        i += 1


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path)
    yield h
    h.store.close()


def start_cmd(wf_id: str, run_id: str = "run-1") -> bytes:
    return encoder.encode(StartCmd(wf_id=wf_id, run_id=run_id, wf_type="Order", input={"n": 1}))


async def test_a_start_stages_the_run_and_its_history_and_without_pipelining_starts_the_step_after_commit(
    harness: Harness,
) -> None:
    wf_id = next(wf_ids_on(0))
    harness.feed(start_cmd(wf_id))
    run = run_decoder.decode(harness.store.get(keys.run_key(wf_id)) or b"")
    assert (run.status, run.state, run.step, run.seq) == (RunStatus.running, RunStateKind.step, "start", 1)
    assert harness.store.get_committed(keys.run_key(wf_id)) is None
    history = [history_decoder.decode(r[3]).kind for r in harness.open_records() if r[0] == TOPICS.history]
    assert history == ["run.started"]
    assert harness.started == []
    await harness.committer.flush()
    assert harness.started == [(wf_id, 1)]
    assert harness.store.get_committed(keys.run_key(wf_id)) is not None
    assert harness.pub.committed[0].offsets == [(0, 1)]


def history_kinds(pub: InMemoryPublisher) -> list[list[str]]:
    """The history event kinds of each committed transaction."""
    return [[history_decoder.decode(r[3]).kind for r in c.records if r[0] == TOPICS.history] for c in pub.committed]


async def test_a_pipelined_step_starts_at_once_and_its_outcome_joins_its_dispatchs_transaction(tmp_path: Path) -> None:
    """Pipelined steps: a 1-step run is one transaction when the step ends before the batch is sealed."""
    h = Harness(tmp_path, pipeline_steps=True)
    wf_id = next(wf_ids_on(0))
    h.feed(start_cmd(wf_id))
    await asyncio.sleep(0)  # 3.12+: the start is scheduled on the loop, not run inside `apply`
    assert h.started == [(wf_id, 1)] and h.pub.committed == []  # started before anything committed
    h.proc.step_finished(h.proc.running[wf_id], StepOutcome(run_id="run-1", seq=1, next_kind="complete", result=7))
    await h.committer.flush()
    assert history_kinds(h.pub) == [["run.started", "step.completed", "run.completed"]]
    assert run_decoder.decode(h.store.get_committed(keys.run_key(wf_id)) or b"").result == 7
    h.store.close()


async def test_a_pipelined_step_waits_for_the_commit_while_the_open_batch_is_full(tmp_path: Path) -> None:
    """A run that steps without end cannot grow a batch past its bound: past it, steps start after the commit."""
    h = Harness(tmp_path, pipeline_steps=True)
    for i in range(MAX_BATCH_RECORDS + 1):
        h.committer.stage(0, b"s/filler/%d" % i, b"x")
    assert h.committer.full
    wf_id = next(wf_ids_on(0))
    h.feed(start_cmd(wf_id))
    await asyncio.sleep(0)
    assert h.started == []
    await h.committer.flush()
    assert h.started == [(wf_id, 1)]
    h.store.close()


async def test_a_pipelined_steps_outcome_staged_during_its_dispatchs_transaction_commits_after_it(
    tmp_path: Path,
) -> None:
    h = Harness(tmp_path, pipeline_steps=True)
    wf_id = next(wf_ids_on(0))
    h.feed(start_cmd(wf_id))
    h.pub.hold = asyncio.Event()
    flushing = asyncio.create_task(h.committer.flush())
    await h.pub.in_flight.wait()
    assert h.started == [(wf_id, 1)]
    h.proc.step_finished(h.proc.running[wf_id], StepOutcome(run_id="run-1", seq=1, next_kind="complete", result=7))
    # The step read the uncommitted run; its outcome is readable here at once ...
    assert run_decoder.decode(h.store.get(keys.run_key(wf_id)) or b"").status == RunStatus.completed
    h.pub.hold.set()
    await flushing
    assert history_kinds(h.pub) == [["run.started"]]  # ... but not in the dispatch's transaction
    h.pub.hold = None
    await h.committer.flush()
    assert history_kinds(h.pub)[1][-1] == "run.completed"
    h.store.close()


async def test_a_pipelined_steps_outcome_is_dropped_with_its_dispatchs_failed_transaction(tmp_path: Path) -> None:
    h = Harness(tmp_path, pipeline_steps=True)
    wf_id = next(wf_ids_on(0))
    h.feed(start_cmd(wf_id))
    h.pub.hold = asyncio.Event()
    h.pub.fail_next = RuntimeError("INVALID_PRODUCER_EPOCH")
    flushing = asyncio.create_task(h.committer.flush())
    await h.pub.in_flight.wait()
    h.proc.step_finished(h.proc.running[wf_id], StepOutcome(run_id="run-1", seq=1, next_kind="complete", result=7))
    h.pub.hold.set()
    with pytest.raises(SessionRestart):
        await flushing
    with pytest.raises(SessionRestart):
        await h.committer.flush()
    assert h.pub.committed == []
    assert h.store.get(keys.run_key(wf_id)) is None  # neither the start nor the step's outcome
    h.store.close()


async def test_without_pipelining_a_step_starts_only_once_its_dispatch_committed(tmp_path: Path) -> None:
    h = Harness(tmp_path, pipeline_steps=False)
    wf_id = next(wf_ids_on(0))
    h.feed(start_cmd(wf_id))
    h.pub.hold = asyncio.Event()
    flushing = asyncio.create_task(h.committer.flush())
    await h.pub.in_flight.wait()
    assert h.started == []
    h.pub.hold.set()
    await flushing
    assert h.started == [(wf_id, 1)]
    h.store.close()


async def test_a_running_step_holds_no_offset_back_and_writes_no_directive(harness: Harness) -> None:
    ids = wf_ids_on(0)
    wf_id, other = next(ids), next(ids)
    harness.feed(start_cmd(wf_id))
    await harness.committer.flush()
    assert harness.committer.committed_offset(0) == 1
    assert harness.pub.records_of(TOPICS.directives) == []  # the dispatch is the run record alone
    # While the step runs, later inputs are applied and their offsets committed past it.
    rs = harness.proc.running[wf_id]
    harness.feed(encoder.encode(StartCmd(wf_id=other, run_id="r", wf_type="Nope")))  # rejected, applied
    await harness.committer.flush()
    assert harness.committer.committed_offset(0) == harness.offset == 2
    assert [history_decoder.decode(r[3]).kind for r in harness.pub.records_of(TOPICS.history)][-1] == "run.rejected"
    harness.proc.step_finished(rs, StepOutcome(run_id="run-1", seq=1, next_kind="step", next_step="s1"))
    await harness.committer.flush()
    assert harness.started == [(wf_id, 1), (wf_id, 2)]
    assert harness.pub.records_of(TOPICS.directives) == []
    rs = harness.proc.running[wf_id]
    harness.proc.step_finished(
        rs, StepOutcome(run_id="run-1", seq=2, next_kind="complete", result="done", store={"k": b"\xa1v"})
    )
    await harness.committer.flush()
    run = run_decoder.decode(harness.store.get_committed(keys.run_key(wf_id)) or b"")
    assert run.status == RunStatus.completed and run.result == "done"
    assert harness.store.get_committed(keys.store_key(wf_id, "run-1", "k")) == b"\xa1v"


async def test_an_older_workers_next_step_record_starts_nothing_twice(harness: Harness) -> None:
    wf_id = next(wf_ids_on(0))
    harness.feed(start_cmd(wf_id))
    await harness.committer.flush()
    assert harness.started == [(wf_id, 1)]
    harness.feed(encoder.encode(NextCmd(wf_id=wf_id, run_id="run-1", seq=1)))  # current: already running
    harness.feed(encoder.encode(NextCmd(wf_id=wf_id, run_id="run-1", seq=7)))  # stale
    harness.feed(encoder.encode(NextCmd(wf_id=wf_id, run_id="run-0", seq=1)))  # another run's
    await harness.committer.flush()
    assert harness.started == [(wf_id, 1)]
    assert harness.committer.committed_offset(0) == harness.offset == 4
    harness.proc.cancel_step(wf_id, "test")  # a step that is no longer running is due again
    harness.feed(encoder.encode(NextCmd(wf_id=wf_id, run_id="run-1", seq=1)))
    assert harness.started == [(wf_id, 1), (wf_id, 1)]


async def test_due_steps_start_from_the_run_index_when_the_partition_is_assigned(tmp_path: Path) -> None:
    """A crash or revoke between a dispatch's commit and its step's outcome: the next owner starts the step."""
    h = Harness(tmp_path)
    ids = wf_ids_on(0)
    stepping, waiting, suspended, ended = next(ids), next(ids), next(ids), next(ids)
    for wf_id in (stepping, waiting, suspended, ended):
        h.feed(start_cmd(wf_id))
    await h.committer.flush()
    outcomes = {
        stepping: StepOutcome(run_id="run-1", seq=1, next_kind="step", next_step="s1"),
        waiting: StepOutcome(run_id="run-1", seq=1, next_kind="wait"),
        suspended: StepOutcome(run_id="run-1", seq=1, next_kind="suspend", resume_at_ms=now_ms() + 3_600_000),
        ended: StepOutcome(run_id="run-1", seq=1, next_kind="complete", result=1),
    }
    for wf_id, outcome in outcomes.items():
        h.proc.step_finished(h.proc.running[wf_id], outcome)
    await h.committer.flush()
    assert (stepping, 2) in h.started
    h.proc.close()  # the worker dies with step 2 of `stepping` running: nothing else says it is due
    h.committer.detach(0)
    h.store.close()

    again = Harness(tmp_path)
    assert again.proc.start() == 1
    assert again.started == [(stepping, 2)]
    assert set(again.proc.running) == {stepping}
    again.store.close()


def test_an_undecodable_record_goes_to_dead_letter_with_its_reason_and_nothing_else(harness: Harness) -> None:
    harness.feed(b"\xc1 not msgpack")
    (rec,) = harness.open_records()
    topic, part, key, value, headers, _origin = rec
    assert (topic, part, key, value) == (TOPICS.dead_letter, 0, b"k", b"\xc1 not msgpack")
    reason = dict(headers or [])["grctl.reason"].decode()
    assert reason.startswith("undecodable directive record")
    assert harness.open_state() == {} and harness.proc.position == 1


def test_a_record_on_the_wrong_partition_goes_to_dead_letter(harness: Harness) -> None:
    elsewhere = next(wf_ids_on(1))
    harness.feed(start_cmd(elsewhere), wf_id=elsewhere)
    (rec,) = harness.open_records()
    assert rec[0] == TOPICS.dead_letter
    assert "wrong partition" in dict(rec[4] or [])["grctl.reason"].decode()
    assert harness.open_state() == {}


@pytest.mark.parametrize("bug", ["raises", "unencodable"])
def test_an_engine_bug_fails_loudly_with_nothing_of_the_record_staged(tmp_path: Path, bug: str) -> None:
    h = Harness(tmp_path, BuggyMachine(bug))
    wf_id = next(wf_ids_on(0))
    with pytest.raises((RuntimeError, TypeError, msgspec.EncodeError)):
        h.feed(start_cmd(wf_id))
    assert h.open_records() == [] and h.open_state() == {}  # no dead letter, no half transition
    assert h.store.get(keys.run_key(wf_id)) is None
    h.store.close()


def test_queries_are_handed_to_the_query_answerer(harness: Harness) -> None:
    wf_id = next(wf_ids_on(0))
    to = ReplyTo(client_id="c", request_id="q1", partition=2)
    harness.feed(encoder.encode(QueryCmd(wf_id=wf_id, name="count", reply_to=to)))
    assert [q.name for q in harness.queries] == ["count"]
    assert harness.open_records() == []


async def test_a_revoked_processor_publishes_nothing_more(harness: Harness) -> None:
    wf_id = next(wf_ids_on(0))
    harness.feed(start_cmd(wf_id))
    await harness.committer.flush()
    rs = harness.proc.running[wf_id]
    harness.proc.close()
    assert rs.cancelled
    harness.proc.step_finished(rs, StepOutcome(run_id="run-1", seq=1, next_kind="complete", result="late"))
    assert harness.open_records() == [] and harness.open_state() == {}


def small_limits(topic_max: int) -> RecordLimits:
    return RecordLimits.compute(dict.fromkeys(TOPICS.all(), topic_max))


async def test_a_transition_with_a_record_kafka_would_refuse_fails_its_run_instead(tmp_path: Path) -> None:
    h = Harness(tmp_path, limits=small_limits(64 * 1024))
    wf_id = next(wf_ids_on(0))
    h.feed(start_cmd(wf_id))
    await h.committer.flush()
    rs = h.proc.running[wf_id]
    too_big = b"\xc4" + b"x" * (70 * 1024)  # over the state topic's record limit
    h.proc.step_finished(rs, StepOutcome(run_id="run-1", seq=1, next_kind="complete", result="r", store={"k": too_big}))
    state = h.open_state()
    assert keys.store_key(wf_id, "run-1", "k") not in state  # never staged
    run = run_decoder.decode(state[keys.run_key(wf_id)] or b"")
    assert run.status == RunStatus.failed and run.error is not None
    assert run.error["type"] == "PayloadTooLargeError" and "over" in run.error["message"]
    kinds = [history_decoder.decode(r[3]).kind for r in h.open_records() if r[0] == TOPICS.history]
    assert kinds == ["step.failed", "run.failed"]
    h.store.close()


async def test_a_start_over_the_value_limit_is_rejected_without_a_run(tmp_path: Path) -> None:
    h = Harness(tmp_path, limits=small_limits(64 * 1024))
    wf_id = next(wf_ids_on(0))
    big = encoder.encode(StartCmd(wf_id=wf_id, run_id="run-1", wf_type="Order", input="x" * (50 * 1024)))
    h.feed(big)
    assert h.store.get(keys.run_key(wf_id)) is None
    (rec,) = h.open_records()
    event = history_decoder.decode(rec[3])
    assert event.kind == "run.rejected" and event.msg is not None and event.msg["code"] == "payload_too_large"
    assert "start input" in event.msg["message"]
    h.store.close()


async def test_a_quarantined_run_fails_at_its_next_transition_and_leaves_the_quarantine_once_committed(
    tmp_path: Path,
) -> None:
    h = Harness(tmp_path)
    wf_id = next(wf_ids_on(0))
    h.feed(start_cmd(wf_id))
    await h.committer.flush()
    rs = h.proc.running[wf_id]
    h.quarantine[wf_id] = Refusal(
        "MSG_SIZE_TOO_LARGE",
        "unit.state",
        "Kafka refused its record for unit.state (2,000,000 bytes): MSG_SIZE_TOO_LARGE",
    )
    h.proc.step_finished(rs, StepOutcome(run_id="run-1", seq=1, next_kind="complete", result="r"))
    await h.committer.flush()
    run = run_decoder.decode(h.store.get_committed(keys.run_key(wf_id)) or b"")
    assert run.status == RunStatus.failed and run.error is not None and "MSG_SIZE_TOO_LARGE" in run.error["message"]
    assert h.quarantine == {}
    h.store.close()


def test_a_journal_entry_over_the_value_limit_fails_the_call(tmp_path: Path) -> None:
    h = Harness(tmp_path, limits=small_limits(64 * 1024))
    rt = StepRuntime(wf_id="w", run_id="r", wf_type="Order", step_name="start", seq=1, recorded=[], sink=h.proc)
    with pytest.raises(PayloadTooLargeError, match="the recorded task 'fetch'"):
        rt.append("task", "fetch", {"ok": True, "result": "x" * (60 * 1024)})
    assert rt.position == 0 and h.open_state() == {}
    h.store.close()


def test_history_only_describes_large_task_arguments(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    rt = StepRuntime(wf_id="w", run_id="r", wf_type="Order", step_name="start", seq=1, recorded=[], sink=h.proc)
    rt.history("task.started", {"task_name": "t", "args": {"blob": "x" * 100_000}})
    rt.history("task.started", {"task_name": "t", "args": {"small": 1}})
    big, small = (history_decoder.decode(r[3]).msg for r in h.open_records())
    assert big is not None and big["args"]["truncated"] is True and big["args"]["size"] > 100_000
    assert small == {"task_name": "t", "args": {"small": 1}}
    h.store.close()


def _timer(wf_id: str, due_ms: int) -> TimerEntry:
    return TimerEntry(wf_id=wf_id, run_id="gone", kind=TimerKind.workflow, seq=1, due_ms=due_ms)


def test_only_timers_due_within_the_horizon_are_in_memory_and_later_ones_load_when_it_moves(
    harness: Harness,
) -> None:
    now = now_ms()
    soon = [_timer(f"soon-{i}", now - 1000 + i) for i in range(10)]
    later = [_timer(f"later-{i}", now + 2 * 3600 * 1000 + i) for i in range(10)]
    for t in soon + later:
        harness.store.put(keys.timer_key(t.due_ms, t.wf_id, t.kind), encoder.encode(t), batch_id=1)
    harness.store.commit(1, checkpoint=0)
    proc = PartitionProcessor(0, harness.store, harness.proc.services)
    assert sorted(due for due, _ in proc.timers) == [t.due_ms for t in soon]
    # One armed now beyond the horizon stays on disk too.
    far = _timer("armed-later", now + 3600 * 1000)
    proc.apply(Transition(timers_set=[far]), far.wf_id)
    assert len(proc.timers) == 10 and proc.next_timer_due() == soon[0].due_ms
    assert proc.fire_due_timers(now, limit=100) == 10
    assert len(proc.timers) == 0 and proc.fire_due_timers(now, limit=100) == 0
    # Two hours on, the horizon has moved past every other timer: all eleven fire, once.
    assert proc.fire_due_timers(now + 2 * 3600 * 1000 + 100, limit=100) == 11
    assert [k for k, _ in harness.store.scan(keys.TIMER_PREFIX)] == []


def test_a_burst_of_due_timers_is_loaded_in_slices_and_each_fires_once(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(timer_queue_module, "TIMER_LOAD_LIMIT", 4)
    now = now_ms()
    burst = [_timer(f"b-{i}", now - 5000) for i in range(11)]
    for t in burst:
        harness.store.put(keys.timer_key(t.due_ms, t.wf_id, t.kind), encoder.encode(t), batch_id=1)
    harness.store.commit(1, checkpoint=0)
    proc = PartitionProcessor(0, harness.store, harness.proc.services)
    assert len(proc.timers) == 4
    fired = [proc.fire_due_timers(now, limit=3) for _ in range(8)]
    assert sum(fired) == 11 and len(proc.timers) == 0
    assert [k for k, _ in harness.store.scan(keys.TIMER_PREFIX)] == []
