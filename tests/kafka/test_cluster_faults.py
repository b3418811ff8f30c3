"""The 3-node KRaft cluster survives the loss of one broker (RF 3, min ISR 2).

Marked ``cluster``: skipped unless GRCTL_TEST_CLUSTER=1 or the run selects ``-m cluster``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, IsolationLevel, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

pytestmark = [pytest.mark.kafka, pytest.mark.cluster]

TIMEOUT_S = 60.0


class Cluster(Protocol):
    name: str
    bootstrap: str
    brokers: int

    def kill_node(self, node_id: int) -> None: ...

    def restart_node(self, node_id: int) -> None: ...


def wait_for(what: str, check: Callable[[], bool], timeout: float = TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s waiting until {what}"
        time.sleep(0.2)


def partition_state(admin: AdminClient, topic: str) -> tuple[int, list[int]]:
    """Leader id and ISR of partition 0, as the metadata reports them.

    A topic created a moment ago may be listed before its partition is (a CI run met an empty
    partition map): that reads as no leader and no ISR yet.
    """
    topic_meta = admin.list_topics(topic, timeout=10).topics.get(topic)
    meta = topic_meta.partitions.get(0) if topic_meta is not None else None
    if meta is None:
        return -1, []
    return meta.leader, sorted(meta.isrs)


def test_transaction_commits_with_two_of_three_brokers_then_node_rejoins(cluster3: Cluster, unique_name: str) -> None:
    admin = AdminClient({"bootstrap.servers": cluster3.bootstrap})
    topic = unique_name
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=3)])[topic].result(TIMEOUT_S)
    wait_for("the topic has 3 in-sync replicas", lambda: len(partition_state(admin, topic)[1]) == 3)
    victim, _ = partition_state(admin, topic)  # kill the partition leader: forces an election

    producer = Producer(
        {"bootstrap.servers": cluster3.bootstrap, "transactional.id": f"{unique_name}-txn", "acks": "all"}
    )
    producer.init_transactions(TIMEOUT_S)
    producer.begin_transaction()
    producer.produce(topic, value=b"before")
    producer.commit_transaction(TIMEOUT_S)

    cluster3.kill_node(victim)
    try:
        wait_for(
            f"node {victim} leaves the ISR and a new leader is elected",
            lambda: (state := partition_state(admin, topic))[0] not in (victim, -1) and victim not in state[1],
        )
        # 2 of 3 replicas in sync = min.insync.replicas: acks=all transactional writes succeed.
        producer.begin_transaction()
        for i in range(10):
            producer.produce(topic, value=f"during-{i}".encode())
        producer.commit_transaction(TIMEOUT_S)

        tp = TopicPartition(topic, 0)
        expected = [b"before", *(f"during-{i}".encode() for i in range(10))]

        def lso_settled() -> bool:
            futures = {
                level: admin.list_offsets({tp: OffsetSpec.latest()}, isolation_level=level)[tp]
                for level in IsolationLevel
            }
            offsets = {level: f.result().offset for level, f in futures.items()}
            return offsets[IsolationLevel.READ_COMMITTED] == offsets[IsolationLevel.READ_UNCOMMITTED]

        wait_for("the last stable offset reaches the high watermark", lso_settled)
        consumer = Consumer(
            {
                "bootstrap.servers": cluster3.bootstrap,
                "group.id": f"{unique_name}-reader",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
            }
        )
        try:
            consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
            seen: list[bytes] = []
            deadline = time.monotonic() + TIMEOUT_S
            while len(seen) < len(expected):
                assert time.monotonic() < deadline, f"read only {seen}"
                msg = consumer.poll(0.5)
                if msg is None or (msg.error() and msg.error().code() == KafkaError._PARTITION_EOF):
                    continue
                assert msg.error() is None, msg.error()
                seen.append(msg.value())
        finally:
            consumer.close()
        assert seen == expected
    finally:
        cluster3.restart_node(victim)

    assert set(admin.list_topics(timeout=10).brokers) == {1, 2, 3}
    wait_for(f"node {victim} is back in the ISR", lambda: len(partition_state(admin, topic)[1]) == 3)
