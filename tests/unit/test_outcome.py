"""The one status -> outcome mapping (grctl.models.outcome; BEHAVIOUR.md §1.10, §2.11)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from grctl.errors import InvalidArgumentError, WorkflowError
from grctl.models.errors import ErrorDetails
from grctl.models.outcome import settle, terminal_error, timeout_error, workflow_error
from grctl.models.run_info import TERMINAL_STATUSES, RunStatus

FAILED = {"type": "ValueError", "message": "boom", "stack_trace": "tb", "qualified_type": "builtins.ValueError"}


@pytest.mark.parametrize(
    ("status", "reason", "expected"),
    [
        ("completed", None, None),
        ("failed", None, FAILED),
        ("cancelled", None, {"type": "Cancelled", "message": "workflow was cancelled"}),
        ("cancelled", "user asked", {"type": "Cancelled", "message": "user asked"}),
        ("terminated", None, {"type": "Terminated", "message": "run was terminated"}),
        ("terminated", "stuck", {"type": "Terminated", "message": "stuck"}),
        ("timed_out", None, {"type": "WorkflowTimeout", "message": "the workflow timeout expired"}),
        ("timed_out", "ignored", {"type": "WorkflowTimeout", "message": "the workflow timeout expired"}),
    ],
)
def test_terminal_error(status: str, reason: str | None, expected: dict[str, Any] | None) -> None:
    assert terminal_error(status, error=FAILED, reason=reason) == expected
    assert terminal_error(RunStatus(status), error=FAILED, reason=reason) == expected


@pytest.mark.parametrize("status", ["pending", "scheduled", "running", "exploded"])
def test_terminal_error_refuses_other_statuses(status: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        terminal_error(status)
    assert info.value.argument == "status"


def test_every_terminal_status_is_mapped() -> None:
    for status in TERMINAL_STATUSES:
        terminal_error(status)


def settled(status: str, **kwargs: Any) -> asyncio.Future[Any]:
    loop = asyncio.new_event_loop()
    try:
        fut: asyncio.Future[Any] = loop.create_future()
        assert settle(fut, status, wf_id="wf-1", run_id="run-1", **kwargs)
        assert fut.done()
        return fut
    finally:
        loop.close()


def test_completed_resolves_with_the_result() -> None:
    assert settled("completed", result={"n": 1}).result() == {"n": 1}
    assert settled("completed").result() is None


@pytest.mark.parametrize(
    ("error", "message", "error_type", "error_message"),
    [
        (FAILED, "ValueError: boom", "ValueError", "boom"),
        ({"type": "ValueError", "message": ""}, "ValueError: No message", "ValueError", ""),
        ({"message": "no type"}, "WorkflowError: no type", "WorkflowError", "no type"),
        (ErrorDetails(type="KeyError", message="'k'"), "KeyError: 'k'", "KeyError", "'k'"),
        (None, "WorkflowError: No message", "WorkflowError", ""),
        ("plain text", "WorkflowError: plain text", "WorkflowError", "plain text"),
    ],
)
def test_failed_raises_workflow_error_with_ids(error: Any, message: str, error_type: str, error_message: str) -> None:
    exc = settled("failed", error=error).exception()
    assert type(exc) is WorkflowError
    assert str(exc) == message
    assert (exc.wf_id, exc.run_id, exc.error_type, exc.error_message) == ("wf-1", "run-1", error_type, error_message)
    if isinstance(error, dict):
        assert exc.details == error
    elif isinstance(error, ErrorDetails):
        assert exc.details == {"type": "KeyError", "message": "'k'", "stack_trace": "", "qualified_type": ""}
    else:
        assert exc.details is None


@pytest.mark.parametrize(
    ("status", "message"), [("cancelled", "Workflow cancelled"), ("terminated", "Workflow terminated")]
)
def test_cancelled_and_terminated_cancel_the_future(status: str, message: str) -> None:
    fut = settled(status, error=FAILED)
    assert fut.cancelled()
    with pytest.raises(asyncio.CancelledError, match=f"^{message}$"):
        fut.result()


@pytest.mark.parametrize(
    ("after_s", "message"),
    [
        (1.5, "Workflow timed out after 1.5s"),
        (2.0, "Workflow timed out after 2s"),
        (1.00049, "Workflow timed out after 1s"),
        (None, "Workflow timed out"),
    ],
)
def test_timed_out_raises_timeout_error(after_s: float | None, message: str) -> None:
    exc = settled("timed_out", after_s=after_s).exception()
    assert type(exc) is TimeoutError
    assert str(exc) == message
    assert str(timeout_error(after_s)) == message


async def test_settle_leaves_a_done_future_and_ignores_other_statuses() -> None:
    fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    for status in ("pending", "scheduled", "running"):
        assert not settle(fut, status)
    assert not fut.done()
    assert settle(fut, RunStatus.completed, result=1)
    assert not settle(fut, RunStatus.failed, error=FAILED)
    assert fut.result() == 1
    with pytest.raises(InvalidArgumentError):
        settle(fut, "exploded")


def test_workflow_error_alone() -> None:
    exc = workflow_error(FAILED, wf_id="w", run_id="r")
    assert (str(exc), exc.wf_id, exc.run_id) == ("ValueError: boom", "w", "r")
