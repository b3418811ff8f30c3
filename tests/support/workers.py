"""Stopping in-process workers at the end of a test, and failing the test if one crashed or hung.

A worker task that raised, or that does not end within its bound after `Worker.stop`, is a
failure of the test that ran it: the fixtures' teardown raises `WorkerTeardownError` (pytest
reports the test as an error at teardown), naming the worker and what happened.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

#: How long a stopped worker's `run()` may take to return (its stop drains for 2 s, then
#: revokes its partitions and closes its clients).
STOP_BOUND_S = 30.0


class WorkerTeardownError(AssertionError):
    """A worker of the test crashed during it, or did not stop when asked."""


async def stop_workers(
    running: Sequence[tuple[str, Callable[[], Awaitable[None]], asyncio.Task[None]]], bound_s: float = STOP_BOUND_S
) -> None:
    """Stop each worker (`stop()`), wait for its task, and raise if any crashed or hung.

    Args:
        running: (name, stop, the task of its `run()`) per worker.
        bound_s: how long each task may take to end after its stop.

    Raises:
        WorkerTeardownError: every worker whose task raised or did not end, with why.
    """
    problems: list[str] = []
    for name, stop, task in running:
        crashed_before_stop = task.done() and not task.cancelled() and task.exception() is not None
        try:
            await stop()
        except Exception as exc:  # the stop itself failing is a finding too; go on with the others
            problems.append(f"worker {name}: stop() raised {type(exc).__name__}: {exc}")
        try:
            async with asyncio.timeout(bound_s):
                await asyncio.shield(task)
        except TimeoutError:
            task.cancel()
            await asyncio.wait([task], timeout=5)  # let the cancellation land (a task ignoring it stays listed)
            problems.append(f"worker {name}: run() did not return within {bound_s:g} s of stop() (hung)")
        except asyncio.CancelledError:
            if not task.cancelled():
                raise  # the teardown itself is being cancelled
            problems.append(f"worker {name}: its run() task was cancelled instead of returning")
        except Exception as exc:
            when = "during the test" if crashed_before_stop else "while stopping"
            problems.append(f"worker {name}: run() raised {when}: {type(exc).__name__}: {exc}")
    if problems:
        raise WorkerTeardownError("; ".join(problems))
