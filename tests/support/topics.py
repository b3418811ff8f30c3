"""Reading topics the way a test must: to an end offset taken first, by position, or failing.

Reads compare the consumer's position with the end offset, not record counts: transaction
markers and aborted records take offsets but are never delivered, so a loop counting records
(or stopping at the first non-empty fetch) either waits forever or checks only part of a topic.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    IsolationLevel,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

T = TypeVar("T")

TIMEOUT_S = 30.0


def end_offsets(admin: AdminClient, tps: Sequence[TopicPartition], *, committed: bool) -> dict[int, int]:
    """Partition -> end offset: the last stable offset (read_committed) or the high watermark."""
    level = IsolationLevel.READ_COMMITTED if committed else IsolationLevel.READ_UNCOMMITTED
    futures = admin.list_offsets(
        {tp: OffsetSpec.latest() for tp in tps}, isolation_level=level, request_timeout=TIMEOUT_S
    )
    return {tp.partition: future.result().offset for tp, future in futures.items()}


def settled_end_offsets(
    admin: AdminClient, tps: Sequence[TopicPartition], timeout: float = TIMEOUT_S
) -> dict[int, int]:
    """End offsets once no transaction is open on the partitions (last stable offset = high watermark).

    commit_transaction() returns when the coordinator has logged the decision; the commit
    markers reach the partitions a moment later, and until then the last stable offset stays
    before the transaction's first record. So a reader started right after a commit must wait
    for the LSO to move, as here, or it misses the last transaction.

    Raises:
        AssertionError: a transaction stayed open for `timeout` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        lso = end_offsets(admin, tps, committed=True)
        high_watermark = end_offsets(admin, tps, committed=False)
        if lso == high_watermark:
            return lso
        assert time.monotonic() < deadline, f"LSO {lso} never reached the high watermark {high_watermark}"
        time.sleep(0.05)


def read_until(consumer: Consumer, ends: Mapping[int, int], deadline: float) -> list[Message]:
    """Poll until the position of every assigned partition reaches its end offset.

    Raises:
        AssertionError: the positions did not reach the end offsets by `deadline` (monotonic).
    """
    records: list[Message] = []
    while True:
        positions = {tp.partition: tp.offset for tp in consumer.position(consumer.assignment())}
        if all(positions.get(p, -1) >= end for p, end in ends.items() if end > 0):
            return records
        if time.monotonic() > deadline:
            raise AssertionError(f"positions {positions} did not reach the end offsets {dict(ends)}")
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        if msg.error() is not None:
            if msg.error().code() == KafkaError._PARTITION_EOF:
                continue
            raise KafkaException(msg.error())
        records.append(msg)


def read_committed(
    servers: str,
    topic: str,
    partitions: Iterable[int],
    timeout: float = TIMEOUT_S,
    *,
    config: Mapping[str, Any] | None = None,
) -> list[Message]:
    """Every committed record of `partitions` of `topic`, from the beginning to their settled end offsets.

    `config`: more librdkafka settings (a secured cluster's credentials).

    Raises:
        AssertionError: the end offsets were not settled, or not reached, within `timeout` seconds.
    """
    deadline = time.monotonic() + timeout
    tps = [TopicPartition(topic, p) for p in partitions]
    extra = dict(config or {})
    ends = settled_end_offsets(AdminClient({"bootstrap.servers": servers, **extra}), tps, timeout)
    consumer = Consumer(
        {
            **extra,
            "bootstrap.servers": servers,
            "group.id": f"{topic}-test-reader",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    try:
        consumer.assign([TopicPartition(topic, tp.partition, OFFSET_BEGINNING) for tp in tps])
        return read_until(consumer, ends, deadline)
    finally:
        consumer.close()


def wait_for_record(
    servers: str,
    topic: str,
    partition: int,
    what: str,
    match: Callable[[Message], T | None],
    timeout: float = TIMEOUT_S,
) -> T:
    """Read committed records of one partition from the beginning until `match` returns non-None.

    Args:
        servers: bootstrap servers.
        topic: the topic.
        partition: the partition to read.
        what: the awaited record, for the failure message.
        match: returns what the caller wants from a matching record, None for any other record.
        timeout: seconds after which the test fails.

    Raises:
        AssertionError: no record matched within `timeout` seconds.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": servers,
            "group.id": f"{topic}-test-reader",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    deadline = time.monotonic() + timeout
    read = 0
    try:
        consumer.assign([TopicPartition(topic, partition, OFFSET_BEGINNING)])
        while time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            if msg.error() is not None:
                raise KafkaException(msg.error())
            read += 1
            found = match(msg)
            if found is not None:
                return found
    finally:
        consumer.close()
    raise AssertionError(
        f"timed out after {timeout:g} s waiting until {what} ({topic}[{partition}], {read} records read)"
    )


def create_topic(servers: str, topic: str, partitions: int = 1, config: Mapping[str, str] | None = None) -> None:
    """Create `topic` (replication factor 1, or 3 on a cluster of three) and wait until it has leaders."""
    admin = AdminClient({"bootstrap.servers": servers})
    rf = min(3, len(admin.list_topics(timeout=TIMEOUT_S).brokers))
    new = NewTopic(topic, num_partitions=partitions, replication_factor=rf, config=dict(config or {}))
    admin.create_topics([new])[topic].result(TIMEOUT_S)
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        meta = admin.list_topics(topic=topic, timeout=TIMEOUT_S).topics.get(topic)
        if meta is not None and meta.error is None and all(p.leader >= 0 for p in meta.partitions.values()):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"topic {topic} has no leaders after {TIMEOUT_S} s")
        time.sleep(0.1)


def produce_all(servers: str, topic: str, records: Iterable[tuple[bytes | str | None, bytes | str]]) -> None:
    """Produce (key, value) records to `topic` (idempotent producer) and wait for every acknowledgment."""
    producer = Producer({"bootstrap.servers": servers, "enable.idempotence": True, "linger.ms": 5})
    failures: list[str] = []

    def report(err: object, _msg: object) -> None:
        if err is not None:
            failures.append(str(err))

    for key, value in records:
        while True:
            try:
                producer.produce(topic, value, key, on_delivery=report)
                break
            except BufferError:
                producer.poll(0.05)
    left = producer.flush(TIMEOUT_S)
    assert left == 0 and not failures, f"{left} records unacknowledged, failures: {failures[:3]}"


def read_committed_until(
    servers: str, topic: str, partitions: Iterable[int], count: int, timeout: float = 120.0
) -> list[Message]:
    """Read `topic` (read_committed) from the beginning until `count` records arrived; fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    consumer = Consumer(
        {"bootstrap.servers": servers, "group.id": f"{topic}-until", "enable.auto.commit": False,
         "isolation.level": "read_committed"}
    )  # fmt: skip
    got: list[Message] = []
    try:
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        while len(got) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{topic}: {len(got)} of {count} records within {timeout:.0f} s")
            for m in consumer.consume(1000, 0.2):
                if m.error() is None:
                    got.append(m)
        return got
    finally:
        consumer.close()
