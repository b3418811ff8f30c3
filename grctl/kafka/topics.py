"""Namespace topics: names, configs, creation and the co-partitioning check."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]  # untyped re-export

from grctl import defaults
from grctl.errors import InvalidArgumentError, KafkaAuthorizationError, KafkaSetupError, TopicMismatchError
from grctl.kafka.acls import is_refusal, kafka_error_of, namespace_prefix, topic_refusal
from grctl.kafka.retry import is_leaderless, retry_while_leaderless

logger = logging.getLogger(__name__)

DEFAULT_PARTITIONS = defaults.PARTITIONS
#: The co-partitioned roles (same partition count, records about a workflow id on the same
#: partition of each) and the namespace's settings topic (one partition, compacted).
PARTITIONED_ROLES = ("directives", "history", "state", "replies", "dead-letter")
CONFIG_ROLE = "config"
ROLES = (*PARTITIONED_ROLES, CONFIG_ROLE)

#: Segment rolls of a partitioned topic are spread over up to this long (`segment.jitter.ms`).
#: Without it every partition of a topic created at once rolls its segment at the same moment
#: (each segment.ms, the state topic's 6 h), and the broker's log cleaner then compacts all of
#: them back to back: measured in the soak (issue 32), the 12 state partitions rolling together
#: slowed the worker's transactions from 14 to 40-64 ms mean (475 ms at worst) for 1-2.5 s,
#: and the run latency p99 of those seconds went from about 100 ms to 400-680 ms.
SEGMENT_JITTER_MS = 3 * 3600 * 1000

# Per-role topic configs. `state` is a compacted changelog; `replies` only lives as long as a
# client waits for an answer.
ROLE_CONFIGS: dict[str, dict[str, str]] = {
    "directives": {
        "cleanup.policy": "delete",
        "retention.ms": str(7 * 24 * 3600 * 1000),
        "segment.jitter.ms": str(SEGMENT_JITTER_MS),
    },
    "history": {
        "cleanup.policy": "delete",
        "retention.ms": str(30 * 24 * 3600 * 1000),
        "segment.jitter.ms": str(SEGMENT_JITTER_MS),
    },
    "state": {
        "cleanup.policy": "compact",
        "min.compaction.lag.ms": "0",
        "delete.retention.ms": str(24 * 3600 * 1000),
        "segment.ms": str(6 * 3600 * 1000),
        "segment.jitter.ms": str(SEGMENT_JITTER_MS),
    },
    "replies": {
        "cleanup.policy": "delete",
        "retention.ms": str(3600 * 1000),
        "segment.jitter.ms": str(SEGMENT_JITTER_MS),
    },
    "dead-letter": {
        "cleanup.policy": "delete",
        "retention.ms": str(30 * 24 * 3600 * 1000),
        "segment.jitter.ms": str(SEGMENT_JITTER_MS),
    },
    "config": {"cleanup.policy": "compact", "min.compaction.lag.ms": "0"},
}


@dataclass(frozen=True)
class TopicNames:
    """The topic names of one namespace: `grctl.<namespace>.<role>`."""

    namespace: str

    def __post_init__(self) -> None:
        ns = self.namespace
        if not ns or not all(c.isalnum() or c in "-_" for c in ns):
            raise InvalidArgumentError(
                f"namespace {ns!r} is invalid: use letters, digits, '-' and '_' only (it becomes part of topic names)"
            )

    def role(self, role: str) -> str:
        """The topic of a role."""
        return f"grctl.{self.namespace}.{role}"

    def task_queue(self, queue: str) -> str:
        """The topic of a remote task queue: `grctl.<namespace>.tasks.<queue>` (docs/remote-tasks.md).

        Raises:
            InvalidArgumentError: the queue name is empty or has characters a topic name cannot hold.
        """
        if not queue or len(queue) > 180 or not all(c.isalnum() or c in "-_." for c in queue):
            raise InvalidArgumentError(
                f"task queue name {queue!r} is invalid: use letters, digits, '-', '_' and '.' only "
                f"(it becomes part of the topic name grctl.{self.namespace}.tasks.<queue>)"
            )
        return f"grctl.{self.namespace}.tasks.{queue}"

    @cached_property
    def directives(self) -> str:
        """Every input to a run."""
        return self.role("directives")

    @cached_property
    def history(self) -> str:
        """Append-only history events."""
        return self.role("history")

    @cached_property
    def state(self) -> str:
        """The compacted changelog of the worker tables."""
        return self.role("state")

    @cached_property
    def replies(self) -> str:
        """Answers to client requests."""
        return self.role("replies")

    @cached_property
    def dead_letter(self) -> str:
        """Input records that could not be decoded or applied."""
        return self.role("dead-letter")

    @cached_property
    def config(self) -> str:
        """The namespace's settings (run retention), one partition."""
        return self.role(CONFIG_ROLE)

    def all(self) -> list[str]:
        """Every topic of the namespace."""
        return [self.role(r) for r in ROLES]

    def partitioned(self) -> list[str]:
        """The co-partitioned topics (all but the settings topic)."""
        return [self.role(r) for r in PARTITIONED_ROLES]


def partition_counts(admin: AdminClient, names: TopicNames, timeout: float = 10.0) -> dict[str, int]:
    """Partition count of each existing topic of the namespace."""
    out = {}
    for t in names.all():
        # Ask for this topic only: a full metadata request grows with every topic of the cluster.
        try:
            md = admin.list_topics(topic=t, timeout=timeout)
        except KafkaException as exc:
            raise KafkaSetupError(f"cannot read metadata of topic {t!r}: {exc}") from exc
        tm = md.topics.get(t)
        if tm is not None and tm.error is not None and tm.error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED:
            raise topic_refusal(names.namespace, t)
        if tm is not None and tm.error is None:
            out[t] = len(tm.partitions)
    return out


