"""Worker-side errors (compatibility module; the classes live in `grctl.errors`)."""

from grctl.errors import (
    NextDirectiveMissingError,
    RegistrationError,
    WorkflowNotRegisteredError,
    WorkflowRunnerNotFoundError,
)

__all__ = [
    "NextDirectiveMissingError",
    "RegistrationError",
    "WorkflowNotRegisteredError",
    "WorkflowRunnerNotFoundError",
]
