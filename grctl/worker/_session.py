"""One membership of a worker in the consumer group: consumer, transactional producer, processors.

The session owns:
1. a `read_committed` consumer of `directives` in the namespace's consumer group
   (eager round-robin with static membership), whose rebalance callbacks restore and release
   partitions;
2. one transactional producer (EOS v2: the transaction carries the consumed offsets with the
   consumer group metadata, so a zombie of an older generation is fenced);
3. a partition processor per owned partition;
4. the group-commit loop: one transaction in flight; the next batch accumulates meanwhile;
5. the timer loop, which fires due durable timers as ordinary transitions.

Any transaction failure ends the session (`SessionRestart`): the worker drops everything
uncommitted and starts a new session, which rebuilds from RocksDB (committed state only) and
the changelog, and resumes from the committed offsets. That is the only recovery path, so it
is the one the crash tests exercise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from confluent_kafka import (
    Consumer,
    IsolationLevel,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]  # untyped re-export

from grctl import defaults
from grctl.engine.machine import Machine, StepOutcome
from grctl.engine.records import QueryCmd, Reply, RunRecord, encoder, run_decoder, run_key, store_key
from grctl.errors import NextDirectiveMissingError, WorkflowNotRegisteredError, WorkflowRunnerNotFoundError
from grctl.kafka.connection import Connection
from grctl.models.directive import Directive, DirectiveKind
from grctl.models.errors import ErrorDetails
from grctl.models.run_info import RunInfo, RunStatus
from grctl.state.partition_store import PartitionStore
from grctl.worker._batch import Batch
from grctl.worker._partition import PartitionProcessor, RunningStep, now_ms
from grctl.worker.codec import CodecRegistry
from grctl.worker.context import Context, QueryContext
from grctl.worker.runtime import StepRuntime, StepSuspended
from grctl.worker.store import Store
from grctl.workflow.handlers import bind_arguments

if TYPE_CHECKING:
    from grctl.workflow.workflow import Workflow

logger = logging.getLogger("grctl.worker")

#: Kafka Streams' EOS default: a dead worker's open transaction blocks read_committed readers of
#: its partitions until this expires, so keep it short.
TRANSACTION_TIMEOUT_MS = 10_000
#: Upper bound of records staged before the consumer waits for a commit (backpressure).
MAX_BATCH_RECORDS = 20_000
#: Timers fired per partition per tick, so a burst never starves directive processing.
TIMER_FIRE_LIMIT = 500
TXN_CALL_TIMEOUT_S = 30.0
#: A restore that reads nothing new for this long gives up (the session restarts and retries).
RESTORE_STALL_S = 60.0
#: Step deadlines are checked in slots of this many seconds (a step is cancelled this late at most).
DEADLINE_SLOT_S = 0.05
#: Loop iterations the commit loop lets pass before it swaps the batch (see `_commit_loop`;
#: chain benchmark: 1 -> 10.5k, 2 -> 11.3k, 4 to 16 -> 13.1-13.7k steps/s).
COMMIT_YIELDS = 4
#: Consumer positions that moved without any state change are committed after this idle delay.
OFFSET_COMMIT_DELAY_S = 0.2


class SessionRestart(Exception):
    """The session must be torn down and started again (transaction failure, lost partitions)."""


class WorkerSession:
    """See the module docstring."""

    def __init__(
        self,
        *,
        connection: Connection,
        workflows: dict[str, Workflow],
        machine: Machine,
        codec: CodecRegistry,
        worker_id: str,
        instance_id: str,
        state_dir: Path,
        max_concurrent_steps: int,
        kafka_config: dict[str, Any],
        on_ready: Callable[[], None],
    ) -> None:
        self.conn = connection
        self.topics = connection.topics
        self.num_partitions = connection.num_partitions
        self.workflows = workflows
        self.machine = machine
        self.codec = codec
        self.worker_id = worker_id
        self.instance_id = instance_id
        self.state_dir = state_dir
        self.kafka_config = kafka_config
        self._on_ready = on_ready
        self.shutdown_timeout = 30.0
        self.batch = Batch(1)
        self.processors: dict[int, PartitionProcessor] = {}
        self._sem = asyncio.Semaphore(max_concurrent_steps)
        self._dirty = asyncio.Event()
        self._offsets_dirty = False
        self._committed = asyncio.Event()
        self._timer_wake = asyncio.Event()
        self._commit_lock = asyncio.Lock()
        self._stopping = False
        self._tearing_down = False
        self._fatal: BaseException | None = None
        self._fatal_event = asyncio.Event()
        self._step_tasks: set[asyncio.Task[None]] = set()
        self._deadlines: dict[int, set[RunningStep]] = {}  # deadline slot -> steps due in it
        self._cpool = ThreadPoolExecutor(1, thread_name_prefix="grctl-consumer")
        self._ppool = ThreadPoolExecutor(1, thread_name_prefix="grctl-producer")
        self._rpool = ThreadPoolExecutor(1, thread_name_prefix="grctl-restore")
        self._loop = asyncio.get_running_loop()
        self.producer: Producer | None = None
        self._group_metadata: Any = None
        self.consumer: Consumer | None = None
        self.stats = {"commits": 0, "records": 0, "steps": 0}

    # ------------------------------------------------------------------ clients

    def _make_producer(self) -> Producer:
        cfg = self.conn.client_config(
            **{
                "transactional.id": f"grctl.{self.conn.namespace}.{self.instance_id}",
                "transaction.timeout.ms": TRANSACTION_TIMEOUT_MS,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 1,
                # librdkafka retries CONCURRENT_TRANSACTIONS after retry.backoff.ms; its default
                # (100 ms) made back-to-back transactions cost ~100 ms each (benchmarks/txn_latency.py).
                "retry.backoff.ms": 5,
                "retry.backoff.max.ms": 50,
                "queue.buffering.max.messages": 500_000,
                "client.id": f"{self.worker_id}-producer",
            }
        )
        cfg.update(self.kafka_config.get("producer", {}))
        return Producer(cfg)

    def _make_consumer(self) -> Consumer:
        cfg = self.conn.client_config(
            **{
                "group.id": f"grctl.{self.conn.namespace}.workers",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
                "partition.assignment.strategy": "roundrobin",
                # A dead (or stopped static) member's partitions wait this long for a new owner.
                # 6 s is the broker's default group.min.session.timeout.ms.
                "session.timeout.ms": 6_000,
                "heartbeat.interval.ms": 1_000,
                # Also the rebalance timeout of the classic protocol: how long a rebalance waits
                # for members; the consumer thread only blocks in restores and final commits.
                "max.poll.interval.ms": 120_000,
                "fetch.wait.max.ms": 50,
                "client.id": f"{self.worker_id}-consumer",
                # Static membership: a worker restarted in place (same state dir) takes its
                # partitions back without a rebalance, within the session timeout.
                "group.instance.id": self.instance_id,
            }
        )
        cfg.update(self.kafka_config.get("consumer", {}))
        return Consumer(cfg)

    # ------------------------------------------------------------------ main

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set (graceful) or a fatal error (raises `SessionRestart`)."""
        loop = self._loop
        self.producer = self._make_producer()
        try:
            await loop.run_in_executor(self._ppool, self.producer.init_transactions, TXN_CALL_TIMEOUT_S)
        except KafkaException as exc:
            raise SessionRestart(f"init_transactions failed: {exc}") from exc
        self.consumer = self._make_consumer()
        self.consumer.subscribe(
            [self.topics.directives],
            on_assign=self._cb_assign,
            on_revoke=self._cb_revoke,
            on_lost=self._cb_lost,
        )
        tasks = [
            asyncio.create_task(self._consume_loop(), name="grctl-consume"),
            asyncio.create_task(self._commit_loop(), name="grctl-commit"),
            asyncio.create_task(self._timer_loop(), name="grctl-timers"),
        ]
        stop_task = asyncio.create_task(stop.wait())
        fatal_task = asyncio.create_task(self._fatal_event.wait())
        try:
            done, _ = await asyncio.wait([*tasks, stop_task, fatal_task], return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if t in tasks and t.exception() is not None:
                    raise SessionRestart(f"{t.get_name()} failed: {t.exception()!r}") from t.exception()
            if self._fatal is not None:
                raise SessionRestart(str(self._fatal)) from self._fatal
        finally:
            stop_task.cancel()
            fatal_task.cancel()
            graceful = stop.is_set() and self._fatal is None
            await self._teardown(tasks, graceful)

    async def _teardown(self, tasks: list[asyncio.Task[None]], graceful: bool) -> None:
        """Stop the loops, release partitions and clients.

        Graceful: stop reading, give running steps `shutdown_timeout` to finish (their outcomes
        still commit), then close the consumer, whose revoke callback commits what finished;
        steps still running are cancelled and re-execute on the next owner. Not graceful: drop
        everything uncommitted and abort the open transaction.
        """
        self._stopping = True
        consume, commit, timers = tasks
        consume.cancel()
        timers.cancel()
        await asyncio.gather(consume, timers, return_exceptions=True)
        loop = self._loop
        if graceful:
            running = [t for t in self._step_tasks if not t.done()]
            if running:
                await asyncio.wait(running, timeout=self.shutdown_timeout)
            with contextlib.suppress(SessionRestart, KafkaException):
                await self.flush()
        else:
            self._tearing_down = True
            for proc in self.processors.values():
                proc.close()
        commit.cancel()
        await asyncio.gather(commit, return_exceptions=True)
        if self.consumer is not None:
            with contextlib.suppress(Exception):
                await loop.run_in_executor(self._cpool, self.consumer.close)
        self._tearing_down = True
        for proc in list(self.processors.values()):
            proc.close()
            proc.store.close()
        self.processors.clear()
        await self._drain_steps(2.0)
        if self.producer is not None and not graceful:
            with contextlib.suppress(Exception):
                await loop.run_in_executor(self._ppool, self.producer.abort_transaction, 5.0)
        for pool in (self._cpool, self._ppool, self._rpool):
            pool.shutdown(wait=False, cancel_futures=True)

    async def _drain_steps(self, timeout: float) -> None:
        tasks = [t for t in self._step_tasks if not t.done()]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)

    def fail(self, exc: BaseException) -> None:
        """End the session from anywhere (e.g. a librdkafka callback)."""
        if self._fatal is None:
            self._fatal = exc
        self._loop.call_soon_threadsafe(self._fatal_event.set)

    # ------------------------------------------------------------------ batch

    def mark_dirty(self) -> None:
        """There is something to commit."""
        self._dirty.set()

    def offsets_moved(self) -> None:
        """Only consumer positions moved: commit them with the next batch, or after a short idle.

        Stale `NextCmd` records (whose step already ran) make up most of these; committing them
        on their own would double the transactions per step.
        """
        self._offsets_dirty = True

    def produce(
        self,
        topic: str,
        partition: int,
        key: bytes,
        value: bytes,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        """Stage a record in the current batch."""
        self.batch.records.append((topic, partition, key, value, headers))
        self._dirty.set()

    def timer_added(self, due_ms: int) -> None:
        """A timer was armed: wake the timer loop if it sleeps past `due_ms`."""
        self._timer_wake.set()

    # ------------------------------------------------------------------ consume

    async def _consume_loop(self) -> None:
        loop = self._loop
        consumer = self.consumer
        assert consumer is not None
        while not self._stopping:
            if len(self.batch) > MAX_BATCH_RECORDS:
                self._committed.clear()
                await self._committed.wait()
                continue
            msgs, self._group_metadata = await loop.run_in_executor(
                self._cpool, _consume_available, consumer, 1000, 0.1
            )
            for msg in msgs:
                err = msg.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        logger.warning("consumer error: %s", err)
                        if err.fatal():
                            raise KafkaException(err)
                    continue
                proc = self.processors.get(msg.partition())
                if proc is not None and not proc.closing:
                    proc.on_record(msg)

    # ------------------------------------------------------------------ commit

    async def _commit_loop(self) -> None:
        while True:
            try:
                async with asyncio.timeout(OFFSET_COMMIT_DELAY_S if self._offsets_dirty else None):
                    await self._dirty.wait()
            except TimeoutError:
                pass
            # Let the loop run what is ready first: above all the steps the last commit just
            # started, so that their outcomes join this batch instead of the next. Without it
            # a tiny transaction went out before every big one: more transactions, and 62-64
            # instead of 34-36 µs of broker CPU per step in the chain benchmark.
            for _ in range(COMMIT_YIELDS):
                await asyncio.sleep(0)
            self._dirty.clear()
            self._offsets_dirty = False
            async with self._commit_lock:
                await self._commit_once()

    def _collect_offsets(self) -> list[TopicPartition]:
        out = []
        for p, proc in self.processors.items():
            lw = proc.low_watermark()
            if lw is not None and lw != proc.committed_offset:
                out.append(TopicPartition(self.topics.directives, p, lw))
        return out

    async def _commit_once(self) -> None:
        """Publish the current batch and the offsets in one transaction, then apply it locally.

        1. swap in a new batch (it accumulates while this one commits);
        2. in the producer thread: begin, produce records and changelog writes, flush,
           send_offsets_to_transaction with the group metadata, commit;
        3. write each partition's changelog writes to RocksDB with the checkpoint reached;
        4. run the batch's after-commit callbacks (start the steps it scheduled).
        """
        batch = self.batch
        offsets = self._collect_offsets()
        if not batch.records and not batch.state and not offsets and not batch.after_commit:
            return
        self.batch = Batch(batch.id + 1)
        checkpoints: dict[int, int] = {}
        if batch.records or batch.state or offsets:
            try:
                await self._loop.run_in_executor(self._ppool, self._transaction, batch, offsets, checkpoints)
            except KafkaException as exc:
                self.fail(exc)
                raise SessionRestart(f"transaction failed: {exc}") from exc
        self.stats["commits"] += 1
        for p in batch.state:
            proc = self.processors.get(p)
            if proc is not None:
                proc.store.commit(batch.id, checkpoints.get(p, -1))
        for tp in offsets:
            proc = self.processors.get(tp.partition)
            if proc is not None:
                proc.committed_offset = tp.offset
        for cb in batch.after_commit:
            cb()
        self._committed.set()

    def _transaction(self, batch: Batch, offsets: list[TopicPartition], checkpoints: dict[int, int]) -> None:
        """Runs in the producer thread. Raises KafkaException on failure (after aborting if possible)."""
        producer = self.producer
        consumer = self.consumer
        assert producer is not None and consumer is not None
        state_topic = self.topics.state

        def produce(topic: str, part: int, key: bytes, value: bytes | None, headers: Any, cb: Any = None) -> None:
            while True:
                try:
                    if headers is None and cb is None:
                        # positional arguments cost about half as much per record as keywords
                        producer.produce(topic, value, key, part)
                    else:
                        producer.produce(topic, value, key, partition=part, headers=headers, on_delivery=cb)
                    return
                except BufferError:
                    producer.poll(0.01)

        def checkpoint_cb(err: KafkaError | None, msg: Any) -> None:
            if err is None:
                p = msg.partition()
                checkpoints[p] = max(checkpoints.get(p, -1), msg.offset())

        t0 = time.monotonic()
        producer.begin_transaction()
        try:
            for topic, part, key, value, headers in batch.records:
                produce(topic, part, key, value, headers)
            for part, writes in batch.state.items():
                last = len(writes) - 1
                for i, (key, change) in enumerate(writes.items()):
                    produce(state_topic, part, key, change, None, checkpoint_cb if i == last else None)
            producer.flush(TXN_CALL_TIMEOUT_S)
            t1 = time.monotonic()
            if offsets:
                producer.send_offsets_to_transaction(offsets, self._group_metadata, TXN_CALL_TIMEOUT_S)
            t2 = time.monotonic()
            self._commit_with_retry(producer)
            logger.debug(
                "txn %d: %d records, %d offsets: produce+flush %.1f ms, offsets %.1f ms, commit %.1f ms",
                batch.id, len(batch.records), len(offsets),
                (t1 - t0) * 1000, (t2 - t1) * 1000, (time.monotonic() - t2) * 1000,
            )  # fmt: skip
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if isinstance(err, KafkaError) and err.txn_requires_abort():
                with contextlib.suppress(KafkaException):
                    producer.abort_transaction(TXN_CALL_TIMEOUT_S)
            raise
        self.stats["records"] += len(batch.records)

    @staticmethod
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

    async def flush(self) -> None:
        """Commit everything staged so far, now."""
        async with self._commit_lock:
            await self._commit_once()

    # ------------------------------------------------------------------ rebalance (consumer thread)

    def _run_in_loop(self, coro: Any) -> None:
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            fut.result()
        except Exception as exc:
            logger.exception("rebalance handling failed")
            self.fail(exc)

    # The group uses the eager protocol: every rebalance revokes the whole assignment and assigns a
    # complete new one, so these callbacks call assign()/unassign(). The cooperative protocol was
    # dropped after a crash test left partitions unassigned for good: a member SIGKILLed during
    # its first (revoking) phase came back as the same static member, whose rejoin returned its
    # stored assignment without the second rebalance that hands out the revoked partitions.

    def _cb_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        logger.debug("assign callback: %s", [tp.partition for tp in partitions])
        if not self._tearing_down:
            self._run_in_loop(self._assign([tp.partition for tp in partitions]))
        consumer.assign(partitions)
        self._group_metadata = consumer.consumer_group_metadata()
        self._loop.call_soon_threadsafe(self._on_ready)

    def _cb_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        logger.debug("revoke callback: %s", [tp.partition for tp in partitions])
        self._group_metadata = consumer.consumer_group_metadata()
        self._run_in_loop(self._revoke([tp.partition for tp in partitions], lost=False))
        with contextlib.suppress(KafkaException):
            consumer.unassign()

    def _cb_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._run_in_loop(self._revoke([tp.partition for tp in partitions], lost=True))
        with contextlib.suppress(KafkaException):
            consumer.unassign()
        self.fail(SessionRestart(f"partitions {[tp.partition for tp in partitions]} were lost"))

    async def _assign(self, parts: list[int]) -> None:
        for p in parts:
            if p in self.processors:
                continue
            t0 = time.monotonic()
            path = self.state_dir / str(p)
            store = PartitionStore(path)
            try:
                restored = await self._loop.run_in_executor(self._rpool, self._restore, p, store)
            except BaseException:
                store.close()
                raise
            proc = PartitionProcessor(self, p, store)
            self.processors[p] = proc
            logger.info(
                "partition %d assigned: restored %d changelog records in %.0f ms (%d timers armed)",
                p, restored, (time.monotonic() - t0) * 1000, len(proc.timers),
            )  # fmt: skip

    async def _revoke(self, parts: list[int], lost: bool) -> None:
        procs = [self.processors[p] for p in parts if p in self.processors]
        if not procs:
            return
        for proc in procs:
            proc.close()
        if not lost and not self._tearing_down:
            try:
                await self.flush()
            except SessionRestart:
                logger.warning("final commit on revoke failed; the next owner re-executes from the last commit")
        await self._drain_steps_of(procs)
        for proc in procs:
            self.processors.pop(proc.partition, None)
            proc.store.close()
            logger.info("partition %d %s", proc.partition, "lost" if lost else "revoked")

    async def _drain_steps_of(self, procs: list[PartitionProcessor]) -> None:
        tasks = [t for t in self._step_tasks if getattr(t, "grctl_partition", None) in {p.partition for p in procs}]
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)

    @staticmethod
    def _last_stable_offset(admin: AdminClient, tp: TopicPartition) -> int:
        """The partition's last stable offset; retried while a new partition has no leader yet."""
        deadline = time.monotonic() + TXN_CALL_TIMEOUT_S
        while True:
            latest = OffsetSpec.latest()  # type: ignore[no-untyped-call]  # untyped in the stubs
            res = admin.list_offsets({tp: latest}, isolation_level=IsolationLevel.READ_COMMITTED)
            try:
                return int(res[tp].result(TXN_CALL_TIMEOUT_S).offset)
            except KafkaException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def _restore(self, p: int, store: PartitionStore) -> int:
        """Runs in the restore thread: replay the changelog from the checkpoint to the LSO."""
        tp = TopicPartition(self.topics.state, p)
        admin = AdminClient(self.conn.client_config())
        lso = self._last_stable_offset(admin, tp)
        start = store.checkpoint + 1
        logger.debug("partition %d: restore from changelog offset %d to the last stable offset %d", p, start, lso)
        if start >= lso:
            return 0
        consumer = Consumer(
            self.conn.client_config(
                **{
                    "group.id": f"grctl.{self.conn.namespace}.restore",
                    "enable.auto.commit": False,
                    "isolation.level": "read_committed",
                    "fetch.max.bytes": 64 * 1024 * 1024,
                    "max.partition.fetch.bytes": 16 * 1024 * 1024,
                    # librdkafka's defaults park a fetch for 500 ms (wait), 500 ms (after an
                    # error) or 1 s (queue full): a restore reads to a known offset and has
                    # nothing else to do, so it asks again quickly instead.
                    "fetch.wait.max.ms": 10,
                    "fetch.error.backoff.ms": 20,
                    "fetch.queue.backoff.ms": 20,
                }
            )
        )
        count = 0
        last = start - 1
        writes: dict[bytes, bytes | None] = {}
        try:
            consumer.assign([TopicPartition(self.topics.state, p, start)])
            progress_at, progress_pos = time.monotonic(), start
            while True:
                msgs, _ = _consume_available(consumer, 10_000, 0.2)
                for msg in msgs:
                    if msg.error() is not None:
                        continue
                    writes[msg.key() or b""] = msg.value()
                    last = msg.offset() or last
                    count += 1
                if len(writes) >= 50_000:
                    store.apply_restored(writes, last)
                    writes = {}
                pos = consumer.position([TopicPartition(self.topics.state, p)])[0].offset
                if last >= lso - 1 or (pos >= 0 and pos >= lso):
                    break
                if pos > progress_pos:
                    progress_at, progress_pos = time.monotonic(), pos
                elif time.monotonic() - progress_at > RESTORE_STALL_S:
                    raise KafkaException(
                        KafkaError(
                            KafkaError._TIMED_OUT,
                            f"restore of {self.topics.state}[{p}] stalled at offset {pos} below the last "
                            f"stable offset {lso} for {RESTORE_STALL_S:.0f}s",
                        )
                    )
        finally:
            consumer.close()
        store.apply_restored(writes, lso - 1)
        return count

    # ------------------------------------------------------------------ timers

    async def _timer_loop(self) -> None:
        while True:
            now = now_ms()
            fired = 0
            for proc in list(self.processors.values()):
                if len(self.batch) > MAX_BATCH_RECORDS:
                    break  # back-pressure, as for consumed records: let the commit catch up
                fired += proc.fire_due_timers(now, TIMER_FIRE_LIMIT)
            if fired:
                await asyncio.sleep(0)  # let inputs in between bursts
                continue
            dues = [d for d in (p.next_timer_due() for p in self.processors.values()) if d is not None]
            delay = 0.2 if not dues else min(0.2, max(0.001, (min(dues) - now_ms()) / 1000))
            self._timer_wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._timer_wake.wait()

    # ------------------------------------------------------------------ queries

    def spawn_query(self, proc: PartitionProcessor, cmd: QueryCmd) -> None:
        """Answer a query from committed state in a task of its own (never blocks the partition)."""
        task = asyncio.create_task(self._answer_query(proc, cmd), name=f"query:{cmd.wf_id}:{cmd.name}")
        task.grctl_partition = proc.partition  # type: ignore[attr-defined]  # tag for revoke
        self._step_tasks.add(task)
        task.add_done_callback(self._step_tasks.discard)

    async def _answer_query(self, proc: PartitionProcessor, cmd: QueryCmd) -> None:
        to = cmd.reply_to

        def reply(**kw: Any) -> None:
            if not proc.closing:
                r = Reply(request_id=to.request_id, client_id=to.client_id, **kw)
                self.produce(self.topics.replies, to.partition, to.client_id.encode(), encoder.encode(r))

        raw = proc.store.get_committed(run_key(cmd.wf_id))
        run = run_decoder.decode(raw) if raw is not None else None
        wf = self.workflows.get(run.wf_type) if run is not None else None
        if run is None or wf is None:
            reply(ok=False, code="not_found", message=f"no run of workflow id {cmd.wf_id!r}")
            return
        cfg = wf.query_handler(cmd.name)
        if cfg is None:
            reply(ok=False, code="unknown_query", message=f"workflow type {run.wf_type!r} has no query {cmd.name!r}")
            return
        wf_id, run_id = run.wf_id, run.run_id

        def read(key: str) -> bytes | None:
            return proc.store.get_committed(store_key(wf_id, run_id, key))

        ctx = QueryContext(run=self._run_info(run), store=Store(read, self.codec, read_only=True))
        try:
            kwargs = bind_arguments(cfg.spec, cmd.payload, self.codec)
            async with asyncio.timeout(defaults.QUERY_TIMEOUT_S):
                value = await cfg.handler(ctx, **kwargs)
            reply(payload=self.codec.to_primitive(value))
        except Exception as exc:  # noqa: BLE001  # user code: any error becomes the answer
            reply(ok=False, code="query_failed", message=f"{type(exc).__name__}: {exc}")

    # ------------------------------------------------------------------ steps

    def spawn_step(self, proc: PartitionProcessor, rs: RunningStep, run: RunRecord) -> asyncio.Task[None] | None:
        """Execute a step in an asyncio task of its own; None if it already finished.

        On Python 3.12+ the task starts eagerly: it runs up to its first real wait inside this
        call, and a step that never waits (store reads are local) finishes without being
        scheduled on the loop. It still is its own task, so `asyncio.current_task()`,
        `asyncio.timeout` and `TaskGroup` in step code bind to the step, not to the engine. (A
        hand-made eager start without a task object, tried on 3.11, saved ~10 % of the CPU per
        step but let a step's `asyncio.timeout` cancel the engine's own loop.)
        """
        task = _new_task(self._loop, self._execute(proc, rs, run))
        if task.done():
            return None
        task.grctl_partition = proc.partition  # type: ignore[attr-defined]  # tag for revoke
        self._step_tasks.add(task)
        return task

    # Step deadlines. One timer handle per DEADLINE_SLOT_S slot of deadlines instead of an
    # asyncio.timeout per step: arming and cancelling a loop timer per step cost ~8 % of a
    # worker's CPU in the chain benchmark. A step is cancelled at most one slot after its deadline.

    def _arm_deadline(self, rs: RunningStep, timeout_s: float) -> None:
        slot = int((self._loop.time() + timeout_s) / DEADLINE_SLOT_S) + 1
        steps = self._deadlines.get(slot)
        if steps is None:
            steps = self._deadlines[slot] = set()
            self._loop.call_at(slot * DEADLINE_SLOT_S, self._expire_deadlines, slot)
        steps.add(rs)
        rs.deadline_slot = slot

    def _disarm_deadline(self, rs: RunningStep) -> None:
        steps = self._deadlines.get(rs.deadline_slot)
        if steps is not None:
            steps.discard(rs)

    def _expire_deadlines(self, slot: int) -> None:
        for rs in self._deadlines.pop(slot, ()):
            if rs.task is not None and not rs.task.done():
                rs.timed_out = True
                rs.task.cancel()

    async def _execute(self, proc: PartitionProcessor, rs: RunningStep, run: RunRecord) -> None:
        step_name = run.step or ""
        runtime = StepRuntime(
            wf_id=run.wf_id,
            run_id=run.run_id,
            wf_type=run.wf_type,
            step_name=step_name,
            seq=run.seq,
            recorded=proc.load_journal(run.wf_id, run.run_id, run.seq),
            sink=proc,
        )
        runtime.codec = self.codec
        rs.runtime = runtime
        try:
            async with self._sem:
                if rs.cancelled:
                    return
                runtime.history("step.started", {"step_name": step_name, "seq": run.seq})
                outcome = await self._call_handler(proc, runtime, run, rs)
            self.stats["steps"] += 1
            proc.step_finished(rs, outcome)
        finally:
            if rs.task is not None:
                self._step_tasks.discard(rs.task)

    async def _call_handler(
        self, proc: PartitionProcessor, runtime: StepRuntime, run: RunRecord, rs: RunningStep
    ) -> StepOutcome:
        t0 = time.monotonic()
        step_name = runtime.step_name
        token = runtime.activate()
        store: Store | None = None
        try:
            wf = self.workflows.get(run.wf_type)
            if wf is None:
                raise WorkflowNotRegisteredError(
                    f"workflow type {run.wf_type!r} is not registered in this worker ({self.worker_id}); "
                    f"every worker of a namespace must serve the same workflow types"
                )
            cfg = wf.handler_for(step_name)
            if cfg is None:
                raise WorkflowRunnerNotFoundError(f"Step handler {step_name!r} is not defined.")
            kwargs = bind_arguments(cfg.spec, run.step_payload, self.codec)
            wf_id, run_id = run.wf_id, run.run_id

            def read(key: str) -> bytes | None:
                return proc.store.get(store_key(wf_id, run_id, key))

            store = Store(read, self.codec)
            ctx = Context(run=self._run_info(run), workflow=wf, store=store, runtime=runtime, codec=self.codec)
            self._arm_deadline(rs, (run.step_timeout_ms or defaults.STEP_TIMEOUT_MS) / 1000)
            try:
                result = await cfg.handler(ctx, **kwargs)
            finally:
                self._disarm_deadline(rs)
            if not isinstance(result, Directive):
                raise NextDirectiveMissingError(
                    f"handler {step_name!r} of workflow {run.wf_type!r} returned {type(result).__name__}, not a "
                    f"Directive: return ctx.next.step(...), ctx.next.wait(...), ctx.next.complete(...) or "
                    f"ctx.next.fail(...)"
                )
            return self._outcome(run, result, store.pending_writes(), t0)
        except StepSuspended as suspended:
            return StepOutcome(
                run_id=run.run_id, seq=run.seq, next_kind="suspend", resume_at_ms=suspended.resume_at_ms,
                duration_ms=int((time.monotonic() - t0) * 1000),
            )  # fmt: skip
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if rs.timed_out and task is not None and task.cancelling() == 1 and not rs.cancelled:
                task.uncancel()  # the step deadline: the run fails with StepTimeout
                return StepOutcome(
                    run_id=run.run_id,
                    seq=run.seq,
                    next_kind="timeout",
                    duration_ms=int((time.monotonic() - t0) * 1000),
                )
            if task is not None and task.cancelling():
                raise  # the engine cancelled the step (revoked, terminated)
            err = ErrorDetails(type="CancelledError", message=f"step {step_name} was cancelled by its own code")
            return StepOutcome(run_id=run.run_id, seq=run.seq, next_kind="error", error=_err(err))
        except Exception as exc:  # noqa: BLE001  # user code: any exception fails the step, recorded
            return StepOutcome(
                run_id=run.run_id,
                seq=run.seq,
                next_kind="error",
                error=_err(ErrorDetails.from_exception(exc)),
                duration_ms=int((time.monotonic() - t0) * 1000),
            )
        finally:
            StepRuntime.deactivate(token)

    @staticmethod
    def _outcome(run: RunRecord, d: Directive, writes: dict[str, bytes], t0: float) -> StepOutcome:
        duration = int((time.monotonic() - t0) * 1000)
        base: dict[str, Any] = {
            "run_id": run.run_id,
            "seq": run.seq,
            "duration_ms": duration,
            "store": writes,
        }
        if d.kind == DirectiveKind.step and d.step is not None:
            return StepOutcome(
                next_kind="step", next_step=d.step.step_name, next_step_timeout_ms=d.step.timeout_ms, **base
            )
        if d.kind == DirectiveKind.wait and d.wait is not None:
            return StepOutcome(
                next_kind="wait",
                wait_timeout_ms=d.wait.timeout_ms or None,
                wait_on_timeout=d.wait.timeout_step_name or None,
                **base,
            )
        if d.kind == DirectiveKind.complete and d.complete is not None:
            return StepOutcome(next_kind="complete", result=d.complete.result, **base)
        if d.kind == DirectiveKind.fail and d.fail is not None:
            return StepOutcome(next_kind="fail", error=_err(d.fail.error), **base)
        if d.kind == DirectiveKind.fail_step and d.fail_step is not None:
            base["store"] = {}
            return StepOutcome(next_kind="error", error=_err(d.fail_step.error), **base)
        raise NextDirectiveMissingError(f"malformed directive {d!r}")

    @staticmethod
    def _run_info(run: RunRecord) -> RunInfo:
        parent = run.parent
        return RunInfo(
            id=run.run_id,
            wf_id=run.wf_id,
            wf_type=run.wf_type,
            status=RunStatus.running,
            current_step=run.step,
            step_seq=run.seq,
            parent_wf_id=parent.wf_id if parent else None,
            parent_run_id=parent.run_id if parent else None,
            parent_wf_type=parent.wf_type if parent else None,
            parent_callback_step=parent.callback_step if parent else None,
            timeout=run.timeout_ms / 1000 if run.timeout_ms else None,
        )


