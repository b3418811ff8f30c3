"""The client side: `Client`, `Connection`, `WorkflowHandle`, the client-visible errors, logging helpers.

Names are imported on first access: `WorkflowHandle` (defined by the authoring package, `grctl.workflow.handle`)
loads without the Kafka client behind `Client`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from grctl import _lazy

if TYPE_CHECKING:
    from grctl.client.client import Client
    from grctl.client.handle import WorkflowHandle
    from grctl.client.schedules import ScheduleHandle
    from grctl.engine.schedule_spec import CalendarSpec, ScheduleSpec
    from grctl.errors import (
        ScheduleAlreadyExistsError,
        ScheduleError,
        ScheduleNotFoundError,
        ScheduleSpecError,
        WorkflowAlreadyRunningError,
        WorkflowError,
        WorkflowNotFoundError,
        WorkflowTypeNotRegisteredError,
    )
    from grctl.kafka.connection import Connection
    from grctl.logging_setup import get_logger, setup_logging

_EXPORTS: dict[str, str] = {
    "CalendarSpec": "grctl.engine.schedule_spec",
    "ScheduleAlreadyExistsError": "grctl.errors",
    "ScheduleError": "grctl.errors",
    "ScheduleHandle": "grctl.client.schedules",
    "ScheduleNotFoundError": "grctl.errors",
    "ScheduleSpec": "grctl.engine.schedule_spec",
    "ScheduleSpecError": "grctl.errors",
    "Client": "grctl.client.client",
    "Connection": "grctl.kafka.connection",
    "WorkflowAlreadyRunningError": "grctl.errors",
    "WorkflowError": "grctl.errors",
    "WorkflowHandle": "grctl.client.handle",
    "WorkflowNotFoundError": "grctl.errors",
    "WorkflowTypeNotRegisteredError": "grctl.errors",
    "get_logger": "grctl.logging_setup",
    "setup_logging": "grctl.logging_setup",
}
"""Public name -> the module that defines it (imported on first access)."""


def __getattr__(name: str) -> Any:
    return _lazy.load(__name__, _EXPORTS, name)


def __dir__() -> list[str]:
    return list(__all__)


__all__ = [
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
]
