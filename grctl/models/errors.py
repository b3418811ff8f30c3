"""Error details carried in history, and the client-side error classes."""

from __future__ import annotations

import traceback

import msgspec

from grctl.errors import (
    WorkflowAlreadyRunningError,
    WorkflowError,
    WorkflowNotFoundError,
    WorkflowTypeNotRegisteredError,
)

__all__ = [
    "ErrorDetails",
    "WorkflowAlreadyRunningError",
    "WorkflowError",
    "WorkflowNotFoundError",
    "WorkflowTypeNotRegisteredError",
]


class ErrorDetails(msgspec.Struct, kw_only=False, omit_defaults=True):
    """A recorded error: class name, message, stack and importable class path."""

    type: str
    message: str
    stack_trace: str = ""
    qualified_type: str = ""

    @classmethod
    def from_exception(cls, exc: BaseException) -> ErrorDetails:
        """Describe an exception, with its traceback and `module.QualName`.

        `type` is the class name, or for the few grctl errors that stand for a builtin error of
        the original SDK (`GrctlError.reported_type`), that builtin's name.
        """
        klass = type(exc)
        return cls(
            type=getattr(klass, "reported_type", None) or klass.__name__,
            message=str(exc),
            stack_trace="".join(traceback.format_exception(exc)),
            qualified_type=f"{klass.__module__}.{klass.__qualname__}",
        )

    def __str__(self) -> str:
        return f"{self.type}: {self.message or 'No message'}"
