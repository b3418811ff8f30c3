"""What a worker knows of the topics its steps emit to: whether they exist, and their record limit."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient  # type: ignore[attr-defined]  # untyped re-export

from grctl.errors import EmitTopicNotFoundError, KafkaSetupError, PayloadTooLargeError
from grctl.kafka.limits import topic_max_bytes
from grctl.models.emit import Emit

__all__ = ["TopicDirectory"]


class TopicDirectory:
    """What the worker knows of the topics steps emit to: whether they exist, and their record limit.

    One per worker. Looked up once per topic (blocking: the executor calls `check` in a thread
    when `check_cached` cannot answer) and kept for `ttl_s`; a missing topic is asked again at
    its next emit, so creating it fixes later steps.

    Args:
        admin: an admin client of the worker's cluster.

    Attributes:
        producer_max_bytes: the producer's message.max.bytes (each session sets what it learned).
    """

    def __init__(self, admin: AdminClient, *, ttl_s: float = 60.0, timeout: float = 10.0) -> None:
        self._admin = admin
        self._ttl = ttl_s
        self._timeout = timeout
        self._known: dict[str, tuple[float, int]] = {}  # topic -> (checked at, its max.message.bytes)
        self._lock = threading.Lock()
        self.producer_max_bytes = 2**31 - 1

    def _cached(self, topic: str) -> int | None:
        with self._lock:
            hit = self._known.get(topic)
        return hit[1] if hit is not None and time.monotonic() - hit[0] < self._ttl else None

    def limit_of(self, topic: str) -> int:
        """The largest record `topic` takes from this worker (blocking on a lookup).

        Raises:
            EmitTopicNotFoundError: the topic does not exist (or this principal may not see it).
        """
        topic_limit = self._cached(topic)
        if topic_limit is None:
            now = time.monotonic()
            try:
                meta = self._admin.list_topics(topic=topic, timeout=self._timeout).topics.get(topic)
            except KafkaException as exc:
                raise EmitTopicNotFoundError(topic, f"cannot read its metadata: {exc}") from exc
            if meta is None or meta.error is not None:
                raise EmitTopicNotFoundError(topic, str(meta.error) if meta is not None else "no metadata")
            try:
                topic_limit = topic_max_bytes(self._admin, [topic], self._timeout)[topic]
            except KafkaSetupError:
                topic_limit = self.producer_max_bytes  # no DescribeConfigs on it: the broker has the last word
            with self._lock:
                self._known[topic] = (now, topic_limit)
        return min(self.producer_max_bytes, topic_limit)

    def check_cached(self, records: Sequence[Emit], wf_id: str) -> bool:
        """`check` from the cache alone, without blocking: False if a topic must be looked up first."""
        limits = [self._cached(rec.topic) for rec in records]
        if None in limits:
            return False
        for rec, topic_limit in zip(records, limits, strict=True):
            assert topic_limit is not None
            _fits(rec, min(self.producer_max_bytes, topic_limit), wf_id)
        return True

    def check(self, records: Sequence[Emit], wf_id: str) -> None:
        """Raise the error the step fails with if a record cannot be published (blocking)."""
        for rec in records:
            _fits(rec, self.limit_of(rec.topic), wf_id)

    def require(self, topics: Mapping[str, str]) -> None:
        """Raise `EmitTopicNotFoundError` for the first of `topics` (topic -> what needs it) that is missing."""
        for topic, what in topics.items():
            try:
                self.limit_of(topic)
            except EmitTopicNotFoundError as exc:
                raise EmitTopicNotFoundError(topic, f"{what}; {exc.detail}") from None


def _fits(rec: Emit, limit: int, wf_id: str) -> None:
    if rec.size > limit:
        raise PayloadTooLargeError(f"a record emitted to {rec.topic!r}", size=rec.size, limit=limit, wf_id=wf_id)
