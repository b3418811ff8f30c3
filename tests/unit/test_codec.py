"""Unit tests for grctl.worker.codec.CodecRegistry (BEHAVIOUR.md §1.14, §1.4 typed reads)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import math
import socket
import uuid
from collections.abc import Iterator
from typing import Any, Optional

import msgpack
import msgspec
import pydantic
import pytest

from grctl.errors import CodecError, GrctlError
from grctl.worker.codec import CodecRegistry, default_codec

# -- test types (module level, so string annotations resolve) ------------------------------------


class Model(pydantic.BaseModel):
    label: str
    count: int


class StructPayload(msgspec.Struct):
    label: str
    count: int


@dataclasses.dataclass
class DataPayload:
    label: str
    count: int


class Timed(pydantic.BaseModel):
    at: dt.datetime
    ref: uuid.UUID
    amount: decimal.Decimal


@dataclasses.dataclass
class Nested:
    name: str
    model: Model
    struct: StructPayload
    items: list[DataPayload]
    when: dt.datetime


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Money:
    """A class msgspec cannot encode: needs a registered codec."""

    def __init__(self, cents: int) -> None:
        self.cents = cents

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Money) and other.cents == self.cents

    def __hash__(self) -> int:
        return hash(self.cents)


class Euro(Money):
    pass


class Tag(str):
    pass


UTC = dt.UTC
PLUS2 = dt.timezone(dt.timedelta(hours=2))


@pytest.fixture
def codec() -> CodecRegistry:
    return CodecRegistry()


@pytest.fixture
def sock() -> Iterator[socket.socket]:
    s = socket.socket()
    yield s
    s.close()


# -- CTX-2: the values a step puts and the next step reads ---------------------------------------

CTX2_PRIMITIVES: list[Any] = ["text", 42, 3.14, True, [1, 2, 3], {"a": 1}]


@pytest.mark.parametrize("value", CTX2_PRIMITIVES, ids=repr)
def test_ctx_2_primitives_round_trip_untyped(codec: CodecRegistry, value: Any) -> None:
    decoded = codec.decode(codec.encode(value))
    assert decoded == value
    assert type(decoded) is type(value)


@pytest.mark.parametrize("value", CTX2_PRIMITIVES, ids=repr)
def test_ctx_2_primitives_round_trip_typed(codec: CodecRegistry, value: Any) -> None:
    decoded = codec.decode(codec.encode(value), type(value))
    assert decoded == value
    assert type(decoded) is type(value)


def test_ctx_2_float_exact(codec: CodecRegistry) -> None:
    assert math.isclose(codec.decode(codec.encode(3.14)), 3.14, abs_tol=1e-9)


def test_ctx_2_pydantic_model(codec: CodecRegistry) -> None:
    data = codec.encode(Model(label="hello", count=5))
    assert codec.decode(data) == {"label": "hello", "count": 5}
    typed = codec.decode(data, Model)
    assert isinstance(typed, Model)
    assert typed == Model(label="hello", count=5)


def test_ctx_2_struct(codec: CodecRegistry) -> None:
    data = codec.encode(StructPayload(label="world", count=7))
    assert codec.decode(data) == {"label": "world", "count": 7}
    typed = codec.decode(data, StructPayload)
    assert isinstance(typed, StructPayload)
    assert typed == StructPayload(label="world", count=7)


def test_dataclass_typed_decode(codec: CodecRegistry) -> None:
    data = codec.encode(DataPayload(label="d", count=1))
    assert codec.decode(data) == {"label": "d", "count": 1}
    assert codec.decode(data, DataPayload) == DataPayload(label="d", count=1)


# -- every supported type: value -> primitive -> typed value --------------------------------------

ROUND_TRIPS: list[tuple[str, Any, Any, Any]] = [
    # (id, value, target type, expected untyped primitive)
    ("none", None, type(None), None),
    ("bytes", b"\x00\xff", bytes, b"\x00\xff"),
    ("bytearray", bytearray(b"ab"), bytes, b"ab"),
    ("big-int", 2**64 - 1, int, 2**64 - 1),
    ("negative-int", -(2**63), int, -(2**63)),
    (
        "nested-builtins",
        {"a": [1, {"b": None}], "c": b"x"},
        dict[str, Any],
        {"a": [1, {"b": None}], "c": b"x"},
    ),
    ("int-keys", {1: "a", 2: "b"}, dict[int, str], {1: "a", 2: "b"}),
    ("uuid", uuid.UUID(int=7), uuid.UUID, "00000000-0000-0000-0000-000000000007"),
    ("decimal", decimal.Decimal("10.50"), decimal.Decimal, "10.50"),
    ("tuple", (1, "a"), tuple[int, str], [1, "a"]),
    ("set", {3}, set[int], [3]),
    ("frozenset", frozenset({"x"}), frozenset[str], ["x"]),
    ("enum", Color.RED, Color, "red"),
    ("int-enum", Level.HIGH, Level, 2),
    ("date", dt.date(2024, 2, 29), dt.date, "2024-02-29"),
    ("time", dt.time(13, 5, 7), dt.time, "13:05:07"),
    ("timedelta", dt.timedelta(seconds=90), dt.timedelta, "PT90S"),
    (
        "aware-utc",
        dt.datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
        dt.datetime,
        dt.datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
    ),
    ("naive", dt.datetime(2024, 1, 2, 3, 4, 5, 6), dt.datetime, "2024-01-02T03:04:05.000006"),
    ("dataclass", DataPayload("d", 1), DataPayload, {"label": "d", "count": 1}),
    ("struct", StructPayload("s", 2), StructPayload, {"label": "s", "count": 2}),
    ("pydantic", Model(label="m", count=3), Model, {"label": "m", "count": 3}),
    (
        "pydantic-rich",
        Timed(at=dt.datetime(2024, 1, 1, tzinfo=UTC), ref=uuid.UUID(int=1), amount=decimal.Decimal("1.25")),
        Timed,
        {
            "at": dt.datetime(2024, 1, 1, tzinfo=UTC),
            "ref": "00000000-0000-0000-0000-000000000001",
            "amount": "1.25",
        },
    ),
    (
        "list-of-models",
        [Model(label="a", count=1), Model(label="b", count=2)],
        list[Model],
        [{"label": "a", "count": 1}, {"label": "b", "count": 2}],
    ),
    ("dict-of-models", {"k": Model(label="a", count=1)}, dict[str, Model], {"k": {"label": "a", "count": 1}}),
    (
        "dict-of-structs",
        {"k": StructPayload("a", 1)},
        dict[str, StructPayload],
        {"k": {"label": "a", "count": 1}},
    ),
    ("optional-some", Model(label="a", count=1), Optional[Model], {"label": "a", "count": 1}),  # noqa: UP045
    ("optional-none", None, Model | None, None),
    (
        "nested",
        Nested(
            "n",
            Model(label="a", count=1),
            StructPayload("b", 2),
            [DataPayload("c", 3)],
            dt.datetime(2024, 5, 6, tzinfo=UTC),
        ),
        Nested,
        {
            "name": "n",
            "model": {"label": "a", "count": 1},
            "struct": {"label": "b", "count": 2},
            "items": [{"label": "c", "count": 3}],
            "when": dt.datetime(2024, 5, 6, tzinfo=UTC),
        },
    ),
]


@pytest.mark.parametrize(("value", "tp", "primitive"), [c[1:] for c in ROUND_TRIPS], ids=[c[0] for c in ROUND_TRIPS])
def test_round_trip_through_bytes(codec: CodecRegistry, value: Any, tp: Any, primitive: Any) -> None:
    data = codec.encode(value)
    assert isinstance(data, bytes)
    assert codec.decode(data) == primitive
    assert codec.decode(data, tp) == value


@pytest.mark.parametrize(("value", "tp", "primitive"), [c[1:] for c in ROUND_TRIPS], ids=[c[0] for c in ROUND_TRIPS])
def test_round_trip_through_primitives(codec: CodecRegistry, value: Any, tp: Any, primitive: Any) -> None:
    raw = codec.to_primitive(value)
    assert raw == primitive
    assert codec.from_primitive(raw, tp) == value


@pytest.mark.parametrize(("value", "tp", "primitive"), [c[1:] for c in ROUND_TRIPS], ids=[c[0] for c in ROUND_TRIPS])
def test_to_primitive_is_what_a_reader_sees(codec: CodecRegistry, value: Any, tp: Any, primitive: Any) -> None:
    assert codec.to_primitive(value) == codec.decode(codec.encode(value))


def test_typed_results_have_the_target_types(codec: CodecRegistry) -> None:
    items = codec.decode(codec.encode([Model(label="a", count=1)]), list[Model])
    assert type(items) is list
    assert type(items[0]) is Model
    mapping = codec.decode(codec.encode({"k": StructPayload("a", 1)}), dict[str, StructPayload])
    assert type(mapping["k"]) is StructPayload
    assert type(codec.decode(codec.encode((1, 2)), tuple[int, ...])) is tuple
    assert type(codec.from_primitive("00000000-0000-0000-0000-000000000007", uuid.UUID)) is uuid.UUID


@pytest.mark.parametrize("tp", [Any, object, None])
@pytest.mark.parametrize("value", [{"a": [1, 2]}, "x", 1, None, [1, "two", True]], ids=repr)
def test_any_leaves_value_unchanged(codec: CodecRegistry, tp: Any, value: Any) -> None:
    assert codec.from_primitive(value, tp) is value
    assert codec.decode(codec.encode(value), tp) == value


def test_from_primitive_passes_an_instance_of_the_target_through(codec: CodecRegistry) -> None:
    model = Model(label="a", count=1)
    assert codec.from_primitive(model, Model) is model
    struct = StructPayload("s", 1)
    assert codec.from_primitive(struct, StructPayload) is struct


def test_int_is_accepted_for_float(codec: CodecRegistry) -> None:
    value = codec.decode(codec.encode(3), float)
    assert value == 3.0
    assert type(value) is float


# -- datetimes -----------------------------------------------------------------------------------


def test_aware_datetime_is_a_msgpack_timestamp_read_back_in_utc(codec: CodecRegistry) -> None:
    local = dt.datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=PLUS2)
    data = codec.encode(local)
    assert data[0] == 0xD7 or data[0] == 0xC7  # timestamp extension (fixext 8 / ext 8)
    untyped = codec.decode(data)
    assert untyped == local  # the same instant
    assert untyped.tzinfo == UTC
    assert untyped.hour == 1
    assert codec.decode(data, dt.datetime) == local
    assert codec.to_primitive(local) == local


def test_naive_datetime_is_an_iso_string_and_stays_naive(codec: CodecRegistry) -> None:
    naive = dt.datetime(2024, 1, 2, 3, 4, 5)
    data = codec.encode(naive)
    assert codec.decode(data) == "2024-01-02T03:04:05"
    assert codec.to_primitive(naive) == "2024-01-02T03:04:05"
    typed = codec.decode(data, dt.datetime)
    assert typed == naive
    assert typed.tzinfo is None
    assert codec.from_primitive("2024-01-02T03:04:05", dt.datetime) == naive


def test_datetime_inside_model_round_trips(codec: CodecRegistry) -> None:
    value = Timed(at=dt.datetime(2024, 6, 1, 12, tzinfo=PLUS2), ref=uuid.UUID(int=9), amount=decimal.Decimal("2"))
    assert codec.decode(codec.encode(value), Timed) == value


def test_plain_msgpack_reads_the_bytes(codec: CodecRegistry) -> None:
    when = dt.datetime(2024, 1, 2, tzinfo=UTC)
    data = codec.encode({"s": StructPayload("a", 1), "when": when, "b": b"\x01"})
    assert msgpack.unpackb(data, timestamp=3) == {"s": {"label": "a", "count": 1}, "when": when, "b": b"\x01"}


# -- custom codecs -------------------------------------------------------------------------------


def _money_codec(codec: CodecRegistry, tag: str) -> None:
    codec.register(
        Money,
        lambda m: {"cents": m.cents, "by": tag},
        lambda tp, raw: tp(raw["cents"] + (1000 if raw["by"] == "second" else 0)),
    )


def test_custom_codec_encodes_and_decodes(codec: CodecRegistry) -> None:
    _money_codec(codec, "first")
    data = codec.encode({"price": Money(250)})
    assert codec.decode(data) == {"price": {"cents": 250, "by": "first"}}
    assert codec.decode(data, dict[str, Money]) == {"price": Money(250)}
    assert codec.from_primitive({"cents": 1, "by": "first"}, Money) == Money(1)


def test_custom_codec_applies_to_subclasses(codec: CodecRegistry) -> None:
    _money_codec(codec, "first")
    assert codec.to_primitive(Euro(5)) == {"cents": 5, "by": "first"}
    decoded = codec.decode(codec.encode(Euro(5)), Euro)
    assert type(decoded) is Euro


def test_last_registered_codec_wins(codec: CodecRegistry) -> None:
    _money_codec(codec, "first")
    _money_codec(codec, "second")
    assert codec.to_primitive(Money(1)) == {"cents": 1, "by": "second"}
    assert codec.from_primitive({"cents": 1, "by": "second"}, Money) == Money(1001)


def test_lifo_applies_after_a_type_was_seen(codec: CodecRegistry) -> None:
    _money_codec(codec, "first")
    assert codec.to_primitive(Money(1))["by"] == "first"
    _money_codec(codec, "second")  # must not be hidden by a cached lookup
    assert codec.to_primitive(Money(1))["by"] == "second"


def test_predicate_codec(codec: CodecRegistry) -> None:
    codec.register(lambda tp: tp.__name__ == "Euro", lambda m: f"EUR{m.cents}", lambda tp, raw: tp(int(raw[3:])))
    _money_codec(codec, "first")  # later and broader: wins for Euro too
    assert codec.to_primitive(Euro(3)) == {"cents": 3, "by": "first"}
    other = CodecRegistry()
    other.register(lambda tp: tp.__name__ == "Euro", lambda m: f"EUR{m.cents}", lambda tp, raw: tp(int(raw[3:])))
    assert other.to_primitive([Euro(3)]) == ["EUR3"]
    assert other.decode(other.encode([Euro(3)]), list[Euro]) == [Euro(3)]


def test_user_codec_overrides_builtin_pydantic(codec: CodecRegistry) -> None:
    codec.register(Model, lambda m: [m.label, m.count], lambda tp, raw: tp(label=raw[0], count=raw[1]))
    assert codec.to_primitive(Model(label="a", count=1)) == ["a", 1]
    assert codec.decode(codec.encode(Model(label="a", count=1)), Model) == Model(label="a", count=1)


@pytest.mark.parametrize(
    "native", [dict, str, int, dt.datetime, uuid.UUID, decimal.Decimal, Color, DataPayload, StructPayload]
)
def test_register_rejects_natively_encoded_types(codec: CodecRegistry, native: type[Any]) -> None:
    with pytest.raises(ValueError, match="msgspec encodes and decodes this type itself"):
        codec.register(native, lambda v: v, lambda tp, raw: raw)


def test_register_rejects_non_callables(codec: CodecRegistry) -> None:
    with pytest.raises(TypeError, match="encode must be callable"):
        codec.register(Money, "nope", lambda tp, raw: raw)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="decode must be callable"):
        codec.register(Money, lambda v: v, None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="check must be a class or a callable"):
        codec.register("Money", lambda v: v, lambda tp, raw: raw)  # type: ignore[arg-type]


def test_failing_custom_codec_is_reported(codec: CodecRegistry) -> None:
    def broken(value: Money) -> Any:
        raise RuntimeError("boom")

    codec.register(Money, broken, lambda tp, raw: raw["missing"])
    with pytest.raises(CodecError, match=r"codec registered for .*Money failed to encode .*RuntimeError: boom"):
        codec.encode(Money(1))
    with pytest.raises(CodecError, match=r"Money.*failed to decode.*KeyError"):
        codec.from_primitive({}, Money)


def test_registries_are_independent() -> None:
    a, b = CodecRegistry(), CodecRegistry()
    _money_codec(a, "first")
    assert a.to_primitive(Money(1)) == {"cents": 1, "by": "first"}
    with pytest.raises(CodecError):
        b.encode(Money(1))


# -- hooks ---------------------------------------------------------------------------------------


def test_enc_hook_and_dec_hook_are_public(codec: CodecRegistry) -> None:
    assert codec.enc_hook(Model(label="a", count=1)) == {"label": "a", "count": 1}
    assert codec.dec_hook(Model, {"label": "a", "count": 1}) == Model(label="a", count=1)
    data = msgspec.msgpack.encode([Model(label="a", count=1)], enc_hook=codec.enc_hook)
    assert msgspec.msgpack.decode(data, type=list[Model], dec_hook=codec.dec_hook) == [Model(label="a", count=1)]


def test_hooks_raise_unsupported_type(codec: CodecRegistry) -> None:
    with pytest.raises(TypeError, match="Unsupported type"):
        codec.enc_hook(object())
    with pytest.raises(TypeError, match="Unsupported type"):
        codec.dec_hook(Money, {"cents": 1})


def test_builtin_subclasses_encode_as_their_base(codec: CodecRegistry) -> None:
    class Count(int):
        pass

    raw = codec.to_primitive({"tag": Tag("x"), "n": Count(3)})
    assert raw == {"tag": "x", "n": 3}
    assert type(raw["tag"]) is str
    assert type(raw["n"]) is int


# -- errors --------------------------------------------------------------------------------------


def test_codec_error_is_a_grctl_type_error() -> None:
    assert issubclass(CodecError, TypeError)
    assert issubclass(CodecError, GrctlError)


def test_unserializable_object_names_type_and_fix(codec: CodecRegistry) -> None:
    with pytest.raises(CodecError) as info:
        codec.encode(object())
    message = str(info.value)
    assert "cannot encode a value of type object" in message
    assert "register a codec" in message
    assert "dataclass, msgspec.Struct or pydantic model" in message


def test_unserializable_socket(codec: CodecRegistry, sock: socket.socket) -> None:
    with pytest.raises(CodecError, match=r"type socket\.socket.*codec\.register\(socket"):
        codec.encode({"conn": sock})
    with pytest.raises(CodecError, match=r"socket\.socket"):
        codec.to_primitive([sock])


def test_int_out_of_msgpack_range(codec: CodecRegistry) -> None:
    with pytest.raises(CodecError, match=r"64-bit range.*str or Decimal"):
        codec.encode({"n": 2**64})
    with pytest.raises(CodecError, match="64-bit range"):
        codec.to_primitive(-(2**63) - 1)


GARBAGE = [b"\xc1", b"\x92\x01", b"", b"\x01\x02", b"\xd9\x05ab", b"\xc1garbage"]


@pytest.mark.parametrize("garbage", GARBAGE, ids=repr)
def test_decode_garbage_bytes(codec: CodecRegistry, garbage: bytes) -> None:
    with pytest.raises(CodecError, match=f"cannot decode {len(garbage)} bytes as msgpack.*corrupt"):
        codec.decode(garbage)


@pytest.mark.parametrize("garbage", GARBAGE, ids=repr)
@pytest.mark.parametrize("tp", [Model, dict[str, int], list[StructPayload], int])
def test_typed_decode_garbage_bytes(codec: CodecRegistry, garbage: bytes, tp: Any) -> None:
    # A typed decoder may see a type mismatch before it sees the bytes are malformed: either way a
    # CodecError naming the problem.
    with pytest.raises(CodecError, match="cannot decode"):
        codec.decode(garbage, tp)


def test_typed_decode_mismatch_names_type_and_location(codec: CodecRegistry) -> None:
    data = codec.encode([{"label": "a", "count": "x"}])
    with pytest.raises(CodecError, match=r"list\[.*StructPayload\].*Expected `int`, got `str` - at `\$\[0\]\.count`"):
        codec.decode(data, list[StructPayload])
    with pytest.raises(CodecError, match=r"(?s)list\[.*Model\].*count.*at `\$\[0\]`"):
        codec.decode(data, list[Model])


def test_from_primitive_mismatch_names_type(codec: CodecRegistry) -> None:
    with pytest.raises(
        CodecError, match=r"cannot convert a dict value to .*DataPayload: Object missing required field"
    ):
        codec.from_primitive({"label": "x"}, DataPayload)
    with pytest.raises(CodecError, match=r"(?s)cannot convert a dict value to .*Model.*Field required"):
        codec.from_primitive({"label": "x"}, Model)


def test_conversion_is_strict(codec: CodecRegistry) -> None:
    with pytest.raises(CodecError, match="Expected `int`, got `str`"):
        codec.from_primitive("1", int)
    with pytest.raises(CodecError, match="Expected `bool`, got `int`"):
        codec.from_primitive(1, bool)


def test_unsupported_target_type(codec: CodecRegistry) -> None:
    with pytest.raises(CodecError, match=r"socket\.socket"):
        codec.from_primitive({"a": 1}, socket.socket)
    with pytest.raises(CodecError, match=r"socket\.socket"):
        codec.decode(codec.encode({"a": 1}), socket.socket)


# -- default instance ----------------------------------------------------------------------------


def test_default_codec_is_shared() -> None:
    assert isinstance(default_codec(), CodecRegistry)
    assert default_codec() is default_codec()
    assert default_codec().decode(default_codec().encode(Model(label="a", count=1)), Model) == Model(label="a", count=1)
