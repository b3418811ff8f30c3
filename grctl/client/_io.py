"""The client's Kafka side: one idempotent producer, one reader of `history` and `replies`.

The reader is assigned to every `history` partition and to the client's own `replies`
partition at their end offsets (resolved explicitly before the first request, so nothing
produced after `start()` can be missed), reads `read_committed`, and resolves waiters by run
id and request id on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from confluent_kafka import OFFSET_END, Consumer, KafkaError, KafkaException, Producer, TopicPartition

from grctl.engine.records import HistoryRecord, Reply, history_decoder, reply_decoder
from grctl.errors import KafkaSetupError
from grctl.kafka.connection import Connection

logger = logging.getLogger("grctl.client")

HistoryListener = Callable[[HistoryRecord, int, int], None]
"""Gets each history record of a run, with its partition and offset."""
FailureListener = Callable[[BaseException], None]
"""Gets the error that ends a listener."""


class _RunListener:
    __slots__ = ("on_failure", "on_record")

    def __init__(self, on_record: HistoryListener, on_failure: FailureListener) -> None:
        self.on_record = on_record
        self.on_failure = on_failure


class ClientIO:
    """Producer and reader shared by every request and handle of one `Client`."""

    def __init__(self, conn: Connection, client_id: str, reply_partition: int) -> None:
        self.conn = conn
        self.client_id = client_id
        self.reply_partition = reply_partition
        self._loop = asyncio.get_running_loop()
        self.producer = Producer(
            conn.client_config(
                **{
                    "enable.idempotence": True,
                    "acks": "all",
                    "linger.ms": 1,
                    "client.id": f"{client_id}-producer",
                }
            )
        )
        self._reader = Consumer(
            conn.client_config(
                **{
                    "group.id": f"grctl.{conn.namespace}.client.{client_id}",
                    "enable.auto.commit": False,
                    "isolation.level": "read_committed",
                    "fetch.wait.max.ms": 20,
                    "client.id": f"{client_id}-reader",
                }
            )
        )
        self._run_listeners: dict[str, list[_RunListener]] = defaultdict(list)
        self._reply_waiters: dict[str, asyncio.Future[Reply]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._delivery_poller: threading.Thread | None = None

    def start(self) -> None:
        """Assign the reader at the current end offsets and start the reader threads (blocking)."""
        topics = self.conn.topics
        tps = [TopicPartition(topics.history, p) for p in range(self.conn.num_partitions)]
        tps.append(TopicPartition(topics.replies, self.reply_partition))
        assigned = []
        for tp in tps:
            high = self._end_offset(tp)
            assigned.append(TopicPartition(tp.topic, tp.partition, high if high >= 0 else OFFSET_END))
        self._reader.assign(assigned)
        self._thread = threading.Thread(target=self._read_loop, name=f"grctl-client-{self.client_id}", daemon=True)
        self._thread.start()
        self._delivery_poller = threading.Thread(target=self._poll_producer, name="grctl-client-dr", daemon=True)
        self._delivery_poller.start()

    def _end_offset(self, tp: TopicPartition) -> int:
        deadline = time.monotonic() + 15.0
        while True:
            try:
                return int(self._reader.get_watermark_offsets(tp, timeout=10.0, cached=False)[1])
            except KafkaException as exc:
                # New topics answer NOT_LEADER / UNKNOWN_TOPIC for a moment (not flagged retriable).
                if time.monotonic() > deadline:
                    raise KafkaSetupError(f"cannot read offsets of {tp.topic}[{tp.partition}]: {exc}") from exc
                time.sleep(0.1)

    def _poll_producer(self) -> None:
        while not self._stop.is_set():
            self.producer.poll(0.05)

    def _read_loop(self) -> None:
        topics = self.conn.topics
        while not self._stop.is_set():
            try:
                first = self._reader.poll(0.1)
                msgs = [] if first is None else [first, *self._reader.consume(999, 0)]
            except (KafkaException, RuntimeError):
                if self._stop.is_set():
                    return
                logger.exception("client reader failed")
                continue
            batch: list[tuple[str, int, int, bytes]] = []
            for m in msgs:
                err = m.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        logger.debug("client reader: %s", err)
                    continue
                batch.append((m.topic() or "", m.partition() or 0, m.offset() or 0, m.value() or b""))
            if batch:
                with contextlib.suppress(RuntimeError):  # loop closed
                    self._loop.call_soon_threadsafe(self._dispatch, batch, topics.history)

    def _dispatch(self, batch: list[tuple[str, int, int, bytes]], history_topic: str) -> None:
        for topic, part, offset, value in batch:
            try:
                if topic == history_topic:
                    rec = history_decoder.decode(value)
                    for listener in list(self._run_listeners.get(rec.run_id, ())):
                        listener.on_record(rec, part, offset)
                else:
                    reply = reply_decoder.decode(value)
                    if reply.client_id != self.client_id:
                        continue
                    fut = self._reply_waiters.pop(reply.request_id, None)
                    if fut is not None and not fut.done():
                        fut.set_result(reply)
            except Exception:  # one bad record must not stop the reader
                logger.exception("client reader: cannot decode a record of %s[%d]@%d", topic, part, offset)

    # ------------------------------------------------------------------ listeners

    def listen(self, run_id: str, on_record: HistoryListener, on_failure: FailureListener) -> Callable[[], None]:
        """Follow the history records of a run.

        Args:
            run_id: the run.
            on_record: called with `(record, partition, offset)` for each history record of the run.
            on_failure: called once if the listener ends in error.

        Returns:
            The unsubscribe function.
        """
        listener = _RunListener(on_record, on_failure)
        self._run_listeners[run_id].append(listener)

        def unsubscribe() -> None:
            lst = self._run_listeners.get(run_id)
            if lst is not None:
                with contextlib.suppress(ValueError):
                    lst.remove(listener)
                if not lst:
                    self._run_listeners.pop(run_id, None)

        return unsubscribe

    def expect_reply(self, request_id: str) -> asyncio.Future[Reply]:
        """A future resolved by the reply to `request_id`."""
        fut: asyncio.Future[Reply] = self._loop.create_future()
        self._reply_waiters[request_id] = fut
        return fut

    def forget_reply(self, request_id: str) -> None:
        """Stop waiting for a reply."""
        self._reply_waiters.pop(request_id, None)

    # ------------------------------------------------------------------ produce

    async def send(self, topic: str, partition: int, key: bytes, value: bytes, timeout: float = 15.0) -> None:
        """Produce one record and wait until the broker acknowledged it."""
        fut: asyncio.Future[None] = self._loop.create_future()

        def on_delivery(err: KafkaError | None, _msg: Any) -> None:
            def settle() -> None:
                if fut.done():
                    return
                if err is None:
                    fut.set_result(None)
                else:
                    fut.set_exception(KafkaSetupError(f"cannot write to {topic}: {err}"))

            self._loop.call_soon_threadsafe(settle)

        while True:
            try:
                self.producer.produce(topic, value, key, partition=partition, on_delivery=on_delivery)
                break
            except BufferError:
                await asyncio.sleep(0.01)
        try:
            async with asyncio.timeout(timeout):
                await fut
        except TimeoutError:
            raise KafkaSetupError(
                f"Kafka at {self.conn.servers} did not acknowledge a write to {topic} within {timeout:.0f}s; "
                f"is the broker up?"
            ) from None

    def close(self) -> None:
        """Stop the threads and close the clients (blocking)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
        if self._delivery_poller is not None:
            self._delivery_poller.join(5.0)
        with contextlib.suppress(Exception):
            self.producer.flush(5.0)
        with contextlib.suppress(Exception):
            self._reader.close()
