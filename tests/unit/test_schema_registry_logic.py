"""Schema-registry formats without a registry: the wire format, config checks, error texts, JDK choice."""

from __future__ import annotations

import pytest

from grctl.codec import default_codec
from grctl.dev import registry as local_registry
from grctl.dev._errors import LocalKafkaError
from grctl.dev.registry import DISTRIBUTIONS, JavaCandidate, choose_runtime, parse_java_major
from grctl.errors import (
    InvalidArgumentError,
    RegistrationError,
    SchemaRegistryUnavailableError,
    UnknownSchemaError,
    WireFormatError,
)
from grctl.worker.emit import EmitBuffer
from grctl.worker.schema_registry import SchemaRegistry, check_schema, schema_id_of
from grctl.worker.sources import Source


def route(_: object) -> None:
    return None


def test_schema_id_is_read_from_the_wire_format_header() -> None:
    assert schema_id_of(b"\x00\x00\x00\x01\x02payload") == 258
    assert schema_id_of(b"\x00\x7f\xff\xff\xff") == 2**31 - 1


@pytest.mark.parametrize(
    ("data", "text"),
    [
        (b"", "0 bytes, fewer than the 5"),
        (b"\x00\x00\x01", "3 bytes, fewer than the 5"),
        (b'{"a": 1}', "the first byte is 0x7b, not the magic byte 0x00"),
        (b"\x01\x00\x00\x00\x01x", "the first byte is 0x01"),
    ],
)
def test_bytes_outside_the_wire_format_are_refused_with_the_reason(data: bytes, text: str) -> None:
    with pytest.raises(WireFormatError, match=text):
        schema_id_of(data)


def test_registry_url_and_settings_are_checked() -> None:
    with pytest.raises(InvalidArgumentError, match="must be an http:// or https:// URL"):
        SchemaRegistry("localhost:8081")
    reg = SchemaRegistry("http://127.0.0.1:1/apis/ccompat/v7/", config={"no.such.setting": 1})
    assert reg.url == "http://127.0.0.1:1/apis/ccompat/v7"
    with pytest.raises(InvalidArgumentError, match=r"Unrecognized properties: no\.such\.setting"):
        _ = reg.client


def test_the_registry_url_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GRCTL_SCHEMA_REGISTRY_URL", raising=False)
    assert SchemaRegistry.from_env() is None
    monkeypatch.setenv("GRCTL_SCHEMA_REGISTRY_URL", "http://reg:8081")
    reg = SchemaRegistry.from_env()
    assert reg is not None and reg.url == "http://reg:8081"


def test_schemas_are_checked_for_their_format() -> None:
    with pytest.raises(InvalidArgumentError, match="needs schema=<a generated protobuf message class>"):
        check_schema("protobuf", {"type": "record"}, required=True, what="ctx.emit to 't'")
    with pytest.raises(InvalidArgumentError, match="format 'avro' needs schema="):
        check_schema("avro", None, required=True, what="ctx.emit to 't'")
    with pytest.raises(InvalidArgumentError, match="must be a str or dict, got int"):
        check_schema("jsonschema", 3, required=False, what="source 't'")
    check_schema("avro", None, required=False, what="source 't'")  # the writer's schema


def test_sources_check_their_registry_format_settings() -> None:
    with pytest.raises(InvalidArgumentError, match="give format='avro' or a deserializer, not both"):
        Source("t", route, format="avro", deserializer=bytes)
    with pytest.raises(InvalidArgumentError, match="schema= is for the formats avro, protobuf and jsonschema"):
        Source("t", route, format="json", schema={"type": "string"})
    assert Source("t", route, format="jsonschema").uses_registry


def test_a_worker_with_a_registry_format_needs_a_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    from grctl import Workflow
    from grctl.worker import Worker

    monkeypatch.delenv("GRCTL_SCHEMA_REGISTRY_URL", raising=False)
    wf = Workflow(workflow_type="U")

    @wf.start()
    async def start(ctx: object) -> None: ...

    with pytest.raises(RegistrationError, match="Worker\\(schema_registry=URL\\) or set GRCTL_SCHEMA_REGISTRY_URL"):
        Worker([wf], sources=[Source("t", route, format="protobuf", schema=_message_class())])


