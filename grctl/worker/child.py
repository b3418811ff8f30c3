"""Compatibility module: child handles are authoring (`grctl.workflow.child`)."""

from grctl.workflow.child import ChildHandle, ChildOutcome

__all__ = ["ChildHandle", "ChildOutcome"]
