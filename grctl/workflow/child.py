"""Child workflows seen from the parent's step: `ChildOutcome` and the `WorkflowHandle` `ctx.start_child` returns."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import msgspec
from ulid import ULID

from grctl.errors import NotAvailableInStepError, WorkflowError
from grctl.future import WorkflowFuture
from grctl.models.errors import ErrorDetails
from grctl.models.run_info import RunInfo, RunStatus
from grctl.workflow.handle import WorkflowHandle

if TYPE_CHECKING:
    from grctl.codec import CodecRegistry
    from grctl.workflow.runtime import StepRuntime

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


class _InStep:
    """The run operations of a child handle inside its parent's step: journaled, sent through the step's port.

    Events, cancel and terminate are journaled: a re-executed step does not send them twice.
    Describe and query are refused: their answer would differ when the step re-executes.
    """

    def __init__(self, runtime: StepRuntime, codec: CodecRegistry) -> None:
        self._rt = runtime
        self.codec = codec

    def _journaled(self, kind: str, name: str, send: Callable[[], None], event: tuple[str, dict[str, Any]]) -> None:
        rt = self._rt
        if rt.next_recorded(kind, name) is not None:
            return  # sent by an earlier execution of this step
        send()
        rt.history(event[0], event[1], f"{kind}:{rt.position}")
        rt.append(kind, name, None)

    async def send_event(self, wf_id: str, event_name: str, payload: Any = None, run_id: str | None = None) -> None:
        raw = self.codec.to_primitive(payload)
        rt = self._rt
        self._journaled(
            "child_send",
            f"{wf_id}:{event_name}",
            lambda: rt.sink.send_event(
                rt, wf_id=wf_id, run_id=run_id, event_name=event_name, payload=raw, event_id=str(ULID())
            ),
            ("child.event_sent", {"child_wf_id": wf_id, "event_name": event_name, "payload": raw}),
        )

    async def cancel_run(
        self, wf_id: str, reason: str | None = None, *, terminate: bool = False, run_id: str | None = None
    ) -> None:
        rt = self._rt
        self._journaled(
            "child_terminate" if terminate else "child_cancel",
            wf_id,
            lambda: rt.sink.cancel_run(rt, wf_id=wf_id, run_id=run_id, reason=reason, terminate=terminate),
            ("child.cancel_requested", {"child_wf_id": wf_id, "reason": reason, "terminate": terminate}),
        )

    async def describe(self, wf_id: str) -> RunInfo:
        raise NotAvailableInStepError(
            f"describe the child {wf_id!r} from a Client, not from inside a step: the answer "
            f"would not be the same when the step re-executes",
            operation="describe",
        )

    async def query(self, wf_id: str, name: str, payload: Any = None, timeout: float | None = None) -> Any:
        raise NotAvailableInStepError(
            f"query {name!r} of the child {wf_id!r} from a Client, not from inside a step: "
            f"the answer would not be the same when the step re-executes",
            operation="query",
        )


class ChildHandle(WorkflowHandle):
    """A child run started by a step: a `WorkflowHandle` whose future resolves inside the same step.

    The outcome reaches the parent's partition as a directive when the child ends, is kept in
    the parent's state, and resolves the future; a step re-executed after a crash gets it from
    there. Events, cancel and terminate are journaled: a re-executed step does not send them
    twice. `describe` and `query` raise `NotAvailableInStepError`: ask them from a `Client`.

    Attributes:
        run_info: the child run (`id`, `wf_id`, `wf_type`, parent ids, `timeout`).
        future: a `WorkflowFuture` resolved with the child's outcome (see `grctl.models.outcome`).
    """

    def __init__(self, run_info: RunInfo, runtime: StepRuntime, codec: CodecRegistry) -> None:
        super().__init__(run_info, client=_InStep(runtime, codec))
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
        return await super().result(timeout, return_type)

    async def send(self, event_name: str, payload: Any | None = None) -> None:
        """Send an event to the child (journaled: not sent again when the step re-executes)."""
        await super().send(event_name, payload)

    async def cancel(self, reason: str | None = None) -> None:
        """Cancel the child (journaled)."""
        await super().cancel(reason)

    async def terminate(self, reason: str | None = None) -> None:
        """Terminate the child (journaled)."""
        await super().terminate(reason)

    async def describe(self) -> RunInfo:
        """Not available inside a step: its answer would differ when the step re-executes.

        Raises:
            NotAvailableInStepError: always; describe the child from a `Client`.
        """
        return await super().describe()

    async def query(self, name: str, payload: Any | None = None, return_type: type | None = None) -> Any:
        """Not available inside a step: its answer would differ when the step re-executes.

        Raises:
            NotAvailableInStepError: always; query the child from a `Client`.
        """
        return await super().query(name, payload, return_type)
