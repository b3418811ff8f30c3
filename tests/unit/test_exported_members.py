"""The public names of grctl's packages (BEHAVIOUR.md §1.1), as httpx's test_exported_members does.

A name added to or dropped from an `__all__` is an API change: this test says so.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import grctl
from grctl.errors import GrctlError

EXPECTED_ALL: dict[str, list[str]] = {
    "grctl": [
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
        "SchemaRegistry",  # issue 17: schema-registry formats
        "SendEvent",  # issue 17: sources
        "Source",
        "SourceRecord",
        "StartRun",
        "StoreKeyNotFoundError",
        "TaskContext",  # issue 28: remote task workers
        "TaskWorker",
        "Worker",
        "Workflow",
        "WorkflowAlreadyRunningError",
        "WorkflowError",
        "WorkflowHandle",
        "WorkflowNotFoundError",
        "WorkflowTypeNotRegisteredError",
        "__version__",
        "run_workers",  # issue 32: several worker processes under a supervisor
        "task",
    ],
    "grctl.workflow": [  # issue 25: the authoring package holds everything a workflow module imports
        "ChildHandle",
        "ChildOutcome",
        "Context",
        "Directive",
        "HandlerConfig",
        "NextBuilder",
        "QueryContext",
        "RetryPolicy",
        "RunInfo",
        "Store",
        "StoreKeyNotFoundError",
        "Workflow",
        "WorkflowHandle",
        "task",
    ],
    "grctl.worker": [
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
    ],
    "grctl.client": [
        "CalendarSpec",
        "Client",
        "Connection",
        "ScheduleAlreadyExistsError",
        "ScheduleError",
        "ScheduleHandle",
        "ScheduleNotFoundError",
        "ScheduleSpec",
        "ScheduleSpecError",
        "WorkflowAlreadyRunningError",
        "WorkflowError",
        "WorkflowHandle",
        "WorkflowNotFoundError",
        "WorkflowTypeNotRegisteredError",
        "get_logger",
        "setup_logging",
    ],
    "grctl.models.errors": [
        "ErrorDetails",
        "WorkflowAlreadyRunningError",
        "WorkflowError",
        "WorkflowNotFoundError",
        "WorkflowTypeNotRegisteredError",
    ],
    "grctl.worker.errors": [
        "NextDirectiveMissingError",
        "RegistrationError",
        "WorkflowNotRegisteredError",
        "WorkflowRunnerNotFoundError",
    ],
    "grctl.worker.codec": ["CodecRegistry", "default_codec"],
    "grctl.worker.schema_registry": [
        "ENV_URL",
        "REGISTRY_FORMATS",
        "RecordField",  # issue 17: key formats (subject <topic>-key)
        "RegistryDecoder",
        "RegistryFormat",
        "SchemaRegistry",
        "check_schema",
        "encode_value",
        "schema_id_of",
    ],
    "grctl.workflow.handle": ["WorkflowHandle"],
    # issue 30: users' test harness (the replayer of issue 26, the environments, the fixtures)
    "grctl.testing": [
        "Divergence",
        "KafkaWorkflowEnvironment",
        "ReplayResult",
        "Replayer",
        "VirtualClock",
        "WorkflowEnvironment",
        "assert_replays",
        "load_history",
    ],
    "grctl.testing.pytest_plugin": [
        "grctl_env",
        "grctl_env_options",
        "grctl_kafka_env",
        "grctl_kafka_servers",
        "grctl_workflows",
    ],
}

CONTROL_FLOW = {
    "grctl.workflow.runtime.StepSuspended",
    "grctl.workflow.runtime.RemoteTaskSuspended",
    "grctl.workflow.runtime.PermitSuspended",
}
"""BaseException subclasses that unwind engine code and are not errors (documented where defined)."""


@pytest.mark.parametrize("module_name", sorted(EXPECTED_ALL))
def test_all_is_exactly(module_name: str) -> None:
    module = importlib.import_module(module_name)
    assert module.__all__ == EXPECTED_ALL[module_name]


@pytest.mark.parametrize("module_name", sorted(EXPECTED_ALL))
def test_every_exported_name_resolves(module_name: str) -> None:
    module = importlib.import_module(module_name)
    for name in module.__all__:
        assert getattr(module, name) is not None, f"{module_name}.{name}"
    assert set(module.__all__) <= set(dir(module))


def test_compat_paths_are_the_same_objects() -> None:
    from grctl.client.handle import WorkflowHandle
    from grctl.codec import CodecRegistry, default_codec
    from grctl.worker import codec as worker_codec
    from grctl.workflow import handle as workflow_handle

    assert worker_codec.CodecRegistry is CodecRegistry
    assert worker_codec.default_codec is default_codec
    assert workflow_handle.WorkflowHandle is WorkflowHandle
    assert grctl.WorkflowHandle is WorkflowHandle
    assert grctl.Client is importlib.import_module("grctl.client").Client


def test_unknown_attribute_raises_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        _ = grctl.Nope  # type: ignore[attr-defined]


def public_modules() -> list[str]:
    names = [m.name for m in pkgutil.walk_packages(grctl.__path__, "grctl.")]
    return ["grctl", *(n for n in names if not any(part.startswith("_") for part in n.split(".")))]


def exported_exception_classes() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for module_name in public_modules():
        module = importlib.import_module(module_name)
        exported = getattr(module, "__all__", None)
        # Without __all__, a module exports the public names it defines, not what it imports.
        for name in exported or [n for n in vars(module) if not n.startswith("_")]:
            obj = getattr(module, name)
            if not (inspect.isclass(obj) and issubclass(obj, BaseException)):
                continue
            if obj.__module__ == module_name or (exported and obj.__module__.startswith("grctl")):
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return found


def test_every_exported_exception_derives_from_grctl_error() -> None:
    classes = exported_exception_classes()
    assert "grctl.errors.WorkflowError" in classes and "grctl.cli.common.CommandFailed" in classes
    outside = sorted(name for name, cls in classes.items() if not issubclass(cls, GrctlError))
    assert outside == sorted(CONTROL_FLOW)
    for name in CONTROL_FLOW:
        assert not issubclass(classes[name], Exception), f"{name} is an Exception: make it a GrctlError"
