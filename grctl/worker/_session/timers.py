"""The timer loop: fires the due durable timers of every owned partition as transitions.

Two kinds of work, with two rules (issue 24; LittleHorse's lesson, DESIGN.md §11: timer
firing must never starve inputs):

1. **Run timers** (wait timeouts, resumes after a back-off, workflow timeouts) are fired as
   soon as they are due, fairly with inputs: in slices of at most `TIMER_SLICE_S`, round robin
   over the partitions, `TIMER_FIRE_CHUNK` timers of one partition at a time, with a yield to
   the event loop between slices, so a record that arrives behind a burst of due timers waits
   one slice, not the burst. They also stop while the open batch holds more than
   `TIMER_BATCH_SHARE` of its bound, so the room left in it is the inputs'.
2. **Retention purges** (the expiry table) are background work: they may be late. They run
   only when no run timer is due, in slices of at most `PURGE_SLICE_S`, and take at most
   `PURGE_SHARE` of the worker's time while it has inputs to process (a token bucket of
   purge seconds); while the consumer finds no input they may take all of it. The share grows
   with the purge lag past `PURGE_LAG_SOFT_S` (up to `PURGE_SHARE_MAX`), so a worker that
   runs at full speed for weeks purges as fast as its runs end instead of falling behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from grctl.worker._partition.ports import now_ms

if TYPE_CHECKING:
    from grctl.worker._observe.metrics import WorkerMetrics
    from grctl.worker._partition.processor import PartitionProcessor
    from grctl.worker._session.commit import GroupCommitter

#: Run timers are fired in slices of at most this long (then inputs and steps get the loop).
TIMER_SLICE_S = 0.005
#: Timers of one partition fired per turn of the round robin.
TIMER_FIRE_CHUNK = 32
#: Run timers wait while the open batch holds more than this share of `MAX_BATCH_RECORDS`.
TIMER_BATCH_SHARE = 0.5
#: Purges are fired in slices of at most this long.
PURGE_SLICE_S = 0.005
#: Share of the worker's time purges may take while it has inputs to process...
PURGE_SHARE = 0.25
#: ... growing linearly with the purge lag past this many seconds...
PURGE_LAG_SOFT_S = 60.0
#: ... up to this share.
PURGE_SHARE_MAX = 0.6
#: Purge seconds the token bucket holds at most (what an idle spell saves up for a busy one).
PURGE_BURST_S = 0.05
#: Longest sleep between rounds when nothing is due (new partitions, clock changes).
IDLE_WAKE_S = 0.2


class PurgePacer:
    """The token bucket of purge time (see the module docstring).

    Args:
        clock: monotonic seconds.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._tokens = PURGE_BURST_S
        self._last = clock()

    @staticmethod
    def share(lag_s: float) -> float:
        """The share of the worker's time purges may take when the oldest due one is `lag_s` late."""
        if lag_s <= PURGE_LAG_SOFT_S:
            return PURGE_SHARE
        return min(PURGE_SHARE_MAX, PURGE_SHARE * lag_s / PURGE_LAG_SOFT_S)

    def available(self, lag_s: float) -> float:
        """Seconds of purging allowed now (refills at `share(lag_s)` of the time passed)."""
        now = self._clock()
        self._tokens = min(PURGE_BURST_S, self._tokens + (now - self._last) * self.share(lag_s))
        self._last = now
        return self._tokens

    def spend(self, seconds: float) -> None:
        """Purging took `seconds` of the worker's time."""
        self._tokens -= seconds

    def wait_s(self, lag_s: float) -> float:
        """Seconds until a purge slice is allowed again."""
        missing = min(PURGE_SLICE_S, PURGE_BURST_S) - self._tokens
        return max(0.0, missing / self.share(lag_s))


