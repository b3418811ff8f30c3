"""Compatibility module: `WorkflowHandle` is defined by the authoring package (`grctl.workflow.handle`).

The handle a client gets and the one a step gets from `ctx.start` are one type, so it lives
where both can import it without loading the client's Kafka side.
"""

from grctl.workflow.handle import HandleClient, WorkflowHandle

__all__ = ["HandleClient", "WorkflowHandle"]
