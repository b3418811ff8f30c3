"""Key formats (issue 17, part 4) without a broker or registry: validation, decoding, encoding, dead letters.

Source partitions are driven with stand-in messages and outbox; the registry formats with a
stand-in decoder or registry that records what it was asked. The real registry is in
tests/scenarios/test_schema_registry.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec
import pytest

from grctl import Workflow
from grctl.codec import default_codec
from grctl.errors import (
    InvalidArgumentError,
    RegistrationError,
    SchemaRegistryUnavailableError,
    SchemaSerializationError,
    WireFormatError,
)
from grctl.kafka.limits import RecordLimits
from grctl.kafka.topics import TopicNames
from grctl.worker._edges.sources import SourcePartition
from grctl.worker.emit import EmitBuffer
from grctl.worker.schema_registry import SchemaRegistry
from grctl.worker.sources import SendEvent, Source, SourceRecord, StartRun


def skip(_: SourceRecord) -> None:
    return None


# ---------------------------------------------------------------------- validation


def test_source_key_settings_are_checked() -> None:
    with pytest.raises(InvalidArgumentError, match="unknown key_format 'xml'"):
        Source("t", skip, key_format="xml")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="give key_format='json' or a key_deserializer, not both"):
        Source("t", skip, key_format="json", key_deserializer=bytes)
    with pytest.raises(InvalidArgumentError, match="key_schema= is for the key formats avro, protobuf and jsonschema"):
        Source("t", skip, key_format="str", key_schema={"type": "string"})
    with pytest.raises(InvalidArgumentError, match=r"key_schema= is for the key formats .* not None"):
        Source("t", skip, key_schema={"type": "string"})
    with pytest.raises(InvalidArgumentError, match="'protobuf' needs key_schema=<a generated protobuf message class>"):
        Source("t", skip, key_format="protobuf")
    with pytest.raises(InvalidArgumentError, match="the avro key_schema must be a str or dict, got int"):
        Source("t", skip, key_format="avro", key_schema=3)
    with pytest.raises(InvalidArgumentError, match="key_deserializer must be a function"):
        Source("t", skip, key_deserializer=b"no")  # type: ignore[arg-type]
    src = Source("t", skip, key_format="avro")  # the writer's schema
    assert src.key_uses_registry and not src.uses_registry
    assert not Source("t", skip, key_format="json").key_uses_registry


def test_a_registry_key_format_needs_a_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    from grctl.worker import Worker

    monkeypatch.delenv("GRCTL_SCHEMA_REGISTRY_URL", raising=False)
    wf = Workflow(workflow_type="K")

    @wf.start()
    async def start(ctx: object) -> None: ...

    with pytest.raises(RegistrationError, match="has key_format 'jsonschema', which needs a schema registry"):
        Worker([wf], sources=[Source("t", skip, key_format="jsonschema")])


def test_emit_key_settings_are_checked() -> None:
    b = EmitBuffer(default_codec())
    with pytest.raises(InvalidArgumentError, match="unknown key_format 'str'"):
        b.add("t", 1, key="k", key_format="str")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match=r"ctx.emit\(key_format='avro'\) needs a schema registry"):
        b.add("t", 1, key="k", key_format="avro", key_schema={"type": "string"})
    with pytest.raises(InvalidArgumentError, match="key_schema= is for the key formats avro, protobuf and jsonschema"):
        b.add("t", 1, key="k", key_format="json", key_schema={"type": "string"})
    with pytest.raises(InvalidArgumentError, match="give key_format='json' or a key_serializer, not both"):
        b.add("t", 1, key="k", key_format="json", key_serializer=lambda k: b"")
    with pytest.raises(InvalidArgumentError, match="the key_serializer returned str, not bytes"):
        b.add("t", 1, key="k", key_serializer=lambda k: "k")
    with pytest.raises(InvalidArgumentError, match="key must be str or bytes, got int"):
        b.add("t", 1, key=7)
    reg = EmitBuffer(default_codec(), SchemaRegistry("http://127.0.0.1:1"))
    with pytest.raises(InvalidArgumentError, match="'protobuf' needs key_schema=<a generated protobuf message class>"):
        reg.add("t", 1, key="k", key_format="protobuf")
    with pytest.raises(InvalidArgumentError, match="format 'avro' needs key_schema="):
        reg.add("t", 1, key="k", key_format="avro")
    assert b.records == [] and reg.records == []


# ---------------------------------------------------------------------- emit encoding


def test_emit_keys_in_plain_formats_and_by_a_serializer() -> None:
    b = EmitBuffer(default_codec())
    b.add("t", 1, key={"order": "o1", "n": 2}, key_format="json")
    b.add("t", 1, key=[1, "a"], key_format="msgpack")
    b.add("t", 1, key=42, key_serializer=lambda k: k.to_bytes(8, "big"))
    b.add("t", 1, key="text")  # raw, the default
    b.add("t", 1, key=None, key_format="json")  # no key
    keys = [r.key for r in b.records]
    assert msgspec.json.decode(keys[0] or b"") == {"order": "o1", "n": 2}
    assert msgspec.msgpack.decode(keys[1] or b"") == [1, "a"]
    assert keys[2:] == [(42).to_bytes(8, "big"), b"text", None]


@dataclass
class StubRegistry:
    """Encodes as ``<field>:<topic>:<value>``; `cached` is the (topic, field) pairs known without a lookup."""

    cached: set[tuple[str, str]] = field(default_factory=set)
    asked: list[tuple[str, str, str]] = field(default_factory=list)
    refuse: str | None = None

    def encode_is_cached(self, format: str, schema: Any, topic: str, field: str = "value") -> bool:
        return (topic, field) in self.cached

    def encode(self, format: str, schema: Any, topic: str, value: Any, field: str = "value") -> bytes:
        self.asked.append((format, topic, field))
        if field == self.refuse:
            raise SchemaSerializationError(f"the {field} emitted to {topic!r} does not fit", topic=topic,
                                           format=format, field=field)  # fmt: skip
        return f"{field}:{topic}:{value}".encode()


def stub_buffer(reg: StubRegistry) -> EmitBuffer:
    return EmitBuffer(default_codec(), reg)  # type: ignore[arg-type]  # duck-typed stand-in


def test_a_registry_key_is_encoded_with_the_value_under_the_key_subject() -> None:
    reg = StubRegistry(cached={("t", "value")})
    b = stub_buffer(reg)
    b.add("t", "v", key="k", key_format="avro", key_schema={"type": "string"}, format="avro", schema="string")
    b.add("u", {"a": 1}, key="plain")
    assert not b.encode_cached()  # the key's subject is not known yet: encoded in a thread
    assert reg.asked == []
    b.encode()
    assert sorted(reg.asked) == [("avro", "t", "key"), ("avro", "t", "value")]
    assert (b.records[0].key, b.records[0].value) == (b"key:t:k", b"value:t:v")
    assert b.records[1].key == b"plain"
    reg2 = StubRegistry(cached={("t", "key")})
    b2 = stub_buffer(reg2)
    b2.add("t", {"x": 1}, key={"id": 5}, key_format="jsonschema", key_schema={"type": "object"})
    assert b2.encode_cached()  # cached: no thread needed
    assert b2.records[0].key == b"key:t:{'id': 5}"


def test_a_key_that_does_not_fit_fails_with_the_key_named() -> None:
    b = stub_buffer(StubRegistry(refuse="key"))
    b.add("t", 1, key="k", key_format="avro", key_schema={"type": "int"})
    with pytest.raises(SchemaSerializationError, match="the key emitted to 't'") as err:
        b.encode()
    assert err.value.field == "key"


# ---------------------------------------------------------------------- source decoding


@dataclass
class Msg:
    """A stand-in for confluent_kafka.Message."""

    k: bytes | None
    v: bytes | None
    off: int = 0
    t: str = "orders"

    def key(self) -> bytes | None:
        return self.k

    def value(self) -> bytes | None:
        return self.v

    def offset(self) -> int:
        return self.off

    def topic(self) -> str:
        return self.t

    def partition(self) -> int:
        return 0

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_700_000_000_000)

    def headers(self) -> list[tuple[str, bytes]]:
        return []


@dataclass
class Outbox:
    produced: list[tuple[str, int, bytes, bytes, Any]] = field(default_factory=list)

    def offsets_moved(self) -> None: ...

    def produce(self, topic: str, part: int, key: bytes, value: bytes, headers: Any, origin: Any = None) -> None:
        self.produced.append((topic, part, key, value, headers))


TOPICS = TopicNames("keys")


def partition(source: Source, **kw: Any) -> tuple[SourcePartition, Outbox]:
    out = Outbox()
    limits = RecordLimits(record_bytes={}, value_bytes=1_000_000, producer_max_bytes=1_000_000)
    sp = SourcePartition(source, 0, outbox=out, topics=TOPICS, num_partitions=4, codec=default_codec(),  # type: ignore[arg-type]
                         limits=limits, **kw)  # fmt: skip
    return sp, out


def reasons(out: Outbox) -> list[str]:
    return [dict(h)["grctl.reason"].decode() for t, _, _, _, h in out.produced if t == TOPICS.dead_letter]


def directed(out: Outbox) -> list[str]:
    """The workflow ids of the directives produced (their records' keys)."""
    return [k.decode() for t, _, k, _, _ in out.produced if t == TOPICS.directives]


def test_the_route_sees_the_decoded_key_and_the_raw_key_bytes() -> None:
    seen: list[SourceRecord] = []

    def route(rec: SourceRecord) -> StartRun:
        seen.append(rec)
        return StartRun("Order", rec.value, id=None if rec.key_value is None else str(rec.key_value["id"]))

    sp, out = partition(Source("orders", route, key_format="json"))
    sp.on_record(Msg(b'{"id": 7}', b'{"n": 1}', 0))
    sp.on_record(Msg(None, b'{"n": 2}', 1))
    assert [(r.key, r.key_value) for r in seen] == [(b'{"id": 7}', {"id": 7}), (None, None)]
    assert directed(out) == ["7", "orders-0-1"]
    assert reasons(out) == []


def test_without_a_key_format_the_key_value_is_the_bytes_and_a_key_deserializer_decodes() -> None:
    seen: list[Any] = []

    def route(rec: SourceRecord) -> None:
        seen.append(rec.key_value)

    sp, _ = partition(Source("orders", route))
    sp.on_record(Msg(b"\xffraw", b"{}"))
    sp2, _ = partition(Source("orders", route, key_format="str"))
    sp2.on_record(Msg(b"text", b"{}"))
    sp3, _ = partition(Source("orders", route, key_deserializer=lambda b: int.from_bytes(b, "big")))
    sp3.on_record(Msg((300).to_bytes(2, "big"), b"{}"))
    assert seen == [b"\xffraw", "text", 300]


def test_an_undecodable_key_is_dead_lettered_naming_the_key_and_the_next_record_runs() -> None:
    def route(rec: SourceRecord) -> SendEvent:
        return SendEvent(rec.key_value, "paid")

    sp, out = partition(Source("orders", route, key_format="json"))
    sp.on_record(Msg(b"not json", b"{}", 0))
    sp.on_record(Msg(b'"w-1"', b"{}", 1))
    (reason,) = reasons(out)
    assert reason.startswith("cannot decode the key (json): DecodeError")
    assert directed(out) == ["w-1"]
    assert sp.position == 2 and sp.dead_lettered == 1 and sp.routed == 1
    sp2, out2 = partition(Source("orders", route, key_deserializer=lambda b: 1 / 0))
    sp2.on_record(Msg(b"k", b"{}"))
    assert reasons(out2) == ["cannot decode the key (key_deserializer): ZeroDivisionError: division by zero"]


@dataclass
class StubDecoder:
    """A registry decoder: data b"id:<n>" decodes to ("decoded", n) once id n is known; b"down" is an outage."""

    known: set[bytes] = field(default_factory=set)
    down: bool = False
    calls: int = 0

    def is_known(self, data: bytes | None) -> bool:
        return not data or data in self.known

    def decode(self, data: bytes, topic: str) -> Any:
        self.calls += 1
        if self.down:
            raise SchemaRegistryUnavailableError("http://reg", "refused")
        if not data.startswith(b"id:"):
            raise WireFormatError("not in the schema registry's wire format")
        self.known.add(data)
        return ("decoded", data[3:].decode())


def test_registry_keys_are_looked_up_ahead_and_an_outage_leaves_the_record_unread() -> None:
    seen: list[Any] = []

    def route(rec: SourceRecord) -> None:
        seen.append((rec.key_value, rec.value))

    keys, values = StubDecoder(), StubDecoder()
    src = Source("orders", route, format="avro", key_format="avro")
    sp, out = partition(src, decoder=values, key_decoder=keys)
    msg = Msg(b"id:1", b"id:2", 0)
    assert sp.needs_lookup(msg)
    keys.down = True
    with pytest.raises(SchemaRegistryUnavailableError):
        sp.lookup(msg)
    assert sp.position is None and out.produced == []  # not read: the session restarts and reads it again
    keys.down = False
    sp.lookup(msg)  # in a thread, in the worker
    calls = keys.calls + values.calls
    sp.on_record(msg)
    assert keys.calls + values.calls == calls  # decoded ahead, not again
    assert seen == [(("decoded", "1"), ("decoded", "2"))]
    assert not sp.needs_lookup(Msg(b"id:1", b"id:2", 1))
    assert sp.needs_lookup(Msg(b"id:9", b"id:2", 1))  # a new key schema id alone needs a lookup
    sp.lookup(Msg(b"bad", b"id:2", 1))
    sp.on_record(Msg(b"bad", b"id:2", 1))
    assert reasons(out) == ["cannot decode the key (avro): WireFormatError: not in the schema registry's wire format"]
    assert sp.position == 2


def test_a_source_with_a_registry_key_format_needs_a_key_decoder() -> None:
    with pytest.raises(InvalidArgumentError, match="key_format 'avro' but no registry decoder for keys"):
        partition(Source("orders", skip, key_format="avro"))