def ensure_namespace(
    admin: AdminClient,
    names: TopicNames,
    *,
    partitions: int = DEFAULT_PARTITIONS,
    replication_factor: int | None = None,
    create: bool = True,
    extra_configs: dict[str, dict[str, str]] | None = None,
    timeout: float = 30.0,
) -> int:
    """Create the namespace's missing topics and check they are co-partitioned.

    Args:
        admin: an admin client.
        names: the namespace's topics.
        partitions: partition count for new topics (existing ones keep theirs).
        replication_factor: for new topics (None: min(3, number of brokers)).
        create: create missing topics (False: raise if any is missing).
        extra_configs: per-role configs to add or override.
        timeout: seconds to wait for the broker.

    Returns:
        The namespace's partition count.

    Raises:
        KafkaSetupError: a topic is missing and `create` is False, or creation failed.
        TopicMismatchError: the topics do not all have the same partition count.
    """
    existing = partition_counts(admin, names, timeout)
    missing = [t for t in names.all() if t not in existing]
    copartitioned = {t: n for t, n in existing.items() if t != names.config}
    if copartitioned:
        counts = set(copartitioned.values())
        expected = copartitioned.get(names.directives) or max(counts)
        for topic, n in copartitioned.items():
            if n != expected:
                raise TopicMismatchError(topic, expected=expected, found=n)
        partitions = expected
    if missing and not create:
        raise KafkaSetupError(
            f"namespace {names.namespace!r} is missing topics {missing}; create it with "
            f"`grctl namespace create {names.namespace}`"
        )
    if missing:
        if replication_factor is None:
            brokers = len(admin.list_topics(topic=names.directives, timeout=timeout).brokers)
            replication_factor = max(1, min(3, brokers))
        new = []
        for topic in missing:
            role = topic.rsplit(".", 1)[1]
            cfg = dict(ROLE_CONFIGS[role])
            if replication_factor >= 3:
                cfg["min.insync.replicas"] = "2"
            cfg.update((extra_configs or {}).get(role, {}))
            count = 1 if role == CONFIG_ROLE else partitions
            new.append(NewTopic(topic, num_partitions=count, replication_factor=replication_factor, config=cfg))
        futures = admin.create_topics(new, operation_timeout=timeout)
        for topic, fut in futures.items():
            try:
                fut.result(timeout)
            except KafkaException as exc:
                err = exc.args[0] if exc.args else None
                if getattr(err, "name", lambda: "")() == "TOPIC_ALREADY_EXISTS":
                    continue
                if is_refusal(kafka_error_of(exc)):
                    prefix = namespace_prefix(names.namespace)
                    raise KafkaAuthorizationError(
                        f"Kafka refused to create topic {topic!r} ({exc}): the principal this process authenticates "
                        f"as lacks Create on topics prefixed {prefix!r}. An admin creates the namespace "
                        f"(`grctl namespace create {names.namespace}`) or grants the worker role (`grctl namespace "
                        f"acls {names.namespace} --principal User:NAME --role worker --apply`); docs/security.md",
                        resource="topics",
                        namespace=names.namespace,
                    ) from exc
                raise KafkaSetupError(f"cannot create topic {topic!r}: {exc}") from exc
        logger.info("namespace %s: created topics %s (%d partitions)", names.namespace, missing, partitions)
        # A concurrent creator may have used another count: check again.
        again = partition_counts(admin, names, timeout)
        for topic, n in again.items():
            if n != partitions and topic != names.config:
                raise TopicMismatchError(topic, expected=partitions, found=n)
        wait_for_leaders(admin, names.all(), timeout)
    return partitions


def wait_for_leaders(admin: AdminClient, topics: list[str], timeout: float) -> None:
    """Wait until every partition of `topics` has a leader (new topics need a moment).

    Raises:
        KafkaSetupError: partitions still had no leader after `timeout` seconds.
    """

    def check() -> None:
        leaderless = []
        for t in topics:
            tm = admin.list_topics(topic=t, timeout=timeout).topics.get(t)
            if tm is None or tm.error is not None:
                leaderless.append(t)
                continue
            leaderless += [f"{t}[{p}]" for p, pm in tm.partitions.items() if pm.leader < 0 or pm.error is not None]
        if leaderless:
            raise KafkaException(KafkaError(KafkaError.LEADER_NOT_AVAILABLE, f"{leaderless[:5]}"))

    try:
        retry_while_leaderless(check, timeout=timeout)
    except KafkaException as exc:
        if not is_leaderless(exc):
            raise
        raise KafkaSetupError(f"partitions without a leader after {timeout:.0f}s: {exc.args[0].str()}") from None


def delete_namespace(admin: AdminClient, names: TopicNames, timeout: float = 30.0) -> list[str]:
    """Delete every topic of the namespace; returns the deleted names."""
    existing = list(partition_counts(admin, names, timeout))
    if not existing:
        return []
    futures = admin.delete_topics(existing, operation_timeout=timeout)
    for fut in futures.values():
        fut.result(timeout)
    return existing


def admin_client(config: dict[str, Any]) -> AdminClient:
    """An admin client for `config` (bootstrap.servers plus pass-through options)."""
    return AdminClient(dict(config))
