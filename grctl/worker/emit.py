"""Compatibility module: `ctx.emit`'s buffer is authoring (`grctl.workflow.emit`), the topic directory the worker's."""

from grctl.models.emit import Emit
from grctl.worker._session.topics import TopicDirectory
from grctl.workflow.emit import MAX_EMITS_PER_STEP, EmitBuffer, EmitFormat, KeyFormat

__all__ = ["MAX_EMITS_PER_STEP", "Emit", "EmitBuffer", "EmitFormat", "KeyFormat", "TopicDirectory"]
