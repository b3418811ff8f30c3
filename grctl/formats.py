"""Record formats of the schema registry, as user code names them: no registry client, no Kafka.

`ctx.emit` (`grctl.workflow.emit`) and sources (`grctl.worker.sources`) check their arguments
with these; `grctl.worker.schema_registry` encodes and decodes with the registry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, Literal

from grctl.errors import InvalidArgumentError

if TYPE_CHECKING:
    from grctl.codec import CodecRegistry

__all__ = ["REGISTRY_FORMATS", "RecordField", "RegistryFormat", "check_format", "check_schema", "encode_value"]

RegistryFormat = Literal["avro", "protobuf", "jsonschema"]
#: Which part of a record a schema is for: its subject is ``<topic>-<field>``.
RecordField = Literal["value", "key"]
REGISTRY_FORMATS: Final = ("avro", "protobuf", "jsonschema")


def check_format(format: str, argument: str = "format") -> RegistryFormat:
    """`format` as a registry format.

    Raises:
        InvalidArgumentError: it is not one.
    """
    if format not in REGISTRY_FORMATS:
        raise InvalidArgumentError(f"unknown schema-registry format {format!r}: use avro, protobuf or jsonschema",
                                   argument=argument)  # fmt: skip
    return format  # type: ignore[return-value]  # checked just above


def check_schema(format: str, schema: Any, *, required: bool, what: str, name: str = "schema") -> None:
    """Check that `schema` fits `format` (the kind of object, not its content).

    Args:
        format: avro, protobuf or jsonschema.
        schema: Avro: a schema as str or dict; Protobuf: a generated message class;
            JSON Schema: a schema as str or dict.
        required: Protobuf always needs it; for decoding Avro and JSON Schema it is optional
            (the writer's schema from the registry is used).
        what: names the caller in the message ("source 'orders'", "ctx.emit").
        name: the argument's name in the message ("schema", "key_schema").

    Raises:
        InvalidArgumentError: a missing or unusable schema.
    """
    if format == "protobuf":
        if not (isinstance(schema, type) and hasattr(schema, "DESCRIPTOR")):
            raise InvalidArgumentError(
                f"{what}: format 'protobuf' needs {name}=<a generated protobuf message class>, got {schema!r}",
                argument=name,
            )
        return
    if schema is None:
        if required:
            raise InvalidArgumentError(f"{what}: format {format!r} needs {name}= (a str or dict)", argument=name)
        return
    if not isinstance(schema, str | dict):
        raise InvalidArgumentError(
            f"{what}: the {format} {name} must be a str or dict, got {type(schema).__name__}", argument=name
        )


def encode_value(codec: CodecRegistry, format: RegistryFormat, value: Any) -> Any:
    """What the serializer of `format` gets for a user value: JSON Schema values go through the codec."""
    return codec.to_primitive(value) if format == "jsonschema" else value
