"""Child workflows seen from the parent's step: `ChildOutcome` and the handle `ctx.start_child` returns."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import msgspec
from ulid import ULID

from grctl.engine.records import CancelCmd, EventCmd
from grctl.errors import WorkflowError
from grctl.models.errors import ErrorDetails
from grctl.models.run_info import RunInfo, RunStatus
from grctl.workflow.handle import WorkflowHandle

if TYPE_CHECKING:
    from grctl.codec import CodecRegistry
    from grctl.worker.runtime import StepRuntime

T = TypeVar("T")

__all__ = ["ChildHandle", "ChildOutcome"]


class ChildOutcome(msgspec.Struct, Generic[T], kw_only=True):
    """How a child run ended, as its parent's completion callback receives it.

    Attributes:
        status: the child's terminal status.
        result: its result if it completed (converted to T with `ChildOutcome[T]`).
        error: what went wrong otherwise.
    """

    status: RunStatus
    result: T | None = None
    error: ErrorDetails | None = None

    @property
    def ok(self) -> bool:
        """True if the child completed."""
        return self.status == RunStatus.completed

    def unwrap(self) -> T | None:
        """The result, or `WorkflowError` describing why there is none."""
        if self.ok:
            return self.result
        if self.error is not None:
            raise WorkflowError(f"{self.error.type}: {self.error.message}")
        raise WorkflowError(f"WorkflowError: child workflow {self.status}")


def _settle(fut: asyncio.Future[Any], outcome: dict[str, Any]) -> None:
    if fut.done():
        return
    status = outcome.get("status")
    error = outcome.get("error") or {}
    if status == "completed":
        fut.set_result(outcome.get("result"))
    elif status in ("cancelled", "terminated"):
        fut.cancel(f"Workflow {status}")
    elif status == "timed_out":
        fut.set_exception(TimeoutError(error.get("message") or "child workflow timed out"))
    else:
        fut.set_exception(WorkflowError(f"{error.get('type') or 'WorkflowError'}: {error.get('message') or status}"))


class ChildHandle(WorkflowHandle):
    """A child run started by a step. Await `future` (or `result()`) inside the same step.

    The outcome reaches the parent's partition as a directive when the child ends, is kept in
    the parent's state, and resolves the future; a step re-executed after a crash gets it from
    there.
    """

    def __init__(self, run_info: RunInfo, runtime: StepRuntime, codec: CodecRegistry) -> None:
        self.run_info = run_info
        self._rt = runtime
        self._codec = codec
        self._return_type = None
        self._unsubscribe = None
        self.future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        source = runtime.sink.child_outcome(runtime, run_info.wf_id)
        source.add_done_callback(self._on_outcome)

    def _on_outcome(self, source: asyncio.Future[dict[str, Any]]) -> None:
        if not source.cancelled():
            _settle(self.future, source.result())

    async def result(self, timeout: float | None = None, return_type: type | None = None) -> Any:
        """Wait (inside the step) for the child's result."""
        try:
            async with asyncio.timeout(timeout):
                raw = await asyncio.shield(self.future)
        except TimeoutError:
            if self.future.done():
                raise
            raise TimeoutError(f"child {self.run_info.wf_id!r} did not finish within {timeout}s") from None
        return self._codec.from_primitive(raw, return_type) if return_type is not None else raw

    def _journaled(self, kind: str, name: str, make: Any) -> None:
        rt = self._rt
        if rt.next_recorded(kind, name) is not None:
            return  # sent by an earlier execution of this step
        rt.sink.send_directive(rt, make())
        rt.append(kind, name, None)

    async def send(self, event_name: str, payload: Any | None = None) -> None:
        """Send an event to the child (journaled: not sent again when the step re-executes)."""
        raw = self._codec.to_primitive(payload)
        wf_id, run_id = self.run_info.wf_id, self.run_info.id
        self._journaled(
            "child_send",
            f"{wf_id}:{event_name}",
            lambda: EventCmd(wf_id=wf_id, run_id=run_id, event_name=event_name, payload=raw, event_id=str(ULID())),
        )

    async def cancel(self, reason: str | None = None) -> None:
        """Cancel the child (journaled)."""
        wf_id, run_id = self.run_info.wf_id, self.run_info.id
        self._journaled("child_cancel", wf_id, lambda: CancelCmd(wf_id=wf_id, run_id=run_id, reason=reason))

    async def terminate(self, reason: str | None = None) -> None:
        """Terminate the child (journaled)."""
        wf_id, run_id = self.run_info.wf_id, self.run_info.id
        self._journaled(
            "child_terminate", wf_id, lambda: CancelCmd(wf_id=wf_id, run_id=run_id, reason=reason, terminate=True)
        )

    async def describe(self) -> RunInfo:
        """Not available from inside a step (it would not replay deterministically)."""
        raise NotImplementedError("describe a child from a Client, not from inside a step")

    def discard(self) -> None:
        """Stop caring about the outcome."""
        if not self.future.done():
            self.future.cancel()
