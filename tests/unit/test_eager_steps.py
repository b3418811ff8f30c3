"""Eager step execution (WorkerSession.spawn_step): a coroutine run up to its first wait, then
continued by an asyncio task through `_continue`, without a broker."""

from __future__ import annotations

import asyncio
import contextvars

import pytest

from grctl.worker._session import _continue

var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")


async def _step(fut: asyncio.Future[int], log: list[str]) -> None:
    var.set("step")
    log.append("before")
    try:
        value = await fut
    except asyncio.CancelledError:
        log.append("cancelled")
        raise
    log.append(f"after {value} {var.get()}")


def _start(coro: object, context: contextvars.Context) -> object:
    try:
        return context.run(coro.send, None)  # type: ignore[attr-defined]
    except StopIteration:
        return None


async def test_a_step_continues_in_a_task_after_its_first_wait() -> None:
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[int] = loop.create_future()
    log: list[str] = []
    coro = _step(fut, log)
    context = contextvars.copy_context()
    waiting_on = _start(coro, context)
    assert waiting_on is fut and log == ["before"]
    assert var.get() == "unset"  # the step's context is its own
    task = loop.create_task(_continue(coro, waiting_on), context=context)  # type: ignore[arg-type]
    await asyncio.sleep(0)
    fut.set_result(7)
    await task
    assert log == ["before", "after 7 step"]


async def test_cancelling_the_continuation_cancels_the_step() -> None:
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[int] = loop.create_future()
    log: list[str] = []
    coro = _step(fut, log)
    context = contextvars.copy_context()
    task = loop.create_task(_continue(coro, _start(coro, context)), context=context)  # type: ignore[arg-type]
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert log == ["before", "cancelled"] and fut.cancelled()


async def test_a_step_that_never_waits_finishes_eagerly() -> None:
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[int] = loop.create_future()
    fut.set_result(3)
    log: list[str] = []
    assert _start(_step(fut, log), contextvars.copy_context()) is None
    assert log == ["before", "after 3 step"]
