"""Restore of a partition's tables from the `state` changelog, on assignment.

Reads the changelog from the store's checkpoint + 1 up to the partition's last stable offset
(read_committed), comparing the consumer's position with it rather than counting records, so a
partition whose last record is a transaction marker ends (the Faust hang, DESIGN.md §11).
Runs in the session's restore thread.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from confluent_kafka import IsolationLevel, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, OffsetSpec  # type: ignore[attr-defined]  # untyped re-export

from grctl.kafka.connection import Connection
from grctl.kafka.reading import consume_available
from grctl.kafka.retry import is_transient, retry_while_leaderless
from grctl.state.partition_store import PartitionStore, Writes
from grctl.worker._session.clients import make_restore_consumer

logger = logging.getLogger("grctl.worker")

#: A restore that reads nothing new for this long gives up (the session restarts and retries).
RESTORE_STALL_S = 60.0
#: Bound of the admin calls that find the last stable offset.
LSO_TIMEOUT_S = 30.0
#: Restored writes are handed to the store in chunks of this many keys.
APPLY_CHUNK_KEYS = 50_000
#: Kafka's default `delete.retention.ms` (1 day), for a topic that does not say.
DEFAULT_DELETE_RETENTION_MS = 24 * 3600 * 1000


def last_stable_offset(admin: AdminClient, tp: TopicPartition) -> int:
    """The partition's last stable offset; retried, with back-off, while an error may pass (a new
    partition without a leader yet, a moving coordinator) for `LSO_TIMEOUT_S`."""
    latest = OffsetSpec.latest()  # type: ignore[no-untyped-call]  # untyped in the stubs

    def once() -> int:
        res = admin.list_offsets({tp: latest}, isolation_level=IsolationLevel.READ_COMMITTED)
        return int(res[tp].result(LSO_TIMEOUT_S).offset)

    return retry_while_leaderless(once, timeout=LSO_TIMEOUT_S, retry_on=is_transient)


def delete_retention_ms(admin: AdminClient, topic: str) -> int:
    """How long the changelog keeps a tombstone after compaction has seen it (`delete.retention.ms`)."""
    res = ConfigResource("topic", topic)
    entry = (
        admin.describe_configs([res], request_timeout=LSO_TIMEOUT_S)[res]
        .result(LSO_TIMEOUT_S)
        .get("delete.retention.ms")
    )
    return int(entry.value) if entry is not None and entry.value else DEFAULT_DELETE_RETENTION_MS


def too_old(checkpoint_ms: int | None, now_ms: int, retention_ms: int) -> bool:
    """Whether a local store last current at `checkpoint_ms` may hold keys deleted since.

    Kafka keeps a tombstone at least `delete.retention.ms` after the compaction that first
    sees it, then drops it: a store older than that may have missed a delete for good. Half of
    it is the limit, for clock differences between hosts; a store that does not say when it
    was current is too old.
    """
    return checkpoint_ms is None or now_ms - checkpoint_ms >= retention_ms // 2


def restore_partition(
    conn: Connection,
    partition: int,
    store: PartitionStore,
    progress: Callable[[int, int, int], None] | None = None,
) -> int:
    """Replay the changelog of `partition` into `store`; returns the records read.

    A local store too old to trust (`too_old`) is emptied first and rebuilt from the start.
    `progress(partition, offsets read, offsets to read)` is called after each fetch (metrics).

    Raises:
        KafkaException: the broker failed, or the restore stalled for `RESTORE_STALL_S`.
    """
    topic = conn.topics.state
    tp = TopicPartition(topic, partition)
    admin = AdminClient(conn.client_config())
    if store.checkpoint >= 0:
        retention_ms = delete_retention_ms(admin, topic)
        if too_old(store.checkpoint_ms, int(time.time() * 1000), retention_ms):
            logger.info(
                "partition %d: the local state was last current %s; the changelog drops tombstones after %d ms, "
                "so a key deleted since could survive in it: rebuilding it from the changelog",
                partition, "at an unknown time" if store.checkpoint_ms is None else f"{store.checkpoint_ms} (ms)",
                retention_ms,
            )  # fmt: skip
            store.reset()
    lso = last_stable_offset(admin, tp)
    start = store.checkpoint + 1
    logger.debug("partition %d: restore from changelog offset %d to the last stable offset %d", partition, start, lso)
    if start >= lso:
        return 0
    consumer = make_restore_consumer(conn)
    count = 0
    last = start - 1
    writes: Writes = {}
    try:
        consumer.assign([TopicPartition(topic, partition, start)])
        progress_at, progress_pos = time.monotonic(), start
        while True:
            msgs = consume_available(consumer, 10_000, 0.2)
            for msg in msgs:
                if msg.error() is not None:
                    continue
                writes[msg.key() or b""] = msg.value()
                last = msg.offset() or last
                count += 1
            if len(writes) >= APPLY_CHUNK_KEYS:
                store.apply_restored(writes, last)
                writes = {}
            pos = consumer.position([TopicPartition(topic, partition)])[0].offset
            if progress is not None:
                progress(partition, max(0, pos - start), lso - start)
            if last >= lso - 1 or (pos >= 0 and pos >= lso):
                break
            if pos > progress_pos:
                progress_at, progress_pos = time.monotonic(), pos
            elif time.monotonic() - progress_at > RESTORE_STALL_S:
                raise KafkaException(
                    KafkaError(
                        KafkaError._TIMED_OUT,
                        f"restore of {topic}[{partition}] stalled at offset {pos} below the last "
                        f"stable offset {lso} for {RESTORE_STALL_S:.0f}s",
                    )
                )
    finally:
        consumer.close()
    store.apply_restored(writes, lso - 1)
    return count