class TimerLoop:
    """Fires due timers (see the module docstring).

    Args:
        processors: the session's processors by partition (read each round).
        committer: for back-pressure.
        metrics: observes how late timers fire (None: not observed).
        inputs_idle: True while the consumer finds no input to process (purges may then take
            the whole loop; None: never).
        now: the engine's wall clock, epoch ms (`ports.now_ms`; a worker's `clock`).
    """

    def __init__(
        self,
        processors: dict[int, PartitionProcessor],
        committer: GroupCommitter,
        metrics: WorkerMetrics | None = None,
        inputs_idle: Callable[[], bool] | None = None,
        now: Callable[[], int] = now_ms,
    ) -> None:
        self._now = now
        self._processors = processors
        self._metrics = metrics
        self._committer = committer
        self._inputs_idle = inputs_idle or (lambda: False)
        self._wake = asyncio.Event()
        self._pacer = PurgePacer()
        self._turn = 0  # where the round robin starts (rotates, so no partition always goes first)

    def armed(self, due_ms: int) -> None:
        """A timer was armed: wake the loop, in case it sleeps past `due_ms`."""
        self._wake.set()

    async def run(self) -> None:
        """Fire timers until cancelled."""
        while True:
            committer = self._committer
            if committer.full:
                await committer.wait_for_room()  # back-pressure, as for consumed records
                continue
            now = self._now()
            procs = list(self._processors.values())
            if procs:
                self._turn = (self._turn + 1) % len(procs)
                procs = procs[self._turn :] + procs[: self._turn]
            for proc in procs:
                proc.load_timers(now)
            # 1. Run timers, fairly with inputs.
            if committer.pending_records <= committer.max_records * TIMER_BATCH_SHARE:
                if self._metrics is not None:
                    for proc in procs:
                        if (due := proc.next_timer_due()) is not None and due <= now:
                            self._metrics.timer_fired_late((now - due) / 1000)
                if self._round(procs, now, TIMER_SLICE_S, expiries=False):
                    await asyncio.sleep(0)  # inputs and steps between slices
                    continue
            elif self._timers_due(procs, now):
                await committer.wait_for_room()  # the open batch's room is the inputs' now: wait for a commit
                continue
            # 2. No run timer due: purges, paced.
            lag_s = self._purge_lag_s(procs, now)
            if lag_s is not None:
                if self._inputs_idle():
                    if self._round(procs, now, PURGE_SLICE_S, expiries=True):
                        await asyncio.sleep(0)
                        continue
                elif (budget := self._pacer.available(lag_s)) > 0:
                    t0 = time.monotonic()
                    fired = self._round(procs, now, min(budget, PURGE_SLICE_S), expiries=True)
                    self._pacer.spend(time.monotonic() - t0)
                    if fired:
                        await asyncio.sleep(0)
                        continue
            await self._sleep(procs, lag_s)

    def _round(self, procs: list[PartitionProcessor], now: int, slice_s: float, *, expiries: bool) -> int:
        """Fire due timers round robin, `TIMER_FIRE_CHUNK` per partition at a time, for at most `slice_s`."""
        deadline = time.monotonic() + slice_s
        fired = 0
        while True:
            fired_now = 0
            for proc in procs:
                if self._committer.full:
                    return fired + fired_now
                if expiries:
                    fired_now += proc.fire_due_expiries(now, TIMER_FIRE_CHUNK)
                else:
                    fired_now += proc.fire_due_timers(now, TIMER_FIRE_CHUNK)
                if time.monotonic() >= deadline:
                    return fired + fired_now
            fired += fired_now
            if not fired_now:
                return fired

    @staticmethod
    def _timers_due(procs: list[PartitionProcessor], now: int) -> bool:
        return any((d := p.next_timer_due()) is not None and d <= now for p in procs)

    @staticmethod
    def _purge_lag_s(procs: list[PartitionProcessor], now: int) -> float | None:
        """How late the oldest due purge is, in seconds (None: none is due)."""
        dues = [d for d in (p.next_expiry_due() for p in procs) if d is not None and d <= now]
        return (now - min(dues)) / 1000 if dues else None

    async def _sleep(self, procs: list[PartitionProcessor], purge_lag_s: float | None) -> None:
        """Wait until the next run timer is due, purges may run again, or a timer is armed."""
        dues = [d for d in (p.next_timer_due() for p in procs) if d is not None]
        now = self._now()
        dues += [d for d in (p.next_expiry_due() for p in procs) if d is not None and d > now]
        delay = IDLE_WAKE_S if not dues else min(IDLE_WAKE_S, max(0.001, (min(dues) - now) / 1000))
        if purge_lag_s is not None:  # purges are due but paced: wake when the bucket allows a slice
            delay = min(delay, max(0.001, self._pacer.wait_s(purge_lag_s)))
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._wake.wait()
