"""Workers and what handlers see: `Worker`, `Context`, `StoreKeyNotFoundError`."""

from grctl.errors import StoreKeyNotFoundError
from grctl.worker.child import ChildOutcome
from grctl.worker.context import Context
from grctl.worker.schema_registry import SchemaRegistry
from grctl.worker.sources import SendEvent, Source, SourceRecord, StartRun
from grctl.worker.task import task
from grctl.worker.worker import Worker

__all__ = [
    "ChildOutcome",
    "Context",
    "SchemaRegistry",
    "SendEvent",
    "Source",
    "SourceRecord",
    "StartRun",
    "StoreKeyNotFoundError",
    "Worker",
    "task",
]
