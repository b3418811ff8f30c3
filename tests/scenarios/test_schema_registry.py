"""Avro, Protobuf and JSON Schema through a real schema registry (issue 17, part 4).

The registry is the session's local Apicurio Registry (`schema_registry_url`), the broker the
session's Kafka. Source records are written with confluent-kafka's serializers and start runs
with the decoded values; steps emit with `ctx.emit(format=...)` and a reader decodes the records
(read_committed) with confluent-kafka's deserializers. Bad input: records outside the wire
format, an unknown schema id or an undecodable payload are dead-lettered with their reason while
the partition moves on; a value that does not fit the emit's schema fails the step and publishes
nothing; an unreachable registry is named at worker start, and a registry that is down at a
lookup costs a session restart, not the record. Keys: an Avro-keyed source routes by the decoded
key, a record whose key does not decode is dead-lettered naming the key, and emitted Avro and
JSON Schema keys (subject ``<topic>-key``) are read back with confluent-kafka's deserializers.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.json_schema import JSONDeserializer, JSONSerializer
from confluent_kafka.schema_registry.protobuf import ProtobufDeserializer, ProtobufSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from grctl import Client, Context, Directive, Workflow
from grctl.errors import RegistrationError, SchemaRegistryUnavailableError
from grctl.worker import SchemaRegistry, Source, SourceRecord, StartRun
from tests.conftest import WorkerRunner
from tests.support.topics import create_topic, produce_all, read_committed, read_committed_until

pytestmark = pytest.mark.kafka

ORDER_AVRO = {
    "type": "record",
    "name": "Order",
    "namespace": "grctl.test",
    "fields": [
        {"name": "order", "type": "string"},
        {"name": "amount", "type": "int"},
        {"name": "note", "type": ["null", "string"], "default": None},
    ],
}
SHIPMENT_AVRO = {
    "type": "record",
    "name": "Shipment",
    "namespace": "grctl.test",
    "fields": [{"name": "order", "type": "string"}, {"name": "items", "type": "int"}],
}
ORDER_JSON = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "Order",
    "type": "object",
    "properties": {"order": {"type": "string"}, "amount": {"type": "integer"}},
    "required": ["order", "amount"],
}


def protobuf_order_class(tag: str) -> Any:
    """A protobuf message class `grctl.test.Order` (order: string, amount: int32), built at run time."""
    fdp = descriptor_pb2.FileDescriptorProto(name=f"grctl_order_{tag}.proto", package=f"grctl.test{tag}",
                                             syntax="proto3")  # fmt: skip
    msg = fdp.message_type.add(name="Order")
    opt = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL
    msg.field.add(name="order", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING, label=opt)
    msg.field.add(name="amount", number=2, type=descriptor_pb2.FieldDescriptorProto.TYPE_INT32, label=opt)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"grctl.test{tag}.Order"))


@pytest.fixture
def topics(kafka_bootstrap: str, unique_name: str) -> Iterator[dict[str, str]]:
    names = {r: f"{unique_name}-{r}" for r in ("orders", "results", "shipments", "notes", "protos")}
    create_topic(kafka_bootstrap, names["orders"], partitions=2)
    for role in ("results", "shipments", "notes", "protos"):
        create_topic(kafka_bootstrap, names[role])
    yield names
    AdminClient({"bootstrap.servers": kafka_bootstrap}).delete_topics(list(names.values()))


@pytest.fixture
def registry_client(schema_registry_url: str) -> Iterator[SchemaRegistryClient]:
    with SchemaRegistryClient({"url": schema_registry_url}) as client:
        yield client


def order_flow(results: str) -> Workflow:
    wf = Workflow(workflow_type="RegOrder", results_topic=results)

    @wf.start()
    async def start(ctx: Context, order: str, amount: int) -> Directive:
        return ctx.next.complete({"order": order, "amount": amount})

    return wf


def route(rec: SourceRecord) -> StartRun:
    value = rec.value
    if not isinstance(value, dict):  # protobuf: a message
        value = {"order": value.order, "amount": value.amount}
    return StartRun("RegOrder", {"order": value["order"], "amount": value["amount"]})


def serialize_all(serializer: Callable[..., bytes | None], topic: str, values: list[Any]) -> list[bytes]:
    ctx = SerializationContext(topic, MessageField.VALUE)
    out = []
    for v in values:
        data = serializer(v, ctx)
        assert data is not None
        out.append(data)
    return out


async def results(servers: str, topic: str, n: int) -> dict[str, dict[str, Any]]:
    msgs = await asyncio.to_thread(read_committed_until, servers, topic, [0], n)
    return {json.loads(m.value())["wf_id"]: json.loads(m.value()) for m in msgs}


async def produce(servers: str, topic: str, values: list[bytes]) -> None:
    await asyncio.to_thread(produce_all, servers, topic, [(f"k{i}", v) for i, v in enumerate(values)])


@pytest.mark.parametrize("fmt", ["avro", "protobuf", "jsonschema"])
async def test_source_records_in_a_registry_format_start_runs_with_the_decoded_input(
    fmt: str,
    kafka_bootstrap: str,
    topics: dict[str, str],
    workers: WorkerRunner,
    schema_registry_url: str,
    registry_client: SchemaRegistryClient,
) -> None:
    n = 12
    orders = [{"order": f"{fmt}-{i}", "amount": i} for i in range(n)]
    schema: Any = None
    if fmt == "avro":
        values = serialize_all(AvroSerializer(registry_client, json.dumps(ORDER_AVRO)), topics["orders"], orders)
    elif fmt == "jsonschema":
        values = serialize_all(JSONSerializer(json.dumps(ORDER_JSON), registry_client), topics["orders"], orders)
    else:
        schema = protobuf_order_class(fmt + topics["orders"].replace("-", "_"))
        ser = ProtobufSerializer(schema, registry_client, {"use.deprecated.format": False})
        values = serialize_all(ser, topics["orders"], [schema(**o) for o in orders])
    source = Source(topics["orders"], route, format=fmt, schema=schema)  # type: ignore[arg-type]
    await workers.start([order_flow(topics["results"])], sources=[source], schema_registry=schema_registry_url)
    await produce(kafka_bootstrap, topics["orders"], values)
    done = await results(kafka_bootstrap, topics["results"], n)
    assert sorted((r["result"]["order"], r["result"]["amount"]) for r in done.values()) == sorted(
        (o["order"], o["amount"]) for o in orders
    )
    assert {r["status"] for r in done.values()} == {"completed"}


async def test_bad_source_records_go_to_dead_letter_with_their_reason_and_the_partition_moves_on(
    kafka_bootstrap: str,
    topics: dict[str, str],
    workers: WorkerRunner,
    schema_registry_url: str,
    registry_client: SchemaRegistryClient,
) -> None:
    worker = await workers.start(
        [order_flow(topics["results"])],
        sources=[Source(topics["orders"], route, format="avro")],
        schema_registry=schema_registry_url,
    )
    (good,) = serialize_all(AvroSerializer(registry_client, json.dumps(ORDER_AVRO)), topics["orders"],
                            [{"order": "after", "amount": 7}])  # fmt: skip
    bad = [
        b'{"order": "plain json"}',  # no magic byte
        b"\x00\x00\x01",  # truncated header
        b"\x00" + (2**31 - 5).to_bytes(4, "big") + b"\x02",  # a schema id the registry does not know
        good[:5] + b"\xff\xff\xff\xff\xff\xff",  # a known id, a payload that is not an Order
    ]
    # One partition, so the good record comes after the bad ones.
    await asyncio.to_thread(produce_all, kafka_bootstrap, topics["orders"], [("same", v) for v in [*bad, good]])
    done = await results(kafka_bootstrap, topics["results"], 1)
    assert [r["result"] for r in done.values()] == [{"order": "after", "amount": 7}]
    conn = worker._connection
    assert conn is not None
    letters = await asyncio.to_thread(
        read_committed_until, kafka_bootstrap, conn.topics.dead_letter, range(conn.num_partitions), len(bad)
    )
    reasons = sorted(dict(m.headers() or [])["grctl.reason"].decode() for m in letters)
    assert len(reasons) == 4
    assert sum("the first byte is 0x7b, not the magic byte" in r for r in reasons) == 1
    assert sum("3 bytes, fewer than the 5 of its header" in r for r in reasons) == 1
    assert sum(f"schema id {2**31 - 5} is not known to the schema registry at {schema_registry_url}" in r
               for r in reasons) == 1  # fmt: skip
    assert all(r.startswith("cannot decode the value (avro)") for r in reasons)


def emit_flow(topics: dict[str, str], proto: Any) -> Workflow:
    wf = Workflow(workflow_type="RegShip")

    @wf.start()
    async def start(ctx: Context, order: str, items: int, bad: str) -> Directive:
        if bad == "value":
            ctx.emit(topics["shipments"], {"order": order, "items": "many"}, format="avro", schema=SHIPMENT_AVRO)
        elif bad == "schema":  # Apicurio cannot tell this is a JSON Schema
            ctx.emit(topics["notes"], {"order": order}, format="jsonschema", schema={"type": "object"})
        else:
            ctx.emit(topics["shipments"], {"order": order, "items": items}, key=order, format="avro",
                     schema=SHIPMENT_AVRO)  # fmt: skip
            ctx.emit(topics["notes"], {"order": order, "amount": items}, format="jsonschema", schema=ORDER_JSON)
            ctx.emit(topics["protos"], proto(order=order, amount=items), format="protobuf", schema=proto)
        return ctx.next.complete(order)

    return wf


async def test_emits_in_registry_formats_are_published_once_per_committed_step_and_bad_values_fail_the_step(
    kafka_bootstrap: str,
    topics: dict[str, str],
    workers: WorkerRunner,
    client: Client,
    schema_registry_url: str,
    registry_client: SchemaRegistryClient,
) -> None:
    proto = protobuf_order_class("emit" + topics["protos"].replace("-", "_"))
    await workers.start([emit_flow(topics, proto)], schema_registry=SchemaRegistry(schema_registry_url))
    n = 10
    handles = [
        await client.start_workflow("RegShip", f"ship-{i}", {"order": f"o{i}", "items": i, "bad": ""}) for i in range(n)
    ]
    bad_value = await client.start_workflow("RegShip", "ship-bad-value", {"order": "x", "items": 1, "bad": "value"})
    bad_schema = await client.start_workflow("RegShip", "ship-bad-schema", {"order": "y", "items": 1, "bad": "schema"})
    for h in handles:
        assert (await h.result(timeout=60)).startswith("o")
    with pytest.raises(Exception, match="SchemaSerializationError") as value_error:
        await bad_value.result(timeout=60)
    assert "does not fit its avro schema" in str(value_error.value)
    with pytest.raises(Exception, match="SchemaSerializationError") as schema_error:
        await bad_schema.result(timeout=60)
    assert '"$schema"' in str(schema_error.value) and "refused the jsonschema schema" in str(schema_error.value)

    # Every step above has committed: exactly one record per completed step, none of the failed ones.
    shipped = await asyncio.to_thread(read_committed, kafka_bootstrap, topics["shipments"], [0])
    avro = AvroDeserializer(registry_client)
    ctx = SerializationContext(topics["shipments"], MessageField.VALUE)
    assert sorted((m.key(), json.dumps(avro(m.value(), ctx))) for m in shipped) == sorted(
        (f"o{i}".encode(), json.dumps({"order": f"o{i}", "items": i})) for i in range(n)
    )
    notes = await asyncio.to_thread(read_committed, kafka_bootstrap, topics["notes"], [0])
    as_json = JSONDeserializer(None, schema_registry_client=registry_client)
    ctx = SerializationContext(topics["notes"], MessageField.VALUE)
    assert sorted(as_json(m.value(), ctx)["amount"] for m in notes) == list(range(n))
    protos = await asyncio.to_thread(read_committed, kafka_bootstrap, topics["protos"], [0])
    as_proto = ProtobufDeserializer(proto, {"use.deprecated.format": False})
    ctx = SerializationContext(topics["protos"], MessageField.VALUE)
    assert sorted(as_proto(m.value(), ctx).amount for m in protos) == list(range(n))
    # Registered under the topic name strategy's subjects.
    subjects = await asyncio.to_thread(registry_client.get_subjects)
    assert {f"{topics[t]}-value" for t in ("shipments", "notes", "protos")} <= set(subjects)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_an_unreachable_registry_stops_the_worker_at_start_naming_its_url(
    topics: dict[str, str], workers: WorkerRunner
) -> None:
    url = f"http://127.0.0.1:{free_port()}/apis/ccompat/v7"
    nowhere = SchemaRegistry(url, config={"max.retries": 0})
    with pytest.raises(SchemaRegistryUnavailableError, match=rf"the schema registry at {url} is unavailable.*"
                       r"grctl dev registry start"):  # fmt: skip
        await workers.start(
            [order_flow(topics["results"])], sources=[Source(topics["orders"], route, format="avro")],
            schema_registry=nowhere,
        )  # fmt: skip


def test_a_registry_format_without_a_registry_is_refused_at_definition(monkeypatch: pytest.MonkeyPatch) -> None:
    from grctl import Worker

    monkeypatch.delenv("GRCTL_SCHEMA_REGISTRY_URL", raising=False)
    with pytest.raises(RegistrationError, match="format 'avro', which needs a schema registry"):
        Worker([order_flow("r")], sources=[Source("t", route, format="avro")])
    with pytest.raises(Exception, match="needs schema=<a generated protobuf message class>"):
        Source("t", route, format="protobuf")


class Gate:
    """A TCP forwarder to the registry on loopback that can refuse connections (an outage)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.open = True
        self.refused = 0
        self.server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def shut(self) -> None:
        """Refuse new connections and cut the open ones (the client's keep-alive connections too)."""
        self.open = False
        for w in self._writers:
            w.close()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.open:
            self.refused += 1
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()


