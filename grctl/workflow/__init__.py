"""The authoring API: `Workflow`, its handlers, `WorkflowHandle`, `Directive`. No Kafka imports."""

from grctl.models.directive import Directive
from grctl.workflow.handle import WorkflowHandle
from grctl.workflow.workflow import HandlerConfig, Workflow

__all__ = ["Directive", "HandlerConfig", "Workflow", "WorkflowHandle"]
