"""The Kafka toolkit (`grctl.kafka.offsets`, `grctl.kafka.reading`) against a real broker.

Transactions leave commit and abort markers at the end of a partition, which take offsets but
are never delivered: reads must end there by position (DESIGN.md §11), and offsets of a topic
created a moment ago must be readable at once.
"""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from grctl.kafka.offsets import earliest_offsets, latest_offsets, offsets_for_time
from grctl.kafka.reading import consume_available, read_partitions
from tests.support.topics import TIMEOUT_S, create_topic, settled_end_offsets

pytestmark = pytest.mark.kafka


def committed_consumer(servers: str, group: str, *, eof: bool) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": servers,
            "group.id": group,
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": eof,
        }
    )


def write_transactions(servers: str, topic: str, partitions: int = 1) -> None:
    """p0: a, b, c committed, then x, y aborted; p1 (if any): d, e committed. Each ends with a marker."""
    producer = Producer({"bootstrap.servers": servers, "transactional.id": f"{topic}-tx"})
    producer.init_transactions(TIMEOUT_S)
    producer.begin_transaction()
    for value in (b"a", b"b", b"c"):
        producer.produce(topic, value, b"k", partition=0)
    for value in (b"d", b"e") if partitions > 1 else ():
        producer.produce(topic, value, b"k", partition=1)
    producer.commit_transaction(TIMEOUT_S)
    producer.begin_transaction()
    for value in (b"x", b"y"):
        producer.produce(topic, value, b"k", partition=0)
    producer.flush(TIMEOUT_S)
    producer.abort_transaction(TIMEOUT_S)


def test_offsets_of_a_topic_created_a_moment_ago(kafka_bootstrap: str, unique_name: str) -> None:
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    admin.create_topics([NewTopic(unique_name, num_partitions=3, replication_factor=1)])[unique_name].result(TIMEOUT_S)
    # No wait for leaders: a partition without one yet is asked again (grctl.kafka.retry).
    assert latest_offsets(admin, unique_name, [0, 1, 2]) == {0: 0, 1: 0, 2: 0}
    assert earliest_offsets(admin, unique_name, [0, 1, 2]) == {0: 0, 1: 0, 2: 0}
    assert offsets_for_time(admin, unique_name, [0], int(time.time() * 1000)) == {0: -1}


@pytest.mark.parametrize("eof", [True, False], ids=["end-of-partition events", "positions only"])
def test_a_read_ends_at_the_last_stable_offset_past_the_markers(
    kafka_bootstrap: str, unique_name: str, eof: bool
) -> None:
    create_topic(kafka_bootstrap, unique_name, partitions=2)
    write_transactions(kafka_bootstrap, unique_name, partitions=2)
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    ends = settled_end_offsets(admin, [TopicPartition(unique_name, p) for p in (0, 1)])
    assert latest_offsets(admin, unique_name, [0, 1]) == ends
    assert ends == {0: 7, 1: 3}  # p0: a b c, commit marker, x y, abort marker; p1: d e, commit marker
    consumer = committed_consumer(kafka_bootstrap, unique_name, eof=eof)
    try:
        t0 = time.monotonic()
        got = [
            (m.partition(), m.offset(), m.value())
            for m in read_partitions(consumer, unique_name, {0: (0, ends[0]), 1: (0, ends[1])}, timeout=TIMEOUT_S)
        ]
        assert time.monotonic() - t0 < TIMEOUT_S / 2  # ended on its own, not by the timeout
        assert sorted(got) == [(0, 0, b"a"), (0, 1, b"b"), (0, 2, b"c"), (1, 0, b"d"), (1, 1, b"e")]
        # A range in the middle, on the same consumer: exactly its records.
        middle = [(m.offset(), m.value()) for m in read_partitions(consumer, unique_name, {0: (1, 3)})]
        assert middle == [(1, b"b"), (2, b"c")]
        # An empty range reads nothing and returns at once.
        assert list(read_partitions(consumer, unique_name, {0: (7, 7)})) == []
    finally:
        consumer.close()


def test_a_tail_stops_when_asked_and_a_read_past_the_end_times_out(kafka_bootstrap: str, unique_name: str) -> None:
    create_topic(kafka_bootstrap, unique_name)
    write_transactions(kafka_bootstrap, unique_name)
    settled_end_offsets(AdminClient({"bootstrap.servers": kafka_bootstrap}), [TopicPartition(unique_name, 0)])
    consumer = committed_consumer(kafka_bootstrap, unique_name, eof=True)
    try:
        seen: list[bytes | None] = []
        tail = read_partitions(
            consumer, unique_name, {0: (0, None)}, should_stop=lambda: len(seen) >= 3, timeout=TIMEOUT_S
        )
        for m in tail:
            seen.append(m.value())
        assert seen == [b"a", b"b", b"c"]
        with pytest.raises(TimeoutError, match=rf"reading {unique_name} took longer than 1s; partitions \[0\]"):
            for _ in read_partitions(consumer, unique_name, {0: (0, 100)}, timeout=1.0):
                pass
    finally:
        consumer.close()


def test_consume_available_takes_what_is_ready_without_waiting_for_more(kafka_bootstrap: str, unique_name: str) -> None:
    create_topic(kafka_bootstrap, unique_name)
    consumer = committed_consumer(kafka_bootstrap, unique_name, eof=False)
    try:
        consumer.assign([TopicPartition(unique_name, 0, 0)])
        t0 = time.monotonic()
        assert consume_available(consumer, 100, 0.3) == []
        assert time.monotonic() - t0 < 5.0
        write_transactions(kafka_bootstrap, unique_name)
        got: list[bytes | None] = []
        deadline = time.monotonic() + TIMEOUT_S
        while len(got) < 3 and time.monotonic() < deadline:
            got += [m.value() for m in consume_available(consumer, 2, 0.5) if m.error() is None]
        assert got == [b"a", b"b", b"c"]
    finally:
        consumer.close()
