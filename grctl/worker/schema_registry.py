"""The schema registry of the formats avro, protobuf and jsonschema (`Worker(schema_registry=...)`).

The public names; the implementation is the worker's Kafka edge, `grctl.worker._edges.schema_registry`.
"""

from grctl.worker._edges.schema_registry import (
    ENV_URL,
    REGISTRY_FORMATS,
    RecordField,
    RegistryDecoder,
    RegistryFormat,
    SchemaRegistry,
    check_schema,
    encode_value,
    schema_id_of,
)

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
