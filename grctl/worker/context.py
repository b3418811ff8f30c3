"""Compatibility module (BEHAVIOUR.md §1.1): `Context` is authoring (`grctl.workflow.context`)."""

from grctl.workflow.context import Context, NextBuilder, QueryContext

__all__ = ["Context", "NextBuilder", "QueryContext"]
