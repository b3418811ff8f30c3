"""How a run's terminal status becomes what its waiters see: the one mapping.

| status | `terminal_error` (what a parent is told) | `settle` (what a waiter's future does) |
|---|---|---|
| completed | None | result |
| failed | the run's own error | `WorkflowError("<type>: <message>")`, "No message" if empty |
| cancelled | Cancelled: reason or "workflow was cancelled" | `CancelledError("Workflow cancelled")` |
| terminated | Terminated: reason or "run was terminated" | `CancelledError("Workflow terminated")` |
| timed_out | WorkflowTimeout: "the workflow timeout expired" | `TimeoutError("Workflow timed out after <s>s")` |

The engine's state machine reports a child's end to its parent with `terminal_error`; the
client's `WorkflowHandle` and the step's `ChildHandle` settle their futures with `settle`
(messages as BEHAVIOUR.md §1.10). Pure: no asyncio, no Kafka, no clock. It imports only
`grctl.errors` and the run models.
"""

from __future__ import annotations

from typing import Any, Final, Protocol

import msgspec

from grctl.errors import InvalidArgumentError, WorkflowError
from grctl.models.errors import ErrorDetails
from grctl.models.run_info import RunStatus

__all__ = [
    "CANCEL_MESSAGES",
    "Settleable",
    "settle",
    "terminal_error",
    "timeout_error",
    "workflow_error",
]

CANCEL_MESSAGES: Final[dict[RunStatus, str]] = {
    RunStatus.cancelled: "Workflow cancelled",
    RunStatus.terminated: "Workflow terminated",
}
"""The message of the `asyncio.CancelledError` a waiter gets for a cancelled or terminated run."""

_NO_MESSAGE: Final = "No message"


class Settleable(Protocol):
    """What `settle` needs of a future (an `asyncio.Future` has all of it)."""

    def done(self) -> bool:
        """Whether the future already has an outcome."""
        ...

    def set_result(self, result: Any, /) -> None:
        """Resolve with a value."""
        ...

    def set_exception(self, exception: BaseException, /) -> None:
        """Resolve with an error."""
        ...

    def cancel(self, msg: Any | None = None) -> bool:
        """Cancel; awaiting then raises `asyncio.CancelledError(msg)`."""
        ...


def _status(status: RunStatus | str) -> RunStatus:
    try:
        return RunStatus(status)
    except ValueError:
        raise InvalidArgumentError(
            f"{status!r} is not a run status; use one of {', '.join(s.value for s in RunStatus)}", argument="status"
        ) from None


def terminal_error(
    status: RunStatus | str, *, error: dict[str, Any] | None = None, reason: str | None = None
) -> dict[str, Any] | None:
    """The error details recorded for a run that ended with `status` (what a parent is told).

    Args:
        status: the run's terminal status.
        error: the run's own error (used for `failed`).
        reason: the reason given to cancel or terminate.

    Returns:
        None for `completed`; `error` for `failed`; for `cancelled`, `terminated` and
        `timed_out`, a dict with `type` and `message` (see the module's table).

    Raises:
        InvalidArgumentError: `status` is not a terminal run status.
    """
    st = _status(status)
    if st == RunStatus.completed:
        return None
    if st == RunStatus.failed:
        return error
    if st == RunStatus.cancelled:
        return {"type": "Cancelled", "message": reason or "workflow was cancelled"}
    if st == RunStatus.terminated:
        return {"type": "Terminated", "message": reason or "run was terminated"}
    if st == RunStatus.timed_out:
        return {"type": "WorkflowTimeout", "message": "the workflow timeout expired"}
    raise InvalidArgumentError(f"run status {st.value!r} is not terminal", argument="status")


def _details(error: Any) -> dict[str, Any] | None:
    if isinstance(error, ErrorDetails):
        return msgspec.structs.asdict(error)
    if isinstance(error, dict):
        return error
    return None


def workflow_error(error: Any, *, wf_id: str | None = None, run_id: str | None = None) -> WorkflowError:
    """The `WorkflowError` a waiter gets for a failed run.

    Args:
        error: the run's recorded error: a dict or `ErrorDetails` (type, message, stack_trace,
            qualified_type), a plain message, or None.
        wf_id: the run's workflow id.
        run_id: the run's id.

    Returns:
        A `WorkflowError` whose message is `"<type>: <message>"` ("No message" when the
        message is empty), with the ids, `error_type`, `error_message` and `details` set.
    """
    details = _details(error)
    if details is not None:
        error_type = str(details.get("type") or "WorkflowError")
        error_message = str(details.get("message") or "")
    else:
        error_type = "WorkflowError"
        error_message = "" if error is None else str(error)
    return WorkflowError(
        f"{error_type}: {error_message or _NO_MESSAGE}",
        wf_id=wf_id,
        run_id=run_id,
        error_type=error_type,
        error_message=error_message,
        details=details,
    )


def timeout_error(after_s: float | None) -> TimeoutError:
    """The `TimeoutError` a waiter gets for a run that timed out.

    Args:
        after_s: seconds the run lasted (or its workflow timeout), if known.

    Returns:
        `TimeoutError("Workflow timed out after <s>s")`, or "Workflow timed out" without a duration.
    """
    if after_s is None:
        return TimeoutError("Workflow timed out")
    return TimeoutError(f"Workflow timed out after {round(after_s, 3):g}s")


def settle(
    fut: Settleable,
    status: RunStatus | str,
    *,
    result: Any = None,
    error: Any = None,
    wf_id: str | None = None,
    run_id: str | None = None,
    after_s: float | None = None,
) -> bool:
    """Resolve a waiter's future with the outcome of a run that ended with `status`.

    Args:
        fut: the future; left alone if it is already done.
        status: the run's status; a status that is not terminal leaves the future alone.
        result: the run's result (`completed`).
        error: the run's recorded error (`failed`), see `workflow_error`.
        wf_id: the run's workflow id (carried by the `WorkflowError`).
        run_id: the run's id (carried by the `WorkflowError`).
        after_s: how long the run lasted (`timed_out`), see `timeout_error`.

    Returns:
        True if this call settled the future.

    Raises:
        InvalidArgumentError: `status` is not a run status.
    """
    st = _status(status)
    if fut.done() or not st.is_terminal:
        return False
    if st == RunStatus.completed:
        fut.set_result(result)
    elif st == RunStatus.failed:
        fut.set_exception(workflow_error(error, wf_id=wf_id, run_id=run_id))
    elif st == RunStatus.timed_out:
        fut.set_exception(timeout_error(after_s))
    else:
        fut.cancel(CANCEL_MESSAGES[st])
    return True