async def wait_until(what: str, check: Callable[[], Awaitable[bool] | bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        ok = check()
        if not isinstance(ok, bool):
            ok = await ok
        if ok:
            return
        assert time.monotonic() < deadline, f"not within {timeout:.0f} s: {what}"
        await asyncio.sleep(0.05)


async def test_a_registry_down_at_a_lookup_restarts_the_session_and_the_record_is_not_dead_lettered(
    kafka_bootstrap: str,
    topics: dict[str, str],
    workers: WorkerRunner,
    schema_registry_url: str,
    registry_client: SchemaRegistryClient,
) -> None:
    port = int(schema_registry_url.split(":")[2].split("/")[0])
    gate = Gate(port)
    gate_port = await gate.start()
    try:
        via_gate = SchemaRegistry(f"http://127.0.0.1:{gate_port}/apis/ccompat/v7", config={"max.retries": 0})
        worker = await workers.start(
            [order_flow(topics["results"])], sources=[Source(topics["orders"], route, format="avro")],
            schema_registry=via_gate,
        )  # fmt: skip
        first_session = worker.session
        gate.shut()  # the registry "goes down" for this worker
        (value,) = await asyncio.to_thread(serialize_all, AvroSerializer(registry_client, json.dumps(ORDER_AVRO)),
                                           topics["orders"], [{"order": "survivor", "amount": 3}])  # fmt: skip
        await produce(kafka_bootstrap, topics["orders"], [value])
        await wait_until("the worker asked the registry and restarted its session",
                         lambda: gate.refused >= 1 and worker.session is not first_session)  # fmt: skip
        gate.open = True
        done = await results(kafka_bootstrap, topics["results"], 1)
        assert [r["result"] for r in done.values()] == [{"order": "survivor", "amount": 3}]
        conn = worker._connection
        assert conn is not None
        letters = await asyncio.to_thread(
            read_committed, kafka_bootstrap, conn.topics.dead_letter, range(conn.num_partitions)
        )
        assert letters == []
    finally:
        await gate.close()


# ---------------------------------------------------------------------- keys (subject <topic>-key)

KEY_AVRO = {
    "type": "record",
    "name": "OrderKey",
    "namespace": "grctl.test",
    "fields": [{"name": "wf", "type": "string"}],
}


async def test_an_avro_keyed_source_routes_by_the_decoded_key_and_the_route_sees_key_and_value(
    kafka_bootstrap: str,
    topics: dict[str, str],
    workers: WorkerRunner,
    schema_registry_url: str,
    registry_client: SchemaRegistryClient,
) -> None:
    seen: list[tuple[Any, Any, bytes | None]] = []

    def by_key(rec: SourceRecord) -> StartRun:
        seen.append((rec.key_value, rec.value, rec.key))
        return StartRun(
            "RegOrder", {"order": rec.value["order"], "amount": rec.value["amount"]}, id=rec.key_value["wf"]
        )

    source = Source(topics["orders"], by_key, format="avro", key_format="avro")
    await workers.start([order_flow(topics["results"])], sources=[source], schema_registry=schema_registry_url)
    n = 8
    key_ser = AvroSerializer(registry_client, json.dumps(KEY_AVRO))
    value_ser = AvroSerializer(registry_client, json.dumps(ORDER_AVRO))
    records = []
    for i in range(n):
        key = key_ser({"wf": f"keyed-{i}"}, SerializationContext(topics["orders"], MessageField.KEY))
        value = value_ser({"order": f"o{i}", "amount": i}, SerializationContext(topics["orders"], MessageField.VALUE))
        records.append((key, value))
    await asyncio.to_thread(produce_all, kafka_bootstrap, topics["orders"], records)
    done = await results(kafka_bootstrap, topics["results"], n)
    assert {wf_id: (r["result"]["order"], r["result"]["amount"]) for wf_id, r in done.items()} == {
        f"keyed-{i}": (f"o{i}", i) for i in range(n)
    }
    assert sorted(s[0]["wf"] for s in seen) == sorted(f"keyed-{i}" for i in range(n))
    assert all(isinstance(s[1], dict) and s[2] is not None and s[2][0] == 0 for s in seen)  # key: the wire bytes
    subjects = await asyncio.to_thread(registry_client.get_subjects)
    assert f"{topics['orders']}-key" in subjects  # the producer's key subject, which the worker read


async def test_a_record_whose_key_does_not_decode_is_dead_lettered_naming_the_key_and_the_next_record_runs(
    kafka_bootstrap: str,
    topics: dict[str, str],
    workers: WorkerRunner,
    schema_registry_url: str,
    registry_client: SchemaRegistryClient,
) -> None:
    def by_key(rec: SourceRecord) -> StartRun:
        return StartRun("RegOrder", rec.value, id=rec.key_value["wf"])

    source_topic = topics["notes"]  # one partition: the good record comes after the bad ones
    worker = await workers.start(
        [order_flow(topics["results"])],
        sources=[Source(source_topic, by_key, format="json", key_format="avro")],
        schema_registry=schema_registry_url,
    )
    good_key = AvroSerializer(registry_client, json.dumps(KEY_AVRO))(
        {"wf": "after-bad-keys"}, SerializationContext(source_topic, MessageField.KEY)
    )
    assert good_key is not None
    value = json.dumps({"order": "o", "amount": 1}).encode()
    bad_keys = [
        b"plain-key",  # no magic byte
        b"\x00" + (2**31 - 7).to_bytes(4, "big") + b"\x02",  # a schema id the registry does not know
        good_key[:5] + b"\xff\xff\xff\xff\xff",  # a known id, bytes that are not an OrderKey
    ]
    await asyncio.to_thread(produce_all, kafka_bootstrap, source_topic, [(k, value) for k in [*bad_keys, good_key]])
    done = await results(kafka_bootstrap, topics["results"], 1)
    assert {wf_id: r["result"] for wf_id, r in done.items()} == {"after-bad-keys": {"order": "o", "amount": 1}}
    conn = worker._connection
    assert conn is not None
    letters = await asyncio.to_thread(
        read_committed_until, kafka_bootstrap, conn.topics.dead_letter, range(conn.num_partitions), len(bad_keys)
    )
    reasons = sorted(dict(m.headers() or [])["grctl.reason"].decode() for m in letters)
    assert len(reasons) == 3
    assert all(r.startswith("cannot decode the key (avro)") for r in reasons), reasons
    assert sum("the first byte is 0x70, not the magic byte" in r for r in reasons) == 1
    assert sum(f"schema id {2**31 - 7} is not known to the schema registry" in r for r in reasons) == 1
    assert sorted(m.key() for m in letters) == sorted(bad_keys)  # the original key is kept


def keyed_emit_flow(topics: dict[str, str]) -> Workflow:
    wf = Workflow(workflow_type="RegKeyShip")

    @wf.start()
    async def start(ctx: Context, order: str, items: int, bad: bool) -> Directive:
        ctx.emit(topics["shipments"], {"order": order, "items": items}, format="avro", schema=SHIPMENT_AVRO,
                 key={"wf": 5 if bad else order}, key_format="avro", key_schema=KEY_AVRO)  # fmt: skip
        ctx.emit(topics["notes"], {"order": order}, key={"order": order, "amount": items}, key_format="jsonschema",
                 key_schema=ORDER_JSON)  # fmt: skip
        return ctx.next.complete(order)

    return wf


async def test_emits_with_registry_keys_are_read_back_with_the_key_deserializers_and_a_bad_key_fails_the_step(
    kafka_bootstrap: str,
    topics: dict[str, str],
    workers: WorkerRunner,
    client: Client,
    schema_registry_url: str,
    registry_client: SchemaRegistryClient,
) -> None:
    await workers.start([keyed_emit_flow(topics)], schema_registry=schema_registry_url)
    n = 6
    handles = [
        await client.start_workflow("RegKeyShip", f"kship-{i}", {"order": f"o{i}", "items": i, "bad": False})
        for i in range(n)
    ]
    bad = await client.start_workflow("RegKeyShip", "kship-bad", {"order": "x", "items": 1, "bad": True})
    for h in handles:
        assert (await h.result(timeout=60)).startswith("o")
    with pytest.raises(Exception, match="SchemaSerializationError") as key_error:
        await bad.result(timeout=60)
    assert f"the key emitted to {topics['shipments']!r} does not fit its avro schema" in str(key_error.value)

    shipped = await asyncio.to_thread(read_committed, kafka_bootstrap, topics["shipments"], [0])
    avro = AvroDeserializer(registry_client)
    key_ctx = SerializationContext(topics["shipments"], MessageField.KEY)
    value_ctx = SerializationContext(topics["shipments"], MessageField.VALUE)
    assert sorted((avro(m.key(), key_ctx)["wf"], avro(m.value(), value_ctx)["items"]) for m in shipped) == [
        (f"o{i}", i) for i in range(n)
    ]  # one per committed step, none of the failed one
    notes = await asyncio.to_thread(read_committed, kafka_bootstrap, topics["notes"], [0])
    as_json = JSONDeserializer(None, schema_registry_client=registry_client)
    key_ctx = SerializationContext(topics["notes"], MessageField.KEY)
    assert sorted(as_json(m.key(), key_ctx)["amount"] for m in notes) == list(range(n))
    assert sorted(json.loads(m.value())["order"] for m in notes) == [f"o{i}" for i in range(n)]
    subjects = set(await asyncio.to_thread(registry_client.get_subjects))
    assert {f"{topics['shipments']}-key", f"{topics['notes']}-key", f"{topics['shipments']}-value"} <= subjects
    assert f"{topics['notes']}-value" not in subjects  # a plain JSON value registers nothing
