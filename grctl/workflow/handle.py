"""`WorkflowHandle`: one run, seen from a client. Its `future` resolves with the run's outcome."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from grctl.errors import WorkflowError
from grctl.models.run_info import RunInfo, RunStatus

if TYPE_CHECKING:
    from grctl.client._io import ClientIO
    from grctl.client.client import Client
    from grctl.engine.records import HistoryRecord


def _error_text(error: Any) -> str:
    if isinstance(error, dict):
        return f"{error.get('type') or 'WorkflowError'}: {error.get('message') or 'No message'}"
    return str(error)


class WorkflowHandle:
    """A run of a workflow id: wait for its result, send events, cancel, terminate.

    Attributes:
        run_info: what is known of the run (`id`, `wf_id`, `wf_type`, `status`).
        future: resolves with the run's result; raises `WorkflowError` if it failed,
            `asyncio.CancelledError` if it was cancelled or terminated, `TimeoutError` if it
            timed out.
    """

    def __init__(self, run_info: RunInfo, *, client: Client, return_type: type | None = None) -> None:
        self.run_info = run_info
        self._client = client
        self._return_type = return_type
        self.future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._unsubscribe: Callable[[], None] | None = None

    # ------------------------------------------------------------------ wiring

    def _attach(self, io: ClientIO) -> None:
        if self._unsubscribe is None:
            self._unsubscribe = io.listen(self.run_info.id, self._on_history)

    def _on_history(self, rec: HistoryRecord, _partition: int, _offset: int) -> None:
        kind = rec.kind
        msg = rec.msg or {}
        if kind == "run.completed":
            self._settle(RunStatus.completed, result=msg.get("result"))
        elif kind == "run.failed":
            self._settle(RunStatus.failed, error=msg.get("error"))
        elif kind == "run.cancelled":
            self._settle(RunStatus.cancelled)
        elif kind == "run.terminated":
            self._settle(RunStatus.terminated)
        elif kind == "run.timeout":
            self._settle(RunStatus.timed_out, duration_ms=msg.get("duration_ms", 0))

    def _settle_from_info(self, info: RunInfo) -> None:
        self._settle(info.status, result=info.result, error=info.error)

    def _settle(self, status: RunStatus, *, result: Any = None, error: Any = None, duration_ms: int = 0) -> None:
        self.run_info.status = status
        fut = self.future
        if fut.done():
            return
        if status == RunStatus.completed:
            fut.set_result(result)
        elif status == RunStatus.failed:
            fut.set_exception(WorkflowError(_error_text(error)))
        elif status == RunStatus.cancelled:
            fut.cancel("Workflow cancelled")
        elif status == RunStatus.terminated:
            fut.cancel("Workflow terminated")
        elif status == RunStatus.timed_out:
            fut.set_exception(TimeoutError(f"Workflow timed out after {duration_ms / 1000:.3f}s"))
        self._stop_listening()

    def _stop_listening(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def discard(self) -> None:
        """Stop following the run; a pending future is cancelled, an exception marked retrieved."""
        self._stop_listening()
        if not self.future.done():
            self.future.cancel()
        elif not self.future.cancelled():
            self.future.exception()

    stop = discard

    # ------------------------------------------------------------------ API

    async def result(self, timeout: float | None = None, return_type: type | None = None) -> Any:
        """Wait for the run's result.

        Args:
            timeout: seconds to wait (None: no limit).
            return_type: convert the result to this type (wins over the one given at start).

        Raises:
            WorkflowError: the run failed.
            asyncio.CancelledError: the run was cancelled or terminated.
            TimeoutError: the wait ran out, or the run timed out.
        """
        try:
            if timeout is None:
                raw = await asyncio.shield(self.future)
            else:
                async with asyncio.timeout(timeout):
                    raw = await asyncio.shield(self.future)
        except TimeoutError:
            if self.future.done():
                raise
            raise TimeoutError(
                f"run {self.run_info.id} of workflow id {self.run_info.wf_id!r} did not finish within {timeout}s"
            ) from None
        tp = return_type or self._return_type
        if tp is None:
            return raw
        return self._client.codec.from_primitive(raw, tp)

    async def send(self, event_name: str, payload: Any | None = None) -> None:
        """Send an event to the run.

        Raises:
            WorkflowError: the run ended or has no handler for `event_name`.
            WorkflowNotFoundError: the workflow id is unknown.
        """
        await self._client.send_event(self.run_info.wf_id, event_name, payload, run_id=self.run_info.id)

    async def cancel(self, reason: str | None = None) -> None:
        """Cancel the run: at once if it waits; after its running step finishes otherwise.

        Raises:
            WorkflowError: the run already ended.
        """
        await self._client.cancel_run(self.run_info.wf_id, reason, run_id=self.run_info.id)

    async def terminate(self, reason: str | None = None) -> None:
        """Terminate the run at once; a running step is cancelled.

        Raises:
            WorkflowError: the run already ended.
        """
        await self._client.cancel_run(self.run_info.wf_id, reason, terminate=True, run_id=self.run_info.id)

    async def describe(self) -> RunInfo:
        """Fresh run info from the owning worker."""
        return await self._client.describe(self.run_info.wf_id)

    async def query(self, name: str, payload: Any | None = None, return_type: type | None = None) -> Any:
        """Ask the run a `@wf.query` question; the owning worker answers from committed state.

        Raises:
            WorkflowError: no such query, its handler failed, or no worker answered in time.
        """
        raw = await self._client.query(self.run_info.wf_id, name, payload)
        return self._client.codec.from_primitive(raw, return_type) if return_type is not None else raw

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self._stop_listening()
