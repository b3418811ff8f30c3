"""Compatibility module: the step runtime is authoring (`grctl.workflow.runtime`)."""

from grctl.workflow.runtime import (
    JournalEntry,
    JournalSink,
    NonDeterminismError,
    StepPort,
    StepRuntime,
    StepSuspended,
    get_step_runtime,
)

__all__ = [
    "JournalEntry",
    "JournalSink",
    "NonDeterminismError",
    "StepPort",
    "StepRuntime",
    "StepSuspended",
    "get_step_runtime",
]
