"""Runs started and events delivered by the records of any topic (`Worker(sources=[...])`).

A `Source` names a topic and a route: a function from the decoded `SourceRecord` (key, value,
headers, topic, partition, offset, timestamp) to `StartRun`, `SendEvent` or None (skip). The
worker's consumer subscribes to the source topics with the namespace's `directives`, so source
partitions are spread over the workers of the group and move with its rebalances like the
rest. Each source record becomes (at most) one directive record, produced in the worker's
transaction together with the source partition's consumed offset: after a crash, a rebalance or
a re-delivery the record has had exactly one effect. The default workflow id of a `StartRun` is
derived from the record (``<topic>-<partition>-<offset>``), and an event's id likewise, so even a
replayed source offset cannot start a second run or deliver an event twice.

Order: the records of one source partition are routed in offset order, and the directives for
one workflow id go to one `directives` partition in that order, so events for a run arrive in
source order per source partition (use the source key to keep a run's records together).

Formats "avro", "protobuf" and "jsonschema" decode the schema registry's wire format with the
worker's `SchemaRegistry` (`grctl.worker._edges.schema_registry`); a record with a schema id not seen
before is decoded in a thread, so its lookup does not block the event loop.

Keys: `SourceRecord.key` is always the key's bytes; `key_format` (or `key_deserializer`) decodes
it into `SourceRecord.key_value` with the same formats as values (registry keys under the
subject ``<topic>-key``). Without one, `key_value` is the bytes too; a record without a key has
None in both.

A record that cannot be decoded (its value or, with a `key_format`, its key; for the registry
formats also: not in the wire format, a schema id the registry does not know), a route that
raises or returns something else, an input over the value limit: the record goes to the
namespace's dead-letter topic with the reason (naming the key or the value), and the partition
moves on. A registry that does not answer is not the record's fault: the record is
not dead-lettered, the session restarts and reads it again (see `grctl.worker._edges.schema_registry`).

While the runs in flight on this worker exceed `max_in_flight`, its source partitions are
paused (back-pressure).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final, Literal

import msgspec
from ulid import ULID

from grctl._check import positive_ms
from grctl.codec import CodecRegistry
from grctl.engine.records import EventCmd, StartCmd, encoder
from grctl.errors import InvalidArgumentError, SchemaRegistryUnavailableError
from grctl.kafka.partitioner import partition_for
from grctl.kafka.topics import TopicNames
from grctl.worker._edges.schema_registry import REGISTRY_FORMATS, RegistryDecoder, check_schema
from grctl.worker._partition.dead_letter import dead_letter_record

if TYPE_CHECKING:
    from confluent_kafka import Message

    from grctl.kafka.limits import RecordLimits
    from grctl.worker._partition.ports import Outbox

__all__ = ["SendEvent", "Source", "SourceFormat", "SourceRecord", "StartRun"]

logger = logging.getLogger("grctl.worker")

SourceFormat = Literal["json", "msgpack", "str", "raw", "avro", "protobuf", "jsonschema"]
_PLAIN_FORMATS: Final = ("json", "msgpack", "str", "raw")
#: Runs in flight on a worker above which its source partitions pause.
DEFAULT_MAX_IN_FLIGHT: Final = 10_000
_json = msgspec.json.Decoder()
_msgpack = msgspec.msgpack.Decoder()


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """A record of a source topic, as the route sees it."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    key: bytes | None
    value: Any
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    #: The key decoded by the source's `key_format` or `key_deserializer` (without one: the
    #: bytes of `key`); None when the record has no key.
    key_value: Any = None

    @property
    def key_str(self) -> str | None:
        """The key as UTF-8 text (None: no key)."""
        return None if self.key is None else self.key.decode(errors="replace")

    @property
    def default_id(self) -> str:
        """The workflow id a `StartRun` without one gets: unique per record, stable across re-deliveries."""
        return f"{self.topic}-{self.partition}-{self.offset}"


@dataclass(frozen=True, slots=True)
class StartRun:
    """Start a run of `wf_type` (id: `id`, else the record's `default_id`)."""

    wf_type: str
    input: Any = None
    id: str | None = None
    timeout: timedelta | None = None


@dataclass(frozen=True, slots=True)
class SendEvent:
    """Deliver event `event` with `payload` to the latest run of `wf_id`."""

    wf_id: str
    event: str
    payload: Any = None


Route = Callable[[SourceRecord], "StartRun | SendEvent | None"]


