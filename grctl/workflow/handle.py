"""Compatibility module (BEHAVIOUR.md §1.1): `WorkflowHandle` is a client object, in `grctl.client.handle`."""

from grctl.client.handle import WorkflowHandle

__all__ = ["WorkflowHandle"]
