"""`TaskWorker`: the Python side of a task queue (docs/remote-tasks.md has the protocol).

1. A classic consumer group (`grctl.<ns>.tasks.<queue>`) reads the queue's topic with
   `read_committed`: only requests of committed step transitions are seen.
2. Each request runs its handler in an asyncio task, at most `concurrency` at once (the
   partitions are paused while every slot is taken, so the group membership stays alive).
3. The answer (result or error), and `task_started` / `task_heartbeat` records, are produced
   (idempotent producer, acks=all) to the reply topic and partition the request names.
4. A request's offset is committed once its answer is delivered: a crash in between makes the
   task run again (execution is at least once); the engine applies one answer per attempt.
5. A cancel record for a task in flight cancels its handler (`asyncio.CancelledError`); nothing
   is answered for it.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import msgspec
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]  # untyped re-export
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from grctl.errors import GrctlError, InvalidArgumentError, KafkaSetupError
from grctl.kafka.connection import Connection
from grctl.kafka.partitioner import partition_for
from grctl.kafka.reading import consume_available
from grctl.kafka.topics import admin_client, wait_for_leaders

logger = logging.getLogger(__name__)

__all__ = ["NonRetryableError", "TaskContext", "TaskWorker", "TaskWorkerStats"]

#: Records fetched per poll at most (a poll asks for no more than the free slots).
MAX_BATCH = 500
#: How long one poll waits for records (s): also how late a stop or a resume is seen at most.
POLL_TIMEOUT_S = 0.1
#: How long a full worker waits for delivery reports per round (s): what frees its slots.
FULL_WAIT_S = 0.005
#: A worker full this long (s) pauses its partitions while it keeps polling (long tasks).
PAUSE_AFTER_S = 5.0
#: The metrics endpoint listens on every interface: scrapes come from outside the pod (as a Worker's).
METRICS_HOST = "0.0.0.0"
#: How often finished offsets are committed (s).
COMMIT_INTERVAL_S = 1.0

_json = msgspec.json.Encoder()


class NonRetryableError(GrctlError):
    """Raise it from a handler to fail the task without retry, whatever its retry policy says."""


class _Request(msgspec.Struct, kw_only=True):
    """A queue record: a request or a cancel (the fields every type has, plus the request's)."""

    type: str
    wf_id: str
    run_id: str
    task_id: str
    attempt: int
    idempotency_key: str = ""
    task: str = ""
    payload: Any = None
    wf_type: str = ""
    step: str = ""
    scheduled_ms: int = 0
    schedule_to_start_ms: int | None = None
    start_to_close_ms: int | None = None
    heartbeat_ms: int | None = None
    reply_topic: str = ""
    reply_partition: int = -1
    reason: str = ""


_decoder = msgspec.json.Decoder(_Request)


@dataclass(slots=True)
class TaskWorkerStats:
    """Counts since start (what `TaskWorker.stats` returns; the metrics of a queue's worker)."""

    requests: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    heartbeats: int = 0
    undecodable: int = 0
    unknown_task: int = 0
    in_flight: int = 0


class TaskContext:
    """What a handler that takes a second parameter gets: the task's identity, heartbeats, cancel.

    Attributes:
        task: the task's name.
        task_id: the call's id inside its run.
        attempt: the attempt this execution answers (1-based).
        idempotency_key: `<run_id>:<task_id>`, the same for every attempt: deduplicate the task's
            own side effects with it.
        wf_id: the workflow id of the run that asked.
        run_id: the run's id.
    """

    def __init__(self, worker: TaskWorker, req: _Request) -> None:
        self._worker = worker
        self._req = req
        self.task = req.task
        self.task_id = req.task_id
        self.attempt = req.attempt
        self.idempotency_key = req.idempotency_key
        self.wf_id = req.wf_id
        self.run_id = req.run_id

    def heartbeat(self, details: Any = None) -> None:
        """Tell the engine this attempt is alive (moves its heartbeat deadline); `details` shows in describe."""
        self._worker._answer(self._req, "task_heartbeat", details=details)
        self._worker.stats.heartbeats += 1


Handler = Callable[..., Awaitable[Any]]


class _Collector(Collector):
    """A task worker's `stats` and lag at scrape time."""

    def __init__(self, worker: TaskWorker) -> None:
        self._w = worker

    def collect(self) -> Iterator[Any]:
        w, s = self._w, self._w.stats
        for name, doc, value in (
            ("requests", "Task requests taken (attempts).", s.requests),
            ("completed", "Tasks answered with a result.", s.completed),
            ("failed", "Tasks answered with an error.", s.failed),
            ("cancelled", "Tasks cancelled by their run (or an attempt's timeout).", s.cancelled),
            ("heartbeats", "Heartbeats sent.", s.heartbeats),
            ("undecodable", "Queue records skipped as undecodable.", s.undecodable),
        ):
            family = CounterMetricFamily(f"grctl_taskworker_{name}", doc, labels=["queue"])
            family.add_metric([w.queue], value)
            yield family
        in_flight = GaugeMetricFamily("grctl_taskworker_in_flight", "Tasks running now.", labels=["queue"])
        in_flight.add_metric([w.queue], s.in_flight)
        yield in_flight
        lag = GaugeMetricFamily(
            "grctl_taskworker_lag", "Records of the queue topic not read yet, per partition read here.",
            labels=["queue", "partition"],
        )  # fmt: skip
        for p, n in sorted(w.lag.items()):
            lag.add_metric([w.queue, str(p)], n)
        yield lag


@dataclass(slots=True)
class _Partition:
    """Offsets of one assigned partition: what runs, and the highest seen."""

    in_flight: set[int] = field(default_factory=set)
    next_offset: int = -1  # one past the highest offset read


class TaskWorker:
    """Runs remote tasks of one queue (see the module docstring).

    Args:
        handlers: async functions, named by their `__name__`, or a mapping name -> function.
            A handler takes the payload, and optionally a `TaskContext` as second parameter;
            what it returns is the result (JSON-compatible); what it raises fails the attempt
            (retried by the task's policy unless it is a `NonRetryableError`).
        connection: the cluster and namespace (`await Connection.connect(...)`).
        queue: the queue's name (topic `grctl.<namespace>.tasks.<queue>`).
        concurrency: tasks run at once at most.
        group_id: the consumer group (default `grctl.<namespace>.tasks.<queue>`).
        worker_id: this worker's name in answers and logs (default host:pid).
        create_topic: create the queue's topic if it is missing (with the namespace's partition count).
        kafka_config: extra librdkafka options for the consumer and the producer.
        metrics_port: serve Prometheus metrics on this port (0: any free port; None: none):
            `grctl_taskworker_*` counters by queue, tasks in flight, and the lag of the
            partitions this worker reads (records of the queue not read yet: what to autoscale on).

    Example:
        ```python
        async def score(payload: dict) -> float: ...

        async with TaskWorker([score], conn, queue="scoring"):
            await asyncio.Event().wait()
        ```
    """

    def __init__(
        self,
        handlers: Sequence[Handler] | Mapping[str, Handler],
        connection: Connection,
        *,
        queue: str,
        concurrency: int = 16,
        group_id: str | None = None,
        worker_id: str | None = None,
        create_topic: bool = True,
        kafka_config: Mapping[str, Any] | None = None,
        metrics_port: int | None = None,
    ) -> None:
        named = dict(handlers) if isinstance(handlers, Mapping) else {h.__name__: h for h in handlers}
        if not named:
            raise InvalidArgumentError("a TaskWorker needs at least one handler")
        for name, fn in named.items():
            if not inspect.iscoroutinefunction(fn):
                raise InvalidArgumentError(f"task handler {name!r} must be an async function")
        if concurrency < 1:
            raise InvalidArgumentError(f"concurrency must be at least 1, got {concurrency}")
        self._handlers = named
        self._takes_ctx = {n: len(inspect.signature(f).parameters) >= 2 for n, f in named.items()}
        self.conn = connection
        self.queue = queue
        self.topic = connection.topics.task_queue(queue)
        self.group_id = group_id or self.topic
        self.worker_id = worker_id or f"{os.uname().nodename}:{os.getpid()}"
        self.concurrency = concurrency
        self._create_topic = create_topic
        self._extra = dict(kafka_config or {})
        self.stats = TaskWorkerStats()
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="grctl-taskworker")
        self._lock = threading.Lock()  # offsets: the loop writes, the rebalance callback reads
        self._partitions: dict[int, _Partition] = {}
        self._running: dict[tuple[str, int], asyncio.Task[None]] = {}
        self._slots = asyncio.Semaphore(concurrency)
        self._paused = False
        self._stop = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._directives_partitions = 0
        #: partition -> records of the queue topic not read yet (from cached high watermarks).
        self.lag: dict[int, int] = {}
        self._metrics_port = metrics_port
        self._metrics_server: Any = None
        #: Where the metrics are served (after `start`, with a `metrics_port`): (host, port).
        self.metrics_address: tuple[str, int] | None = None
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Create the queue's topic if asked, join the group, and start taking tasks.

        Raises:
            KafkaSetupError: the queue's topic is missing (and `create_topic` is False) or cannot be created.
        """
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._pool, self._setup)
        if self._metrics_port is not None:
            server, _thread = start_http_server(self._metrics_port, METRICS_HOST, registry=self.registry)
            self._metrics_server = server
            self.metrics_address = (METRICS_HOST, server.server_address[1])
        self._loop_task = asyncio.create_task(self._run(), name=f"grctl-taskworker-{self.queue}")

    async def stop(self, timeout: float = 30.0) -> None:
        """Stop taking tasks, let the running ones finish (up to `timeout` s, then cancel them), commit, leave."""
        self._stop.set()
        if self._loop_task is not None:
            await self._loop_task
            self._loop_task = None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        producer = self._producer
        # The running tasks finish; their answers' delivery reports need the producer polled.
        while self._running and loop.time() < deadline and producer is not None:
            await loop.run_in_executor(self._pool, producer.poll, 0.05)
        pending = list(self._running.values())
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.wait(pending)
        await asyncio.get_running_loop().run_in_executor(self._pool, self._close)
        self._pool.shutdown(wait=False)
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
            self._metrics_server = None

    async def run(self) -> None:
        """Start, and run until cancelled (then stop gracefully)."""
        await self.start()
        try:
            await self._stop.wait()
        finally:
            await self.stop()

    async def __aenter__(self) -> TaskWorker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _setup(self) -> None:
        admin = admin_client(self.conn.client_config())
        meta = admin.list_topics(timeout=10)
        directives = meta.topics.get(self.conn.topics.directives)
        if directives is None or directives.error is not None:
            raise KafkaSetupError(
                f"namespace {self.conn.namespace!r} has no topic {self.conn.topics.directives}: create the "
                f"namespace first (Connection.connect creates it, or `grctl namespace create`)"
            )
        self._directives_partitions = len(directives.partitions)
        if self.topic not in meta.topics:
            if not self._create_topic:
                raise KafkaSetupError(
                    f"task queue topic {self.topic} does not exist: create it, or pass create_topic=True"
                )
            fut = admin.create_topics([NewTopic(self.topic, num_partitions=self._directives_partitions)])[self.topic]
            try:
                fut.result(timeout=10)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise KafkaSetupError(f"cannot create task queue topic {self.topic}: {exc}") from exc
            # A consumer subscribed before the new topic's metadata is everywhere finds it only at
            # its next metadata refresh (seconds): the requests would wait in the queue meanwhile.
            wait_for_leaders(admin, [self.topic], timeout=30)
        self._producer = Producer(
            self.conn.client_config(
                **{
                    "enable.idempotence": True,
                    "acks": "all",
                    "linger.ms": 1,
                    "client.id": f"{self.worker_id}-tasks-producer",
                    **self._extra.get("producer", {}),
                }
            )
        )
        consumer = Consumer(
            self.conn.client_config(
                **{
                    "group.id": self.group_id,
                    "isolation.level": "read_committed",
                    "enable.auto.commit": False,
                    "auto.offset.reset": "earliest",
                    "partition.assignment.strategy": "cooperative-sticky",
                    "client.id": f"{self.worker_id}-tasks-consumer",
                    "fetch.wait.max.ms": 10,
                    **self._extra.get("consumer", {}),
                }
            )
        )
        consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_revoke)
        self._consumer = consumer

    def _close(self) -> None:
        if self._producer is not None:
            self._producer.flush(10)
        if self._consumer is not None:
            self._commit(sync=True)
            self._consumer.close()
            self._consumer = None

    # ------------------------------------------------------------------ offsets (consumer thread)

    def _on_assign(self, consumer: Consumer, parts: list[TopicPartition]) -> None:
        with self._lock:
            for tp in parts:
                self._partitions.setdefault(tp.partition, _Partition())

    def _on_revoke(self, consumer: Consumer, parts: list[TopicPartition]) -> None:
        self._commit(sync=True)  # what finished; what still runs is answered, and may run again elsewhere
        with self._lock:
            for tp in parts:
                self._partitions.pop(tp.partition, None)

    def _commit(self, *, sync: bool = False) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        with self._lock:
            offsets = [
                TopicPartition(self.topic, p, min(st.in_flight) if st.in_flight else st.next_offset)
                for p, st in self._partitions.items()
                if st.next_offset >= 0
            ]
            owned = {p: st.next_offset for p, st in self._partitions.items()}
        lag: dict[int, int] = {}
        for p, next_offset in owned.items():
            try:
                _low, high = consumer.get_watermark_offsets(TopicPartition(self.topic, p), cached=True)
            except KafkaException:
                continue
            if high >= 0 and next_offset >= 0:
                lag[p] = max(0, high - next_offset)
        self.lag = lag
        if not offsets:
            return
        try:
            if sync:
                consumer.commit(offsets=offsets, asynchronous=False)
            else:
                consumer.commit(offsets=offsets, asynchronous=True)
        except KafkaException as exc:
            logger.warning(
                "task queue %s: offset commit failed (%s); the tasks after it may run again", self.topic, exc
            )

    def _poll(self, n: int, full_for_s: float) -> list[Message]:
        """Records for up to `n` free slots; with none free, serve delivery reports (they free slots).

        Slots free within milliseconds (a task's slot is held until its answer is acknowledged),
        so a full worker first just waits. Pausing the partitions at once measured 10x slower
        (132 vs 1,357 remote tasks/s, benchmarks/remote_tasks.py: every pause and resume restarts
        the fetch); they are paused only when every slot stays taken for `PAUSE_AFTER_S` (long
        tasks), so that polling goes on and the group membership (max.poll.interval.ms) stays.
        """
        assert self._consumer is not None and self._producer is not None
        consumer = self._consumer
        if n == 0:
            self._producer.poll(FULL_WAIT_S)
            if full_for_s < PAUSE_AFTER_S:
                return []
            if not self._paused and consumer.assignment():
                consumer.pause(consumer.assignment())
                self._paused = True
            # A record fetched before the pause may still come: it is taken (one over the bound
            # at most), never dropped (its offset would be skipped).
            return consumer.consume(1, 0)
        self._producer.poll(0)
        if self._paused:
            consumer.resume(consumer.assignment())
            self._paused = False
        # One record waited for, then what is already fetched: `consume(n, timeout)` alone waits
        # for n records or the whole timeout (100 ms added to a lone task's round trip).
        return consume_available(consumer, min(n, MAX_BATCH), POLL_TIMEOUT_S)

    # ------------------------------------------------------------------ the loop

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        last_commit = time.monotonic()
        full_since: float | None = None
        while not self._stop.is_set():
            free = self.concurrency - len(self._running)
            now = time.monotonic()
            if free > 0:
                full_since = None
            elif full_since is None:
                full_since = now
            full_for = 0.0 if full_since is None else now - full_since
            msgs = await loop.run_in_executor(self._pool, self._poll, max(free, 0), full_for)
            for msg in msgs:
                self._take(msg)
            if time.monotonic() - last_commit >= COMMIT_INTERVAL_S:
                await loop.run_in_executor(self._pool, self._commit)
                last_commit = time.monotonic()

    def _take(self, msg: Message) -> None:
        error = msg.error()
        if error is not None:
            if error.code() != KafkaError._PARTITION_EOF:
                logger.warning("task queue %s: %s", self.topic, error)
            return
        part, offset = msg.partition() or 0, msg.offset() or 0
        with self._lock:
            st = self._partitions.setdefault(part, _Partition())
            st.next_offset = max(st.next_offset, offset + 1)
        try:
            req = _decoder.decode(msg.value() or b"")
        except msgspec.DecodeError as exc:
            self.stats.undecodable += 1
            logger.error(
                "task queue %s partition %d offset %d: undecodable record skipped: %s", self.topic, part, offset, exc
            )
            return
        if req.type == "task_cancel":
            task = self._running.get((req.idempotency_key, req.attempt))
            if task is not None:
                task.cancel()
            return
        if req.type != "task_request":
            return  # a record type of a newer protocol: not for this worker
        self.stats.requests += 1
        with self._lock:
            st.in_flight.add(offset)
        key = (req.idempotency_key, req.attempt)
        task = asyncio.create_task(self._execute(req, part, offset), name=f"grctl-task-{req.task}-{req.task_id}")
        self._running[key] = task
        task.add_done_callback(lambda _t: self._running.pop(key, None))

    async def _execute(self, req: _Request, part: int, offset: int) -> None:
        self.stats.in_flight += 1
        try:
            handler = self._handlers.get(req.task)
            if handler is None:
                self.stats.unknown_task += 1
                error = {
                    "type": "UnknownTask",
                    "message": f"no handler for task {req.task!r} on this worker of queue {self.queue!r} "
                    f"(it serves {sorted(self._handlers)})",
                    "retryable": True,  # another worker of the queue may serve it
                }
                await self._deliver(req, "task_result", ok=False, error=error)
                return
            if req.schedule_to_start_ms or req.heartbeat_ms:
                self._answer(req, "task_started")
            try:
                if self._takes_ctx[req.task]:
                    result = await handler(req.payload, TaskContext(self, req))
                else:
                    result = await handler(req.payload)
            except asyncio.CancelledError:
                self.stats.cancelled += 1
                if self._stop.is_set():
                    raise
                return  # cancelled by the run: nobody waits for an answer
            except Exception as exc:  # noqa: BLE001  # any handler error is the attempt's failure
                self.stats.failed += 1
                error = {
                    "type": type(exc).__name__,
                    "message": str(exc)[:4000],
                    "retryable": not isinstance(exc, NonRetryableError),
                }
                await self._deliver(req, "task_result", ok=False, error=error)
                return
            self.stats.completed += 1
            await self._deliver(req, "task_result", ok=True, result=result)
        finally:
            self.stats.in_flight -= 1
            with self._lock:
                st = self._partitions.get(part)
                if st is not None:
                    st.in_flight.discard(offset)

    # ------------------------------------------------------------------ answers

    def _answer(self, req: _Request, kind: str, **fields: Any) -> asyncio.Future[None]:
        """Produce an answer record; the future resolves when Kafka has it."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        assert self._producer is not None
        value = _json.encode(
            {
                "t": kind,
                "v": 1,
                "wf_id": req.wf_id,
                "run_id": req.run_id,
                "task_id": req.task_id,
                "attempt": req.attempt,
                "worker": self.worker_id,
                **fields,
            }
        )
        topic = req.reply_topic or self.conn.topics.directives
        part = (
            req.reply_partition if req.reply_partition >= 0 else partition_for(req.wf_id, self._directives_partitions)
        )

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            def settle() -> None:
                if done.done():
                    return
                if err is None:
                    done.set_result(None)
                else:
                    done.set_exception(KafkaException(err))

            loop.call_soon_threadsafe(settle)

        self._producer.produce(topic, value, key=req.wf_id.encode(), partition=part, on_delivery=delivered)
        return done

    async def _deliver(self, req: _Request, kind: str, **fields: Any) -> None:
        """Produce an answer and wait until Kafka has it (its request's offset may then be committed)."""
        try:
            value = fields.get("result")
            _json.encode(value)
        except TypeError as exc:
            fields = {
                "ok": False,
                "error": {"type": "TypeError", "message": f"result is not JSON: {exc}", "retryable": False},
            }
        while True:
            try:
                await self._answer(req, kind, **fields)
                return
            except BufferError:
                await asyncio.sleep(0.05)  # the producer's queue is full: its delivery thread drains it
            except KafkaException as exc:
                logger.warning(
                    "task %s of %s: answer not delivered (%s); the engine's timeout retries it",
                    req.task_id,
                    req.wf_id,
                    exc,
                )
                return
