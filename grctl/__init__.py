"""grctl: a durable workflow engine for Python on Apache Kafka.

Write workflows with `Workflow`, run them with `Worker`, drive them with `Client`. There is no
server: Kafka is the only infrastructure (see docs/ and DESIGN.md).
"""

from grctl.client.client import Client
from grctl.errors import GrctlError
from grctl.kafka.connection import Connection
from grctl.models.directive import Directive, RetryPolicy
from grctl.worker.context import Context
from grctl.worker.worker import Worker
from grctl.workflow.handle import WorkflowHandle
from grctl.workflow.workflow import Workflow

__version__ = "0.1.0"

__all__ = [
    "Client",
    "Connection",
    "Context",
    "Directive",
    "GrctlError",
    "RetryPolicy",
    "Worker",
    "Workflow",
    "WorkflowHandle",
    "__version__",
]
