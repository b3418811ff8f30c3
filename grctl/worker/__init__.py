"""Workers and what handlers see: `Worker`, `Context`, `StoreKeyNotFoundError`."""

from grctl.errors import StoreKeyNotFoundError
from grctl.worker.schema_registry import SchemaRegistry
from grctl.worker.sources import SendEvent, Source, SourceRecord, StartRun

# Through the compat module: importing `grctl.worker.task` later must not rebind `task` to it.
from grctl.worker.task import task
from grctl.worker.worker import Worker
from grctl.workflow.child import ChildOutcome
from grctl.workflow.context import Context

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
