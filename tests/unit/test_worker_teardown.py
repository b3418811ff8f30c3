"""The worker fixtures' teardown (`tests.support.workers`): a crashed or hung worker fails the test.

Issue 31: the teardown used to wrap the wait in ``contextlib.suppress(BaseException)``, so a worker
that crashed or hung during a test passed silently. These tests fail if that is put back.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.support.workers import WorkerTeardownError, stop_workers


async def _nothing() -> None:
    return None


async def test_a_worker_that_stops_cleanly_passes() -> None:
    task = asyncio.create_task(_nothing())
    await stop_workers([("w-ok", _nothing, task)])


async def test_a_worker_that_crashed_during_the_test_fails_it() -> None:
    async def crash() -> None:
        raise RuntimeError("partition processor bug")

    task = asyncio.create_task(crash())
    await asyncio.wait([task])  # it crashed while the test ran
    ok = asyncio.create_task(_nothing())
    with pytest.raises(WorkerTeardownError, match=r"worker w-bad: run\(\) raised during the test: RuntimeError"):
        await stop_workers([("w-ok", _nothing, ok), ("w-bad", _nothing, task)])


async def test_a_worker_that_does_not_stop_fails_the_test() -> None:
    never = asyncio.Event()
    task = asyncio.create_task(never.wait())
    with pytest.raises(WorkerTeardownError, match=r"worker w-hung: run\(\) did not return within 0.2 s"):
        await stop_workers([("w-hung", _nothing, task)], bound_s=0.2)
    assert task.cancelled() or task.done()


async def test_a_failing_stop_fails_the_test() -> None:
    async def bad_stop() -> None:
        raise OSError("producer close failed")

    task = asyncio.create_task(_nothing())
    with pytest.raises(WorkerTeardownError, match="stop\\(\\) raised OSError: producer close failed"):
        await stop_workers([("w-x", bad_stop, task)])
