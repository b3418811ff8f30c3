"""librdkafka's murmur2 partitioner and grctl's partition_for must pick the same partition."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # NewTopic is not in the stub's exports
    AdminClient,
    NewTopic,
)

from grctl.kafka.partitioner import partition_for

pytestmark = pytest.mark.kafka

NUM_PARTITIONS = 12
NUM_RECORDS = 500


@pytest.fixture
def topic(kafka_bootstrap: str) -> Iterator[str]:
    name = f"grctl-test-partitioner-{uuid.uuid4().hex}"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    futures = admin.create_topics([NewTopic(name, num_partitions=NUM_PARTITIONS, replication_factor=1)])
    futures[name].result(timeout=30)
    yield name
    for future in admin.delete_topics([name], operation_timeout=30).values():
        try:
            future.result(timeout=30)
        except KafkaException:
            pass  # best effort: the topic name is unique, a leftover harms no other test


def _keys() -> list[str | bytes]:
    keys: list[str | bytes] = []
    for i in range(NUM_RECORDS):
        if i % 5 == 0:
            keys.append(f"wf-\u00e9\u4e2d-{i}")  # multi-byte UTF-8
        elif i % 5 == 1:
            keys.append(uuid.UUID(int=i * 7919).bytes)  # raw bytes, including >= 0x80
        elif i % 5 == 2:
            keys.append("k" * (1 + i % 8))  # short keys: every tail length (an empty key may become null)
        else:
            keys.append(f"order-{uuid.UUID(int=i)}")
    return keys


def test_librdkafka_murmur2_random_agrees_with_partition_for(kafka_bootstrap: str, topic: str) -> None:
    producer = Producer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "partitioner": "murmur2_random",
            "linger.ms": 5,
        }
    )
    delivered: list[tuple[str | bytes, int]] = []
    errors: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            errors.append(err)
            return
        key, partition = msg.key(), msg.partition()
        assert key is not None
        assert partition is not None
        delivered.append((key, partition))

    keys = _keys()
    for key in keys:
        producer.produce(topic, key=key, value=b"v", on_delivery=on_delivery)
        producer.poll(0)
    remaining = producer.flush(30)

    assert remaining == 0, f"{remaining} records were not delivered within 30 s"
    assert errors == []
    assert len(delivered) == NUM_RECORDS
    mismatches = [
        (key, partition, partition_for(key, NUM_PARTITIONS))
        for key, partition in delivered
        if partition != partition_for(key, NUM_PARTITIONS)
    ]
    assert mismatches == []
    # The keys must exercise the whole topic, or the check above proves little.
    assert {partition for _, partition in delivered} == set(range(NUM_PARTITIONS))