def _new_task(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
    if sys.version_info >= (3, 12):
        return asyncio.Task(coro, loop=loop, eager_start=True)  # type: ignore[call-arg,unused-ignore]
    return asyncio.Task(coro, loop=loop)  # loop.create_task minus its Python wrapper (~1 µs a step)


def _consume_available(consumer: Consumer, limit: int, wait: float) -> tuple[list[Any], Any]:
    """Wait up to `wait` seconds for one record, then take whatever else is already fetched.

    `Consumer.consume(n, timeout)` blocks until it has n records or the timeout passes, which
    would add the whole timeout to every record's latency at low load.

    Also returns the consumer group metadata for the transactions: it must be read on this
    thread, because `consumer_group_metadata()` blocks while another thread is inside `poll()`
    (measured: send_offsets_to_transaction went from ~3 ms to 100-1400 ms, or hung).
    """
    first = consumer.poll(wait)
    metadata = consumer.consumer_group_metadata()
    if first is None:
        return [], metadata
    rest: list[Any] = consumer.consume(limit - 1, 0)
    return [first, *rest], metadata


def _err(details: ErrorDetails) -> dict[str, Any]:
    out = {"type": details.type, "message": details.message}
    if details.stack_trace:
        out["stack_trace"] = details.stack_trace
    if details.qualified_type:
        out["qualified_type"] = details.qualified_type
    return out
