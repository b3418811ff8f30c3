"""Background work never starves inputs (issue 24): a liveness bound, not a speed assertion.

Tens of thousands of timers and retention purges fall due while the only worker is stopped;
when it comes back every one of them is overdue at once. While they drain, a new start must be
acknowledged and a query answered within a generous bound, and every run must still end as
its code says: the waiting runs by their wait timeout, the ended runs by their purge.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from grctl import Client, Context, Directive, Workflow, WorkflowHandle
from grctl.kafka.connection import Connection
from grctl.kafka.settings_topic import NamespaceSettings, write_settings
from tests.conftest import WorkerRunner
from tests.support.wait import wait_until_async

pytestmark = pytest.mark.kafka

#: Runs whose wait timeout falls due during the outage, and ended runs whose retention ends in it.
WAITING = 10_000
ENDED = 10_000
#: How long an input may wait behind the overdue work (generous: a liveness bound).
INPUT_BOUND_S = 30.0
RETENTION_MS = 15_000

quick = Workflow(workflow_type="BgQuick")
waiter = Workflow(workflow_type="BgWaiter")


@quick.start()
async def quick_start(ctx: Context) -> Directive:
    ctx.store.put("n", 1)  # a key for the purge to delete
    return ctx.next.complete("done")


@waiter.start()
async def waiter_start(ctx: Context, fire_at_ms: int) -> Directive:
    now_ms = int((await ctx.now()).timestamp() * 1000)
    ctx.store.put("waits", True)
    return ctx.next.wait(timeout=timedelta(milliseconds=max(1, fire_at_ms - now_ms)), on_timeout=waiter_expired)


@waiter.step()
async def waiter_expired(ctx: Context) -> Directive:
    return ctx.next.complete("expired")


@waiter.query()
async def waits(ctx: Context) -> bool:
    return bool(await ctx.store.get("waits"))


async def _gather_bounded(coros: list[Coroutine[Any, Any, Any]], limit: int) -> list[Any]:
    sem = asyncio.Semaphore(limit)

    async def one(c: Coroutine[Any, Any, Any]) -> Any:
        async with sem:
            return await c

    return await asyncio.gather(*(one(c) for c in coros))


async def test_a_start_and_a_query_are_answered_while_tens_of_thousands_of_timers_and_purges_drain(
    connection: Connection, workers: WorkerRunner, client: Client, tmp_path: Path
) -> None:
    write_settings(connection, NamespaceSettings(run_retention_ms=RETENTION_MS))
    state = tmp_path / "worker"
    await workers.start([quick, waiter], state_dir=state)
    # Waiting runs whose wait times out during the outage, before the purges fall due: the purges
    # then run while the timers' transitions fill the in-memory layers (what stalled issue 24).
    fire_at_ms = int((time.time() + 25) * 1000)
    handles: list[WorkflowHandle] = await _gather_bounded(
        [client.start_workflow("BgWaiter", f"w-{i}", {"fire_at_ms": fire_at_ms}) for i in range(WAITING)], 1000
    )
    # Ended runs: their purges fall due RETENTION_MS after each ended.
    ended = await _gather_bounded([client.run_workflow("BgQuick", f"q-{i}") for i in range(ENDED)], 1000)
    assert ended == ["done"] * ENDED
    last_end = time.time()
    long_wait = await client.start_workflow("BgWaiter", "asked", {"fire_at_ms": fire_at_ms + 3_600_000})
    await workers.stop_all()
    assert time.time() * 1000 < fire_at_ms, "the runs took too long to start for this test's timing"
    # Until every timer and purge is overdue (the scenario is a moment in time, not a state to reach).
    overdue_at = max(fire_at_ms / 1000, last_end + RETENTION_MS / 1000) + 1
    while time.time() < overdue_at:
        await asyncio.sleep(overdue_at - time.time())

    await workers.start([quick, waiter], state_dir=state)
    # The bound is the assertion: an input is served while the burst drains.
    async with asyncio.timeout(INPUT_BOUND_S):
        fresh = await client.start_workflow("BgQuick", "fresh")
    async with asyncio.timeout(INPUT_BOUND_S):
        assert await long_wait.query("waits") is True
    assert await fresh.result(timeout=INPUT_BOUND_S) == "done"
    outcomes = await _gather_bounded([h.result(timeout=300) for h in handles], 2000)
    assert outcomes == ["expired"] * WAITING

    async def purged() -> bool:
        page = await client.list_workflows(workflow_type="BgQuick", limit=1, counts=True)
        return (page.counts or {}).get("completed", {}).get("BgQuick") == 1  # "fresh" alone is retained

    await wait_until_async("every ended run's state was purged", purged, 300, interval=1.0)
