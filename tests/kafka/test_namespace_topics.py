"""Namespace topics: created with the right configs, co-partitioned, and mismatches refused."""

from __future__ import annotations

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from grctl import Connection
from grctl.errors import KafkaSetupError, TopicMismatchError
from grctl.kafka.topics import TopicNames, wait_for_leaders

pytestmark = pytest.mark.kafka


async def test_connect_creates_co_partitioned_topics_with_compacted_state(
    kafka_bootstrap: str, unique_name: str
) -> None:
    ns = "ns" + unique_name[-12:]
    conn = await Connection.connect(kafka_bootstrap, ns, partitions=6)
    assert conn.num_partitions == 6
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    md = admin.list_topics(timeout=10)
    for topic in TopicNames(ns).partitioned():
        assert len(md.topics[topic].partitions) == 6
    assert len(md.topics[conn.topics.config].partitions) == 1  # the namespace's settings
    for topic in (conn.topics.state, conn.topics.config):
        res = ConfigResource(ConfigResource.Type.TOPIC, topic)
        configs = admin.describe_configs([res])[res].result(10)
        assert configs["cleanup.policy"].value == "compact"
    # Connecting again keeps the existing partition count, whatever is asked.
    again = await Connection.connect(kafka_bootstrap, ns, partitions=12)
    assert again.num_partitions == 6


async def test_mismatched_partition_counts_are_refused(kafka_bootstrap: str, unique_name: str) -> None:
    ns = "mm" + unique_name[-12:]
    names = TopicNames(ns)
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    futures = admin.create_topics(
        [NewTopic(names.directives, 4, 1), NewTopic(names.history, 3, 1)], operation_timeout=30
    )
    for f in futures.values():
        f.result(30)
    wait_for_leaders(admin, [names.directives, names.history], 30)
    with pytest.raises(TopicMismatchError) as info:
        await Connection.connect(kafka_bootstrap, ns)
    assert info.value.topic == names.history
    assert (info.value.expected, info.value.found) == (4, 3)
    assert "co-partitioned" in str(info.value)


async def test_unreachable_broker_is_a_clear_error() -> None:
    with pytest.raises(KafkaSetupError, match=r"cannot reach Kafka at 127\.0\.0\.1:1 .*grctl dev kafka start"):
        await Connection.connect("127.0.0.1:1", "nobroker", timeout=2.0)


async def test_missing_namespace_without_create_is_a_clear_error(kafka_bootstrap: str, unique_name: str) -> None:
    with pytest.raises(KafkaSetupError, match="grctl namespace create"):
        await Connection.connect(kafka_bootstrap, "missing" + unique_name[-12:], create_namespace=False)
