"""`WorkflowFuture`: an `asyncio.Future` that follows one run and resolves with its outcome.

Both handles use it: the client's `WorkflowHandle` (the run's history, read by the client)
and the step's `ChildHandle` (the child's outcome, delivered to the parent's partition). What
it follows is a *subscription*: a function that starts delivering the run's outcome to the
future (by calling `settle`) and returns the function that stops it. The outcome mapping
itself is `grctl.models.outcome`.

Shared by the client and the worker (like `grctl.codec`), so it imports asyncio, the run
models and `grctl.errors` only: no Kafka, no worker, no client.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Generator
from datetime import datetime
from typing import Any, TypeAlias

from grctl.errors import InvalidArgumentError
from grctl.models import outcome
from grctl.models.run_info import RunInfo, RunStatus

__all__ = ["Done", "Subscription", "WorkflowFuture"]

Subscription: TypeAlias = Callable[["WorkflowFuture"], Callable[[], None]]
"""Starts delivering a run's outcome to the future (calling its `settle`); returns the unsubscribe."""


class Done:
    """What `start()`, `stop()` and `discard()` return: they have done their work on return.

    In the original SDK these were coroutines; awaiting this object returns at once, so both
    `future.stop()` and `await future.stop()` work.
    """

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return
        yield  # a generator that ends at once


_DONE = Done()


def _elapsed_s(info: RunInfo) -> float | None:
    started: datetime | None = info.started_at or info.created_at
    if started is not None and info.ended_at is not None:
        return max(0.0, (info.ended_at - started).total_seconds())
    return info.timeout


def _stop_following(fut: asyncio.Future[Any]) -> None:
    if isinstance(fut, WorkflowFuture):
        fut._unfollow()


class WorkflowFuture(asyncio.Future[Any]):
    """Resolves with a run's result, or raises what its end means for a waiter.

    Awaiting it returns the run's result (primitives, as decoded), or raises `WorkflowError`
    (failed), `asyncio.CancelledError("Workflow cancelled" / "Workflow terminated")` or
    `TimeoutError("Workflow timed out after <s>s")`. Once done, it stops following the run by
    itself.

    Args:
        run_info: the run followed; its `status` is updated when the run's end is seen.
        subscription: how to follow the run (None: `start()` raises).

    Attributes:
        run_info: the run followed.
    """

    def __init__(self, run_info: RunInfo, subscription: Subscription | None = None) -> None:
        super().__init__(loop=asyncio.get_running_loop())
        self.run_info = run_info
        self._subscription = subscription
        self._unsubscribe: Callable[[], None] | None = None
        self.add_done_callback(_stop_following)

    @property
    def is_started(self) -> bool:
        """True while the future follows the run (after `start()`, until done or stopped)."""
        return self._unsubscribe is not None

    def start(self) -> Done:
        """Start following the run (nothing to do if started or done).

        Raises:
            InvalidArgumentError: the future was made without a subscription.
        """
        if self._unsubscribe is None and not self.done():
            if self._subscription is None:
                raise InvalidArgumentError(
                    f"the future of run {self.run_info.id} has nothing to follow: get handles from "
                    f"Client.start_workflow or Client.get_workflow_handle",
                    argument="subscription",
                )
            self._unsubscribe = self._subscription(self)
        return _DONE

    def stop(self) -> Done:
        """Stop following the run; the future is cancelled if it is not done yet."""
        self._unfollow()
        if not self.done():
            self.cancel()
        return _DONE

    def discard(self) -> Done:
        """`stop()`, and mark an exception as retrieved (asyncio never logs it as unretrieved)."""
        self.stop()
        if not self.cancelled():
            self.exception()
        return _DONE

    def settle(
        self, status: RunStatus | str, *, result: Any = None, error: Any = None, after_s: float | None = None
    ) -> bool:
        """Resolve with the outcome of a run that ended with `status` (`grctl.models.outcome.settle`).

        Args:
            status: the run's status; one that is not terminal changes nothing.
            result: the run's result (completed).
            error: the run's recorded error (failed).
            after_s: how long the run lasted (timed out).

        Returns:
            True if this call settled the future (False if it was done already).
        """
        info = self.run_info
        settled = outcome.settle(
            self, status, result=result, error=error, wf_id=info.wf_id, run_id=info.id, after_s=after_s
        )
        if settled:
            info.status = RunStatus(status)
            self._unfollow()
        return settled

    def settle_from(self, info: RunInfo) -> bool:
        """Resolve from a describe answer if it says the run ended (else change nothing).

        Returns:
            True if this call settled the future.
        """
        return self.settle(info.status, result=info.result, error=info.error, after_s=_elapsed_s(info))

    async def wait(self, timeout: float | None = None) -> Any:
        """Wait for the outcome without cancelling the future when the wait runs out.

        Args:
            timeout: seconds to wait (None: no limit).

        Returns:
            The run's result.

        Raises:
            TimeoutError: the wait ran out (the future stays pending), or the run timed out.
        """
        if not self.done():
            # asyncio.wait neither cancels the future when it runs out (wait_for would) nor loses
            # the cancel message ("Workflow cancelled") when the future is cancelled (shield does).
            await asyncio.wait((self,), timeout=timeout)
            if not self.done():
                info = self.run_info
                raise TimeoutError(f"run {info.id} of workflow id {info.wf_id!r} did not finish within {timeout}s")
        return self.result()

    def _unfollow(self) -> None:
        unsubscribe, self._unsubscribe = self._unsubscribe, None
        if unsubscribe is not None:
            unsubscribe()
