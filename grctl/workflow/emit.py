"""Records a step publishes to any topic (`ctx.emit`), exactly once with the step's outcome.

`ctx.emit(topic, value, key=..., headers=...)` only buffers the record. When the step's handler
returns its directive, the executor checks every buffered record (the topic exists, the record
fits the topic's `max.message.bytes` and the producer's `message.max.bytes`) and hands them to the
state machine with the step's outcome; the partition processor produces them in the transaction
that commits that outcome. A consumer reading with `isolation.level=read_committed` therefore
sees each committed step's records once; a step that raises, fails its step, times out, or whose
transaction aborts (a crash) published nothing, and its re-execution publishes afresh. The
record's partition is chosen by the producer's partitioner from its key.

Values are encoded by `format`: "json" (the workflow codec's primitives as JSON, the default),
"msgpack", or "raw" (bytes as they are, str as UTF-8); with the worker's schema registry
(`grctl.worker.schema_registry`, seen here as a `RecordEncoder`) in its wire format: "avro"
(`schema`: the Avro schema, str or dict), "protobuf" (`schema`: the message class; the value an
instance of it) or "jsonschema" (`schema`: the JSON Schema, str or dict); or by a `serializer`
callable to bytes. Registry formats are encoded when the handler returns: from confluent-kafka's
cache if the schema's id is known for the topic's subject, else in a thread (a registration or
lookup); a value that does not fit fails the step with `SchemaSerializationError`. Topics named
``grctl.*`` belong to the engine and are refused.

Keys are encoded by `key_format`: "raw" (the default: bytes as they are, str as UTF-8), "json",
"msgpack", or a registry format with `key_schema`, registered under the subject ``<topic>-key``
and encoded with the value; or by a `key_serializer`. A key of None is no key. A key that does
not fit its schema fails the step with `SchemaSerializationError` (its `field` is "key").
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, Literal, Protocol

import msgspec

from grctl.codec import CodecRegistry
from grctl.errors import InvalidArgumentError
from grctl.formats import REGISTRY_FORMATS, RecordField, RegistryFormat, check_schema, encode_value
from grctl.models.emit import Emit

__all__ = ["Emit", "EmitBuffer", "EmitFormat", "KeyFormat", "RecordEncoder"]

EmitFormat = Literal["json", "msgpack", "raw", "avro", "protobuf", "jsonschema"]
KeyFormat = EmitFormat
#: Records one step may emit (they all go into one transaction).
MAX_EMITS_PER_STEP: Final = 10_000
_TOPIC_RE: Final = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_json = msgspec.json.Encoder()
_msgpack = msgspec.msgpack.Encoder()
_KEY_FORMATS: Final = ("raw", "json", "msgpack", *REGISTRY_FORMATS)


class RecordEncoder(Protocol):
    """Encodes values in a schema registry's wire format (the worker's `SchemaRegistry`)."""

    def encode_is_cached(self, format: RegistryFormat, schema: Any, topic: str, field: RecordField = "value") -> bool:
        """True if `encode` would not need to ask the registry."""
        ...

    def encode(
        self, format: RegistryFormat, schema: Any, topic: str, value: Any, field: RecordField = "value"
    ) -> bytes:
        """The value in the registry's wire format (blocking on a registration or lookup)."""
        ...


def _bytes(value: str | bytes, what: str) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    raise InvalidArgumentError(f"{what} must be str or bytes, got {type(value).__name__}", argument=what)


