"""Child workflows seen from the parent's step: `ChildOutcome` and the handle `ctx.start_child` returns."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import msgspec
from ulid import ULID

from grctl.engine.records import CancelCmd, EventCmd
from grctl.errors import NotAvailableInStepError, WorkflowError
from grctl.future import WorkflowFuture
from grctl.models.errors import ErrorDetails
from grctl.models.run_info import RunInfo, RunStatus

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


class ChildHandle:
    """A child run started by a step. Await `future` (or `result()`) inside the same step.

    The outcome reaches the parent's partition as a directive when the child ends, is kept in
    the parent's state, and resolves the future; a step re-executed after a crash gets it from
    there. Events, cancel and terminate are journaled: a re-executed step does not send them
    twice.

    Attributes:
        run_info: the child run (`id`, `wf_id`, `wf_type`, parent ids, `timeout`).
        future: a `WorkflowFuture` resolved with the child's outcome (see `grctl.models.outcome`).
    """

    def __init__(self, run_info: RunInfo, runtime: StepRuntime, codec: CodecRegistry) -> None:
        self.run_info = run_info
        self._rt = runtime
        self._codec = codec
        self._source = runtime.sink.child_outcome(runtime, run_info.wf_id)
        self.future = WorkflowFuture(run_info, self._follow)
        self.future.start()

    def _follow(self, fut: WorkflowFuture) -> Callable[[], None]:
        def deliver(source: asyncio.Future[dict[str, Any]]) -> None:
            if source.cancelled():
                return  # the partition was revoked: the step is cancelled too
            exc = source.exception()
            if exc is not None:
                if not fut.done():
                    fut.set_exception(exc)
                return
            outcome = source.result()
            fut.settle(
                outcome["status"],
                result=outcome.get("result"),
                error=outcome.get("error"),
                after_s=self.run_info.timeout,
            )

        def unsubscribe() -> None:
            self._source.remove_done_callback(deliver)

        self._source.add_done_callback(deliver)
        return unsubscribe

    async def result(self, timeout: float | None = None, return_type: type | None = None) -> Any:
        """Wait (inside the step) for the child's result.

        Args:
            timeout: seconds to wait (None: no limit).
            return_type: convert the result to this type.

        Raises:
            WorkflowError: the child failed.
            asyncio.CancelledError: the child was cancelled or terminated.
            TimeoutError: the wait ran out, or the child timed out.
        """
        raw = await self.future.wait(timeout)
        return self._codec.from_primitive(raw, return_type) if return_type is not None else raw

    def _journaled(self, kind: str, name: str, make: Callable[[], Any]) -> None:
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
        """Not available inside a step: its answer would differ when the step re-executes.

        Raises:
            NotAvailableInStepError: always; describe the child from a `Client`.
        """
        raise NotAvailableInStepError(
            f"describe the child {self.run_info.wf_id!r} from a Client, not from inside a step: the answer "
            f"would not be the same when the step re-executes",
            operation="describe",
        )

    async def query(self, name: str, payload: Any | None = None, return_type: type | None = None) -> Any:
        """Not available inside a step: its answer would differ when the step re-executes.

        Raises:
            NotAvailableInStepError: always; query the child from a `Client`.
        """
        raise NotAvailableInStepError(
            f"query {name!r} of the child {self.run_info.wf_id!r} from a Client, not from inside a step: "
            f"the answer would not be the same when the step re-executes",
            operation="query",
        )

    def discard(self) -> None:
        """Stop caring about the outcome; a pending future is cancelled, an exception marked retrieved."""
        self.future.discard()
