"""The ceiling: raw consume-transform-produce loops moving the engine's per-step record traffic.

Every loop plays the engine's 10-step chain without the engine: `concurrency` runs are in
flight, and each step produces what one engine step produces:

- 2 `history` records (step.started, step.completed),
- 2 `state` changelog records (the run record and one store value),
- after the last step, a run.completed history record and, while runs remain, the start record
  of a new run to `directives`,

and each batch is published with the consumed offsets in one transaction (EOS v2:
`send_offsets_to_transaction` with the consumer group metadata), transactions back to back.

The traffic is the engine's present one, **due steps** (since the engine stopped writing a
next-step record per step, see docs/engine.md "Due steps"): a run's start record is consumed
from `directives` and plays step 1; a step played in one transaction makes the run's next step
due, and it is played in the next transaction, once that one committed (the engine starts a
step after the commit that dispatched it). Only the start records are consumed, so a chain's
transactions touch `directives` offsets only when a run starts.

Variants (each in its own namespace, measured in the same run as the engine):

- `confluent-thread-2` (**the raw loop**: the ceiling of every ratio, the chain's pairs, the
  partition scenario): confluent-kafka's plain Consumer and Producer in a thread, playing two
  steps of a run per transaction, their history in full and the run's state once (1 state
  record per step): the pipelined engine's traffic, which starts a run's next step at once and
  rewrites its record within a batch (the chain scenario reports its state records per step;
  this loop's are 1.0 plus markers);
- `confluent-thread`: the same, one step of a run per transaction (2 state records per step);
- `confluent-no-txn`: as `confluent-thread` without transactions (idempotent producer, async
  offset commits; at-least-once): what the transactions cost.

History: until issue 32 the baseline also ran the **echo** traffic (every step a next-step
record consumed from and produced back to `directives`, the engine's traffic before the due
steps) with the plain clients, confluent-kafka's `AIOConsumer`/`AIOProducer` and aiokafka. The
engine no longer moves that traffic, so those loops measured nothing it does; their last
figures are in benchmarks/README.md ("History: the echo loops").
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from grctl.engine.keys import run_key, store_key
from grctl.engine.records import HistoryRecord, RunRecord, StartCmd, directive_decoder, encoder
from grctl.kafka.connection import Connection
from grctl.kafka.partitioner import partition_for

#: The raw loop: the ceiling of every engine / baseline ratio, and the loop of the chain's pairs
#: and of the partition scenario.
CEILING = "confluent-thread-2"
VARIANTS = (CEILING, "confluent-thread", "confluent-no-txn")
TRANSACTIONAL = (CEILING, "confluent-thread")
#: Steps of one run played per transaction, per variant (default 1).
PER_TXN = {"confluent-thread-2": 2}

# The engine's producer and consumer settings (grctl/worker/_session.py), so the baseline is
# not handicapped by client defaults.
PRODUCER_CONFIG = {
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 1,
    "retry.backoff.ms": 5,
    "retry.backoff.max.ms": 50,
    "queue.buffering.max.messages": 500_000,
    "transaction.timeout.ms": 10_000,
}
CONSUMER_CONFIG = {
    "enable.auto.commit": False,
    "auto.offset.reset": "earliest",
    "isolation.level": "read_committed",
    "fetch.wait.max.ms": 50,
    "session.timeout.ms": 10_000,
    "heartbeat.interval.ms": 1_000,
}
WORKER_ID = "w_bench.00@baseline"


@dataclass
class LoopStats:
    """What a loop measured."""

    records_in: int = 0
    records_out: int = 0
    runs_done: int = 0
    txns: int = 0
    txn_ms: list[float] = field(default_factory=list)
    #: (produce, send_offsets, commit) ms per transaction (confluent-thread only)
    phases_ms: list[tuple[float, float, float]] = field(default_factory=list)
    seconds: float = 0.0
    seen: set[tuple[str, int]] = field(default_factory=set)
    duplicates: int = 0
    #: The clock starts once the first batch is published (connections, coordinator lookups,
    #: producer id and the group join are behind): records_in counts the records after it.
    warm_at: float | None = None
    warm_records: int = 0

    #: CPU seconds of this process (all threads) over the measured part.
    cpu_seconds: float = 0.0
    _cpu_at: float = 0.0

    def batch_done(self) -> None:
        if self.warm_at is None:
            self.warm_at = time.perf_counter()
            self._cpu_at = time.process_time()
            self.warm_records = self.records_in

    def finish(self) -> None:
        end = time.perf_counter()
        self.seconds = end - (self.warm_at or end)
        self.cpu_seconds = time.process_time() - self._cpu_at if self.warm_at else 0.0

    @property
    def measured_records(self) -> int:
        return self.records_in - self.warm_records


class Transform:
    """The per-step work of one engine step, and the closed loop's bookkeeping.

    Args:
        per_txn: steps of a run played per transaction (its state record written once for them).

    A run's steps after the first are due in memory (`due`), played one transaction later.
    """

    def __init__(self, conn: Connection, runs: int, steps: int, concurrency: int, per_txn: int = 1) -> None:
        self.conn = conn
        self.topics = conn.topics
        self.partitions = conn.num_partitions
        self.runs = runs
        self.steps = steps
        self.concurrency = min(concurrency, runs)
        self.per_txn = per_txn
        self.started = 0
        self.stats = LoopStats()
        #: (partition, wf_id, run_id, seq) of the steps due once the current transaction committed.
        self.due: list[tuple[int, str, str, int]] = []

    def new_run(self) -> tuple[int, bytes, bytes]:
        """The first record of a new run: its start."""
        wf_id = f"base-{self.started}"
        self.started += 1
        run_id = f"r{wf_id}"
        cmd = StartCmd(wf_id=wf_id, run_id=run_id, wf_type="Chain10", input=None)
        return partition_for(wf_id, self.partitions), wf_id.encode(), encoder.encode(cmd)

    def seed(self) -> list[tuple[int, bytes, bytes]]:
        return [self.new_run() for _ in range(self.concurrency)]

    @property
    def done(self) -> bool:
        return self.stats.runs_done >= self.runs

    def step(self, partition: int, value: bytes, emit: Callable[[str, int, bytes, bytes], None]) -> None:
        """Apply one consumed record: a run's start, which plays its first step."""
        cmd = directive_decoder.decode(value)
        assert isinstance(cmd, StartCmd)
        self.play(partition, cmd.wf_id, cmd.run_id, 1, emit)

    def play_due(self, emit: Callable[[str, int, bytes, bytes], None]) -> int:
        """Play every step made due by the last committed transaction; returns how many."""
        due, self.due = self.due, []
        for partition, wf_id, run_id, seq in due:
            self.play(partition, wf_id, run_id, seq, emit)
        return len(due)

    def play(
        self, partition: int, wf_id: str, run_id: str, seq: int, emit: Callable[[str, int, bytes, bytes], None]
    ) -> None:
        """Emit what an engine step emits (`per_txn` steps of the run: their history, the state once),
        then make the run's next step due (or start a new run)."""
        st = self.stats
        key = wf_id.encode()
        now = int(time.time() * 1000)
        h = self.topics.history
        last = min(seq + self.per_txn - 1, self.steps)
        for n in range(seq, last + 1):
            st.records_in += 1
            if (wf_id, n) in st.seen:
                st.duplicates += 1
            st.seen.add((wf_id, n))
            started = _hist("step.started", wf_id, run_id, now, {"step_name": "link", "seq": n})
            emit(h, partition, key, encoder.encode(started))
            completed = _hist("step.completed", wf_id, run_id, now, {"step_name": "link", "duration_ms": 0})
            emit(h, partition, key, encoder.encode(completed))
            st.records_out += 2
        seq = last
        run = RunRecord(
            run_id=run_id, wf_id=wf_id, wf_type="Chain10", status="running", state="step", seq=seq + 1,
            step="link", step_timeout_ms=10_000, created_ms=now, started_ms=now,
            last_offset=seq,
        )  # fmt: skip
        s = self.topics.state
        emit(s, partition, run_key(wf_id), encoder.encode(run))
        emit(s, partition, store_key(wf_id, run_id, "left"), encoder.encode(self.steps - seq))
        st.records_out += 2
        if seq < self.steps:
            self.due.append((partition, wf_id, run_id, seq + 1))
            return
        emit(h, partition, key, encoder.encode(_hist("run.completed", wf_id, run_id, now, {"result": 1})))
        st.records_out += 1
        st.runs_done += 1
        if self.started < self.runs:
            p, k, v = self.new_run()
            emit(self.topics.directives, p, k, v)
            st.records_out += 1


