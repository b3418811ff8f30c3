"""Run timers and retention purges (issue 24): separate tables, run timers first, purges paced.

Real processors, stores (RocksDB in tmp_path), state machine and group committer; the Kafka
transaction is `InMemoryPublisher`.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from grctl.engine import keys
from grctl.engine.machine import Machine, StepOutcome, Transition
from grctl.engine.records import StartCmd, TimerEntry, TimerKind, encoder
from grctl.kafka.limits import TOPIC_DEFAULT_MAX_BYTES, RecordLimits
from grctl.state.partition_store import PartitionStore
from grctl.worker._partition import timer_queue as timer_queue_module
from grctl.worker._partition.ports import ProcessorServices, now_ms
from grctl.worker._partition.processor import PartitionProcessor
from grctl.worker._session import timers as timers_module
from grctl.worker._session.commit import GroupCommitter
from grctl.worker._session.timers import (
    PURGE_BURST_S,
    PURGE_LAG_SOFT_S,
    PURGE_SHARE,
    PURGE_SHARE_MAX,
    PurgePacer,
    TimerLoop,
)
from tests.unit.publisher import InMemoryPublisher
from tests.unit.test_partition_processor import TOPICS, Catalog, Harness, N, start_cmd, wf_ids_on


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def test_purges_get_a_share_of_the_time_that_grows_with_their_lag_up_to_a_bound() -> None:
    assert PurgePacer.share(0) == PurgePacer.share(PURGE_LAG_SOFT_S) == PURGE_SHARE
    assert PurgePacer.share(2 * PURGE_LAG_SOFT_S) == pytest.approx(2 * PURGE_SHARE)
    assert PurgePacer.share(1000 * PURGE_LAG_SOFT_S) == PURGE_SHARE_MAX


def test_the_purge_bucket_refills_at_the_share_and_holds_at_most_a_burst() -> None:
    clock = Clock()
    pacer = PurgePacer(clock)
    assert pacer.available(0) == PURGE_BURST_S  # a new worker may start at once
    pacer.spend(PURGE_BURST_S + 0.01)  # a slice overran its budget: a debt
    assert pacer.available(0) == pytest.approx(-0.01)
    assert pacer.wait_s(0) == pytest.approx((timers_module.PURGE_SLICE_S + 0.01) / PURGE_SHARE)
    clock.now += 0.2  # refills at the share of the time passed
    assert pacer.available(0) == pytest.approx(-0.01 + 0.2 * PURGE_SHARE)
    clock.now += 3600  # never more than a burst, however long it was idle
    assert pacer.available(0) == PURGE_BURST_S


async def test_retention_timers_are_kept_in_their_own_table_and_fire_only_as_purges(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    wf_id = next(wf_ids_on(0))
    h.feed(start_cmd(wf_id))
    await h.committer.flush()
    h.proc.step_finished(h.proc.running[wf_id], StepOutcome(run_id="run-1", seq=1, next_kind="complete", result=1))
    run = h.proc.get_run(wf_id)
    assert run is not None and run.retain_until_ms is not None
    expiry = keys.timer_key(run.retain_until_ms, wf_id, TimerKind.retention)
    assert expiry.startswith(keys.EXPIRY_PREFIX) and h.open_state()[expiry] is not None
    assert h.proc.next_expiry_due() is None and h.proc.next_timer_due() is None  # a week away: on disk only
    await h.committer.flush()
    later = run.retain_until_ms + 1
    h.proc.expiries.load(later)  # the horizon of a worker at that time
    assert h.proc.fire_due_timers(later, limit=10) == 0  # not a run timer
    assert h.proc.fire_due_expiries(later, limit=10) == 1
    assert h.open_state()[keys.run_key(wf_id)] is None and h.open_state()[expiry] is None
    h.store.close()


def test_a_run_timer_due_behind_a_backlog_of_purges_is_loaded_and_fires_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A table's loader reads in due order: purges in the run timers' table would hide this timer."""
    harness = Harness(tmp_path)
    monkeypatch.setattr(timer_queue_module, "TIMER_LOAD_LIMIT", 4)
    now = now_ms()
    for i in range(40):  # due first, many: a backlog of purges
        t = TimerEntry(wf_id=f"gone-{i}", run_id="old", kind=TimerKind.retention, seq=1, due_ms=now - 60_000 + i)
        harness.store.put(keys.timer_key(t.due_ms, t.wf_id, t.kind), encoder.encode(t), batch_id=1)
    late = TimerEntry(wf_id="w", run_id="gone", kind=TimerKind.workflow, seq=1, due_ms=now - 10)
    harness.store.put(keys.timer_key(late.due_ms, late.wf_id, late.kind), encoder.encode(late), batch_id=1)
    harness.store.commit(1, checkpoint=0)
    proc = PartitionProcessor(0, harness.store, harness.proc.services)
    assert len(proc.expiries) == 4 and [due for due, _ in proc.timers] == [late.due_ms]
    assert proc.fire_due_timers(now, limit=10) == 1
    harness.store.close()


