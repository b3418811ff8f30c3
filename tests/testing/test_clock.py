"""The virtual clock: time moves only when told, callbacks fire in order, sleepers wake at their deadline."""

from __future__ import annotations

import asyncio

from grctl.testing import VirtualClock


def test_advance_calls_what_falls_due_in_order_and_never_goes_back() -> None:
    clock = VirtualClock(1_000.0)
    seen: list[tuple[str, float]] = []
    clock.call_at(1_010.0, lambda: seen.append(("b", clock.time())))
    clock.call_at(1_005.0, lambda: seen.append(("a", clock.time())))
    cancelled = clock.call_at(1_007.0, lambda: seen.append(("never", clock.time())))
    cancelled.cancel()
    assert clock.next_due() == 1_005.0
    assert clock.advance(1_008.0) == 1
    assert seen == [("a", 1_005.0)] and clock.time() == 1_008.0
    assert clock.advance(1_000.0) == 0 and clock.time() == 1_008.0  # never back
    assert clock.advance(1_020.0) == 1
    assert seen[-1] == ("b", 1_010.0) and clock.next_due() is None


async def test_a_sleeper_wakes_when_the_clock_reaches_its_deadline() -> None:
    clock = VirtualClock(0.0)
    sleeping = asyncio.create_task(clock.sleep(3600))
    await asyncio.sleep(0)
    assert clock.sleepers == 1 and clock.next_due() == 3600
    clock.advance(3599)
    await asyncio.sleep(0)
    assert not sleeping.done()
    clock.advance(3600)
    assert clock.sleepers == 0  # no longer blocked, even before the task runs again
    await sleeping
    assert clock.time() == 3600
