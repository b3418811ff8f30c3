"""The time-skipping clock of the in-process test environment (`grctl.testing.WorkflowEnvironment`).

It implements `grctl.workflow.runtime.Clock`: steps read its `time()` (journaled `ctx.now()`,
sleep deadlines, task back-offs), step deadlines are scheduled with `call_at`, and `sleep`
waits until the environment moves the clock past the sleeper's deadline. Nothing here moves
time by itself: the environment calls `advance` when nothing else can happen.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable

__all__ = ["VirtualClock"]


class _Call:
    """A callback scheduled on the virtual clock; `cancel()` disarms it."""

    __slots__ = ("callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[[], object]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class VirtualClock:
    """Wall-clock seconds that move only when told to.

    Args:
        start: the clock's first reading (seconds since the epoch).
        on_change: called when something is scheduled (the environment re-checks whether it may skip).
    """

    def __init__(self, start: float, on_change: Callable[[], None] = lambda: None) -> None:
        self._now = start
        self._on_change = on_change
        self._calls: list[tuple[float, int, _Call]] = []
        self._order = itertools.count()
        #: Futures of `sleep` calls in progress; a done one no longer blocks anything.
        self._sleeping: set[asyncio.Future[None]] = set()

    # Clock (grctl.workflow.runtime)

    def time(self) -> float:
        """The current virtual wall-clock time."""
        return self._now

    def monotonic(self) -> float:
        """The same reading (the scale of `call_at`)."""
        return self._now

    def call_at(self, when: float, callback: Callable[[], object]) -> _Call:
        """Call `callback` once the clock reaches `when`."""
        call = _Call(when, callback)
        heapq.heappush(self._calls, (when, next(self._order), call))
        self._on_change()
        return call

    async def sleep(self, seconds: float) -> None:
        """Wait until the clock has moved `seconds` on."""
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def wake() -> None:
            if not fut.done():
                fut.set_result(None)

        call = self.call_at(self._now + seconds, wake)
        self._sleeping.add(fut)
        try:
            await fut
        finally:
            call.cancel()
            self._sleeping.discard(fut)

    # What the environment asks

    @property
    def sleepers(self) -> int:
        """Tasks waiting in `sleep` that the clock has not woken yet."""
        return sum(1 for fut in self._sleeping if not fut.done())

    def next_due(self) -> float | None:
        """When the earliest scheduled callback falls due (None: nothing scheduled)."""
        calls = self._calls
        while calls and calls[0][2].cancelled:
            heapq.heappop(calls)
        return calls[0][0] if calls else None

    def advance(self, to: float) -> int:
        """Move the clock to `to` (never back), calling what falls due on the way, in order; returns how many."""
        fired = 0
        calls = self._calls
        while calls and calls[0][0] <= to:
            when, _, call = heapq.heappop(calls)
            if call.cancelled:
                continue
            self._now = max(self._now, when)
            call.callback()
            fired += 1
        self._now = max(self._now, to)
        return fired
