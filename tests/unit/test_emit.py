"""`ctx.emit`'s buffer: encoding, validation (issue 17); no broker (the directory is tested in tests/scenarios)."""

from __future__ import annotations

from dataclasses import dataclass

import msgspec
import pytest

from grctl import Workflow
from grctl.codec import default_codec
from grctl.errors import InvalidArgumentError
from grctl.worker.emit import MAX_EMITS_PER_STEP, EmitBuffer


@dataclass
class Point:
    x: int
    y: int


def buffer() -> EmitBuffer:
    return EmitBuffer(default_codec())


def test_json_is_the_default_and_uses_the_codecs_primitives() -> None:
    b = buffer()
    b.add("points", Point(1, 2), key="p-1", headers={"source": "test", "raw": b"\x00"})
    (rec,) = b.records
    assert rec.topic == "points" and rec.key == b"p-1"
    assert msgspec.json.decode(rec.value) == {"x": 1, "y": 2}
    assert rec.headers == [("source", b"test"), ("raw", b"\x00")]


def test_msgpack_raw_and_a_serializer() -> None:
    b = buffer()
    b.add("t", {"a": [1, 2]}, format="msgpack")
    b.add("t", b"\x01\x02", format="raw")
    b.add("t", "text", format="raw", key=b"k")
    b.add("t", 7, serializer=lambda v: str(v * 6).encode())
    values = [r.value for r in b.records]
    assert msgspec.msgpack.decode(values[0]) == {"a": [1, 2]}
    assert values[1:] == [b"\x01\x02", b"text", b"42"]
    assert [r.key for r in b.records] == [None, None, b"k", None]


@pytest.mark.parametrize("topic", ["", "has space", "a/b", "x" * 250, ".", "..", 7])
def test_bad_topic_names_are_refused(topic: object) -> None:
    with pytest.raises(InvalidArgumentError, match="invalid topic name"):
        buffer().add(topic, 1)  # type: ignore[arg-type]


def test_engine_topics_are_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="belongs to the engine"):
        buffer().add("grctl.default.directives", 1)


def test_bad_key_header_format_and_serializer_are_refused_and_nothing_is_buffered() -> None:
    b = buffer()
    with pytest.raises(InvalidArgumentError, match="key must be str or bytes"):
        b.add("t", 1, key=5)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="header 'h' must be str or bytes"):
        b.add("t", 1, headers={"h": 1})  # type: ignore[dict-item]
    with pytest.raises(InvalidArgumentError, match="unknown format 'xml'"):
        b.add("t", 1, format="xml")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="returned str, not bytes"):
        b.add("t", 1, serializer=lambda v: "no")  # type: ignore[arg-type,return-value]
    with pytest.raises(InvalidArgumentError, match="must be str or bytes"):
        b.add("t", 1, format="raw")
    assert b.records == []


def test_a_step_emits_a_bounded_number_of_records() -> None:
    b = buffer()
    for i in range(MAX_EMITS_PER_STEP):
        b.add("t", i, format="msgpack")
    with pytest.raises(InvalidArgumentError, match="at most"):
        b.add("t", 0)
    assert len(b.records) == MAX_EMITS_PER_STEP


def test_results_topic_names_are_checked_at_definition() -> None:
    with pytest.raises(InvalidArgumentError, match="outside the engine's grctl"):
        Workflow(workflow_type="X", results_topic="grctl.default.history")
    with pytest.raises(InvalidArgumentError, match="must be a topic name"):
        Workflow(workflow_type="X", results_topic="has space")
    assert Workflow(workflow_type="X", results_topic="order-results").results_topic == "order-results"
