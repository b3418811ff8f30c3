"""Avro, Protobuf and JSON Schema through a Confluent-compatible schema registry.

`SchemaRegistry` is the worker's registry (``Worker(schema_registry=URL or SchemaRegistry(...))``,
else ``GRCTL_SCHEMA_REGISTRY_URL``). Sources decode and `ctx.emit` encodes with confluent-kafka's
serializers (the ``grctl[registry]`` extra) and the registry's wire format: magic byte 0, the
schema id as 4 bytes big-endian, then the payload (for Protobuf: message indexes, then the
message). Subjects follow the topic name strategy: ``<topic>-value`` for values, ``<topic>-key``
for keys (a source's `key_format`, an emit's `key_format`).

Network lookups stay off the event loop: confluent-kafka's client caches every schema it has
fetched or registered, and this module remembers which schema ids (sources) and which
(serializer, subject) pairs (emits) have been through it. A source record with a new schema id
is decoded in a worker thread; an emit whose schema is not yet registered for its subject is
encoded in a thread after the step's handler returns. Neither happens inside a Kafka
transaction call.

What a failure becomes:

- a record that is not in the wire format, whose schema id the registry does not know, or whose
  payload does not decode: the source dead-letters it with the reason;
- the registry is unreachable (after the client's own retries), answers with a server error or
  refuses this client: `SchemaRegistryUnavailableError`. A source does not dead-letter the
  record (it is fine, the registry is not): the worker's session restarts after a back-off and
  reads it again, so no record is lost while the registry is down. In a step it fails the step;
- a value that does not fit the emit's schema, or a schema the registry refuses:
  `SchemaSerializationError`, the step fails and publishes nothing.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

from grctl import settings
from grctl.errors import (
    InvalidArgumentError,
    SchemaRegistryError,
    SchemaRegistryUnavailableError,
    SchemaSerializationError,
    UnknownSchemaError,
    WireFormatError,
)
from grctl.formats import REGISTRY_FORMATS, RecordField, RegistryFormat, check_format, check_schema, encode_value

if TYPE_CHECKING:
    pass

__all__ = [
    "ENV_URL",
    "REGISTRY_FORMATS",
    "RecordField",
    "RegistryDecoder",
    "RegistryFormat",
    "SchemaRegistry",
    "check_schema",
    "encode_value",
    "schema_id_of",
]

#: The wire format: magic byte 0, then the schema id as a 4-byte big-endian int.
MAGIC_BYTE: Final = 0
HEADER_BYTES: Final = 5
ENV_URL: Final = "GRCTL_SCHEMA_REGISTRY_URL"
#: Seconds one HTTP request to the registry may take (the client retries on its own on top).
DEFAULT_TIMEOUT_S: Final = 10.0
_INSTALL = "pip install 'grctl[registry]'"


def schema_id_of(data: bytes) -> int:
    """The schema id in a record in the registry's wire format.

    Raises:
        WireFormatError: too short for the header, or the first byte is not the magic byte 0.
    """
    if len(data) < HEADER_BYTES:
        raise WireFormatError(
            f"not in the schema registry's wire format: {len(data)} bytes, fewer than the {HEADER_BYTES} of "
            "its header (magic byte 0, 4-byte schema id)"
        )
    if data[0] != MAGIC_BYTE:
        raise WireFormatError(
            f"not in the schema registry's wire format: the first byte is 0x{data[0]:02x}, not the magic byte "
            "0x00 (written without a schema-registry serializer?)"
        )
    return int.from_bytes(data[1:HEADER_BYTES], "big")


def _schema_str(schema: str | dict[str, Any]) -> str:
    return schema if isinstance(schema, str) else json.dumps(schema, sort_keys=True)


def _is_transport_error(exc: BaseException) -> bool:
    # httpx's TransportError (refused, reset, timeout, DNS) without importing httpx: confluent-kafka
    # picks httpx or httpx2 itself.
    return isinstance(exc, OSError) or any(c.__name__ == "TransportError" for c in type(exc).__mro__)


class SchemaRegistry:
    """A Confluent-compatible schema registry, for the formats avro, protobuf and jsonschema.

    Args:
        url: the registry's base URL (for Apicurio Registry its ccompat API,
            ``http://HOST:PORT/apis/ccompat/v7``; `grctl dev registry start` prints it).
        auto_register: whether `ctx.emit` registers its schema under the topic's subject when it
            is not registered yet (the default, as confluent-kafka's serializers do), or only
            looks it up (a step whose schema is not registered fails).
        config: extra settings for confluent-kafka's ``SchemaRegistryClient``
            (``basic.auth.user.info``, ``ssl.ca.location``, ``max.retries``, ...).
        timeout: seconds one HTTP request may take.

    Raises:
        InvalidArgumentError: no URL, or an unusable setting.
    """

    def __init__(
        self,
        url: str,
        *,
        auto_register: bool = True,
        config: Mapping[str, Any] | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise InvalidArgumentError(
                f"schema registry url {url!r} must be an http:// or https:// URL", argument="schema_registry"
            )
        self.url = url.rstrip("/")
        self.auto_register = bool(auto_register)
        self._config = {"url": self.url, "timeout": timeout, **(config or {})}
        self._client: Any = None
        self._lock = threading.Lock()
        self._serializers: dict[tuple[str, Any], Any] = {}
        #: (serializer key, subject) pairs a value was encoded for: the client has their schema id.
        self._ready: set[tuple[tuple[str, Any], str]] = set()

    @classmethod
    def from_env(cls) -> SchemaRegistry | None:
        """The registry named by ``GRCTL_SCHEMA_REGISTRY_URL`` (None: unset)."""
        url = settings.schema_registry_url()
        return cls(url) if url else None

    def __repr__(self) -> str:
        return f"SchemaRegistry({self.url!r})"

    @property
    def client(self) -> Any:
        """confluent-kafka's ``SchemaRegistryClient`` (made on first use).

        Raises:
            SchemaRegistryError: the ``grctl[registry]`` extra is not installed.
        """
        with self._lock:
            if self._client is None:
                try:
                    from confluent_kafka.schema_registry import SchemaRegistryClient
                except ImportError as exc:
                    raise SchemaRegistryError(f"schema-registry formats need {_INSTALL} ({exc})", url=self.url) from exc
                try:
                    self._client = SchemaRegistryClient(dict(self._config))
                except (TypeError, ValueError) as exc:
                    raise InvalidArgumentError(f"schema registry config: {exc}", argument="schema_registry") from exc
            return self._client

    def close(self) -> None:
        """Close the HTTP connections; the next use opens new ones (the worker calls this when its run ends)."""
        with self._lock:
            client, self._client = self._client, None
            self._serializers.clear()
            self._ready.clear()
        if client is not None:
            client.close()

    def __enter__(self) -> SchemaRegistry:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def unavailable(self, exc: BaseException) -> SchemaRegistryUnavailableError | None:
        """`exc` as the registry being unavailable, or None if it is about the record or value."""
        from confluent_kafka.schema_registry.error import SchemaRegistryError as ClientError

        if isinstance(exc, SchemaRegistryUnavailableError):
            return exc
        if isinstance(exc, ClientError):
            code = exc.http_status_code
            if code in (401, 403):
                return SchemaRegistryUnavailableError(self.url, f"HTTP {code}, this client is refused: check its "
                                                      f"credentials (config=...): {exc.error_message}")  # fmt: skip
            if code >= 500 or code in (408, 429):
                return SchemaRegistryUnavailableError(self.url, f"HTTP {code}: {exc.error_message}")
            return None
        if _is_transport_error(exc):
            return SchemaRegistryUnavailableError(self.url, f"{type(exc).__name__}: {exc}")
        return None

    def check(self) -> None:
        """Ask the registry for its subjects (blocking): the worker calls this at start.

        Raises:
            SchemaRegistryUnavailableError: it does not answer.
            SchemaRegistryError: the extra is not installed.
        """
        try:
            self.client.get_subjects()
        except Exception as exc:  # classified just below
            down = self.unavailable(exc)
            if down is not None:
                raise down from exc
            raise SchemaRegistryUnavailableError(self.url, f"{type(exc).__name__}: {exc}") from exc

    # ------------------------------------------------------------------ decoding (sources)

    def decoder(
        self, format: str, schema: Any = None, *, what: str = "source", field: RecordField = "value"
    ) -> RegistryDecoder:
        """A decoder of record values (or with `field` "key": keys) in `format` (see `RegistryDecoder`).

        Raises:
            InvalidArgumentError: an unknown format or an unusable schema.
            SchemaRegistryError: the ``grctl[registry]`` extra is not installed.
        """
        fmt = check_format(format)
        check_schema(fmt, schema, required=False, what=what)
        return RegistryDecoder(self, fmt, schema, field=field)

    # ------------------------------------------------------------------ encoding (emits)

    def _serializer(self, format: RegistryFormat, schema: Any) -> tuple[tuple[str, Any], Any]:
        key = (format, schema if format == "protobuf" else _schema_str(schema))
        with self._lock:
            ser = self._serializers.get(key)
        if ser is not None:
            return key, ser
        client = self.client
        conf = {"auto.register.schemas": self.auto_register}
        try:
            if format == "avro":
                from confluent_kafka.schema_registry.avro import AvroSerializer

                ser = AvroSerializer(client, key[1], conf=conf)
            elif format == "jsonschema":
                from confluent_kafka.schema_registry.json_schema import JSONSerializer

                ser = JSONSerializer(key[1], client, conf=conf)
            else:
                from confluent_kafka.schema_registry.protobuf import ProtobufSerializer

                ser = ProtobufSerializer(schema, client, {**conf, "use.deprecated.format": False})
        except ImportError as exc:
            raise SchemaRegistryError(f"format {format!r} needs {_INSTALL} ({exc})", url=self.url) from exc
        except Exception as exc:  # a schema the library cannot parse
            raise InvalidArgumentError(
                f"the {format} schema cannot be used: {type(exc).__name__}: {exc}", argument="schema"
            ) from exc
        with self._lock:
            ser = self._serializers.setdefault(key, ser)
        return key, ser

    def encode_is_cached(self, format: RegistryFormat, schema: Any, topic: str, field: RecordField = "value") -> bool:
        """Whether `encode` for this schema, topic and field needs no network (its id is known)."""
        key = (format, schema if format == "protobuf" else _schema_str(schema))
        return (key, f"{topic}-{field}") in self._ready

    def encode(
        self, format: RegistryFormat, schema: Any, topic: str, value: Any, field: RecordField = "value"
    ) -> bytes:
        """`value` in the wire format for `topic`'s subject of `field` (blocking on a first registration).

        `field` "value" encodes a record value (subject ``<topic>-value``), "key" a record key
        (subject ``<topic>-key``).

        Raises:
            SchemaSerializationError: the value does not fit the schema, or the registry refused
                the schema (or, with auto_register off, does not have it).
            SchemaRegistryUnavailableError: the registry does not answer.
        """
        from confluent_kafka.schema_registry.error import SchemaRegistryError as ClientError
        from confluent_kafka.serialization import MessageField, SerializationContext

        key, ser = self._serializer(format, schema)
        subject = f"{topic}-{field}"
        ctx = SerializationContext(topic, MessageField.KEY if field == "key" else MessageField.VALUE)
        try:
            data = ser(value, ctx)
        except Exception as exc:  # fastavro, jsonschema, protobuf: each its own errors
            down = self.unavailable(exc)
            if down is not None:
                raise down from exc
            if isinstance(exc, ClientError):
                raise SchemaSerializationError(
                    self._refused(format, subject, exc), topic=topic, format=format, url=self.url, field=field
                ) from exc
            raise SchemaSerializationError(
                f"the {field} emitted to {topic!r} does not fit its {format} schema: {type(exc).__name__}: {exc}",
                topic=topic, format=format, url=self.url, field=field,
            ) from exc  # fmt: skip
        if not isinstance(data, bytes):
            raise SchemaSerializationError(
                f"a None {field} cannot be emitted as {format}", topic=topic, format=format, field=field
            )
        self._ready.add((key, subject))
        return data

    def _refused(self, format: str, subject: str, exc: Any) -> str:
        text = f"the schema registry at {self.url} refused the {format} schema for subject {subject!r}: {exc}"
        if format == "jsonschema" and (exc.http_status_code == 422 or exc.error_code == 42201):
            text += (
                '. A registry that tells the schema type from the content (Apicurio Registry) needs a "$schema" '
                'key (e.g. "http://json-schema.org/draft-07/schema#") or "properties" in a JSON Schema'
            )
        elif exc.http_status_code == 404 and not self.auto_register:
            text += (
                "; auto_register is off, so the schema must be registered under the subject first "
                "(or use SchemaRegistry(url, auto_register=True))"
            )
        elif exc.http_status_code == 409:
            text += "; the schema is not compatible with the subject's earlier versions"
        return text


class RegistryDecoder:
    """Decodes record values (or keys) of one source topic in a schema-registry format.

    `decode` is pure CPU once a record's schema id has been decoded before (`is_known`); a new id
    costs one lookup, which the worker makes in a thread.

    Args:
        registry: the registry.
        format: avro, protobuf or jsonschema.
        schema: Avro: a reader schema (None: the writer's schema, values as written);
            Protobuf: the message class (required); JSON Schema: a schema to validate against
            (None: the writer's schema).
        field: "value" (the default) or "key": which part of a record it decodes (the
            deserializers get ``MessageField.VALUE`` or ``MessageField.KEY``).
    """

    def __init__(
        self, registry: SchemaRegistry, format: RegistryFormat, schema: Any, *, field: RecordField = "value"
    ) -> None:
        self.registry = registry
        self.format = format
        self.field: RecordField = field
        client = registry.client
        try:
            if format == "avro":
                from confluent_kafka.schema_registry.avro import AvroDeserializer

                self._de: Callable[..., Any] = AvroDeserializer(client, None if schema is None else _schema_str(schema))
            elif format == "jsonschema":
                from confluent_kafka.schema_registry.json_schema import JSONDeserializer

                self._de = JSONDeserializer(None if schema is None else _schema_str(schema),
                                            schema_registry_client=client)  # fmt: skip
            else:
                from confluent_kafka.schema_registry.protobuf import ProtobufDeserializer

                # Without the client: the message class is the reader's schema, and the writer's
                # schema is only checked to exist (`decode`). With it, the deserializer asks for
                # the schema with format=serialized, which Apicurio Registry 3.3 answers with a
                # 500 for schemas registered as a base64 FileDescriptorProto (as the Python
                # serializer registers them).
                self._de = ProtobufDeserializer(schema, {"use.deprecated.format": False})
        except ImportError as exc:
            raise SchemaRegistryError(f"format {format!r} needs {_INSTALL} ({exc})", url=registry.url) from exc
        self._known: set[int] = set()

    def is_known(self, data: bytes | None) -> bool:
        """Whether decoding `data` needs no lookup: its schema id was decoded before, or it is not the wire format."""
        if not data:
            return True
        try:
            return schema_id_of(data) in self._known
        except WireFormatError:
            return True  # refused without a lookup

    def decode(self, data: bytes, topic: str) -> Any:
        """The value (or key) of a record of `topic` (blocking if its schema id is new, see `is_known`).

        Raises:
            WireFormatError: not in the wire format.
            UnknownSchemaError: the registry does not know its schema id.
            SchemaRegistryUnavailableError: the registry did not answer the lookup.
            Exception: the payload does not decode with its schema (the library's own error).
        """
        from confluent_kafka.schema_registry.error import SchemaRegistryError as ClientError
        from confluent_kafka.serialization import MessageField, SerializationContext

        schema_id = schema_id_of(data)
        try:
            if self.format == "protobuf" and schema_id not in self._known:
                self.registry.client.get_schema(schema_id)  # the id must exist (see __init__)
            ctx = SerializationContext(topic, MessageField.KEY if self.field == "key" else MessageField.VALUE)
            value = self._de(data, ctx)
        except Exception as exc:
            down = self.registry.unavailable(exc)
            if down is not None:
                raise down from exc
            if isinstance(exc, ClientError) and exc.http_status_code == 404:
                raise UnknownSchemaError(schema_id, self.registry.url) from exc
            raise
        self._known.add(schema_id)
        return value
