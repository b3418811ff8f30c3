"""Serialization of user values: msgpack through msgspec, with typed reads and custom codecs.

Every user value that grctl stores or sends (workflow inputs and results, store values, event
payloads, task arguments and results) is encoded by a `CodecRegistry` as msgpack. No pickle:
the bytes can be read by any msgpack reader, and decoding never runs code from the data.

What is encoded, and how it reads back untyped (`decode(data)`, `to_primitive(value)`):

| value | on the wire | untyped read |
|---|---|---|
| dict, list, str, int, float, bool, None, bytes | the msgpack type | the same |
| tuple, set, frozenset, list/dict/tuple subclasses | array / map | list / dict |
| dataclass, `msgspec.Struct`, pydantic `BaseModel` | map of fields | dict |
| `Enum` member | its value | the value |
| `UUID`, `Decimal` | canonical string | str |
| aware `datetime` | msgpack timestamp extension | aware `datetime` in UTC |
| naive `datetime` | ISO 8601 string without offset | str |
| `date`, `time`, `timedelta` | ISO 8601 string | str |
| a type with a registered codec | whatever the codec's `encode` returns | that, as primitives |

A typed read (`decode(data, T)`, `from_primitive(raw, T)`) turns those primitives back into
`T`: `datetime` (naive stays naive, aware comes back in UTC), `UUID`, `Decimal`, dataclasses,
Structs, pydantic models, registered types, and any nesting of them (`list[Model]`,
`dict[str, Model]`, `Model | None`). `Any` leaves the value untouched.

Conversion is strict: a str is not turned into an int, nor an int into a bool. A mismatch
raises `CodecError` naming the target type and the place of the problem, never a silently
wrong value.

Custom codecs are consulted for types that msgspec cannot encode natively (see `register`).
The last registered codec that matches a type wins. One codec is built in: pydantic models
are encoded with `model_dump(mode="python")` and decoded with `model_validate`.

Shared by the client and the worker, so it imports nothing of grctl but `grctl.errors`
(`grctl.worker.codec` re-exports it under the original SDK's path).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import decimal
import enum
import sys
import uuid
from collections.abc import Callable
from typing import Any, Final, TypeVar, overload

import msgspec
from msgspec import msgpack as _msgpack

from grctl.errors import CodecError, InvalidArgumentError

__all__ = ["CodecRegistry", "default_codec"]

T = TypeVar("T")

CodecCheck = Callable[[type[Any]], bool]
"""Decides, from a value's type (encoding) or a target type (decoding), whether a codec applies."""
EncodeFn = Callable[[Any], Any]
"""Turns a value into something msgpack-encodable (builtins, or other supported types)."""
DecodeFn = Callable[[type[Any], Any], Any]
"""Builds an instance of the target type (first argument) from the decoded primitive."""

BytesLike = bytes | bytearray | memoryview

_PASSTHROUGH_TYPES: Final = frozenset({str, bool, float, type(None)})
"""Exact types whose primitive form is the value itself (int is not: it may exceed 64 bits)."""

_NATIVE_EXACT: Final[frozenset[type[Any]]] = frozenset(
    {
        str, int, float, bool, bytes, bytearray, memoryview, type(None),
        _dt.datetime, _dt.date, _dt.time, _dt.timedelta, decimal.Decimal,
    }
)  # fmt: skip
"""Classes msgspec encodes itself (their subclasses go through the codecs)."""

_NATIVE_BASES: Final = (dict, list, tuple, set, frozenset, uuid.UUID, enum.Enum, msgspec.Struct)
"""Classes whose subclasses msgspec also encodes itself."""

_SUPPORTED_HINT: Final = (
    "use a msgpack-native value (dict, list, str, int, float, bool, None, bytes), a datetime, "
    "UUID or Decimal, a dataclass, msgspec.Struct or pydantic model"
)


@dataclasses.dataclass(frozen=True, slots=True)
class _Codec:
    check: CodecCheck
    encode: EncodeFn
    decode: DecodeFn
    label: str


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        if tp.__module__ == "builtins":
            return tp.__qualname__
        return f"{tp.__module__}.{tp.__qualname__}"
    return repr(tp)


