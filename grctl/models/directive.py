"""Directives: what a handler returns to say what the run does next."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import msgspec

from grctl.models.errors import ErrorDetails
from grctl.models.retry import RetryPolicy

__all__ = [
    "Cancel",
    "Complete",
    "Directive",
    "DirectiveKind",
    "Event",
    "Fail",
    "FailStep",
    "RetryPolicy",
    "Start",
    "Step",
    "StepPickedUp",
    "StepResult",
    "Wait",
]


#: The step name of a workflow's start handler, on the wire and in history (BEHAVIOUR.md §2.1).
START_STEP_NAME = "start"


class DirectiveKind(StrEnum):
    """What a directive asks the engine to do after the current step."""

    step = "step"
    wait = "wait"
    complete = "complete"
    fail = "fail"
    fail_step = "fail_step"


class Step(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Run the step named `step_name` next."""

    step_name: str
    timeout_ms: int | None = None


class Wait(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Wait for an event, optionally with a timeout and a step to run when it expires."""

    timeout_ms: int = 0
    timeout_step_name: str = ""


class Complete(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Complete the run with `result`."""

    result: Any = None


class Fail(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Fail the run with `error`."""

    error: ErrorDetails


class FailStep(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The step named `step_name` raised `error`."""

    step_name: str
    error: ErrorDetails


class Directive(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The value a handler returns: exactly one of the message fields is set, per `kind`."""

    kind: DirectiveKind
    step: Step | None = None
    wait: Wait | None = None
    complete: Complete | None = None
    fail: Fail | None = None
    fail_step: FailStep | None = None


class Start(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Start a run (the client's request)."""

    wf_type: str
    wf_id: str
    run_id: str
    input: Any = None
    timeout_ms: int | None = None


class Event(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Deliver an event to a run."""

    wf_id: str
    event_name: str
    payload: Any = None


class Cancel(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Cancel (or terminate) a run."""

    wf_id: str
    reason: str | None = None
    terminate: bool = False


class StepResult(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What a finished step reports: its directive and its store writes."""

    wf_id: str
    run_id: str
    step_name: str
    directive: Directive | None = None
    kv_updates: dict[str, Any] | None = None
    duration_ms: int = 0


class StepPickedUp(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A worker began executing a step."""

    wf_id: str
    run_id: str
    step_name: str
    worker_id: str
