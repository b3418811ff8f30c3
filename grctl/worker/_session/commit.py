"""The group commit: the only owner of batches, of the stores' uncommitted layers, and of the transaction.

Everything a worker changes goes through the `GroupCommitter`: partition processors stage
state writes and records into the open `Batch` (through the `Outbox` port they see,
`grctl.worker._partition.ports`), and
one commit loop publishes batch after batch, one Kafka transaction in flight at a time, while
the next batch accumulates (DESIGN.md §3). The protocol is `GroupCommitter.commit`, written as
numbered steps in one function; `KafkaPublisher.publish` is its Kafka transaction.

A batch's state writes of one partition are that partition store's layer for the batch (the
store answers reads from it at once: read-your-writes); once the batch is sealed (step 2 of
`commit`) nothing writes to it again, so the producer thread can read it without a copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition

from grctl import settings
from grctl.engine import keys
from grctl.kafka.topics import TopicNames
from grctl.state.partition_store import PartitionStore, Writes
from grctl.worker._session.clients import TRANSACTION_TIMEOUT_MS
from grctl.worker._session.errors import SessionRestart

logger = logging.getLogger("grctl.worker")


#: Upper bound of records staged before the consumer and the timers wait for a commit.
MAX_BATCH_RECORDS = 20_000
#: Loop iterations the commit loop lets pass before it seals a batch, so that the steps the
#: last commit started join this batch (chain benchmark: 1 -> 10.5k, 2 -> 11.3k, 4 to 16 ->
#: 13.1-13.7k steps/s; without it a tiny transaction went out before every big one).
COMMIT_YIELDS = 4
#: Batch pacing, for measuring it (issue 16; docs/engine.md "Batch pacing"): while the worker
#: is loaded, a commit waits until its oldest write has waited this long, unless the batch
#: already holds `COMMIT_LINGER_RECORDS`. 0 (the default) commits back to back: lingers of 2 and
#: 5 ms at 4 and 64 partitions stayed within the spread between runs (10 interleaved runs), so
#: nothing favoured a change. Read from GRCTL_COMMIT_LINGER_MS when the module loads.
COMMIT_LINGER_S = settings.commit_linger_s()
COMMIT_LINGER_RECORDS = 2_000
#: ... and only while the worker is loaded: the last commit's batch held this many records or
#: more (a light load keeps committing at once, so its latency does not pay for the linger).
LOADED_BATCH_RECORDS = 200
#: Consumer positions that moved without any state change are committed after this idle delay
#: (or with the next batch), not in a transaction of their own.
OFFSET_COMMIT_DELAY_S = 0.2
#: Bound of each blocking librdkafka transaction call.
TXN_CALL_TIMEOUT_S = 30.0
#: A transaction still running after this long is given up: the session restarts (its next
#: incarnation's init_transactions fences the producer still blocked in it, and the coordinator
#: aborts the transaction or finishes one already committing). Seen in CI: a worker made no
#: transaction for minutes after the group coordinator's broker was killed, with its consumer
#: still in the group (so no session restart came from there); and, with a 35 s bound, a 38 s
#: stall when the broker killed was both coordinators (send_offsets_to_transaction blocked).
#: 5 s past the producer's transaction timeout: by then the coordinator has aborted a
#: transaction that had not begun to commit, so waiting longer cannot save it.
PUBLISH_TIMEOUT_S = TRANSACTION_TIMEOUT_MS / 1000 + 5.0

Record = tuple[str, int, bytes | None, bytes, list[tuple[str, bytes]] | None, str | None]
"""(topic, partition, key, value, headers, origin) to produce; origin is the workflow id whose
transition made the record (None for dead letters), so a refused record names its run."""


class TransactionStalled(Exception):
    """A transaction did not finish within `PUBLISH_TIMEOUT_S`: a librdkafka call blocked past its timeout."""


class RecordRefused(Exception):
    """librdkafka refused to produce one record of a batch (too large, invalid): its run is known.

    Attributes:
        wf_id: the workflow id whose transition made the record (None if it has none).
        topic: the record's topic.
        size: key plus value, in bytes.
        reason: librdkafka's error.
        code: librdkafka's error name ("MSG_SIZE_TOO_LARGE", "TOPIC_AUTHORIZATION_FAILED", ...).
    """

    def __init__(self, wf_id: str | None, topic: str, size: int, reason: str, code: str = "MSG_SIZE_TOO_LARGE") -> None:
        super().__init__(f"a record of {size:,} bytes for {topic} (run of wf_id {wf_id!r}) was refused: {reason}")
        self.wf_id = wf_id
        self.topic = topic
        self.size = size
        self.reason = reason
        self.code = code


@dataclass(slots=True)
class Batch:
    """Records and state writes accumulated since the last commit.

    Attributes:
        id: increasing batch number (the stores' layers are tagged with it).
        records: records to produce, in order.
        state: per partition, changelog writes (key -> value, None deletes); the last write
            of a key wins. Each dict is that partition store's layer for this batch.
        after_commit: callbacks run once the transaction has committed (start steps, ...).
        source_offsets: (topic, partition, next offset) of source topics, set when the batch
            is sealed: committed in its transaction with the directives they produced.
        staged: state writes staged, a key written twice counted twice: with `records`, a bound
            of the batch's length that is cheap to read for every step (`GroupCommitter.full`).
    """

    id: int
    records: list[Record] = field(default_factory=list)
    state: dict[int, Writes] = field(default_factory=dict)
    after_commit: list[Callable[[], None]] = field(default_factory=list)
    source_offsets: list[tuple[str, int, int]] = field(default_factory=list)
    staged: int = 0

    def __len__(self) -> int:
        return len(self.records) + sum(len(w) for w in self.state.values())


class Publisher(Protocol):
    """Publishes one batch and the consumed offsets atomically (the Kafka transaction)."""

    async def publish(self, batch: Batch, offsets: list[tuple[int, int]]) -> dict[int, int]:
        """Publish `batch` with `offsets` ((partition, next offset to read) of `directives`).

        Returns:
            Per partition with state writes, the changelog offset of its last write.

        Raises:
            Exception: the transaction did not commit (nothing of it is visible).
        """
        ...


@dataclass(slots=True)
class _SourceOwned:
    watermark: Callable[[], int | None]  # the next source offset to read
    committed: int | None = None


@dataclass(slots=True)
class _Owned:
    store: PartitionStore
    watermark: Callable[[], int | None]  # the offset to commit: lowest unfinished, or next to read
    committed: int | None = None  # the offset last committed


class GroupCommitter:
    """Owns the open batch and the commit loop (see the module docstring).

    Args:
        publisher: the transaction.
    """

    def __init__(self, publisher: Publisher) -> None:
        self._publisher = publisher
        self._batch = Batch(1)
        self._owned: dict[int, _Owned] = {}
        #: Source partitions (topic, partition): their position and last committed offset
        #: (`grctl.worker._edges.sources`).
        self._sources: dict[tuple[str, int], _SourceOwned] = {}
        self._dirty = asyncio.Event()
        self._offsets_dirty = False
        self._last_batch_records = 0  # records of the last committed batch (the linger's load signal)
        self._committed = asyncio.Event()
        self._lock = asyncio.Lock()
        #: Why the last transaction failed (then nothing commits any more: the session restarts).
        self.failure: BaseException | None = None

    # ------------------------------------------------------------------ partitions

    def attach(self, partition: int, store: PartitionStore, watermark: Callable[[], int | None]) -> None:
        """Take `partition` in: its state writes go to `store`, its offsets come from `watermark`."""
        self._owned[partition] = _Owned(store, watermark)

    def detach(self, partition: int) -> None:
        """Forget `partition` (revoked): its writes not committed yet are dropped with their batch."""
        self._owned.pop(partition, None)
        self._batch.state.pop(partition, None)

    def attach_source(self, topic: str, partition: int, watermark: Callable[[], int | None]) -> None:
        """Take a source partition in: its consumed offset commits with every batch."""
        self._sources[(topic, partition)] = _SourceOwned(watermark)

    def detach_source(self, topic: str, partition: int) -> None:
        """Forget a source partition (revoked or lost)."""
        self._sources.pop((topic, partition), None)

    def committed_offset(self, partition: int) -> int | None:
        """The `directives` offset last committed for `partition` (None: none yet)."""
        owned = self._owned.get(partition)
        return owned.committed if owned is not None else None

    # ------------------------------------------------------------------ Outbox

    def stage(self, partition: int, key: bytes, value: bytes | None) -> None:
        """Write a state key (None deletes) in the open batch: the store's layer, RocksDB after commit."""
        batch = self._batch
        writes = batch.state.get(partition)
        if writes is None:
            writes = batch.state[partition] = self._owned[partition].store.layer(batch.id)
        writes[key] = value
        batch.staged += 1
        self._dirty.set()

    def produce(
        self,
        topic: str,
        partition: int,
        key: bytes | None,
        value: bytes,
        headers: list[tuple[str, bytes]] | None = None,
        origin: str | None = None,
    ) -> None:
        """Add a record to the open batch (`origin`: the workflow id whose transition made it)."""
        self._batch.records.append((topic, partition, key, value, headers, origin))
        self._dirty.set()

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run `callback` once the open batch has committed."""
        self._batch.after_commit.append(callback)
        self._dirty.set()

    def offsets_moved(self) -> None:
        """Only consumer positions moved: commit them with the next batch, or after a short idle.

        Records that produce nothing (re-deliveries skipped by their run's last offset, an
        older worker's next-step records) make up most of these; a transaction of their own
        for each would cost more than the records.
        """
        self._offsets_dirty = True

    # ------------------------------------------------------------------ back-pressure

    @property
    def full(self) -> bool:
        """The open batch holds more than `MAX_BATCH_RECORDS`: inputs should wait for a commit."""
        batch = self._batch
        if len(batch.records) + batch.staged <= MAX_BATCH_RECORDS:
            return False  # the bound is not reached: no need to count the layers of every partition
        return len(batch) > MAX_BATCH_RECORDS

    @property
    def pending_records(self) -> int:
        """Records and state writes in the open batch."""
        return len(self._batch)

    @property
    def max_records(self) -> int:
        """The bound of the open batch (`MAX_BATCH_RECORDS`)."""
        return MAX_BATCH_RECORDS

    async def wait_for_room(self) -> None:
        """Wait until a commit has gone through (call while `full`)."""
        self._committed.clear()
        await self._committed.wait()

    # ------------------------------------------------------------------ the loop

    async def run(self) -> None:
        """Commit batch after batch, one transaction in flight; raises `SessionRestart` on failure."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(OFFSET_COMMIT_DELAY_S if self._offsets_dirty else None):
                    await self._dirty.wait()
            # Let the loop run what is ready first: above all the steps the last commit just
            # started, so that their outcomes join this batch instead of the next.
            for _ in range(COMMIT_YIELDS):
                await asyncio.sleep(0)
            linger = COMMIT_LINGER_S > 0 and self._last_batch_records >= LOADED_BATCH_RECORDS
            if linger and len(self._batch) < COMMIT_LINGER_RECORDS:
                await asyncio.sleep(COMMIT_LINGER_S)
            self._dirty.clear()
            self._offsets_dirty = False
            await self.flush()

    async def flush(self) -> None:
        """Commit everything staged so far, now (one commit at a time)."""
        async with self._lock:
            await self.commit()

    async def commit(self) -> None:
        """Publish the open batch with the consumed offsets, then apply it locally.

        Call with the lock held (`flush`). Raises `SessionRestart` if the transaction fails:
        then every uncommitted write is dropped from the stores and nothing commits any more.
        """
        if self.failure is not None:
            raise SessionRestart(f"an earlier transaction failed: {self.failure}") from self.failure
        # 1. The offsets to commit: per partition, the processor's watermark (the next record to
        #    read: every record before it is applied and staged in this batch or an earlier one).
        offsets = [
            (p, lw)
            for p, owned in self._owned.items()
            if (lw := owned.watermark()) is not None and lw != owned.committed
        ]
        source_offsets = [
            (t, p, w)
            for (t, p), owned in self._sources.items()
            if (w := owned.watermark()) is not None and w != owned.committed
        ]
        batch = self._batch
        if not batch.records and not batch.state and not offsets and not source_offsets and not batch.after_commit:
            return
        batch.source_offsets = source_offsets
        # 2. Seal the batch: a new one accumulates while this one commits; nothing writes to
        #    the sealed one again (its state dicts stay the stores' layers until step 4).
        self._batch = Batch(batch.id + 1)
        # 3. The transaction: produce records and changelog writes, send the offsets with the
        #    consumer group metadata, commit (`KafkaPublisher.publish`).
        checkpoints: dict[int, int] = {}
        if batch.records or batch.state or offsets or source_offsets:
            try:
                checkpoints = await self._publisher.publish(batch, offsets)
            except Exception as exc:
                self._drop_uncommitted()
                self.failure = exc
                raise SessionRestart(f"transaction failed: {exc}") from exc
        self._last_batch_records = len(batch)
        # 4. The batch's layers become committed, with the changelog offset each partition
        #    reached (its restore checkpoint once flushed to RocksDB).
        for p in batch.state:
            owned = self._owned.get(p)
            if owned is not None:
                owned.store.commit(batch.id, checkpoints.get(p, -1))
        # 5. The committed consumer offsets.
        for p, offset in offsets:
            owned = self._owned.get(p)
            if owned is not None:
                owned.committed = offset
        for t, p, offset in source_offsets:
            source = self._sources.get((t, p))
            if source is not None:
                source.committed = offset
        # 6. What waited for the commit: start the steps the batch dispatched, ...
        for callback in batch.after_commit:
            callback()
        # 7. ... and the inputs held back while the batch was full.
        self._committed.set()

    def _drop_uncommitted(self) -> None:
        """After a failed transaction: forget the sealed and the open batch everywhere."""
        for owned in self._owned.values():
            owned.store.drop_uncommitted()
        self._batch = Batch(self._batch.id + 1)


class CommitObserver(Protocol):
    """What sees each transaction (the worker's metrics)."""

    def transaction_committed(self, seconds: float, size: int) -> None:
        """A transaction of `size` records and state writes committed after `seconds`."""
        ...

    def transaction_failed(self) -> None:
        """A transaction did not commit."""
        ...


class TimedPublisher:
    """A `Publisher` that times each transaction and tells a `CommitObserver` of it.

    Args:
        inner: the real publisher (`KafkaPublisher`).
        observer: what sees each transaction.
    """

    def __init__(self, inner: Publisher, observer: CommitObserver) -> None:
        self._inner = inner
        self._observer = observer

    async def publish(self, batch: Batch, offsets: list[tuple[int, int]]) -> dict[int, int]:
        """Publish through the real publisher; see `Publisher.publish`."""
        t0 = time.perf_counter()
        try:
            result = await self._inner.publish(batch, offsets)
        except Exception:  # as GroupCommitter.commit: the transaction did not commit
            self._observer.transaction_failed()
            raise
        self._observer.transaction_committed(time.perf_counter() - t0, len(batch))
        return result


class KafkaPublisher:
    """The Kafka transaction of a group commit (EOS v2: offsets with the group metadata).

    Owns the session's transactional producer: `open` creates it and runs
    `init_transactions` (which fences an older incarnation of the worker and aborts its
    dangling transaction), `abort` aborts an open transaction at teardown.

    Args:
        make_producer: builds the transactional producer.
        topics: the namespace's topics.
        group_metadata: returns the consumer's current group metadata (read on the consumer
            thread: `consumer_group_metadata()` blocks while another thread polls).
        pool: the producer thread (every blocking producer call runs there).
    """

    def __init__(
        self,
        make_producer: Callable[[], Producer],
        topics: TopicNames,
        group_metadata: Callable[[], Any],
        pool: ThreadPoolExecutor,
    ) -> None:
        self._make_producer = make_producer
        self._topics = topics
        self._group_metadata = group_metadata
        self._pool = pool
        self._producer: Producer | None = None
        #: A transaction is running in the producer thread (set and cleared there).
        self._in_flight = False
        self._phase = "-"  # the transaction call running, for a stalled transaction's error

    async def open(self) -> None:
        """Create the producer and initialise its transactions.

        Raises:
            SessionRestart: `init_transactions` failed.
        """
        self._producer = producer = self._make_producer()
        try:
            await asyncio.get_running_loop().run_in_executor(self._pool, producer.init_transactions, TXN_CALL_TIMEOUT_S)
        except KafkaException as exc:
            raise SessionRestart(f"init_transactions failed: {exc}") from exc

    async def abort(self) -> None:
        """Abort the open transaction, if any (a failed session's teardown); errors are ignored.

        If a transaction is still running in the producer thread (blocked on a broker that
        failed: send_offsets_to_transaction was seen blocking for its whole 30 s timeout after
        the group coordinator moved, and the commit retries after it), the abort would queue
        behind it and the worker would stall for minutes. It is left to the next session
        instead: that session's init_transactions() with the same transactional id fences this
        producer and the coordinator aborts its open transaction (or completes one that was
        already committing) before any partition is restored.
        """
        if self._in_flight:
            logger.warning("a transaction is still in flight; the next session fences and aborts it")
            return
        if self._producer is not None:
            with contextlib.suppress(KafkaException):
                await asyncio.get_running_loop().run_in_executor(self._pool, self._producer.abort_transaction, 5.0)

    async def publish(self, batch: Batch, offsets: list[tuple[int, int]]) -> dict[int, int]:
        """Run the transaction in the producer thread (see `Publisher.publish`).

        Raises:
            TransactionStalled: it has not finished within `PUBLISH_TIMEOUT_S` (a librdkafka
                call blocked past its own timeout); the thread is left to the next session's
                fencing, like a transaction in flight when a session fails (`abort`).
        """
        fut = asyncio.get_running_loop().run_in_executor(self._pool, self._transaction, batch, offsets)
        try:
            return await asyncio.wait_for(fut, PUBLISH_TIMEOUT_S)
        except TimeoutError:
            raise TransactionStalled(
                f"transaction of batch {batch.id} still in {self._phase} after {PUBLISH_TIMEOUT_S:.0f} s"
            ) from None

    def _transaction(self, batch: Batch, offsets: list[tuple[int, int]]) -> dict[int, int]:
        producer = self._producer
        assert producer is not None, "publish() before open()"
        t0 = time.monotonic()
        self._in_flight = True
        try:
            return self._transaction_steps(producer, batch, offsets, t0)
        finally:
            self._in_flight = False

    def _transaction_steps(
        self, producer: Producer, batch: Batch, offsets: list[tuple[int, int]], t0: float
    ) -> dict[int, int]:
        state_topic = self._topics.state
        checkpoints: dict[int, int] = {}

        def checkpoint_cb(err: KafkaError | None, msg: Any) -> None:
            if err is None:
                p = msg.partition()
                checkpoints[p] = max(checkpoints.get(p, -1), msg.offset())

        # a. Begin.
        self._phase = "begin_transaction"
        producer.begin_transaction()
        try:
            # b. Produce the records, then each partition's changelog writes; the delivery
            #    report of a partition's last write gives its checkpoint.
            emit_errors: list[tuple[str | None, str, int, KafkaError]] = []
            for topic, part, key, value, headers, origin in batch.records:
                # partition -1: a record for a user topic (`ctx.emit`), placed by the partitioner;
                # its delivery report names the run if the broker refuses it.
                cb = _emit_report(emit_errors, origin, topic, len(key or b"") + len(value or b"")) if part < 0 else None
                _produce(producer, topic, part, key, value, headers, cb, origin)
            for part, writes in batch.state.items():
                last = len(writes) - 1
                for i, (key, change) in enumerate(writes.items()):
                    _produce(producer, state_topic, part, key, change, None, checkpoint_cb if i == last else None, None)
            # c. Wait for every delivery report.
            self._phase = "flush"
            producer.flush(TXN_CALL_TIMEOUT_S)
            for origin, topic, size, refusal in emit_errors:
                if not refusal.retriable() and not refusal.fatal():
                    # The topic went away, or this principal may not write it: that run fails
                    # in the next session, the others go on (see Worker._quarantine_refused).
                    raise RecordRefused(origin, topic, size, f"{refusal.name()}: {refusal.str()}", refusal.name())
            t1 = time.monotonic()
            # d. The consumed offsets, in the transaction.
            if offsets or batch.source_offsets:
                tps = [TopicPartition(self._topics.directives, p, off) for p, off in offsets]
                tps += [TopicPartition(t, p, off) for t, p, off in batch.source_offsets]
                self._phase = "send_offsets_to_transaction"
                producer.send_offsets_to_transaction(tps, self._group_metadata(), TXN_CALL_TIMEOUT_S)
            t2 = time.monotonic()
            # e. Commit.
            self._phase = "commit_transaction"
            _commit_with_retry(producer)
            logger.debug(
                "txn %d: %d records, %d offsets: produce+flush %.1f ms, offsets %.1f ms, commit %.1f ms",
                batch.id, len(batch.records), len(offsets),
                (t1 - t0) * 1000, (t2 - t1) * 1000, (time.monotonic() - t2) * 1000,
            )  # fmt: skip
        except RecordRefused:
            with contextlib.suppress(KafkaException):
                producer.abort_transaction(TXN_CALL_TIMEOUT_S)
            raise
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if isinstance(err, KafkaError) and err.txn_requires_abort():
                with contextlib.suppress(KafkaException):
                    producer.abort_transaction(TXN_CALL_TIMEOUT_S)
            raise
        return checkpoints


def _produce(
    producer: Producer,
    topic: str,
    part: int,
    key: bytes | None,
    value: bytes | None,
    headers: list[tuple[str, bytes]] | None,
    cb: Callable[[KafkaError | None, Any], None] | None,
    origin: str | None,
) -> None:
    """Produce one record; `origin` is its run's workflow id (None: a state key, which names it)."""
    while True:
        try:
            if headers is None and cb is None:
                # positional arguments cost about half as much per record as keywords
                producer.produce(topic, value, key, part)
            else:
                producer.produce(topic, value, key, partition=part, headers=headers, on_delivery=cb)  # type: ignore[arg-type]  # bytes header values are accepted
            return
        except BufferError:
            producer.poll(0.01)
        except KafkaException as exc:
            # librdkafka checks each record as it is produced (size, ...): such a refusal would
            # come back after every session restart, so it names the run that made the record.
            err = exc.args[0] if exc.args else None
            if isinstance(err, KafkaError) and not err.retriable() and not err.fatal():
                run = origin if origin is not None else keys.wf_id_of(key or b"")  # state keys name their run
                raise RecordRefused(run, topic, len(key or b"") + len(value or b""), err.str(), err.name()) from exc
            raise


def _emit_report(
    errors: list[tuple[str | None, str, int, KafkaError]], origin: str | None, topic: str, size: int
) -> Callable[[KafkaError | None, Any], None]:
    def report(err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            errors.append((origin, topic, size, err))

    return report


def _commit_with_retry(producer: Producer) -> None:
    for attempt in range(3):
        try:
            producer.commit_transaction(TXN_CALL_TIMEOUT_S)
            return
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if isinstance(err, KafkaError) and err.retriable() and attempt < 2:
                continue
            raise
