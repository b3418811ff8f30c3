"""Waiting for an observable event, and failing clearly when it does not come.

A test never sleeps to let the system reach a state: it polls the state itself (a history
event, a store value, a status, a file a subprocess wrote, a log line) until a deadline, and
fails with what it waited for and what it saw last. The pause between polls is only a poll
interval; it is never what makes the test pass.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

#: Pause between two polls.
POLL_INTERVAL_S = 0.1


def _timed_out(what: str, timeout: float, seen: Callable[[], object] | None) -> AssertionError:
    message = f"timed out after {timeout:g} s waiting until {what}"
    if seen is not None:
        message += f"; last seen: {seen()}"
    return AssertionError(message)


def wait_until(
    what: str,
    check: Callable[[], T],
    timeout: float,
    *,
    interval: float = POLL_INTERVAL_S,
    seen: Callable[[], object] | None = None,
) -> T:
    """Call `check` until it returns a truthy value, and return that value.

    Args:
        what: the awaited condition, for the failure message ("the worker logged 'ready'").
        check: polls the condition; a truthy result ends the wait.
        timeout: seconds after which the test fails.
        interval: seconds between polls.
        seen: describes the last observed state for the failure message.

    Raises:
        AssertionError: `check` stayed falsy for `timeout` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise _timed_out(what, timeout, seen)
        time.sleep(interval)


async def wait_until_async(
    what: str,
    check: Callable[[], Awaitable[T]],
    timeout: float,
    *,
    interval: float = POLL_INTERVAL_S,
    seen: Callable[[], object] | None = None,
) -> T:
    """`wait_until` for a coroutine check, pausing without blocking the event loop."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await check()
        if value:
            return value
        if loop.time() >= deadline:
            raise _timed_out(what, timeout, seen)
        await asyncio.sleep(interval)
