"""grctl: a durable workflow engine for Python on Apache Kafka.

Write workflows with `Workflow`, run them with `Worker`, drive them with `Client`. There is no
server: Kafka is the only infrastructure (see docs/ and DESIGN.md).

Names are imported on first access, so a program that only drives runs
(`import grctl; grctl.Client`) never loads the worker, its RocksDB state or `rocksdict`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from grctl import _lazy

if TYPE_CHECKING:
    from grctl.client.client import Client
    from grctl.codec import CodecRegistry
    from grctl.errors import (
        CodecError,
        GrctlError,
        InvalidArgumentError,
        KafkaSetupError,
        LimiterNotFoundError,
        NonDeterminismError,
        NoWorkerAnsweredError,
        RegistrationError,
        StoreKeyNotFoundError,
        WorkflowAlreadyRunningError,
        WorkflowError,
        WorkflowNotFoundError,
        WorkflowTypeNotRegisteredError,
    )
    from grctl.kafka.connection import Connection
    from grctl.models.directive import Directive, RetryPolicy
    from grctl.models.errors import ErrorDetails
    from grctl.models.history import HistoryEvent, HistoryKind
    from grctl.models.limits import Limit, Limiter
    from grctl.models.run_info import RunInfo, RunStatus
    from grctl.taskworker import TaskContext, TaskWorker
    from grctl.worker.schema_registry import SchemaRegistry
    from grctl.worker.sources import SendEvent, Source, SourceRecord, StartRun
    from grctl.worker.supervisor import run_workers
    from grctl.worker.worker import Worker
    from grctl.workflow.child import ChildOutcome
    from grctl.workflow.context import Context
    from grctl.workflow.handle import WorkflowHandle
    from grctl.workflow.task import task
    from grctl.workflow.workflow import Workflow

__version__ = "0.1.0"

_ERRORS = "grctl.errors"
_EXPORTS: dict[str, str] = {
    "ChildOutcome": "grctl.workflow.child",
    "Client": "grctl.client.client",
    "CodecError": _ERRORS,
    "CodecRegistry": "grctl.codec",
    "Connection": "grctl.kafka.connection",
    "Context": "grctl.workflow.context",
    "Directive": "grctl.models.directive",
    "ErrorDetails": "grctl.models.errors",
    "GrctlError": _ERRORS,
    "HistoryEvent": "grctl.models.history",
    "HistoryKind": "grctl.models.history",
    "InvalidArgumentError": _ERRORS,
    "KafkaSetupError": _ERRORS,
    "Limit": "grctl.models.limits",
    "Limiter": "grctl.models.limits",
    "LimiterNotFoundError": _ERRORS,
    "NoWorkerAnsweredError": _ERRORS,
    "NonDeterminismError": _ERRORS,
    "RegistrationError": _ERRORS,
    "RetryPolicy": "grctl.models.directive",
    "RunInfo": "grctl.models.run_info",
    "RunStatus": "grctl.models.run_info",
    "SchemaRegistry": "grctl.worker.schema_registry",
    "SendEvent": "grctl.worker.sources",
    "Source": "grctl.worker.sources",
    "SourceRecord": "grctl.worker.sources",
    "StartRun": "grctl.worker.sources",
    "StoreKeyNotFoundError": _ERRORS,
    "TaskContext": "grctl.taskworker",
    "TaskWorker": "grctl.taskworker",
    "Worker": "grctl.worker.worker",
    "Workflow": "grctl.workflow.workflow",
    "WorkflowAlreadyRunningError": _ERRORS,
    "WorkflowError": _ERRORS,
    "WorkflowHandle": "grctl.workflow.handle",
    "WorkflowNotFoundError": _ERRORS,
    "WorkflowTypeNotRegisteredError": _ERRORS,
    "run_workers": "grctl.worker.supervisor",
    "task": "grctl.workflow.task",
}
"""Public name -> the module that defines it (imported on first access)."""


def __getattr__(name: str) -> Any:
    return _lazy.load(__name__, _EXPORTS, name)


def __dir__() -> list[str]:
    return list(__all__)


__all__ = [
    "ChildOutcome",
    "Client",
    "CodecError",
    "CodecRegistry",
    "Connection",
    "Context",
    "Directive",
    "ErrorDetails",
    "GrctlError",
    "HistoryEvent",
    "HistoryKind",
    "InvalidArgumentError",
    "KafkaSetupError",
    "Limit",
    "Limiter",
    "LimiterNotFoundError",
    "NoWorkerAnsweredError",
    "NonDeterminismError",
    "RegistrationError",
    "RetryPolicy",
    "RunInfo",
    "RunStatus",
    "SchemaRegistry",
    "SendEvent",
    "Source",
    "SourceRecord",
    "StartRun",
    "StoreKeyNotFoundError",
    "TaskContext",
    "TaskWorker",
    "Worker",
    "Workflow",
    "WorkflowAlreadyRunningError",
    "WorkflowError",
    "WorkflowHandle",
    "WorkflowNotFoundError",
    "WorkflowTypeNotRegisteredError",
    "__version__",
    "run_workers",
    "task",
]
