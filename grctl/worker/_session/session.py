"""One membership of a worker in the consumer group: the coordinator of the session's parts.

A session owns, for as long as it lives:

1. one transactional producer (EOS v2) and one `read_committed` consumer of `directives` in
   the namespace's group (`._clients`);
2. the group committer: the open batch, the stores' uncommitted layers, the transaction
   (`._commit`);
3. the partitions it owns, opened and released from the rebalance callbacks (`._rebalance`,
   `._restore`), each with its partition processor (`._partition`);
4. the step executor and the query answerer, whose tasks it tracks per partition
   (`._executor`, `._queries`);
5. three loops: consume (here), commit (`GroupCommitter.run`) and timers (`._timers`).

Any failure of a loop, a transaction or a rebalance ends the session (`SessionRestart`): the
worker drops everything uncommitted and starts a new session, which rebuilds from RocksDB
(committed state only) and the changelog and resumes from the committed offsets. That is the
only recovery path, so it is the one the crash tests exercise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from grctl import defaults
from grctl.codec import CodecRegistry
from grctl.engine.machine import Machine
from grctl.errors import SchemaRegistryUnavailableError
from grctl.kafka.acls import is_refusal
from grctl.kafka.connection import Connection
from grctl.kafka.limits import RecordLimits
from grctl.models.run_info import RunStatus
from grctl.state.partition_store import StoreMemory
from grctl.worker._edges.schema_registry import RecordField, RegistryDecoder, SchemaRegistry
from grctl.worker._edges.sources import Source, SourcePartition
from grctl.worker._observe.metrics import WorkerMetrics
from grctl.worker._observe.spans import observer_for
from grctl.worker._observe.view import PartitionView, SessionView
from grctl.worker._partition.listing import counts as run_counts
from grctl.worker._partition.listing import version_counts
from grctl.worker._partition.ports import LocalInputs, ProcessorServices, Refusal, now_ms
from grctl.worker._partition.processor import PartitionProcessor
from grctl.worker._session.clients import consume_with_metadata, make_consumer, make_producer
from grctl.worker._session.commit import GroupCommitter, KafkaPublisher, TimedPublisher
from grctl.worker._session.errors import SessionRestart
from grctl.worker._session.executor import PartitionTasks, StepExecutor
from grctl.worker._session.queries import QueryAnswerer
from grctl.worker._session.rebalance import Partitions
from grctl.worker._session.served import Served
from grctl.worker._session.timers import TimerLoop
from grctl.worker._session.topics import TopicDirectory

__all__ = ["SessionRestart", "WorkerSession"]

logger = logging.getLogger("grctl.worker")

#: Records taken from the consumer per poll.
CONSUME_BATCH = 1000
#: Longest wait of one poll.
CONSUME_WAIT_S = 0.1
#: On a failed session: how long the cancelled steps get to unwind.
ABORT_DRAIN_S = 2.0
#: How often the consume loop counts the runs in flight for the sources' back-pressure.
BACK_PRESSURE_CHECK_S = 1.0
#: Longest wait for the consumer's close (see `WorkerSession._close_consumer`).
CONSUMER_CLOSE_TIMEOUT_S = 30.0


def _settle(fut: asyncio.Future[None], exc: BaseException | None) -> None:
    if fut.done():
        return
    if exc is None:
        fut.set_result(None)
    else:
        fut.set_exception(exc)


class WorkerSession:
    """See the module docstring."""

    def __init__(
        self,
        *,
        connection: Connection,
        served: Served,
        machine: Machine,
        codec: CodecRegistry,
        worker_id: str,
        instance_id: str,
        state_dir: Path,
        max_concurrent_steps: int,
        memory: StoreMemory | None = None,
        kafka_config: dict[str, Any],
        on_ready: Callable[[], None],
        limits: RecordLimits,
        quarantine: dict[str, Refusal],
        metrics: WorkerMetrics | None = None,
        sources: Sequence[Source] = (),
        emit_topics: TopicDirectory | None = None,
        pipeline_steps: bool = True,
        decoders: Mapping[tuple[str, RecordField], RegistryDecoder] | None = None,
        registry: SchemaRegistry | None = None,
        now_ms: Callable[[], int] = now_ms,
        group_protocol: str = "classic",
    ) -> None:
        self.group_protocol = group_protocol
        self.conn = connection
        self._decoders = dict(decoders or {})
        if emit_topics is not None:  # the records a step emits fit what this session's producer sends
            emit_topics.producer_max_bytes = limits.producer_max_bytes
        self._sources = {src.topic: src for src in sources}
        self._served = served
        self._codec = codec
        self._limits = limits
        self.worker_id = worker_id
        self.instance_id = instance_id
        self.kafka_config = kafka_config
        self._metrics = metrics
        self.shutdown_timeout = defaults.SHUTDOWN_TIMEOUT_S
        self._loop = asyncio.get_running_loop()
        self._fatal: BaseException | None = None
        self._fatal_event = asyncio.Event()
        self._stopping = False
        self._group_metadata: Any = None
        self._cpool = ThreadPoolExecutor(1, thread_name_prefix="grctl-consumer")
        self._ppool = ThreadPoolExecutor(1, thread_name_prefix="grctl-producer")
        self.consumer: Consumer | None = None
        # librdkafka builds batches up to message.max.bytes: never larger than a topic takes.
        producer_extra = {"message.max.bytes": limits.producer_max_bytes, **kafka_config.get("producer", {})}
        self.publisher = KafkaPublisher(
            lambda: make_producer(connection, instance_id=instance_id, worker_id=worker_id, extra=producer_extra),
            connection.topics,
            lambda: self._group_metadata,
            self._ppool,
        )
        self.committer = GroupCommitter(TimedPublisher(self.publisher, metrics) if metrics else self.publisher)
        self.tasks = PartitionTasks()
        self.executor = StepExecutor(
            served=served,
            codec=codec,
            worker_id=worker_id,
            max_concurrent_steps=max_concurrent_steps,
            tasks=self.tasks,
            metrics=metrics,
            emit_topics=emit_topics,
            registry=registry,
            task_topics=connection.topics.task_queue,
        )
        queries = QueryAnswerer(served=served, codec=codec, tasks=self.tasks)
        processors: dict[int, PartitionProcessor] = {}
        #: The consumer's last poll found no record (the timer loop may then purge at full speed).
        self.inputs_idle = False
        self.timers = TimerLoop(processors, self.committer, metrics, inputs_idle=lambda: self.inputs_idle, now=now_ms)
        services = ProcessorServices(
            outbox=self.committer,
            machine=machine,
            topics=connection.topics,
            num_partitions=connection.num_partitions,
            worker_id=worker_id,
            start_step=self.executor.start,
            answer_query=queries.spawn,
            timer_armed=self.timers.armed,
            limits=limits,
            quarantine=quarantine,
            observer=observer_for(metrics),
            pipeline_steps=pipeline_steps,
            now_ms=now_ms,
            local=LocalInputs(processors.get),
        )
        self.partitions = Partitions(
            processors,
            conn=connection,
            state_dir=state_dir,
            memory=memory,
            committer=self.committer,
            tasks=self.tasks,
            services=services,
            fail=self.fail,
            on_assigned=on_ready,
            set_group_metadata=self._set_group_metadata,
            metrics=metrics,
            make_source=self._make_source,
            incremental=group_protocol == "consumer",
        )

    def _make_source(self, topic: str, partition: int) -> SourcePartition:
        return SourcePartition(
            self._sources[topic], partition, outbox=self.committer, topics=self.conn.topics,
            num_partitions=self.conn.num_partitions, codec=self._codec, limits=self._limits,
            wf_types=frozenset(self._served.types()), decoder=self._decoders.get((topic, "value")),
            key_decoder=self._decoders.get((topic, "key")),
        )  # fmt: skip

    def _set_group_metadata(self, metadata: Any) -> None:
        self._group_metadata = metadata

    # ------------------------------------------------------------------ main

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set (graceful) or a fatal error (raises `SessionRestart`)."""
        # 1. The transactional producer: init_transactions fences an older incarnation of this
        #    worker and aborts its dangling transaction.
        await self.publisher.open()
        # 2. The consumer joins the group; partitions arrive through the rebalance callbacks.
        extra = self.kafka_config.get("consumer")
        if self._metrics is not None:  # consumer lag from librdkafka's statistics
            extra = {**self._metrics.consumer_config(self.conn.topics.directives), **(extra or {})}
        self.consumer = make_consumer(
            self.conn, instance_id=self.instance_id, worker_id=self.worker_id, extra=extra,
            group_protocol=self.group_protocol,
        )  # fmt: skip
        self.consumer.subscribe(
            [self.conn.topics.directives, *self._sources],
            on_assign=self.partitions.on_assign,
            on_revoke=self.partitions.on_revoke,
            on_lost=self.partitions.on_lost,
        )
        # 3. The loops, until one fails, a part calls `fail`, or `stop` is set.
        tasks = [
            asyncio.create_task(self._consume_loop(), name="grctl-consume"),
            asyncio.create_task(self.committer.run(), name="grctl-commit"),
            asyncio.create_task(self.timers.run(), name="grctl-timers"),
        ]
        stop_task = asyncio.create_task(stop.wait())
        fatal_task = asyncio.create_task(self._fatal_event.wait())
        try:
            done, _ = await asyncio.wait([*tasks, stop_task, fatal_task], return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                exc = t.exception() if t in tasks else None
                if exc is not None:
                    if not isinstance(exc, SessionRestart | KafkaException):
                        logger.error("%s failed with an engine error", t.get_name(), exc_info=exc)
                    raise SessionRestart(f"{t.get_name()} failed: {exc!r}") from exc
            if self._fatal is not None:
                raise SessionRestart(str(self._fatal)) from self._fatal
        finally:
            stop_task.cancel()
            fatal_task.cancel()
            await self._teardown(tasks, graceful=stop.is_set() and self._fatal is None)

    def view(self) -> SessionView:
        """What this session owns now, for a metrics scrape (call on the event loop).

        Reads only the session's own objects, never the consumer: a consumer call from the loop
        while the consumer thread waits for the loop in a rebalance callback could deadlock (as
        `consumer_group_metadata()` does, docs/engine.md). The partitions' last stable offsets
        come from librdkafka's statistics instead (`WorkerMetrics.consumer_stats`).
        """
        view = SessionView()
        committer = self.committer
        budget = self.partitions.memory
        if budget is not None:
            view.state_memory = (budget.usage(), budget.total_bytes)
        now = int(time.time() * 1000)
        for p, proc in list(self.partitions.processors.items()):
            state_keys, state_bytes = proc.store.size()
            view.partitions.append(
                PartitionView(
                    partition=p,
                    next_offset=proc.position,
                    committed_offset=committer.committed_offset(p),
                    running_steps=len(proc.running),
                    timers_pending=len(proc.timers),
                    next_timer_due_ms=proc.next_timer_due(),
                    purges_due=proc.expiries.due_count(now),
                    next_purge_due_ms=proc.next_expiry_due(),
                    runs=run_counts(proc.store),
                    versions=version_counts(proc.store),
                    state_keys=state_keys,
                    state_bytes=state_bytes,
                )
            )
        return view

    def fail(self, exc: BaseException) -> None:
        """End the session from anywhere (e.g. a librdkafka callback)."""
        if self._fatal is None:
            self._fatal = exc
        self._loop.call_soon_threadsafe(self._fatal_event.set)

    async def _consume_loop(self) -> None:
        consumer = self.consumer
        assert consumer is not None
        committer, processors = self.committer, self.partitions.processors
        directives, sources = self.conn.topics.directives, self.partitions.sources
        next_check = 0.0
        while not self._stopping:
            if committer.full:
                await committer.wait_for_room()
                continue
            if sources and time.monotonic() >= next_check:
                next_check = time.monotonic() + BACK_PRESSURE_CHECK_S
                await self._back_pressure(consumer)
            msgs, self._group_metadata = await self._loop.run_in_executor(
                self._cpool, consume_with_metadata, consumer, CONSUME_BATCH, CONSUME_WAIT_S
            )
            self.inputs_idle = not msgs
            for msg in msgs:
                err = msg.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        logger.warning("consumer error: %s", err)
                        # A fatal error arrives as code _FATAL with fatal() false: the consumer is
                        # dead either way, and polling it again would stall the session for good.
                        if err.fatal() or err.code() == KafkaError._FATAL or is_refusal(err):
                            raise KafkaException(err)  # a missing ACL: no retry fixes it either
                    continue
                if msg.topic() != directives:
                    src = sources.get((msg.topic() or "", msg.partition() or 0))
                    if src is not None:
                        try:
                            if src.needs_lookup(msg):  # a schema id not seen before: asked in a thread
                                await self._loop.run_in_executor(None, src.lookup, msg)
                            src.on_record(msg)
                        except SchemaRegistryUnavailableError as exc:
                            # Not the record's fault: read it again in the next session, after a back-off.
                            raise SessionRestart(
                                f"source {msg.topic()}[{msg.partition()}] offset {msg.offset()}: {exc}"
                            ) from exc
                    continue
                proc = processors.get(msg.partition())
                if proc is not None and not proc.closing:
                    proc.on_record(msg)

    async def _back_pressure(self, consumer: Consumer) -> None:
        """Pause the source partitions while this worker has more runs in flight than a source allows."""
        in_flight = 0
        for proc in self.partitions.processors.values():
            for status, by_type in run_counts(proc.store).items():
                if not RunStatus(status).is_terminal:
                    in_flight += sum(by_type.values())
        pause: list[TopicPartition] = []
        resume: list[TopicPartition] = []
        for (topic, p), src in self.partitions.sources.items():
            over = in_flight > src.source.max_in_flight
            if over != src.paused:
                src.paused = over
                (pause if over else resume).append(TopicPartition(topic, p))
        if pause:
            logger.info("%d runs in flight: pausing %d source partition(s)", in_flight, len(pause))
            await self._loop.run_in_executor(self._cpool, consumer.pause, pause)
        if resume:
            logger.info("%d runs in flight: resuming %d source partition(s)", in_flight, len(resume))
            await self._loop.run_in_executor(self._cpool, consumer.resume, resume)

    async def _close_consumer(self, consumer: Consumer) -> None:
        """Close the consumer, but give up after `CONSUMER_CLOSE_TIMEOUT_S`.

        librdkafka's close can block for good while the group coordinator does not answer
        (it keeps querying for one: librdkafka#3740, open), and a session that waits for it
        never restarts: every partition of the worker would stall. The consumer is left in its
        thread instead; the next session's consumer joins with the same group.instance.id,
        which replaces it in the group, and a revoke callback it may still run finds the
        partitions torn down and commits nothing.
        """
        done: asyncio.Future[None] = self._loop.create_future()

        def close() -> None:  # a daemon thread: one left blocked does not hold up the exit
            try:
                consumer.close()
                result: BaseException | None = None
            except (KafkaException, RuntimeError) as exc:  # a consumer closed under a failed session
                result = exc
            with contextlib.suppress(RuntimeError):  # the loop is gone
                self._loop.call_soon_threadsafe(_settle, done, result)

        # After the consume loop's last poll (the consumer is not thread-safe for close).
        await self._loop.run_in_executor(self._cpool, lambda: None)
        threading.Thread(target=close, name="grctl-consumer-close", daemon=True).start()
        try:
            await asyncio.wait_for(asyncio.shield(done), CONSUMER_CLOSE_TIMEOUT_S)
        except TimeoutError:
            self.partitions.tearing_down = True
            logger.warning(
                "the consumer did not close within %.0f s (group coordinator unreachable?); left behind, "
                "the next session's consumer replaces it in the group", CONSUMER_CLOSE_TIMEOUT_S,
            )  # fmt: skip
        except (KafkaException, RuntimeError) as exc:
            logger.debug("consumer close failed: %s", exc)

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
        partitions = self.partitions
        if graceful:
            running = self.tasks.running()
            if running:
                await asyncio.wait(running, timeout=self.shutdown_timeout)
            with contextlib.suppress(SessionRestart, KafkaException):
                await self.committer.flush()
        else:
            partitions.tearing_down = True
            for proc in partitions.processors.values():
                proc.close()
        commit.cancel()
        await asyncio.gather(commit, return_exceptions=True)
        if self.consumer is not None:
            await self._close_consumer(self.consumer)
        partitions.tearing_down = True
        partitions.close_all()
        await self.tasks.drain(None, ABORT_DRAIN_S, cancel=True)
        if not graceful:
            await self.publisher.abort()
        for pool in (self._cpool, self._ppool):
            pool.shutdown(wait=False, cancel_futures=True)
