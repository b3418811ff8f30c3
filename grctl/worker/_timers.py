"""The timer loop: fires the due durable timers of every owned partition as transitions.

Timers live in each partition's `t/` table (ordered by due time) and in its processor's heap.
The loop fires at most `TIMER_FIRE_LIMIT` timers per partition per round and yields between
rounds, and waits while the open batch is full, so a burst of timers never starves directive
processing (LittleHorse's lesson, DESIGN.md §11).

May import: `._commit`, `._partition` (types).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from grctl.worker._partition import now_ms

if TYPE_CHECKING:
    from grctl.worker._commit import GroupCommitter
    from grctl.worker._metrics import WorkerMetrics
    from grctl.worker._partition import PartitionProcessor

#: Timers fired per partition per round.
TIMER_FIRE_LIMIT = 500
#: Longest sleep between rounds when nothing is due (new partitions, clock changes).
IDLE_WAKE_S = 0.2


class TimerLoop:
    """Fires due timers (see the module docstring).

    Args:
        processors: the session's processors by partition (read each round).
        committer: for back-pressure.
        metrics: observes how late timers fire (None: not observed).
    """

    def __init__(
        self,
        processors: dict[int, PartitionProcessor],
        committer: GroupCommitter,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self._processors = processors
        self._metrics = metrics
        self._committer = committer
        self._wake = asyncio.Event()

    def armed(self, due_ms: int) -> None:
        """A timer was armed: wake the loop, in case it sleeps past `due_ms`."""
        self._wake.set()

    async def run(self) -> None:
        """Fire timers until cancelled."""
        while True:
            now = now_ms()
            fired = 0
            for proc in list(self._processors.values()):
                if self._committer.full:
                    break  # back-pressure, as for consumed records: let the commit catch up
                if self._metrics is not None and (due := proc.next_timer_due()) is not None and due <= now:
                    self._metrics.timer_fired_late((now - due) / 1000)
                fired += proc.fire_due_timers(now, TIMER_FIRE_LIMIT)
            if fired:
                await asyncio.sleep(0)  # let inputs in between bursts
                continue
            dues = [d for d in (p.next_timer_due() for p in self._processors.values()) if d is not None]
            delay = IDLE_WAKE_S if not dues else min(IDLE_WAKE_S, max(0.001, (min(dues) - now_ms()) / 1000))
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()
