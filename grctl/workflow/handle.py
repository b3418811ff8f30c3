"""`WorkflowHandle`: one run, seen from a client or from a step. Its `future` resolves with the run's outcome.

The handle needs little of what it acts through, named by the `HandleClient` protocol (the codec
and the run operations), plus a way to receive the run's outcome (`listen`: for a client, its
reader of its replies partition, where the owning worker sends the outcome of runs the client
watches). A `Client` passes itself; a step's child handle (`grctl.workflow.child`, the seed's
"`ctx.start()` ... returns a `WorkflowHandle`") passes the step's journaled operations. This
module imports neither the client nor the worker: both import it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from grctl.future import Subscription, WorkflowFuture
from grctl.models.run_info import RunInfo, RunStatus

if TYPE_CHECKING:
    from typing import TypeAlias

    from grctl.codec import CodecRegistry

    Listen: TypeAlias = Callable[[str, Callable[[Any], None], Callable[[BaseException], None]], Callable[[], None]]
    """`listen(run_id, on_outcome, on_failure)`: wait for a watched run's outcome; returns the unsubscribe.

    `on_outcome` gets the reply that carries the outcome (its `payload`: status, result, error,
    duration); `on_failure` what made the wait fail.
    """

__all__ = ["WorkflowHandle"]


class HandleClient(Protocol):
    """What a `WorkflowHandle` uses of its `Client`."""

    codec: CodecRegistry

    async def send_event(self, wf_id: str, event_name: str, payload: Any = None, run_id: str | None = None) -> None:
        """Deliver an event to a run."""
        ...

    async def cancel_run(
        self, wf_id: str, reason: str | None = None, *, terminate: bool = False, run_id: str | None = None
    ) -> None:
        """Cancel or terminate a run."""
        ...

    async def describe(self, wf_id: str) -> RunInfo:
        """The latest run of a workflow id."""
        ...

    async def query(self, wf_id: str, name: str, payload: Any = None, timeout: float | None = None) -> Any:
        """Ask a run a query."""
        ...


class WorkflowHandle:
    """A run of a workflow id: wait for its result, send events, cancel, terminate.

    Get one from `Client.start_workflow` or `Client.get_workflow_handle`: their handles follow
    the run (`future.is_started`). A handle built directly only sends (its `future` has
    nothing to follow unless `listen` is given and `future.start()` called).

    Args:
        run_info: what is known of the run.
        client: the client whose operations the handle uses.
        return_type: convert the result to this type.
        listen: how to receive the run's outcome (the client's reader).

    Attributes:
        run_info: what is known of the run (`id`, `wf_id`, `wf_type`, `status`).
        future: a `WorkflowFuture`; resolves with the run's result; raises `WorkflowError` if
            it failed, `asyncio.CancelledError` if it was cancelled or terminated,
            `TimeoutError` if it timed out.
    """

    def __init__(
        self,
        run_info: RunInfo,
        *,
        client: HandleClient,
        return_type: type | None = None,
        listen: Listen | None = None,
        watch_id: str | None = None,
    ) -> None:
        self.run_info = run_info
        self._client = client
        self._return_type = return_type
        self._watch_id = watch_id or run_info.id
        self.future = WorkflowFuture(run_info, None if listen is None else self._subscription(listen))

    @classmethod
    def attached(
        cls,
        run_info: RunInfo,
        *,
        client: HandleClient,
        listen: Listen,
        watch_id: str,
        return_type: type | None = None,
    ) -> WorkflowHandle:
        """A handle that follows the run from now on, settled at once if `run_info` says it ended.

        Args:
            run_info: what is known of the run (a describe answer, or a run being started).
            client: the client whose operations the handle uses.
            listen: how to receive the run's outcome.
            watch_id: the id of the request that made the owner watch the run for this client
                (its start, or a `WatchCmd`): the outcome comes back under it.
            return_type: convert the result to this type.

        Returns:
            The handle, its future started.
        """
        handle = cls(run_info, client=client, return_type=return_type, listen=listen, watch_id=watch_id)
        handle.future.start()
        handle.future.settle_from(run_info)
        return handle

    # ------------------------------------------------------------------ following the run

    def _subscription(self, listen: Listen) -> Subscription:
        def follow(_future: WorkflowFuture) -> Callable[[], None]:
            return listen(self._watch_id, self._on_outcome, self._on_failure)

        return follow

    def _on_outcome(self, reply: Any) -> None:
        msg = reply.payload or {}
        duration_ms = msg.get("duration_ms")
        self.future.settle(
            RunStatus(msg["status"]),
            result=msg.get("result"),
            error=msg.get("error"),
            after_s=duration_ms / 1000 if duration_ms is not None else self.run_info.timeout,
        )

    def _on_failure(self, exc: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(exc)

    def discard(self) -> None:
        """Stop following the run; a pending future is cancelled, an exception marked retrieved."""
        self.future.discard()

    stop = discard

    # ------------------------------------------------------------------ API

    async def result(self, timeout: float | None = None, return_type: type | None = None) -> Any:
        """Wait for the run's result.

        Args:
            timeout: seconds to wait (None: no limit); the handle stays usable when it runs out.
            return_type: convert the result to this type (wins over the one given at start).

        Raises:
            WorkflowError: the run failed.
            asyncio.CancelledError: the run was cancelled or terminated.
            TimeoutError: the wait ran out, or the run timed out.
        """
        raw = await self.future.wait(timeout)
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
