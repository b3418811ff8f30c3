"""What a namespace looks like from outside: its topics and configs, its workers and their lag.

`describe_namespace` is what `grctl namespace describe --json` prints and what the web UI's
namespace page shows. It reads the cluster with an admin client only (no worker needed).

May import: `grctl.errors`, `grctl.kafka`, confluent-kafka.
"""

from __future__ import annotations

import contextlib
from typing import Any, Final

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # untyped re-exports
    AdminClient,
    ConfigResource,
    OffsetSpec,
    ResourceType,
)

from grctl.errors import KafkaSetupError, NamespaceNotFoundError
from grctl.kafka.connection import Connection
from grctl.kafka.offsets import offsets_of
from grctl.kafka.settings_topic import NamespaceSettings, read_settings
from grctl.kafka.topics import TopicNames

__all__ = ["REQUEST_TIMEOUT_S", "SHOWN_CONFIGS", "describe_namespace", "settings_json", "worker_group"]

#: The topic configs shown, by cleanup policy.
SHOWN_CONFIGS: Final = {
    "delete": ("cleanup.policy", "retention.ms", "min.insync.replicas"),
    "compact": ("cleanup.policy", "min.compaction.lag.ms", "delete.retention.ms", "segment.ms", "min.insync.replicas"),
}
#: Bound of each admin request.
REQUEST_TIMEOUT_S: Final = 15.0


def worker_group(namespace: str) -> str:
    """The consumer group of a namespace's workers."""
    return f"grctl.{namespace}.workers"


def settings_json(settings: NamespaceSettings) -> dict[str, Any]:
    """The namespace's settings as `--json` prints them."""
    return {"run_retention_ms": settings.run_retention_ms, "type_retention_ms": dict(settings.type_retention_ms)}


def describe_namespace(admin: AdminClient, names: TopicNames, conn: Connection) -> dict[str, Any]:
    """The namespace's topics (partitions, replication, offsets, configs), settings, workers and lag.

    Lag is per partition of the directives topic: its last stable offset minus what the
    workers' group has committed.

    Raises:
        NamespaceNotFoundError: none of the namespace's topics exists.
        KafkaSetupError: the offsets cannot be read.
    """
    md = {t: admin.list_topics(topic=t, timeout=REQUEST_TIMEOUT_S).topics.get(t) for t in names.all()}
    present = {t: m for t, m in md.items() if m is not None and m.error is None}
    if not present:
        raise NamespaceNotFoundError(names.namespace)
    resources = [ConfigResource(ResourceType.TOPIC, t) for t in present]
    configs: dict[str, dict[str, str]] = {}
    for res, fut in admin.describe_configs(resources, request_timeout=REQUEST_TIMEOUT_S).items():
        entries = fut.result()
        policy = entries["cleanup.policy"].value if "cleanup.policy" in entries else "delete"
        shown = SHOWN_CONFIGS["compact" if "compact" in policy else "delete"]
        configs[res.name] = {k: entries[k].value for k in shown if k in entries}

    tps = [TopicPartition(t, p) for t, m in present.items() for p in m.partitions]
    ends = offsets_of(admin, tps, OffsetSpec.latest(), timeout=REQUEST_TIMEOUT_S)  # type: ignore[no-untyped-call]
    starts = offsets_of(admin, tps, OffsetSpec.earliest(), timeout=REQUEST_TIMEOUT_S)  # type: ignore[no-untyped-call]

    topics = []
    for t, m in present.items():
        parts = m.partitions
        rf = len(parts[0].replicas) if 0 in parts else 0
        under = sum(1 for pm in parts.values() if len(pm.isrs) < len(pm.replicas))
        topics.append(
            {
                "name": t,
                "role": t.rsplit(".", 1)[1],
                "partitions": len(parts),
                "replication_factor": rf,
                "under_replicated_partitions": under,
                "offsets": sum(max(0, ends[(t, p)] - starts[(t, p)]) for p in parts),
                "configs": configs.get(t, {}),
            }
        )
    missing = [t for t in names.all() if t not in present]

    group = worker_group(names.namespace)
    members: list[dict[str, Any]] = []
    state = "unknown"
    owner: dict[int, str] = {}
    try:
        desc = admin.describe_consumer_groups([group], request_timeout=REQUEST_TIMEOUT_S)[group].result()
        state = str(getattr(desc.state, "name", desc.state)).lower()
        for mem in desc.members:
            assigned = sorted(tp.partition for tp in mem.assignment.topic_partitions if tp.topic == names.directives)
            label = mem.group_instance_id or mem.client_id
            for p in assigned:
                owner[p] = label
            members.append(
                {
                    "client_id": mem.client_id,
                    "instance_id": mem.group_instance_id,
                    "host": mem.host,
                    "partitions": assigned,
                }
            )
    except KafkaException:
        state = "none"
    committed: dict[int, int] = {}
    try:
        res = admin.list_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(group)], request_timeout=REQUEST_TIMEOUT_S
        )[group].result()
        for tp in res.topic_partitions or []:
            if tp.topic == names.directives and tp.offset >= 0:
                committed[tp.partition] = tp.offset
    except KafkaException:
        pass
    lag_rows = []
    directives = present.get(names.directives)
    for p in sorted(directives.partitions if directives is not None else []):
        end = ends[(names.directives, p)]
        done = committed.get(p, starts[(names.directives, p)])
        lag_rows.append(
            {
                "partition": p,
                "end_offset": end,
                "committed": committed.get(p),
                "lag": max(0, end - done),
                "owner": owner.get(p),
            }
        )
    settings: dict[str, Any] | None = None
    if names.config in present:
        with contextlib.suppress(KafkaSetupError):
            settings = settings_json(read_settings(conn, REQUEST_TIMEOUT_S))
    return {
        "namespace": names.namespace,
        "settings": settings,
        "partitions": topics[0]["partitions"] if topics else 0,
        "topics": topics,
        "missing_topics": missing,
        "workers": {"group": group, "state": state, "members": members},
        "lag": {"total": sum(r["lag"] for r in lag_rows), "partitions": lag_rows},
    }
