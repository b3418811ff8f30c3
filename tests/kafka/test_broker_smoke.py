"""Smoke tests of the real broker: the Kafka behaviour the engine is built on.

Each test creates its own topics (unique names) and asserts what the broker and the clients
really do: EOS v2 consume-transform-produce, aborts invisible to read_committed readers,
producer fencing, compaction, restore to the last stable offset, and aiokafka's transactions.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence

import pytest
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from grctl.kafka.topics import wait_for_leaders
from tests.support.topics import end_offsets, read_until, settled_end_offsets

pytestmark = pytest.mark.kafka

TIMEOUT_S = 30.0
# The broker's log cleaner wakes every log.cleaner.backoff.ms (1 s on grctl's local broker,
# 15 s by default elsewhere), so compaction shows well within this.
COMPACTION_WAIT_S = 60.0


# --------------------------------------------------------------------------------------------
# Helpers


@pytest.fixture(scope="module")
def admin(kafka_bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": kafka_bootstrap})


def create_topics(
    admin: AdminClient, names: Sequence[str], *, partitions: int = 1, config: Mapping[str, str] | None = None
) -> None:
    futures = admin.create_topics(
        [NewTopic(n, num_partitions=partitions, replication_factor=-1, config=dict(config or {})) for n in names],
        operation_timeout=TIMEOUT_S,
    )
    for future in futures.values():
        future.result(timeout=TIMEOUT_S)
    wait_for_leaders(admin, list(names), TIMEOUT_S)  # a new topic answers UNKNOWN_TOPIC for a moment


def produce_plain(bootstrap: str, topic: str, records: Sequence[tuple[str, str]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True})
    for key, value in records:
        producer.produce(topic, key=key.encode(), value=value.encode())
    assert producer.flush(TIMEOUT_S) == 0


def transactional_producer(bootstrap: str, transactional_id: str) -> Producer:
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": transactional_id})
    producer.init_transactions(TIMEOUT_S)
    return producer


def read_all(bootstrap: str, admin: AdminClient, topic: str, *, committed: bool, partitions: int = 1) -> list[Message]:
    """Every record a reader of this isolation level sees, from the beginning to the end offset."""
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    ends = settled_end_offsets(admin, tps) if committed else end_offsets(admin, tps, committed=False)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"{topic}-reader",
            "enable.auto.commit": False,
            "isolation.level": "read_committed" if committed else "read_uncommitted",
        }
    )
    try:
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        return read_until(consumer, ends, time.monotonic() + TIMEOUT_S)
    finally:
        consumer.close()


def values(records: Sequence[Message]) -> list[bytes]:
    return [m.value() for m in records]


def committed_offset(bootstrap: str, group: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        (tp,) = consumer.committed([TopicPartition(topic, 0)], timeout=TIMEOUT_S)
        return int(tp.offset)
    finally:
        consumer.close()


@pytest.fixture
def two_topics(admin: AdminClient, unique_name: str) -> Iterator[tuple[str, str]]:
    src, dst = f"{unique_name}-in", f"{unique_name}-out"
    create_topics(admin, [src, dst])
    yield src, dst
    admin.delete_topics([src, dst], operation_timeout=TIMEOUT_S)


# --------------------------------------------------------------------------------------------
# Transactions


def test_eos_v2_consume_transform_produce_commits_output_and_offsets(
    kafka_bootstrap: str, admin: AdminClient, two_topics: tuple[str, str], unique_name: str
) -> None:
    src, dst = two_topics
    group = f"{unique_name}-group"
    n = 20
    produce_plain(kafka_bootstrap, src, [(f"k{i}", f"v{i}") for i in range(n)])

    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": group,
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
        }
    )
    producer = transactional_producer(kafka_bootstrap, f"{unique_name}-txn")
    consumer.subscribe([src])
    processed, transactions = 0, 0
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while processed < n:
            assert time.monotonic() < deadline, f"processed only {processed} of {n} records"
            batch = consumer.consume(num_messages=6, timeout=1.0)
            if not batch:
                continue
            producer.begin_transaction()
            for msg in batch:
                assert msg.error() is None, msg.error()
                producer.produce(dst, key=msg.key(), value=msg.value().upper())
            # EOS v2 (KIP-447): the offsets go in the transaction with the group's metadata.
            positions = consumer.position(consumer.assignment())
            producer.send_offsets_to_transaction(positions, consumer.consumer_group_metadata(), TIMEOUT_S)
            producer.commit_transaction(TIMEOUT_S)
            processed += len(batch)
            transactions += 1
    finally:
        consumer.close()

    assert transactions >= 2  # several transactions, not one lucky batch
    assert values(read_all(kafka_bootstrap, admin, dst, committed=True)) == [f"V{i}".encode() for i in range(n)]
    assert committed_offset(kafka_bootstrap, group, src) == n


def test_aborted_transaction_is_invisible_to_read_committed(
    kafka_bootstrap: str, admin: AdminClient, two_topics: tuple[str, str], unique_name: str
) -> None:
    topic, _ = two_topics
    producer = transactional_producer(kafka_bootstrap, f"{unique_name}-txn")
    producer.begin_transaction()
    for i in range(5):
        producer.produce(topic, key=b"k", value=f"aborted-{i}".encode())
    assert producer.flush(TIMEOUT_S) == 0  # the records reach the log before the abort
    producer.abort_transaction(TIMEOUT_S)
    producer.begin_transaction()
    producer.produce(topic, key=b"k", value=b"committed")
    producer.commit_transaction(TIMEOUT_S)

    assert values(read_all(kafka_bootstrap, admin, topic, committed=True)) == [b"committed"]
    assert values(read_all(kafka_bootstrap, admin, topic, committed=False)) == [
        *(f"aborted-{i}".encode() for i in range(5)),
        b"committed",
    ]


def test_second_producer_with_same_transactional_id_fences_the_first(
    kafka_bootstrap: str, admin: AdminClient, two_topics: tuple[str, str], unique_name: str
) -> None:
    topic, _ = two_topics
    txn_id = f"{unique_name}-txn"
    first = transactional_producer(kafka_bootstrap, txn_id)
    first.begin_transaction()
    first.produce(topic, value=b"from-first")
    assert first.flush(TIMEOUT_S) == 0

    # init_transactions bumps the epoch: the broker aborts the first's open transaction.
    second = transactional_producer(kafka_bootstrap, txn_id)

    with pytest.raises(KafkaException) as excinfo:
        first.commit_transaction(TIMEOUT_S)
    error = excinfo.value.args[0]
    assert error.fatal(), error
    assert error.code() in {KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH}
    # Fatal means every later transactional call fails too: the producer must be replaced.
    with pytest.raises(KafkaException):
        first.begin_transaction()

    second.begin_transaction()
    second.produce(topic, value=b"from-second")
    second.commit_transaction(TIMEOUT_S)
    assert values(read_all(kafka_bootstrap, admin, topic, committed=True)) == [b"from-second"]


# --------------------------------------------------------------------------------------------
# Compaction and restore


def test_compacted_topic_keeps_latest_value_per_key(kafka_bootstrap: str, admin: AdminClient, unique_name: str) -> None:
    topic = f"{unique_name}-compact"
    config = {
        "cleanup.policy": "compact",
        "segment.ms": "100",  # roll the segment at the first append after 100 ms
        "min.cleanable.dirty.ratio": "0.01",
        "min.compaction.lag.ms": "0",
        "delete.retention.ms": "100",
    }
    create_topics(admin, [topic], config=config)
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    described = admin.describe_configs([resource])[resource].result(timeout=TIMEOUT_S)
    assert {k: described[k].value for k in config} == config

    keys = [f"k{i}" for i in range(5)]
    produce_plain(kafka_bootstrap, topic, [(k, f"{k}-v{v}") for v in range(10) for k in keys])
    time.sleep(0.3)
    # The active segment is never compacted: this record rolls the 50 above into a closed one.
    produce_plain(kafka_bootstrap, topic, [("roll", "roll")])

    latest = {k: f"{k}-v9".encode() for k in keys} | {"roll": b"roll"}
    deadline = time.monotonic() + COMPACTION_WAIT_S
    while True:
        records = read_all(kafka_bootstrap, admin, topic, committed=True)
        seen = [(m.key().decode(), m.value()) for m in records]
        if len(seen) == len(latest):
            break
        assert time.monotonic() < deadline, f"not compacted after {COMPACTION_WAIT_S:.0f} s: {len(seen)} records"
        time.sleep(1.0)
    assert dict(seen) == latest
    assert [k for k, _ in seen] == [*keys, "roll"]  # compaction keeps the offset order
    # Offsets of removed records stay gaps: the survivors keep their original offsets.
    assert [m.offset() for m in records] == [45, 46, 47, 48, 49, 50]


def test_restore_reads_to_last_stable_offset_past_a_commit_marker(
    kafka_bootstrap: str, admin: AdminClient, two_topics: tuple[str, str], unique_name: str
) -> None:
    topic, _ = two_topics
    producer = transactional_producer(kafka_bootstrap, f"{unique_name}-txn")
    for count, commit in ((5, True), (3, False), (2, True)):
        producer.begin_transaction()
        for i in range(count):
            producer.produce(topic, key=b"k", value=f"{'c' if commit else 'a'}{i}".encode())
        if commit:
            producer.commit_transaction(TIMEOUT_S)
        else:
            assert producer.flush(TIMEOUT_S) == 0
            producer.abort_transaction(TIMEOUT_S)

    tp = TopicPartition(topic, 0)
    lso = settled_end_offsets(admin, [tp])[0]
    # 5 + marker, 3 aborted + marker, 2 + marker: the last offset is a commit marker.
    assert lso == 13

    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": f"{unique_name}-restore",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    try:
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        records = read_until(consumer, {0: lso}, time.monotonic() + TIMEOUT_S)
        (position,) = consumer.position([tp])
    finally:
        consumer.close()
    assert values(records) == [b"c0", b"c1", b"c2", b"c3", b"c4", b"c0", b"c1"]
    # 7 records delivered but the position is 13: a loop waiting for "lso - 1" records or for
    # a record at offset lso - 1 would never end (Faust's restore hang).
    assert position.offset == lso
    assert records[-1].offset() == lso - 2


# --------------------------------------------------------------------------------------------
# aiokafka


async def test_aiokafka_transactional_consume_transform_produce(
    kafka_bootstrap: str, admin: AdminClient, two_topics: tuple[str, str], unique_name: str
) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    src, dst = two_topics
    group = f"{unique_name}-group"
    n = 12
    produce_plain(kafka_bootstrap, src, [(f"k{i}", f"v{i}") for i in range(n)])

    consumer = AIOKafkaConsumer(
        src,
        bootstrap_servers=kafka_bootstrap,
        group_id=group,
        isolation_level="read_committed",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, transactional_id=f"{unique_name}-txn")
    await producer.start()
    await consumer.start()
    processed, transactions = 0, 0
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while processed < n:
            assert time.monotonic() < deadline, f"processed only {processed} of {n} records"
            batch = await consumer.getmany(timeout_ms=1000, max_records=5)
            if not batch:
                continue
            async with producer.transaction():
                offsets = {}
                for tp, msgs in batch.items():
                    for msg in msgs:
                        assert msg.value is not None
                        await producer.send(dst, key=msg.key, value=msg.value.upper())
                    offsets[tp] = msgs[-1].offset + 1
                    processed += len(msgs)
                # aiokafka takes the group id only (no consumer group metadata, so EOS v1-style
                # offset commits without generation fencing).
                await producer.send_offsets_to_transaction(offsets, group)
            transactions += 1
    finally:
        await consumer.stop()
        await producer.stop()

    assert transactions >= 2
    assert values(read_all(kafka_bootstrap, admin, dst, committed=True)) == [f"V{i}".encode() for i in range(n)]
    assert committed_offset(kafka_bootstrap, group, src) == n
