"""Compatibility module (BEHAVIOUR.md §1.1): `ctx.store` is authoring (`grctl.workflow.store`)."""

from grctl.workflow.store import Store, StoreKeyNotFoundError

__all__ = ["Store", "StoreKeyNotFoundError"]