class EmitBuffer:
    """The records of one step execution, encoded and checked as they are emitted."""

    def __init__(self, codec: CodecRegistry, registry: RecordEncoder | None = None) -> None:
        self._codec = codec
        self._registry = registry
        self.records: list[Emit] = []
        #: Registry-format keys and values not encoded yet: (index in `records`, "key" or
        #: "value", format, schema, the key or value).
        self._pending: list[tuple[int, RecordField, Any, Any, Any]] = []

    def encode_cached(self) -> bool:
        """Encode the registry-format records if no registry lookup is needed; False if one is (see `encode`)."""
        registry = self._registry
        if not self._pending:
            return True
        assert registry is not None
        if not all(
            registry.encode_is_cached(fmt, schema, self.records[i].topic, field)
            for i, field, fmt, schema, _ in self._pending
        ):
            return False
        self.encode()
        return True

    def encode(self) -> None:
        """Encode the registry-format records (blocking on a registration or lookup: call it in a thread).

        Raises:
            SchemaSerializationError: a key or value does not fit its schema, or the registry refused it.
            SchemaRegistryUnavailableError: the registry does not answer.
        """
        registry = self._registry
        for i, field, format, schema, value in self._pending:
            assert registry is not None
            rec = self.records[i]
            data = registry.encode(format, schema, rec.topic, value, field)
            self.records[i] = (
                dataclasses.replace(rec, key=data) if field == "key" else dataclasses.replace(rec, value=data)
            )
        self._pending.clear()

    def add(
        self,
        topic: str,
        value: Any,
        *,
        key: Any = None,
        headers: Mapping[str, str | bytes] | Sequence[tuple[str, str | bytes]] | None = None,
        format: EmitFormat = "json",  # the natural name of the option
        schema: Any = None,
        serializer: Callable[[Any], bytes] | None = None,
        key_format: KeyFormat = "raw",
        key_schema: Any = None,
        key_serializer: Callable[[Any], bytes] | None = None,
    ) -> None:
        """Encode and buffer one record (see the module docstring).

        Raises:
            InvalidArgumentError: a bad topic name, an engine topic, a bad key, header, format or
                schema (of the value or the key), or a registry format without a registry.
            CodecError: the value or key cannot be encoded.
        """
        if not isinstance(topic, str) or not _TOPIC_RE.match(topic) or topic in (".", ".."):
            raise InvalidArgumentError(
                f"invalid topic name {topic!r}: 1-249 characters of letters, digits, '.', '_' and '-'", argument="topic"
            )
        if topic.startswith("grctl."):
            raise InvalidArgumentError(
                f"topic {topic!r} belongs to the engine (grctl.*): emit to your own topics", argument="topic"
            )
        if len(self.records) >= MAX_EMITS_PER_STEP:
            raise InvalidArgumentError(f"a step may emit at most {MAX_EMITS_PER_STEP:,} records", argument="topic")
        index = len(self.records)
        pending: list[tuple[int, RecordField, Any, Any, Any]] = []
        key_data = self._key(topic, key, key_format, key_schema, key_serializer)
        if key is not None and key_format in REGISTRY_FORMATS:  # encoded later, by `encode`
            pending.append((index, "key", key_format, key_schema, encode_value(self._codec, key_format, key)))
            key_data = b""
        if format in REGISTRY_FORMATS and serializer is None:
            if self._registry is None:
                raise InvalidArgumentError(
                    f"ctx.emit(format={format!r}) needs a schema registry: Worker(schema_registry=URL) or "
                    "GRCTL_SCHEMA_REGISTRY_URL",
                    argument="format",
                )
            check_schema(format, schema, required=True, what=f"ctx.emit to {topic!r}")
            pending.append((index, "value", format, schema, encode_value(self._codec, format, value)))
            data = b""
        elif schema is not None:
            raise InvalidArgumentError(
                f"ctx.emit: schema= is for the formats avro, protobuf and jsonschema, not {format!r}", argument="schema"
            )
        elif serializer is not None:
            data = serializer(value)
            if not isinstance(data, bytes):
                raise InvalidArgumentError(
                    f"the serializer returned {type(data).__name__}, not bytes", argument="serializer"
                )
        elif format == "json":
            data = _json.encode(self._codec.to_primitive(value))
        elif format == "msgpack":
            data = _msgpack.encode(self._codec.to_primitive(value))
        elif format == "raw":
            data = _bytes(value, "value")
        else:
            raise InvalidArgumentError(
                f"unknown format {format!r}: use json, msgpack, raw, avro, protobuf or jsonschema", argument="format"
            )
        items = list(headers.items()) if isinstance(headers, Mapping) else list(headers or ())
        encoded_headers = [(str(k), _bytes(v, f"header {k!r}")) for k, v in items] or None
        self.records.append(Emit(topic, key_data, data, encoded_headers))
        self._pending.extend(pending)

    def _key(
        self, topic: str, key: Any, key_format: str, key_schema: Any, key_serializer: Callable[[Any], bytes] | None
    ) -> bytes | None:
        """The key's bytes; None for no key, or for a registry key format (encoded later, by `encode`)."""
        what = f"ctx.emit to {topic!r}"
        if key_format not in _KEY_FORMATS:
            raise InvalidArgumentError(
                f"{what}: unknown key_format {key_format!r}: use raw, json, msgpack, avro, protobuf or jsonschema",
                argument="key_format",
            )
        if key_serializer is not None and key_format != "raw":
            raise InvalidArgumentError(
                f"{what}: give key_format={key_format!r} or a key_serializer, not both", argument="key_serializer"
            )
        if key_format in REGISTRY_FORMATS:
            if self._registry is None:
                raise InvalidArgumentError(
                    f"ctx.emit(key_format={key_format!r}) needs a schema registry: Worker(schema_registry=URL) or "
                    "GRCTL_SCHEMA_REGISTRY_URL",
                    argument="key_format",
                )
            check_schema(key_format, key_schema, required=True, what=what, name="key_schema")
            return None
        if key_schema is not None:
            raise InvalidArgumentError(
                f"{what}: key_schema= is for the key formats avro, protobuf and jsonschema, not {key_format!r}",
                argument="key_schema",
            )
        if key is None:
            return None
        if key_serializer is not None:
            data = key_serializer(key)
            if not isinstance(data, bytes):
                raise InvalidArgumentError(
                    f"the key_serializer returned {type(data).__name__}, not bytes", argument="key_serializer"
                )
            return data
        if key_format == "json":
            return _json.encode(self._codec.to_primitive(key))
        if key_format == "msgpack":
            return _msgpack.encode(self._codec.to_primitive(key))
        return _bytes(key, "key")
