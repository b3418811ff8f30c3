"""The worker's Kafka clients: how each is configured, and the one consume helper they share."""

from __future__ import annotations

from typing import Any

from confluent_kafka import Consumer, Producer

from grctl.kafka.connection import Connection
from grctl.kafka.reading import take_ready

#: Kafka Streams' EOS default: a dead worker's open transaction blocks read_committed readers of
#: its partitions until this expires, so keep it short.
TRANSACTION_TIMEOUT_MS = 10_000


def make_producer(
    conn: Connection, *, instance_id: str, worker_id: str, extra: dict[str, Any] | None = None
) -> Producer:
    """The session's transactional producer (EOS v2; one per worker, id stable per state folder)."""
    cfg = conn.client_config(
        **{
            "transactional.id": f"grctl.{conn.namespace}.{instance_id}",
            "transaction.timeout.ms": TRANSACTION_TIMEOUT_MS,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 1,
            # librdkafka retries CONCURRENT_TRANSACTIONS after retry.backoff.ms; its default
            # (100 ms) made back-to-back transactions cost ~100 ms each (benchmarks/txn_latency.py).
            "retry.backoff.ms": 5,
            "retry.backoff.max.ms": 50,
            # A produce request to a hung leader (a paused broker keeps its sockets open) is
            # given up after 5 s and retried on the new leader, inside the transaction's 10 s
            # (librdkafka's default, 30 s, failed the transaction first: broker-pause test).
            "request.timeout.ms": 5_000,
            "queue.buffering.max.messages": 500_000,
            "client.id": f"{worker_id}-producer",
        }
    )
    cfg.update(extra or {})
    return Producer(cfg)


#: The consumer group protocols a worker may use (`Worker(group_protocol=...)`).
GROUP_PROTOCOLS = ("classic", "consumer")


def make_consumer(
    conn: Connection,
    *,
    instance_id: str,
    worker_id: str,
    extra: dict[str, Any] | None = None,
    group_protocol: str = "classic",
) -> Consumer:
    """The session's `read_committed` consumer of `directives`, in the namespace's worker group.

    `group_protocol` "classic": eager rebalances, round-robin, a 6 s session (docs/engine.md
    "Rebalances"). "consumer": KIP-848, the broker assigns incrementally (only the partitions
    that move stop); the session timeout and heartbeat interval are then the broker's
    (`group.consumer.session.timeout.ms`, default 45 s, and `group.consumer.heartbeat.interval.ms`),
    and members are dynamic (see below).
    """
    cfg = conn.client_config(
        **{
            "group.id": f"grctl.{conn.namespace}.workers",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            # Eager rebalances (docs/engine.md "Rebalances": cooperative-sticky left partitions
            # unassigned after a SIGKILL mid-rebalance).
            "partition.assignment.strategy": "roundrobin",
            # A dead (or stopped static) member's partitions wait this long for a new owner.
            # 6 s is the broker's default group.min.session.timeout.ms.
            "session.timeout.ms": 6_000,
            "heartbeat.interval.ms": 1_000,
            # Also the rebalance timeout of the classic protocol: how long a rebalance waits
            # for members; the consumer thread only blocks in restores and final commits.
            "max.poll.interval.ms": 120_000,
            "fetch.wait.max.ms": 50,
            "client.id": f"{worker_id}-consumer",
            # Static membership: a worker restarted in place (same state dir) takes its
            # partitions back without a rebalance, within the session timeout.
            "group.instance.id": instance_id,
        }
    )
    if group_protocol == "consumer":
        for key in ("partition.assignment.strategy", "session.timeout.ms", "heartbeat.interval.ms"):
            cfg.pop(key)  # the broker's, with this protocol (librdkafka refuses them)
        # No static membership: with this protocol the broker refuses a member whose instance id
        # is still held by the member it replaces (UNRELEASED_INSTANCE_ID, fatal in librdkafka)
        # until that one's session expires, so a worker restarted in place after a SIGKILL could
        # not join. A new member id instead: the dead member's partitions move after its session.
        cfg.pop("group.instance.id")
        cfg["group.protocol"] = "consumer"
    cfg.update(extra or {})
    return Consumer(cfg)


def make_restore_consumer(conn: Connection) -> Consumer:
    """A consumer that reads a `state` partition to a known offset, as fast as it can."""
    return Consumer(
        conn.client_config(
            **{
                "group.id": f"grctl.{conn.namespace}.restore",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
                "fetch.max.bytes": 64 * 1024 * 1024,
                "max.partition.fetch.bytes": 16 * 1024 * 1024,
                # librdkafka's defaults park a fetch for 500 ms (wait), 500 ms (after an error)
                # or 1 s (queue full): a restore reads to a known offset and has nothing else
                # to do, so it asks again quickly instead.
                "fetch.wait.max.ms": 10,
                "fetch.error.backoff.ms": 20,
                "fetch.queue.backoff.ms": 20,
            }
        )
    )


def consume_with_metadata(consumer: Consumer, limit: int, wait: float) -> tuple[list[Any], Any]:
    """`grctl.kafka.reading.consume_available` (wait for one record, take what is fetched), between
    whose wait and take the consumer group metadata is read.

    It returns the consumer group metadata for the transactions: it must be read on this
    thread, because `consumer_group_metadata()` blocks while another thread is inside `poll()`
    (measured: send_offsets_to_transaction went from ~3 ms to 100-1400 ms, or hung).
    """
    first = consumer.poll(wait)
    metadata = consumer.consumer_group_metadata()
    return take_ready(consumer, first, limit), metadata
