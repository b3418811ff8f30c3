"""Size limits: the largest record grctl may write to each topic, and the largest user value.

Kafka refuses a record larger than the topic's `max.message.bytes` (broker default 1,048,588)
and librdkafka refuses to produce one larger than the producer's `message.max.bytes` (default
1,000,000). Every user value (a start input, an event payload, a store value, a task result, a
run result, a query answer, ...) travels in records of the engine, each holding at most one
user value next to a bounded envelope (ids, names, timestamps, a bounded error text). So:

- a record limit per topic: min(topic `max.message.bytes`, producer `message.max.bytes`) minus
  Kafka's own framing of a record batch (`RECORD_FRAMING_BYTES`);
- one value limit: the smallest record limit minus `ENVELOPE_RESERVE_BYTES`, or less if the
  user asks for less (`Connection.connect(max_value_bytes=...)`).

A value over the value limit is refused where it enters, with `PayloadTooLargeError`; a record
over its topic's limit is never produced (the worker fails its run instead).

May import: `grctl.errors`, `grctl.kafka.retry`, confluent-kafka.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, NoReturn

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource  # type: ignore[attr-defined]  # untyped re-export

from grctl.errors import InvalidArgumentError, KafkaSetupError
from grctl.kafka.retry import retry_while_leaderless

#: librdkafka's default `message.max.bytes`.
PRODUCER_DEFAULT_MAX_BYTES: Final = 1_000_000
#: Kafka's default `max.message.bytes` of a topic (the broker's `message.max.bytes`).
TOPIC_DEFAULT_MAX_BYTES: Final = 1_048_588
#: Room for Kafka's framing of a batch holding one record (61-byte batch header, the record's
#: varints, attributes and headers) on top of its key and value.
RECORD_FRAMING_BYTES: Final = 512
#: Room for everything an engine record holds besides its one user value: ids, type and step
#: names, timestamps, and an error text (cut to `MAX_ERROR_TEXT_BYTES`).
ENVELOPE_RESERVE_BYTES: Final = 16 * 1024
#: Error messages and stack traces recorded in a run are cut to this many bytes each.
MAX_ERROR_TEXT_BYTES: Final = 4 * 1024
#: Values that history only describes (task arguments, a child's input, a payload sent to the
#: parent) are replaced by a preview when their encoding is larger than this.
HISTORY_PREVIEW_BYTES: Final = 16 * 1024


@dataclass(frozen=True)
class RecordLimits:
    """The size limits of one namespace, as learned from the cluster.

    Attributes:
        record_bytes: per topic, the largest key plus value grctl writes there.
        value_bytes: the largest encoded user value accepted anywhere.
        producer_max_bytes: what the producers' `message.max.bytes` is set to (the smallest
            topic limit, so that a batch librdkafka builds is never larger than a topic takes).
    """

    record_bytes: Mapping[str, int]
    value_bytes: int
    producer_max_bytes: int

    def record_limit(self, topic: str) -> int:
        """The largest key plus value for `topic` (the smallest limit for an unknown topic)."""
        limit = self.record_bytes.get(topic)
        return limit if limit is not None else min(self.record_bytes.values(), default=self.value_bytes)

    @classmethod
    def compute(
        cls,
        topic_max_bytes: Mapping[str, int],
        *,
        producer_max_bytes: int = PRODUCER_DEFAULT_MAX_BYTES,
        max_value_bytes: int | None = None,
    ) -> RecordLimits:
        """Derive the limits from the topics' `max.message.bytes` and the producer's limit.

        Raises:
            InvalidArgumentError: `max_value_bytes` is not positive.
        """
        if max_value_bytes is not None and max_value_bytes <= 0:
            raise InvalidArgumentError(
                f"max_value_bytes must be positive, got {max_value_bytes}", argument="max_value_bytes"
            )
        produce_cap = min([producer_max_bytes, *topic_max_bytes.values()])
        record = {t: min(n, produce_cap) - RECORD_FRAMING_BYTES for t, n in topic_max_bytes.items()}
        value = min(record.values(), default=produce_cap - RECORD_FRAMING_BYTES) - ENVELOPE_RESERVE_BYTES
        if max_value_bytes is not None:
            value = min(value, max_value_bytes)
        return cls(record_bytes=record, value_bytes=max(1, value), producer_max_bytes=produce_cap)


def producer_max_bytes(*configs: Mapping[str, Any] | None) -> int:
    """The `message.max.bytes` the given librdkafka configs set (the last one wins), or the default."""
    value: Any = PRODUCER_DEFAULT_MAX_BYTES
    for cfg in configs:
        if cfg and "message.max.bytes" in cfg:
            value = cfg["message.max.bytes"]
    return int(value)


def topic_max_bytes(admin: AdminClient, topics: Iterable[str], timeout: float) -> dict[str, int]:
    """Each topic's effective `max.message.bytes` (its own setting or the broker's default).

    Raises:
        KafkaSetupError: the configs cannot be read (missing DescribeConfigs permission, ...).
    """
    resources = [ConfigResource("topic", t) for t in topics]

    def once() -> dict[str, int]:
        out: dict[str, int] = {}
        for res, fut in admin.describe_configs(resources, request_timeout=timeout).items():
            entry = fut.result(timeout).get("max.message.bytes")
            out[res.name] = int(entry.value) if entry is not None and entry.value else TOPIC_DEFAULT_MAX_BYTES
        return out

    try:
        # Topics created a moment ago: the broker asked may not have their metadata yet (seen on
        # a 3-node cluster right after a broker restart). Ask again.
        return retry_while_leaderless(once, timeout=timeout)
    except TimeoutError as exc:  # the broker asked is paused or unreachable: the caller retries
        raise _silent(timeout) from exc
    except KafkaException as exc:
        err = exc.args[0] if exc.args else None
        if isinstance(err, KafkaError) and err.code() in _NO_ANSWER:
            # librdkafka's own request timeout can end the wait first (seen under load): the
            # same silence, not a refusal.
            raise _silent(timeout) from exc
        _refused(exc)


#: Errors that mean the broker did not answer (as opposed to refusing).
_NO_ANSWER = frozenset({KafkaError._TIMED_OUT, KafkaError.REQUEST_TIMED_OUT, KafkaError._TRANSPORT})


def _silent(timeout: float) -> KafkaSetupError:
    return KafkaSetupError(
        f"the brokers did not answer for max.message.bytes of the namespace's topics within {timeout:.0f}s"
    )


def _refused(exc: KafkaException) -> NoReturn:
    raise KafkaSetupError(
        f"cannot read max.message.bytes of the namespace's topics ({exc.args[0] if exc.args else exc}); "
        f"grant DescribeConfigs on them, or pass max_value_bytes to Connection.connect"
    ) from exc


def preview(value: Any, encoded_size: int, *, keep_bytes: int = 1024) -> dict[str, Any]:
    """What history keeps of a value too large to describe in full: its size and a short repr."""
    text = repr(value)
    return {"truncated": True, "size": encoded_size, "preview": text[:keep_bytes]}
