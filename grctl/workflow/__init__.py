"""The authoring API: everything a workflow module imports, and nothing of the engine.

`Workflow` and its handlers, the `Context` a handler gets (`ctx.store`, `ctx.next`, `ctx.now`,
`ctx.emit`, `ctx.start`, the replay-aware `ctx.logger`), `@task` with `RetryPolicy`, child
handles and `ChildOutcome`, `WorkflowHandle`, `Directive` and `RunInfo`. A module that only
defines workflows loads neither the worker (`grctl.worker`), its state (`grctl.state`,
RocksDB) nor the Kafka client: a web app that starts runs, a test, the replayer or a type
checker can import it. A step reaches the engine that executes it through one port
(`grctl.workflow.runtime.StepPort`), which the worker implements.
"""

from grctl.models.directive import Directive
from grctl.models.retry import RetryPolicy
from grctl.models.run_info import RunInfo
from grctl.workflow.child import ChildHandle, ChildOutcome
from grctl.workflow.context import Context, NextBuilder, QueryContext
from grctl.workflow.handle import WorkflowHandle
from grctl.workflow.store import Store, StoreKeyNotFoundError
from grctl.workflow.task import task
from grctl.workflow.workflow import HandlerConfig, Workflow

__all__ = [
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
]
