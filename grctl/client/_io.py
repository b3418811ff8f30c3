"""The client's Kafka side: one idempotent producer, one reader of the client's `replies` partition.

The reader is assigned to the client's own `replies` partition only, at its end offset
(resolved explicitly before the first request, so nothing produced after `start()` can be
missed), reads `read_committed`, and resolves, on the event loop, the waiters of answers (by
request id) and of the outcomes of the runs the client watches (by run id). Workers write both
in the transactions of the transitions they answer, so what a client reads is proportional to
its own requests, never to the namespace's traffic (DESIGN.md §7).

What can go wrong while reading, and what the reader does:

- a consumer error that is not fatal (broker down, leader moving): retry with exponential
  back-off, logged as a warning;
- a fatal consumer error (or the consumer closed under the reader): stop; every waiter, and
  every later call, fails with `KafkaSetupError` naming the cause;
- a record that cannot be decoded: logged and skipped;
- a run listener that raises (a bug in grctl): logged at ERROR with its traceback, and that
  listener ends with `InternalError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any, Final

from confluent_kafka import (
    OFFSET_END,
    Consumer,
    ConsumerGroupState,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient  # type: ignore[attr-defined]  # untyped re-export

from grctl.engine.records import DECODE_ERRORS, OUTCOME, Reply, reply_decoder
from grctl.errors import InternalError, KafkaSetupError, NoWorkerAnsweredError
from grctl.kafka.acls import authorization_error
from grctl.kafka.connection import Connection
from grctl.kafka.reading import consume_available
from grctl.kafka.retry import is_transient, retry_while_leaderless

logger = logging.getLogger("grctl.client")

OutcomeListener = Callable[[Reply], None]
"""Gets the outcome of a watched run (a `Reply` of kind `OUTCOME`)."""
FailureListener = Callable[[BaseException], None]
"""Gets the error that ends a listener: the reader failed, or the listener itself raised."""

#: While the namespace's worker group has members, it is asked again at most this often.
WORKERS_CHECK_S: Final = 2.0
#: How long librdkafka keeps trying to write a request (message.timeout.ms of the client's producer).
SEND_TIMEOUT_S: Final = 30.0
#: A group that had members this recently is between sessions (a worker restarting in place, a
#: session restarting after a broker failure): requests are sent and wait for their answer
#: instead of failing at once (the broker-fault tests saw the group empty for ~4 s).
WORKERS_GRACE_S: Final = 30.0
#: How often `wait_for_workers` asks.
WORKERS_POLL_S: Final = 0.2
#: First pause after a consumer error; doubled after each further one, up to the maximum.
READ_BACKOFF_INITIAL_S: Final = 0.1
#: Longest pause between retries (also bounds how often a lasting error is logged).
READ_BACKOFF_MAX_S: Final = 5.0
#: How long `start` waits for the end offset of the client's replies partition (a new topic has
#: no leader for a moment).
END_OFFSET_TIMEOUT_S: Final = 15.0
#: Replies taken from the reader at once.
REPLY_BATCH: Final = 1_000
#: Consumer errors that no retry will fix, though librdkafka does not flag them fatal (ACLs;
#: authentication failures are retried: credentials may be rotating).
_PERMANENT_ERRORS: Final = frozenset(
    {
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.GROUP_AUTHORIZATION_FAILED,
    }
)


def _is_fatal(err: KafkaError) -> bool:
    return bool(err.fatal()) or err.code() in _PERMANENT_ERRORS


class _RunListener:
    __slots__ = ("on_failure", "on_record")

    def __init__(self, on_record: OutcomeListener, on_failure: FailureListener) -> None:
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
                    # A produce request to a hung leader (a paused broker keeps its sockets
                    # open) is given up after 5 s and sent again to the new leader (safe: the
                    # producer is idempotent); the default 30 s outlasted the whole send wait
                    # in the broker-pause test. librdkafka stops trying a record after
                    # message.timeout.ms, which `send` waits out: "not acknowledged" then means
                    # librdkafka gave up too, not that the record may still land minutes later.
                    "request.timeout.ms": 5_000,
                    "message.timeout.ms": int(SEND_TIMEOUT_S * 1000),
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
        self._init_routing()
        self._admin = AdminClient(conn.client_config())
        self._workers_seen_at = -WORKERS_CHECK_S
        self._members_query: asyncio.Future[int | None] | None = None
        self._members_seen_at: float | None = None  # last time the group was seen with members
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._delivery_poller: threading.Thread | None = None

    def _init_routing(self) -> None:
        """The waiters that replies are routed to (also what `grctl.testing`'s in-process IO keeps)."""
        self._run_listeners: dict[str, list[_RunListener]] = defaultdict(list)
        self._reply_waiters: dict[str, asyncio.Future[Reply]] = {}
        # Watches being set up (`expect_outcome`): an outcome that comes before `listen` waits here.
        self._early: dict[str, Reply | None] = {}
        self._failure: KafkaSetupError | None = None

    def start(self) -> None:
        """Assign the reader at the current end offsets and start the reader threads (blocking)."""
        tp = TopicPartition(self.conn.topics.replies, self.reply_partition)
        high = self._end_offset(tp)
        #: What the reader reads: the client's replies partition, nothing else. (Kept here:
        #: `Consumer.assignment()` blocks while the reader thread polls.)
        self.assignment = [TopicPartition(tp.topic, tp.partition, high if high >= 0 else OFFSET_END)]
        self._reader.assign(self.assignment)
        self._thread = threading.Thread(target=self._read_loop, name=f"grctl-client-{self.client_id}", daemon=True)
        self._thread.start()
        self._delivery_poller = threading.Thread(target=self._poll_producer, name="grctl-client-dr", daemon=True)
        self._delivery_poller.start()

    def _end_offset(self, tp: TopicPartition) -> int:
        try:
            # New topics answer NOT_LEADER / UNKNOWN_TOPIC for a moment (not flagged retriable).
            return retry_while_leaderless(
                lambda: int(self._reader.get_watermark_offsets(tp, timeout=10.0, cached=False)[1]),
                timeout=END_OFFSET_TIMEOUT_S,
                retry_on=is_transient,
            )
        except KafkaException as exc:
            raise KafkaSetupError(f"cannot read offsets of {tp.topic}[{tp.partition}]: {exc}") from exc

    def _poll_producer(self) -> None:
        while not self._stop.is_set():
            self.producer.poll(0.05)

    def _read_loop(self) -> None:
        backoff = READ_BACKOFF_INITIAL_S
        while not self._stop.is_set() and self._failure is None:
            try:
                msgs = consume_available(self._reader, REPLY_BATCH, 0.1)
            except KafkaException as exc:
                err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
                if err is None or _is_fatal(err):
                    self._fail_from_reader(str(exc), err)
                    return
                backoff = self._back_off(backoff, "its replies", err)
                continue
            except RuntimeError as exc:  # the consumer was closed under the reader
                if not self._stop.is_set():
                    self._fail_from_reader(f"the reader's consumer stopped: {exc}")
                return
            batch: list[tuple[str, int, int, bytes]] = []
            error: KafkaError | None = None
            where = ""
            for m in msgs:
                err = m.error()
                if err is None:
                    batch.append((m.topic() or "", m.partition() or 0, m.offset() or 0, m.value() or b""))
                elif _is_fatal(err):
                    self._fail_from_reader(f"{m.topic() or 'the consumer'}: {err}", err)
                    return
                elif err.code() != KafkaError._PARTITION_EOF:
                    error = err
                    where = m.topic() or "its replies"
            if batch:
                backoff = READ_BACKOFF_INITIAL_S
                with contextlib.suppress(RuntimeError):  # loop closed
                    self._loop.call_soon_threadsafe(self._dispatch, batch)
            elif error is not None:
                backoff = self._back_off(backoff, where, error)
            else:
                backoff = READ_BACKOFF_INITIAL_S

    def _back_off(self, delay: float, what: str, err: KafkaError) -> float:
        """Log a consumer error, pause (interruptibly), and return the next pause."""
        logger.warning(
            "client %s: cannot read %s from Kafka at %s (%s: %s); retrying in %.1fs",
            self.client_id, what, self.conn.servers, err.name(), err.str(), delay,
        )  # fmt: skip
        self._stop.wait(delay)
        return min(delay * 2, READ_BACKOFF_MAX_S)

    def _fail_from_reader(self, detail: str, err: KafkaError | None = None) -> None:
        refused = authorization_error(err, self.conn.namespace, "client", f"reading {self.conn.topics.replies}")
        cause = refused or KafkaSetupError(
            f"client {self.client_id} cannot read its replies from Kafka at {self.conn.servers} "
            f"any more ({detail}); its pending and later calls fail: close it and create a new Client"
        )
        logger.error("%s", cause)
        with contextlib.suppress(RuntimeError):  # loop closed
            self._loop.call_soon_threadsafe(self.fail, cause)

    def _dispatch(self, batch: list[tuple[str, int, int, bytes]]) -> None:
        for topic, part, offset, value in batch:
            try:
                reply = reply_decoder.decode(value)
            except DECODE_ERRORS as exc:  # ValidationError included
                self._skip(topic, part, offset, exc)
                continue
            if reply.client_id != self.client_id:
                continue
            if reply.kind == OUTCOME:
                if reply.request_id in self._early:
                    self._early[reply.request_id] = reply  # `listen` hands it over
                for listener in list(self._run_listeners.get(reply.request_id, ())):
                    self._deliver(listener, reply, part, offset)
                continue
            fut = self._reply_waiters.pop(reply.request_id, None)
            if fut is not None and not fut.done():
                fut.set_result(reply)

    def _skip(self, topic: str, part: int, offset: int, exc: Exception) -> None:
        logger.warning("client %s: skipped a record of %s[%d]@%d that cannot be decoded: %s",
                       self.client_id, topic, part, offset, exc)  # fmt: skip

    def _deliver(self, listener: _RunListener, reply: Reply, part: int, offset: int) -> None:
        try:
            listener.on_record(reply)
        except Exception as exc:
            self._drop(reply.request_id, listener)
            logger.exception(
                "client %s: following run %s failed on its outcome at %s[%d]@%d; this is a bug in grctl",
                self.client_id, reply.run_id, self.conn.topics.replies, part, offset,
            )  # fmt: skip
            listener.on_failure(
                InternalError(
                    f"grctl failed to follow run {reply.run_id} ({type(exc).__name__}: {exc}); this is a bug in grctl"
                )
            )

    def fail(self, cause: KafkaSetupError) -> None:
        """Stop reading: every waiter fails with `cause`, and so do later calls.

        Called on the event loop when the reader meets a fatal error. The producer stays up
        for records already sent.

        Args:
            cause: the error, naming what failed.
        """
        if self._failure is None:
            self._failure = cause
        waiters = list(self._reply_waiters.values())
        listeners = [listener for lst in self._run_listeners.values() for listener in lst]
        self._reply_waiters.clear()
        self._run_listeners.clear()
        for fut in waiters:
            if not fut.done():
                fut.set_exception(cause)
        for listener in listeners:
            listener.on_failure(cause)

    def _check(self) -> None:
        if self._failure is not None:
            raise self._failure.with_traceback(None)

    # ------------------------------------------------------------------ listeners

    def listen(self, watch_id: str, on_record: OutcomeListener, on_failure: FailureListener) -> Callable[[], None]:
        """Wait for the outcome of a run this client watches.

        Args:
            watch_id: the request that made the run's owner watch it for this client (its start,
                or a `WatchCmd`); the outcome comes back under that request id.
            on_record: called with the outcome `Reply` when the run ends.
            on_failure: called once if the listener ends in error: the reader failed, or
                `on_record` raised (the listener is then dropped).

        Returns:
            The unsubscribe function.

        Raises:
            KafkaSetupError: the reader failed.
        """
        self._check()
        listener = _RunListener(on_record, on_failure)
        if self._early.get(watch_id, False) is not False:
            early = self._early.pop(watch_id)
            if early is not None:
                self._loop.call_soon(self._deliver, listener, early, self.reply_partition, -1)
                return lambda: None
        self._early.pop(watch_id, None)
        self._run_listeners[watch_id].append(listener)

        def unsubscribe() -> None:
            self._drop(watch_id, listener)

        return unsubscribe

    def _drop(self, watch_id: str, listener: _RunListener) -> None:
        lst = self._run_listeners.get(watch_id)
        if lst is not None:
            with contextlib.suppress(ValueError):
                lst.remove(listener)
            if not lst:
                self._run_listeners.pop(watch_id, None)

    async def require_workers(self) -> None:
        """Fail fast when the namespace has no worker at all, instead of waiting out a timeout.

        Asks the broker for the members of the namespace's worker group (at most every
        `WORKERS_CHECK_S` while workers are seen). If the question cannot be answered (no
        permission to describe groups), nothing is assumed; nor when the group had members
        within the last `WORKERS_GRACE_S` (workers between sessions).

        Raises:
            NoWorkerAnsweredError: the group has no member, and had none recently.
            KafkaSetupError: the reader failed.
        """
        self._check()
        now = time.monotonic()
        if now - self._workers_seen_at < WORKERS_CHECK_S:
            return
        members = await self._members_once()
        if members is None or members > 0:
            self._workers_seen_at = now
            return
        if self._members_seen_at is not None and now - self._members_seen_at < WORKERS_GRACE_S:
            return
        group = f"grctl.{self.conn.namespace}.workers"
        raise NoWorkerAnsweredError(
            f"namespace {self.conn.namespace!r} has no running worker (its consumer group {group} has no "
            f"member): start one, e.g. `grctl worker --app module:WORKFLOWS`{self._acl_note(group)}",
            namespace=self.conn.namespace,
            timeout=0.0,
        )

    def _acl_note(self, group: str) -> str:
        """On a secured cluster an invisible group may be a missing ACL: say so."""
        if str(self.conn.kafka_config.get("security.protocol", "plaintext")).lower() == "plaintext":
            return ""
        return (
            f"; on a secured cluster, a group that this principal may not describe looks empty too: grant it Read on "
            f"groups prefixed 'grctl.{self.conn.namespace}.' (`grctl namespace acls {self.conn.namespace} "
            "--principal User:NAME --role client --apply`)"
        )

    async def wait_for_workers(self, timeout: float) -> None:
        """Wait until the namespace's worker group has a member.

        Raises:
            NoWorkerAnsweredError: none joined within `timeout` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            members = await self._members_once()
            if members is None or members > 0:
                self._workers_seen_at = time.monotonic()
                return
            if time.monotonic() >= deadline:
                raise NoWorkerAnsweredError(
                    f"no worker of namespace {self.conn.namespace!r} joined its group within {timeout:g}s",
                    namespace=self.conn.namespace,
                    timeout=timeout,
                )
            await asyncio.sleep(WORKERS_POLL_S)

    async def _members_once(self) -> int | None:
        """Whether the worker group has members, asked by one request at a time for all callers."""
        if self._members_query is None or self._members_query.done():
            self._members_query = self._loop.run_in_executor(None, self._worker_members)
        members = await asyncio.shield(self._members_query)
        if members:
            self._members_seen_at = time.monotonic()
        return members

    def _worker_members(self) -> int | None:
        """1 if the namespace's worker group has members, 0 if not, None if it cannot be told.

        Asked with ListGroups (sent to every broker), not DescribeGroups: librdkafka 2.16's
        coordinator-targeted admin requests (DescribeConsumerGroups, ListConsumerGroupOffsets)
        abort the process when their coordinator connection drops mid-request ("Assertion
        `eonce->refcnt > 0' failed", librdkafka issue 4605; the broker-fault tests hit it in
        the client while a broker died), and a client lives as long as the application.
        """
        group = f"grctl.{self.conn.namespace}.workers"
        active = {
            ConsumerGroupState.STABLE,
            ConsumerGroupState.PREPARING_REBALANCING,
            ConsumerGroupState.COMPLETING_REBALANCING,
        }
        try:
            # The Python-side wait outlasts the request's own timeout, so the request always
            # finishes inside librdkafka before this thread stops waiting for it.
            listed = self._admin.list_consumer_groups(request_timeout=5.0, states=active).result(10.0)
        except KafkaException as exc:
            logger.debug("client %s: cannot list consumer groups: %s", self.client_id, exc)
            return None
        except TimeoutError:
            logger.debug("client %s: listing consumer groups timed out", self.client_id)
            return None
        if any(g.group_id == group for g in listed.valid):
            return 1
        if listed.errors:  # a broker did not answer: the group may be on it
            logger.debug("client %s: consumer group listing incomplete: %s", self.client_id, listed.errors)
            return None
        return 0

    def expect_outcome(self, watch_id: str) -> None:
        """Keep an outcome that arrives for `watch_id` before anyone `listen`s to it."""
        self._early[watch_id] = None

    def forget_outcome(self, watch_id: str) -> None:
        """Stop keeping an early outcome for `watch_id` (the watch failed)."""
        self._early.pop(watch_id, None)

    def expect_reply(self, request_id: str) -> asyncio.Future[Reply]:
        """A future resolved by the reply to `request_id`.

        Raises:
            KafkaSetupError: the reader failed.
        """
        self._check()
        fut: asyncio.Future[Reply] = self._loop.create_future()
        self._reply_waiters[request_id] = fut
        return fut

    def forget_reply(self, request_id: str) -> None:
        """Stop waiting for a reply."""
        self._reply_waiters.pop(request_id, None)

    # ------------------------------------------------------------------ produce

    async def send(
        self, topic: str, partition: int, key: bytes, value: bytes, timeout: float = SEND_TIMEOUT_S + 5.0
    ) -> None:
        """Produce one record and wait until the broker acknowledged it.

        Raises:
            KafkaSetupError: the broker did not acknowledge in time, or the reader failed.
        """
        self._check()
        fut: asyncio.Future[None] = self._loop.create_future()

        def on_delivery(err: KafkaError | None, _msg: Any) -> None:
            def settle() -> None:
                if fut.done():
                    return
                if err is None:
                    fut.set_result(None)
                else:
                    refused = authorization_error(err, self.conn.namespace, "client", f"a write to {topic}")
                    fut.set_exception(refused or KafkaSetupError(f"cannot write to {topic}: {err}"))

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