class Recorder:
    """Sees every staged transition (`ProcessorServices.observer`), in order."""

    def __init__(self, expected: int) -> None:
        self.kinds: list[str] = []
        self.expected = expected
        self.done = asyncio.Event()

    def transition_staged(self, tr: Transition) -> None:
        self.kinds.append("purge" if tr.purge is not None else "timer")
        if len(self.kinds) >= self.expected:
            self.done.set()

    def dead_lettered(self, partition: int) -> None:
        raise AssertionError("nothing here is dead-lettered")


async def test_run_timers_fire_before_a_backlog_of_purges_and_every_purge_fires_in_time(tmp_path: Path) -> None:
    purges_per_partition, partitions = 300, (0, 1, 2)
    recorder = Recorder(expected=len(partitions) * (purges_per_partition + 1))
    committer = GroupCommitter(InMemoryPublisher())
    machine = Machine(Catalog(), "w_unit")
    services = ProcessorServices(
        outbox=committer, machine=machine, topics=TOPICS, num_partitions=N, worker_id="w_unit",
        start_step=lambda proc, rs, run: None, answer_query=lambda proc, cmd: None, timer_armed=lambda due: None,
        limits=RecordLimits.compute(dict.fromkeys(TOPICS.all(), TOPIC_DEFAULT_MAX_BYTES)), quarantine={},
        observer=recorder,
    )  # fmt: skip
    now = now_ms()
    processors: dict[int, PartitionProcessor] = {}
    for p in partitions:
        store = PartitionStore(tmp_path / str(p))
        for i in range(purges_per_partition):  # retention over for ended runs (of older run ids)
            t = TimerEntry(wf_id=f"gone-{p}-{i}", run_id="old", kind=TimerKind.retention, seq=1, due_ms=now - 5000)
            store.put(keys.timer_key(t.due_ms, t.wf_id, t.kind), encoder.encode(t), batch_id=1)
        store.commit(1, checkpoint=0)
        proc = processors[p] = PartitionProcessor(p, store, services)
        committer.attach(p, store, proc.low_watermark)
        # A run waiting for an event, whose wait timed out a second ago.
        wf_id = next(wf_ids_on(p))
        start = machine.apply(None, StartCmd(wf_id=wf_id, run_id="r", wf_type="Order"), 0, now - 2000, lambda s: None)
        assert start.run is not None
        wait = machine.on_step_outcome(
            start.run, StepOutcome(run_id="r", seq=1, next_kind="wait", wait_timeout_ms=1000), now - 2000,
            lambda s: None,
        )  # fmt: skip
        proc.apply(Transition(run=wait.run, timers_set=wait.timers_set), wf_id)
    recorder.kinds.clear()
    loop = TimerLoop(processors, committer, inputs_idle=lambda: False)
    task = asyncio.create_task(loop.run())
    try:
        async with asyncio.timeout(60):  # a bound for a test gone wrong, not a measure
            await recorder.done.wait()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        for proc in processors.values():
            proc.store.close()
    assert recorder.kinds[: len(partitions)] == ["timer"] * len(partitions)
    assert recorder.kinds.count("purge") == len(partitions) * purges_per_partition


async def test_timers_armed_beyond_the_loaded_horizon_are_loaded_and_fire_when_due(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every retention timer is armed beyond the horizon (it falls due a retention after the
    run ended): the loop must read it into memory as the horizon moves, or it never fires."""
    monkeypatch.setattr(timer_queue_module, "TIMER_HORIZON_MS", 300)
    recorder = Recorder(expected=2)
    committer = GroupCommitter(InMemoryPublisher())
    machine = Machine(Catalog(), "w_unit")
    services = ProcessorServices(
        outbox=committer, machine=machine, topics=TOPICS, num_partitions=N, worker_id="w_unit",
        start_step=lambda proc, rs, run: None, answer_query=lambda proc, cmd: None, timer_armed=lambda due: None,
        limits=RecordLimits.compute(dict.fromkeys(TOPICS.all(), TOPIC_DEFAULT_MAX_BYTES)), quarantine={},
        observer=recorder,
    )  # fmt: skip
    store = PartitionStore(tmp_path / "0")
    proc = PartitionProcessor(0, store, services)
    committer.attach(0, store, proc.low_watermark)
    now = now_ms()
    wf_id = next(wf_ids_on(0))
    start = machine.apply(None, StartCmd(wf_id=wf_id, run_id="r", wf_type="Order"), 0, now, lambda s: None)
    assert start.run is not None
    wait = machine.on_step_outcome(
        start.run, StepOutcome(run_id="r", seq=1, next_kind="wait", wait_timeout_ms=1200), now, lambda s: None
    )
    expiry = TimerEntry(wf_id="gone", run_id="old", kind=TimerKind.retention, seq=1, due_ms=now + 1200)
    proc.apply(Transition(run=wait.run, timers_set=[*wait.timers_set, expiry]), wf_id)
    recorder.kinds.clear()
    assert len(proc.timers) == 0 and len(proc.expiries) == 0  # beyond the horizon: on disk only
    loop = TimerLoop({0: proc}, committer, inputs_idle=lambda: True)
    task = asyncio.create_task(loop.run())
    try:
        async with asyncio.timeout(30):  # a bound for a test gone wrong, not a measure
            await recorder.done.wait()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        store.close()
    assert sorted(recorder.kinds) == ["purge", "timer"]
    assert now_ms() >= now + 1200  # neither fired early