def _is_pydantic_model(tp: type[Any]) -> bool:
    # A BaseModel subclass can only exist once pydantic is imported, so this never imports it
    # (importing pydantic costs ~100 ms, and many workers never use it).
    pydantic = sys.modules.get("pydantic")
    if pydantic is None:
        return False
    return isinstance(tp, type) and issubclass(tp, pydantic.BaseModel)


def _pydantic_encode(value: Any) -> Any:
    return value.model_dump(mode="python")


def _pydantic_decode(tp: type[Any], raw: Any) -> Any:
    return tp.model_validate(raw)  # type: ignore[attr-defined]  # tp passed _is_pydantic_model


_PYDANTIC_CODEC: Final = _Codec(
    check=_is_pydantic_model, encode=_pydantic_encode, decode=_pydantic_decode, label="pydantic.BaseModel"
)


def _natively_encoded(cls: type[Any]) -> bool:
    """Whether msgspec encodes instances of ``cls`` without calling the encode hook."""
    return (
        cls in _NATIVE_EXACT
        or issubclass(cls, _NATIVE_BASES)
        or dataclasses.is_dataclass(cls)
        or hasattr(cls, "__attrs_attrs__")
    )


def _builtin_subclass_primitive(value: Any) -> Any:
    """Map an instance of a subclass of a native scalar type to the base type, else raise LookupError."""
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__index__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, _dt.datetime):
        return _dt.datetime.combine(value.date(), value.timetz())
    if isinstance(value, _dt.date):
        return _dt.date(value.year, value.month, value.day)
    raise LookupError(type(value))


