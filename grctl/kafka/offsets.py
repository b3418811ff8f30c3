"""Offsets of partitions, as `read_committed` readers see them, from the admin client.

`list_offsets` asks for one `OffsetSpec` of some partitions of one topic; `offsets_of` of any
partitions of any topics (one request for a whole namespace). With `read_committed`, the
`latest` offset is the last stable offset (LSO): what a reader can reach, never a record of an
open transaction. Both retry while a partition has no leader yet (`grctl.kafka.retry`), so a
namespace created a moment ago can be read at once.

May import: `grctl.errors`, `grctl.kafka`, confluent-kafka.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from confluent_kafka import IsolationLevel, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]  # untyped re-exports

from grctl.errors import KafkaSetupError
from grctl.kafka.retry import retry_while_leaderless

__all__ = ["OFFSETS_TIMEOUT_S", "earliest_offsets", "latest_offsets", "list_offsets", "offsets_for_time", "offsets_of"]

#: How long an offsets request (and its retries while leaderless) may take.
OFFSETS_TIMEOUT_S: Final = 15.0


def offsets_of(
    admin: AdminClient, partitions: Iterable[TopicPartition], spec: Any, *, timeout: float = OFFSETS_TIMEOUT_S
) -> dict[tuple[str, int], int]:
    """The offsets of `partitions` for an `OffsetSpec`, read_committed, by (topic, partition).

    Args:
        admin: an admin client of the cluster.
        partitions: the partitions (their `offset` is ignored).
        spec: `OffsetSpec.latest()` (the LSO), `earliest()`, `for_timestamp(ms)` (-1: no such record).
        timeout: seconds the request, and its retries while a partition has no leader, may take.

    Raises:
        KafkaSetupError: the offsets cannot be read (the error names the topics and the cause).
        TimeoutError: the brokers did not answer within `timeout`.
    """
    request = {TopicPartition(tp.topic, tp.partition): spec for tp in partitions}
    if not request:
        return {}

    def once() -> dict[tuple[str, int], int]:
        futures = admin.list_offsets(request, isolation_level=IsolationLevel.READ_COMMITTED, request_timeout=timeout)
        return {(tp.topic, tp.partition): int(fut.result(timeout).offset) for tp, fut in futures.items()}

    try:
        return retry_while_leaderless(once, timeout=timeout)
    except KafkaException as exc:
        topics = ", ".join(sorted({tp.topic for tp in request}))
        raise KafkaSetupError(f"cannot read the offsets of {topics}: {exc.args[0] if exc.args else exc}") from None


def list_offsets(
    admin: AdminClient, topic: str, partitions: Iterable[int], spec: Any, *, timeout: float = OFFSETS_TIMEOUT_S
) -> dict[int, int]:
    """`offsets_of` for some partitions of one topic, by partition (see there)."""
    found = offsets_of(admin, [TopicPartition(topic, p) for p in partitions], spec, timeout=timeout)
    return {p: off for (_t, p), off in found.items()}


def latest_offsets(
    admin: AdminClient, topic: str, partitions: Iterable[int], *, timeout: float = OFFSETS_TIMEOUT_S
) -> dict[int, int]:
    """Each partition's last stable offset: where a `read_committed` reader reaches the end."""
    return list_offsets(admin, topic, partitions, OffsetSpec.latest(), timeout=timeout)  # type: ignore[no-untyped-call]  # untyped in the stubs


def earliest_offsets(
    admin: AdminClient, topic: str, partitions: Iterable[int], *, timeout: float = OFFSETS_TIMEOUT_S
) -> dict[int, int]:
    """Each partition's first offset still kept."""
    return list_offsets(admin, topic, partitions, OffsetSpec.earliest(), timeout=timeout)  # type: ignore[no-untyped-call]  # untyped in the stubs


def offsets_for_time(
    admin: AdminClient, topic: str, partitions: Iterable[int], ts_ms: int, *, timeout: float = OFFSETS_TIMEOUT_S
) -> dict[int, int]:
    """Per partition, the first offset whose timestamp is >= `ts_ms` (-1: none)."""
    return list_offsets(admin, topic, partitions, OffsetSpec.for_timestamp(ts_ms), timeout=timeout)