class Source:
    """A topic whose records start runs or deliver events (see the module docstring).

    Args:
        topic: an existing topic (not one of the engine's ``grctl.*``).
        route: decoded record -> `StartRun`, `SendEvent` or None (skip the record).
        format: how values are decoded: "json" (default), "msgpack", "str" (UTF-8), "raw" (bytes),
            or with the worker's schema registry (`Worker(schema_registry=...)`) from its wire
            format: "avro" (a dict), "protobuf" (a message of `schema`), "jsonschema" (the JSON value).
        schema: for "protobuf" the generated message class (required); for "avro" a reader
            schema (str or dict; default: the writer's schema); for "jsonschema" a schema to
            validate against (default: the writer's schema).
        deserializer: bytes -> value instead of `format` (any other decoding).
        key_format: how keys are decoded into `SourceRecord.key_value`, with the formats of
            `format`; the registry formats use the subject ``<topic>-key``. None (the default):
            not decoded, `key_value` is the key's bytes. A key that does not decode
            dead-letters the record.
        key_schema: `schema` for a registry `key_format`.
        key_deserializer: bytes -> key instead of `key_format`.
        max_in_flight: the worker pauses this source while it has more runs in flight.
    """

    def __init__(
        self,
        topic: str,
        route: Route,
        *,
        format: SourceFormat = "json",
        schema: Any = None,
        deserializer: Callable[[bytes], Any] | None = None,
        key_format: SourceFormat | None = None,
        key_schema: Any = None,
        key_deserializer: Callable[[bytes], Any] | None = None,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    ) -> None:
        if not isinstance(topic, str) or not topic or topic.startswith("grctl."):
            raise InvalidArgumentError(
                f"source topic {topic!r} must be a topic of your own (not grctl.*)", argument="topic"
            )
        if not callable(route):
            raise InvalidArgumentError(f"route must be a function of a SourceRecord, got {route!r}", argument="route")
        if format not in _PLAIN_FORMATS and format not in REGISTRY_FORMATS:
            raise InvalidArgumentError(
                f"unknown format {format!r}: use json, msgpack, str, raw, avro, protobuf or jsonschema",
                argument="format",
            )
        if format in REGISTRY_FORMATS:
            if deserializer is not None:
                raise InvalidArgumentError(
                    f"source {topic!r}: give format={format!r} or a deserializer, not both", argument="deserializer"
                )
            check_schema(format, schema, required=False, what=f"source {topic!r}")
        elif schema is not None:
            raise InvalidArgumentError(
                f"source {topic!r}: schema= is for the formats avro, protobuf and jsonschema, not {format!r}",
                argument="schema",
            )
        _check_key_format(topic, key_format, key_schema, key_deserializer)
        if not isinstance(max_in_flight, int) or max_in_flight < 1:
            raise InvalidArgumentError(
                f"max_in_flight must be a positive int, got {max_in_flight!r}", argument="max_in_flight"
            )
        self.topic = topic
        self.route = route
        self.format = format
        self.schema = schema
        self.deserializer = deserializer
        self.key_format = key_format
        self.key_schema = key_schema
        self.key_deserializer = key_deserializer
        self.max_in_flight = max_in_flight

    @property
    def uses_registry(self) -> bool:
        """Whether its value format needs the worker's schema registry."""
        return self.format in REGISTRY_FORMATS

    @property
    def key_uses_registry(self) -> bool:
        """Whether its key format needs the worker's schema registry."""
        return self.key_format in REGISTRY_FORMATS

    def decode_key(self, data: bytes) -> Any:
        """The key as `SourceRecord.key_value`, for the key formats without a registry (raises on undecodable data)."""
        if self.key_uses_registry:
            raise InvalidArgumentError(f"key format {self.key_format!r} is decoded by the worker's schema registry")
        if self.key_deserializer is not None:
            return self.key_deserializer(data)
        if self.key_format is None:
            return data
        return _decode_plain(self.key_format, data)

    def decode(self, data: bytes) -> Any:
        """The record value as the route sees it, for the formats without a registry (raises on undecodable data)."""
        if self.uses_registry:
            raise InvalidArgumentError(f"format {self.format!r} is decoded by the worker's schema registry")
        if self.deserializer is not None:
            return self.deserializer(data)
        return _decode_plain(self.format, data)


def _decode_plain(format: str, data: bytes) -> Any:
    if format == "json":
        return _json.decode(data)
    if format == "msgpack":
        return _msgpack.decode(data)
    if format == "str":
        return data.decode()
    return data


def _check_key_format(topic: str, key_format: object, key_schema: object, key_deserializer: object) -> None:
    what = f"source {topic!r}"
    if key_format is not None and key_format not in _PLAIN_FORMATS and key_format not in REGISTRY_FORMATS:
        raise InvalidArgumentError(
            f"{what}: unknown key_format {key_format!r}: use json, msgpack, str, raw, avro, protobuf or jsonschema",
            argument="key_format",
        )
    if key_deserializer is not None:
        if not callable(key_deserializer):
            raise InvalidArgumentError(
                f"{what}: key_deserializer must be a function of the key's bytes, got {key_deserializer!r}",
                argument="key_deserializer",
            )
        if key_format is not None:
            raise InvalidArgumentError(
                f"{what}: give key_format={key_format!r} or a key_deserializer, not both", argument="key_deserializer"
            )
    if key_format in REGISTRY_FORMATS:
        check_schema(str(key_format), key_schema, required=False, what=what, name="key_schema")
    elif key_schema is not None:
        raise InvalidArgumentError(
            f"{what}: key_schema= is for the key formats avro, protobuf and jsonschema, not {key_format!r}",
            argument="key_schema",
        )