class CodecRegistry:
    """Encodes user values to msgpack and decodes them back, optionally into a given type.

    Example:
        ```python
        codec = CodecRegistry()
        codec.register(Money, lambda m: {"cents": m.cents}, lambda tp, raw: tp(raw["cents"]))
        data = codec.encode({"price": Money(250)})
        codec.decode(data)  # {"price": {"cents": 250}}
        codec.decode(data, dict[str, Money])  # {"price": Money(250)}
        ```

    A registry is safe to share between threads and tasks once its codecs are registered.
    """

    def __init__(self) -> None:
        """Create a registry holding only the built-in pydantic codec."""
        self._codecs: tuple[_Codec, ...] = (_PYDANTIC_CODEC,)
        self._by_type: dict[Any, _Codec | None] = {}
        self._encoder = _msgpack.Encoder(enc_hook=self.enc_hook)
        self._decoder: _msgpack.Decoder[Any] = _msgpack.Decoder()
        self._typed_decoders: dict[Any, _msgpack.Decoder[Any]] = {}

    # -- custom codecs -------------------------------------------------------------------------

    def register(
        self,
        check: CodecCheck | type[Any],
        encode: EncodeFn,
        decode: DecodeFn,
    ) -> None:
        """Add a codec for values that msgspec cannot encode by itself.

        Codecs are tried newest first: when several match a type, the last registered wins.

        Args:
            check: A class (the codec applies to it and its subclasses) or a predicate that gets a
                type (the type of the value when encoding, the target type when decoding).
            encode: Turns a value into something encodable: builtins, or other supported types.
            decode: Gets the target type and the decoded primitive, returns an instance.

        Raises:
            InvalidArgumentError: (a TypeError) If ``check``, ``encode`` or ``decode`` is not callable;
                (a ValueError) if ``check`` is a class msgspec encodes natively (builtins, datetime, UUID,
                Decimal, Enum, dataclasses, Structs, attrs classes, dict/list/tuple subclasses):
                such a codec would never be called. Convert the value yourself before storing
                it, or wrap it in a class of your own.
        """
        if not callable(check):
            raise InvalidArgumentError(f"check must be a class or a callable taking a type, got {check!r}")
        for name, fn in (("encode", encode), ("decode", decode)):
            if not callable(fn):
                raise InvalidArgumentError(f"{name} must be callable, got {fn!r}", argument=name)
        if isinstance(check, type):
            cls = check
            if _natively_encoded(cls):
                raise InvalidArgumentError(
                    f"cannot register a codec for {_type_name(cls)}: msgspec encodes and decodes this "
                    "type itself, so the codec would never be called. Convert the value before storing "
                    "it, or wrap it in a class of your own and register that class."
                )

            def check_subclass(tp: type[Any]) -> bool:
                return isinstance(tp, type) and issubclass(tp, cls)

            codec = _Codec(check_subclass, encode, decode, _type_name(cls))
        else:
            codec = _Codec(check, encode, decode, getattr(check, "__qualname__", repr(check)))
        self._codecs = (codec, *self._codecs)
        self._by_type = {}

    def _codec_for(self, tp: Any) -> _Codec | None:
        try:
            return self._by_type[tp]
        except KeyError:
            pass
        except TypeError:  # an unhashable type form: look it up without caching
            return self._find_codec(tp)
        codec = self._find_codec(tp)
        self._by_type[tp] = codec
        return codec

    def _find_codec(self, tp: Any) -> _Codec | None:
        for codec in self._codecs:
            if codec.check(tp):
                return codec
        return None

    # -- msgspec hooks -------------------------------------------------------------------------

    def enc_hook(self, value: Any) -> Any:
        """Encode hook for msgspec: turn a value msgspec does not support into one it does.

        Args:
            value: A value of a type msgspec cannot encode natively.

        Returns:
            The value given by the matching codec, or the base-type value for subclasses of str,
            int, float, bytes, Decimal, datetime and date.

        Raises:
            CodecError: If no codec matches (the message says how to fix it), or a codec failed.
        """
        tp = type(value)
        codec = self._codec_for(tp)
        if codec is not None:
            try:
                return codec.encode(value)
            except CodecError:
                raise
            except Exception as exc:
                raise CodecError(
                    f"the codec registered for {codec.label} failed to encode a {_type_name(tp)} value: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
        try:
            return _builtin_subclass_primitive(value)
        except LookupError:
            pass
        raise CodecError(
            f"Unsupported type: cannot encode a value of type {_type_name(tp)}; grctl stores values as "
            f"msgpack. Either {_SUPPORTED_HINT}, or register a codec for it: "
            f"codec.register({tp.__qualname__}, encode=..., decode=...)."
        )

    def dec_hook(self, tp: type[Any], raw: Any) -> Any:
        """Decode hook for msgspec: build a type msgspec does not support from its primitive.

        Args:
            tp: The target type.
            raw: The decoded primitive value.

        Returns:
            An instance of ``tp`` built by the matching codec.

        Raises:
            CodecError: If no codec matches ``tp``, or the codec failed. msgspec reports it as a
                validation error with the location of the value.
        """
        codec = self._codec_for(tp)
        if codec is None:
            raise CodecError(
                f"Unsupported type {_type_name(tp)}: no codec can decode it. Register one with "
                f"codec.register({getattr(tp, '__qualname__', tp)}, encode=..., decode=...), or "
                f"{_SUPPORTED_HINT}."
            )
        try:
            return codec.decode(tp, raw)
        except (TypeError, ValueError):
            raise  # msgspec turns these into a ValidationError that names the location
        except Exception as exc:
            raise CodecError(
                f"the codec registered for {codec.label} failed to decode a {_type_name(tp)}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    # -- values <-> primitives -----------------------------------------------------------------

    def to_primitive(self, value: Any) -> Any:
        """Return ``value`` as a reader of the encoded bytes will see it, untyped.

        Equal to ``decode(encode(value))``: only dict, list, str, int, float, bool, None, bytes
        and aware ``datetime`` (in UTC) remain; see the module docstring for every type.

        Args:
            value: Any encodable value.

        Returns:
            The primitive form of the value.

        Raises:
            CodecError: If the value, or something inside it, cannot be encoded.
        """
        if type(value) in _PASSTHROUGH_TYPES:
            return value
        data = self.encode(value)
        try:
            return self._decoder.decode(data)
        except (msgspec.DecodeError, TypeError, ValueError) as exc:
            # e.g. a dict keyed by tuples: msgpack can write it, but the keys read back as lists
            raise CodecError(
                f"a {_type_name(type(value))} value can be encoded but not read back: {exc}. Use str or int dict keys."
            ) from exc

    def from_primitive(self, raw: Any, tp: Any) -> Any:
        """Convert a primitive (as decoded untyped) into ``tp``.

        Args:
            raw: A primitive value, typically from ``decode(data)`` or ``to_primitive``.
            tp: The target type: any type msgspec understands (``list[Model]``,
                ``Model | None``, ...), a registered type, or ``Any``/``object``/None to get
                ``raw`` back unchanged.

        Returns:
            The converted value.

        Raises:
            CodecError: If ``raw`` does not fit ``tp``, naming the type and the problem.
        """
        if tp is None or tp is Any or tp is object or type(raw) is tp:
            return raw
        try:
            return msgspec.convert(raw, tp, dec_hook=self.dec_hook)
        except msgspec.ValidationError as exc:
            raise CodecError(f"cannot convert a {_type_name(type(raw))} value to {_type_name(tp)}: {exc}") from exc
        except TypeError as exc:
            raise CodecError(f"{_type_name(tp)} cannot be used as a target type: {exc}") from exc

    # -- bytes ---------------------------------------------------------------------------------

    def encode(self, value: Any) -> bytes:
        """Encode a value as msgpack in one pass (codecs are applied as msgspec meets values).

        Args:
            value: Any encodable value.

        Returns:
            The msgpack bytes.

        Raises:
            CodecError: If the value, or something inside it, cannot be encoded.
        """
        try:
            return self._encoder.encode(value)
        except CodecError:
            raise
        except OverflowError as exc:
            raise CodecError(
                f"cannot encode an int outside msgpack's 64-bit range ({exc}); store it as a str or Decimal"
            ) from exc
        except (TypeError, ValueError) as exc:
            raise CodecError(f"cannot encode a {_type_name(type(value))} value: {exc}") from exc

    @overload
    def decode(self, data: BytesLike) -> Any: ...

    @overload
    def decode(self, data: BytesLike, tp: type[T]) -> T: ...

    @overload
    def decode(self, data: BytesLike, tp: Any) -> Any: ...

    def decode(self, data: BytesLike, tp: Any = None) -> Any:
        """Decode msgpack bytes, untyped (primitives) or into a type.

        Args:
            data: Bytes written by `encode`.
            tp: The target type (see `from_primitive`); None or ``Any`` decodes untyped.

        Returns:
            The decoded value: primitives when untyped, else an instance of ``tp``.

        Raises:
            CodecError: If the bytes are not valid msgpack, or the value does not fit ``tp``.
        """
        untyped = tp is None or tp is Any or tp is object
        decoder = self._decoder if untyped else self._typed_decoder(tp)
        try:
            return decoder.decode(data)
        except msgspec.ValidationError as exc:
            raise CodecError(f"cannot decode the value as {_type_name(tp)}: {exc}") from exc
        except msgspec.DecodeError as exc:
            raise CodecError(
                f"cannot decode {len(data)} bytes as msgpack: {exc}. The data is corrupt or was "
                "not written by grctl's codec."
            ) from exc
        except RecursionError:
            raise CodecError(
                f"cannot decode {len(data)} bytes as msgpack: nested deeper than this interpreter's recursion limit"
            ) from None

    def _typed_decoder(self, tp: Any) -> _msgpack.Decoder[Any]:
        try:
            decoder = self._typed_decoders.get(tp)
        except TypeError:  # unhashable type form
            decoder = None
        if decoder is None:
            try:
                decoder = _msgpack.Decoder(tp, dec_hook=self.dec_hook)
            except TypeError as exc:
                raise CodecError(f"{_type_name(tp)} cannot be used as a target type: {exc}") from exc
            try:
                self._typed_decoders[tp] = decoder
            except TypeError:
                pass
        return decoder


_DEFAULT: Final = CodecRegistry()


def default_codec() -> CodecRegistry:
    """Return the process-wide shared registry.

    Codecs registered on it apply to every user of the default (client and worker alike).

    Returns:
        The shared `CodecRegistry`.
    """
    return _DEFAULT
