"""The client side: `Client`, `Connection`, the client-visible errors, logging helpers."""

from grctl.client.client import Client
from grctl.errors import (
    WorkflowAlreadyRunningError,
    WorkflowError,
    WorkflowNotFoundError,
    WorkflowTypeNotRegisteredError,
)
from grctl.kafka.connection import Connection
from grctl.logging_setup import get_logger, setup_logging

__all__ = [
    "Client",
    "Connection",
    "WorkflowAlreadyRunningError",
    "WorkflowError",
    "WorkflowNotFoundError",
    "WorkflowTypeNotRegisteredError",
    "get_logger",
    "setup_logging",
]