class SourcePartition:
    """One assigned partition of a source topic: routes its records into `directives`."""

    def __init__(
        self,
        source: Source,
        partition: int,
        *,
        outbox: Outbox,
        topics: TopicNames,
        num_partitions: int,
        codec: CodecRegistry,
        limits: RecordLimits,
        wf_types: frozenset[str] | None = None,
        decoder: RegistryDecoder | None = None,
        key_decoder: RegistryDecoder | None = None,
    ) -> None:
        if source.uses_registry and decoder is None:
            raise InvalidArgumentError(f"source {source.topic!r} has format {source.format!r} but no registry decoder")
        if source.key_uses_registry and key_decoder is None:
            raise InvalidArgumentError(
                f"source {source.topic!r} has key_format {source.key_format!r} but no registry decoder for keys"
            )
        self.source = source
        self._decoder = decoder
        self._key_decoder = key_decoder
        #: A record decoded ahead in a thread (`lookup`): (offset, its key, its value), each
        #: (decoded, None) or (None, the error).
        self._ahead: tuple[int, _Decoded | None, _Decoded | None] | None = None
        self._wf_types = wf_types
        self.partition = partition
        self._outbox = outbox
        self._topics = topics
        self._n = num_partitions
        self._codec = codec
        self._limits = limits
        #: The next offset to read (None until the first record): the offset the next commit sends.
        self.position: int | None = None
        self.routed = 0
        self.dead_lettered = 0
        #: Paused by the back-pressure (too many runs in flight).
        self.paused = False

    def watermark(self) -> int | None:
        return self.position

    def needs_lookup(self, msg: Message) -> bool:
        """Whether decoding `msg` may ask the schema registry (a schema id not seen before, of its value or key)."""
        if self._decoder is not None and not self._decoder.is_known(msg.value()):
            return True
        return self._key_decoder is not None and not self._key_decoder.is_known(msg.key())

    def lookup(self, msg: Message) -> None:
        """Decode `msg`'s key and value ahead, blocking (in a thread), for the `on_record` that follows.

        Raises:
            SchemaRegistryUnavailableError: the registry did not answer (for the key or the
                value); the record is left unread (nothing is staged for it, its offset does not move).
        """
        self._ahead = None
        topic = msg.topic() or self.source.topic
        raw_key = msg.key()
        key = None
        if self._key_decoder is not None and raw_key is not None:
            key = _decode_ahead(self._key_decoder, raw_key, topic)
        value = None if self._decoder is None else _decode_ahead(self._decoder, msg.value() or b"", topic)
        self._ahead = (msg.offset() or 0, key, value)

    def _decode(self, msg: Message) -> tuple[Any, Any]:
        """(key_value, value) of `msg`: what `lookup` decoded ahead, else decoded now."""
        ahead, self._ahead = self._ahead, None
        if ahead is None or ahead[0] != (msg.offset() or 0):
            ahead = None
        topic = msg.topic() or self.source.topic
        raw_key = msg.key()
        try:
            if raw_key is None:
                key = None
            elif self._key_decoder is None:
                key = self.source.decode_key(raw_key)
            elif ahead is not None and ahead[1] is not None:
                key = _result(ahead[1])
            else:
                key = self._key_decoder.decode(raw_key, topic)
        except SchemaRegistryUnavailableError:
            raise
        except Exception as exc:  # a user key_deserializer may raise anything
            fmt = self.source.key_format or "key_deserializer"
            raise _Undecodable(f"cannot decode the key ({fmt}): {type(exc).__name__}: {exc}") from exc
        raw = msg.value() or b""
        try:
            if self._decoder is None:
                value = self.source.decode(raw)
            elif ahead is not None and ahead[2] is not None:
                value = _result(ahead[2])
            else:
                value = self._decoder.decode(raw, topic)
        except SchemaRegistryUnavailableError:
            raise
        except Exception as exc:  # a user deserializer may raise anything
            raise _Undecodable(f"cannot decode the value ({self.source.format}): {type(exc).__name__}: {exc}") from exc
        return key, value

    def on_record(self, msg: Message) -> None:
        """Route one record: stage its directive (or dead-letter it) and move the position."""
        offset = msg.offset() or 0
        self.position = offset + 1
        self._outbox.offsets_moved()
        rec_topic = msg.topic() or self.source.topic
        try:
            key, value = self._decode(msg)
        except SchemaRegistryUnavailableError:
            # Not the record's fault; `lookup` runs first for a new schema id, so this means the
            # client lost a cached schema: leave the record unread, like `lookup` does.
            self.position = offset
            raise
        except _Undecodable as exc:
            self._dead_letter(msg, str(exc))
            return
        ts_type, ts = msg.timestamp()
        rec = SourceRecord(
            topic=rec_topic, partition=self.partition, offset=offset, timestamp_ms=ts if ts_type else None,
            key=msg.key(), value=value, headers=_headers(msg), key_value=key,
        )  # fmt: skip
        try:
            action = self.source.route(rec)
        except Exception as exc:  # noqa: BLE001  # user code: the record goes to dead-letter
            self._dead_letter(msg, f"the route raised {type(exc).__name__}: {exc}")
            return
        try:
            directive = self._directive(rec, action)
        except (InvalidArgumentError, TypeError, ValueError, RecursionError) as exc:
            # CodecError is a TypeError; a value nested too deep for the codec (from a user
            # deserializer) would otherwise escape and stall the partition on every redelivery.
            self._dead_letter(msg, f"{type(exc).__name__}: {exc}" if isinstance(exc, RecursionError) else str(exc))
            return
        if directive is None:
            return
        wf_id, data = directive
        self._outbox.produce(self._topics.directives, partition_for(wf_id, self._n), wf_id.encode(), data, None, wf_id)
        self.routed += 1

    def _directive(self, rec: SourceRecord, action: object) -> tuple[str, bytes] | None:
        if action is None:
            return None
        limit = self._limits.value_bytes
        if isinstance(action, StartRun):
            if self._wf_types is not None and action.wf_type not in self._wf_types:
                raise InvalidArgumentError(
                    f"StartRun of workflow type {action.wf_type!r}, which this worker does not serve "
                    f"(it serves {', '.join(sorted(self._wf_types))})"
                )
            wf_id = action.id if action.id is not None else rec.default_id
            if not isinstance(wf_id, str) or not wf_id:
                raise InvalidArgumentError(f"StartRun.id must be a non-empty str, got {wf_id!r}")
            value = self._codec.to_primitive(action.input)
            cmd: StartCmd | EventCmd = StartCmd(
                wf_id=wf_id, run_id=str(ULID()), wf_type=action.wf_type, input=value,
                timeout_ms=positive_ms(action.timeout, "timeout"),
            )  # fmt: skip
        elif isinstance(action, SendEvent):
            wf_id = action.wf_id
            if not isinstance(wf_id, str) or not wf_id or not isinstance(action.event, str) or not action.event:
                raise InvalidArgumentError(f"SendEvent needs a wf_id and an event name, got {action!r}")
            value = self._codec.to_primitive(action.payload)
            cmd = EventCmd(wf_id=wf_id, event_name=action.event, payload=value, event_id=rec.default_id)
        else:
            raise InvalidArgumentError(f"the route returned {type(action).__name__}, not StartRun, SendEvent or None")
        data = encoder.encode(cmd)
        if len(data) > limit:
            raise InvalidArgumentError(
                f"the directive for {wf_id!r} is {len(data):,} bytes, over the limit of {limit:,}"
            )
        return wf_id, data

    def _dead_letter(self, msg: Message, reason: str) -> None:
        logger.warning(
            "source %s[%d] offset %d -> dead-letter: %s", self.source.topic, self.partition, msg.offset(), reason
        )
        self.dead_lettered += 1
        key, value, headers = dead_letter_record(msg, reason, self.partition, self._limits.value_bytes)
        part = partition_for(f"{self.source.topic}-{self.partition}", self._n)
        self._outbox.produce(self._topics.dead_letter, part, key, value, headers, None)


#: A decoding done ahead (`SourcePartition.lookup`): (the decoded key or value, None) or (None, its error).
_Decoded = tuple[Any, BaseException | None]


class _Undecodable(Exception):
    """A record's key or value does not decode: the message is the dead-letter reason."""


def _decode_ahead(decoder: RegistryDecoder, data: bytes, topic: str) -> _Decoded:
    try:
        return decoder.decode(data, topic), None
    except SchemaRegistryUnavailableError:
        raise
    except Exception as exc:  # noqa: BLE001  # a record the decoder refuses: dead-lettered by on_record
        return None, exc


def _result(decoded: _Decoded) -> Any:
    if decoded[1] is not None:
        raise decoded[1]
    return decoded[0]


def _headers(msg: Message) -> list[tuple[str, bytes]]:
    raw: Any = msg.headers() or []
    items = raw.items() if isinstance(raw, dict) else raw
    return [(str(k), v if isinstance(v, bytes) else (v or "").encode()) for k, v in items]
