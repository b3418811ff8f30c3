"""Reading partitions: take what a consumer has ready, and read ranges of offsets to their end.

`consume_available` is the one way grctl takes records from a consumer: wait up to `wait` for
the first record (`poll`), then take whatever else is already fetched without waiting
(`consume(n, 0)`). `Consumer.consume(n, timeout)` alone blocks until it has n records or the
timeout passes, which adds the whole timeout to every record's latency at low load.

`read_partitions` reads `[start, end)` of some partitions of one topic (`read_committed`
consumers: `end` is a last stable offset from `grctl.kafka.offsets`) and stops on its own. A
partition is done when the record at `end - 1` was read, when the consumer reports the end of
the partition, or when the consumer's position reached `end`: the last offsets of a
transactional topic may be commit markers that are never delivered as records (the Faust
restore hang, DESIGN.md §11), so positions are compared, never record counts.

May import: `grctl.errors`, `grctl.kafka`, confluent-kafka.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Final

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from grctl.errors import KafkaSetupError

if TYPE_CHECKING:
    from grctl.kafka.connection import Connection

__all__ = ["consume_available", "read_partitions", "reading_consumer", "take_ready"]

#: Records taken from a consumer at once by `read_partitions` (librdkafka caps `consume` at 1M).
READ_BATCH: Final = 10_000
#: How long `read_partitions` waits for a first record before it checks its bounds again.
READ_WAIT_S: Final = 0.25


def take_ready(consumer: Consumer, first: Message | None, limit: int) -> list[Message]:
    """`first` (a record `poll` returned) and what else the consumer has fetched, `limit` records at most.

    Never waits: the rest is `consume(limit - 1, 0)`. For a caller that must do something
    between the wait and the rest (the worker reads its group metadata on the polling thread).

    Args:
        consumer: the consumer `first` came from.
        first: what `consumer.poll(wait)` returned (None: nothing came, nothing is taken).
        limit: the most records returned, `first` included.
    """
    if first is None:
        return []
    if limit <= 1:
        return [first]
    return [first, *consumer.consume(limit - 1, 0)]


def consume_available(consumer: Consumer, limit: int, wait: float) -> list[Message]:
    """Wait up to `wait` seconds for one record, then take whatever else is already fetched.

    Args:
        consumer: an assigned (or subscribed) consumer.
        limit: the most records returned.
        wait: seconds to wait for the first record.

    Returns:
        The records (and consumer events such as partition EOF, as `Message`s with `error()`
        set), empty if nothing came within `wait`.
    """
    return take_ready(consumer, consumer.poll(wait), limit)


def reading_consumer(conn: Connection, group: str, **extra: Any) -> Consumer:
    """A consumer that reads assigned ranges of committed records: no offsets committed, EOF reported.

    Args:
        conn: the namespace's connection.
        group: the end of its group id, `grctl.<namespace>.<group>` (nothing is committed to it).
        **extra: more librdkafka options (e.g. larger fetches).
    """
    return Consumer(
        conn.client_config(
            **{
                "group.id": f"grctl.{conn.namespace}.{group}",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "isolation.level": "read_committed",
                "enable.partition.eof": True,
                "auto.offset.reset": "earliest",
                **extra,
            }
        )
    )


def read_partitions(
    consumer: Consumer,
    topic: str,
    ranges: Mapping[int, tuple[int, int | None]],
    *,
    timeout: float | None = None,
    stall_s: float | None = None,
    should_stop: Callable[[], bool] | None = None,
    skip_errors: bool = False,
    wait: float = READ_WAIT_S,
    batch: int = READ_BATCH,
) -> Iterator[Message]:
    """Yield the records of `topic` in `[start, end)` of each partition of `ranges`, in offset order per partition.

    Assigns `consumer` to the ranges (replacing its assignment) and reads with
    `consume_available`. A partition that reaches its end is paused; the iteration ends when
    every partition did. An `end` of None reads on without end (tailing): the caller stops by
    leaving the loop, by `should_stop` or by `timeout`.

    Args:
        consumer: a `read_committed` consumer (`reading_consumer`), not subscribed.
        topic: the topic.
        ranges: partition -> (first offset to read, offset to stop before, or None).
        timeout: seconds the whole read may take.
        stall_s: seconds without any record or event before the read gives up.
        should_stop: asked before each fetch; True ends the iteration.
        skip_errors: skip consumer errors (librdkafka retries them itself) instead of raising.
        wait: seconds each fetch waits for a first record.
        batch: records taken per fetch.

    Raises:
        TimeoutError: `timeout` passed before every partition reached its end.
        KafkaSetupError: the consumer reported an error (unless `skip_errors`), or nothing came
            for `stall_s`.
    """
    pending: dict[int, int | None] = {p: end for p, (start, end) in ranges.items() if end is None or start < end}
    if not pending:
        return
    assigned = [TopicPartition(topic, p, ranges[p][0]) for p in pending]
    consumer.assign(assigned)
    consumer.resume(assigned)  # librdkafka keeps a partition paused across unassign/assign
    started = last_progress = time.monotonic()
    while pending:
        if should_stop is not None and should_stop():
            return
        now = time.monotonic()
        if timeout is not None and now - started > timeout:
            raise TimeoutError(
                f"reading {topic} took longer than {timeout:g}s; partitions {sorted(pending)} not read to their end"
            )
        msgs = consume_available(consumer, batch, wait)
        if msgs:
            last_progress = time.monotonic()
        elif stall_s is not None and time.monotonic() - last_progress > stall_s:
            raise KafkaSetupError(f"reading {topic} stalled at partitions {sorted(pending)}")
        done: list[int] = []
        for m in msgs:
            p = m.partition() or 0
            err = m.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    end = pending.get(p)
                    if end is not None and (m.offset() or 0) >= end:  # at the last stable offset, past `end`
                        del pending[p]
                        done.append(p)
                    continue
                if skip_errors:
                    continue
                raise KafkaSetupError(f"reading {topic}[{p}] failed: {err}")
            if p not in pending:
                continue  # a partition already done (or of an earlier assignment)
            end = pending[p]
            off = m.offset() or 0
            if end is not None and off >= end:
                del pending[p]
                done.append(p)
                continue
            yield m
            if end is not None and off >= end - 1 and p in pending:
                del pending[p]
                done.append(p)
        bounded = [TopicPartition(topic, p) for p, end in pending.items() if end is not None]
        for tp in consumer.position(bounded) if bounded else ():
            end = pending[tp.partition]
            if end is not None and tp.offset >= end:  # only commit markers were left before `end`
                del pending[tp.partition]
                done.append(tp.partition)
        if done:
            consumer.pause([TopicPartition(topic, p) for p in done])