def _hist(kind: str, wf_id: str, run_id: str, ts: int, msg: dict[str, Any]) -> HistoryRecord:
    return HistoryRecord(kind=kind, wf_id=wf_id, run_id=run_id, ts_ms=ts, msg=msg, worker_id=WORKER_ID)


def seed_records(conn: Connection, tr: Transform) -> None:
    producer = Producer(conn.client_config(**{"enable.idempotence": True, "linger.ms": 5}))
    for p, k, v in tr.seed():
        producer.produce(conn.topics.directives, v, k, partition=p)
    if producer.flush(30) != 0:
        raise RuntimeError("could not seed the baseline's first records")


# --------------------------------------------------------------------------- confluent, thread


def confluent_thread(conn: Connection, tr: Transform, transactional: bool, tick: Callable[[int], None]) -> LoopStats:
    """The plain clients in this (non-event-loop) thread: poll, transform, one transaction per batch."""
    ns = conn.namespace
    label = "ct" if transactional else "nt"
    ccfg = dict(CONSUMER_CONFIG)
    ccfg["group.id"] = f"grctl.{ns}.baseline-{label}"
    ccfg["isolation.level"] = "read_committed" if transactional else "read_uncommitted"
    consumer = Consumer(conn.client_config(**ccfg))
    pcfg = dict(PRODUCER_CONFIG)
    if transactional:
        pcfg["transactional.id"] = f"grctl.{ns}.baseline-{label}"
    else:
        pcfg.pop("transaction.timeout.ms")
    producer = Producer(conn.client_config(**pcfg))
    if transactional:
        producer.init_transactions(30)
    consumer.subscribe([conn.topics.directives])
    st = tr.stats
    emitted: list[tuple[str, int, bytes, bytes]] = []

    def emit(topic: str, part: int, key: bytes, value: bytes) -> None:
        emitted.append((topic, part, key, value))

    def produce_all() -> None:
        for topic, part, key, value in emitted:
            while True:
                try:
                    producer.produce(topic, value, key, partition=part)
                    break
                except BufferError:
                    producer.poll(0.01)
        emitted.clear()

    try:
        while not tr.done:
            # Due steps are played at once; only with none due does the loop wait for input.
            first = consumer.poll(0 if tr.due else 0.1)
            msgs = [] if first is None else [first, *consumer.consume(999, 0)]
            n = tr.play_due(emit)
            moved: dict[int, int] = {}
            for m in msgs:
                if m.error() is not None:
                    if m.error().code() != KafkaError._PARTITION_EOF:
                        raise RuntimeError(f"consumer error: {m.error()}")
                    continue
                tr.step(m.partition() or 0, m.value() or b"", emit)
                moved[m.partition() or 0] = (m.offset() or 0) + 1
                n += 1
            if not n:
                continue
            metadata = consumer.consumer_group_metadata()
            t1 = time.perf_counter()
            # Like the engine: the offsets of the partitions whose position moved.
            positions = [TopicPartition(conn.topics.directives, p, o) for p, o in moved.items()]
            if transactional and not positions:  # a batch of due steps only: no consumer offsets
                producer.begin_transaction()
                produce_all()
                t2 = time.perf_counter()
                producer.commit_transaction(30)
                t4 = time.perf_counter()
                st.txns += 1
                st.txn_ms.append((t4 - t1) * 1000)
                st.phases_ms.append(((t2 - t1) * 1000, 0.0, (t4 - t2) * 1000))
            elif transactional:
                producer.begin_transaction()
                produce_all()
                t2 = time.perf_counter()
                producer.send_offsets_to_transaction(positions, metadata, 30)
                t3 = time.perf_counter()
                producer.commit_transaction(30)
                t4 = time.perf_counter()
                st.txns += 1
                st.txn_ms.append((t4 - t1) * 1000)
                st.phases_ms.append(((t2 - t1) * 1000, (t3 - t2) * 1000, (t4 - t3) * 1000))
            else:
                produce_all()
                producer.poll(0)
                if positions:
                    consumer.commit(offsets=positions, asynchronous=True)
            st.batch_done()
            tick(n)
        if not transactional:
            producer.flush(30)
        st.finish()
    finally:
        consumer.close()
    return st


async def run_variant(
    variant: str, conn: Connection, runs: int, steps: int, concurrency: int, tick: Callable[[int], None]
) -> LoopStats:
    """Seed `concurrency` runs and play `runs` runs of `steps` steps through one loop variant."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown baseline variant {variant!r}")
    loop = asyncio.get_running_loop()
    tr = Transform(conn, runs, steps, concurrency, per_txn=PER_TXN.get(variant, 1))
    await loop.run_in_executor(None, seed_records, conn, tr)
    return await loop.run_in_executor(None, confluent_thread, conn, tr, variant in TRANSACTIONAL, tick)


__all__ = ["CEILING", "TRANSACTIONAL", "VARIANTS", "LoopStats", "TopicPartition", "run_variant"]