def _message_class() -> type:
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    fdp = descriptor_pb2.FileDescriptorProto(name="unit_m.proto", package="unit", syntax="proto3")
    fdp.message_type.add(name="M")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("unit.M"))


def test_an_emit_in_a_registry_format_needs_a_registry_and_a_schema() -> None:
    with pytest.raises(InvalidArgumentError, match="needs a schema registry: Worker\\(schema_registry=URL\\)"):
        EmitBuffer(default_codec()).add("t", {"a": 1}, format="avro", schema={"type": "string"})
    buf = EmitBuffer(default_codec(), SchemaRegistry("http://127.0.0.1:1"))
    with pytest.raises(InvalidArgumentError, match="format 'avro' needs schema="):
        buf.add("t", {"a": 1}, format="avro")
    with pytest.raises(InvalidArgumentError, match="schema= is for the formats"):
        buf.add("t", {"a": 1}, format="json", schema={"type": "string"})
    buf.add("t", "x", format="avro", schema={"type": "string"})
    assert not buf.encode_cached()  # its schema id is not known yet: encoded in a thread


def test_registry_errors_name_the_url_and_what_to_do() -> None:
    down = SchemaRegistryUnavailableError("http://reg:8081", "ConnectError: refused")
    assert "the schema registry at http://reg:8081 is unavailable (ConnectError: refused)" in str(down)
    assert "grctl dev registry start" in str(down)
    assert "schema id 7 is not known to the schema registry at http://reg:8081" in str(
        UnknownSchemaError(7, "http://reg:8081")
    )


def test_client_errors_are_told_apart_from_an_unavailable_registry() -> None:
    from confluent_kafka.schema_registry.error import SchemaRegistryError as ClientError

    reg = SchemaRegistry("http://reg:8081")
    assert reg.unavailable(ClientError(404, 40403, "Schema not found")) is None
    assert reg.unavailable(ClientError(422, 42201, "bad schema")) is None
    for code in (500, 503, 429, 401):
        err = reg.unavailable(ClientError(code, -1, "x"))
        assert err is not None and f"HTTP {code}" in str(err)
    assert reg.unavailable(ConnectionRefusedError("refused")) is not None
    assert reg.unavailable(ValueError("not a record")) is None


def test_java_versions_are_parsed() -> None:
    assert parse_java_major('openjdk version "17.0.12" 2024-07-16') == 17
    assert parse_java_major('openjdk version "25.0.3" 2026-04-21 LTS') == 25
    assert parse_java_major('java version "1.8.0_392"') == 8
    assert parse_java_major("no version here") is None


def test_the_newest_distribution_a_java_runs_is_chosen() -> None:
    j17, j21, j25 = JavaCandidate("/j17", 17), JavaCandidate("/j21", 21), JavaCandidate("/j25", 25)
    assert choose_runtime([j17, j25]) == (DISTRIBUTIONS[0], j25)  # the first java new enough for 3.x
    assert choose_runtime([j21, j25]) == (DISTRIBUTIONS[0], j21)  # order is preference (JAVA_HOME first)
    dist, java = choose_runtime([j17])
    assert (dist.version, java) == ("2.4.2.Final", j17)  # the Java 17 fallback
    with pytest.raises(LocalKafkaError, match=r"needs Java 21\+ for Apicurio Registry 3.3.3 or Java 17\+.*found: /j11"):
        choose_runtime([JavaCandidate("/j11", 11)])
    with pytest.raises(LocalKafkaError, match="found: none"):
        choose_runtime([])


def test_distributions_name_their_maven_artifacts() -> None:
    assert DISTRIBUTIONS[0].artifact == "io.apicurio:apicurio-registry-app:3.3.3:tar.gz:all"
    assert DISTRIBUTIONS[0].major == 3 and DISTRIBUTIONS[1].major == 2


def test_a_registry_that_never_ran_has_a_status(tmp_path: object) -> None:
    st = local_registry.status("never", home=str(tmp_path))
    assert not st.exists and not st.running and st.url == ""
    assert local_registry.list_registries(str(tmp_path)) == []
    assert not local_registry.stop("never", home=str(tmp_path))
    with pytest.raises(LocalKafkaError, match="invalid registry name"):
        local_registry.status("../x", home=str(tmp_path))
