"""The event loop a worker process runs on: asyncio's own, or uvloop (GRCTL_EVENT_LOOP).

`grctl worker` (and each child of `grctl worker --processes N`) runs its worker with `run`,
which makes the loop `GRCTL_EVENT_LOOP` names (`grctl.settings.event_loop`): unset or
"asyncio" is asyncio's own loop; "uvloop" needs the extra (``pip install 'grctl[uvloop]'``) and
fails at once, with `EventLoopNotInstalledError`, when it is missing. A program that starts its
`Worker` under its own `asyncio.run` chooses the loop itself (`run(main())` here does it from
the variable); `Worker.run` then only checks that a requested uvloop is installed
(`check_requested`), so a deployment that asks for it does not run without it unnoticed.

What each loop gave on the benchmarks (worker CPU per step, steps/s, latency):
benchmarks/README.md, "Event loops and Python versions".

May import (of grctl): errors, settings.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from grctl import settings
from grctl.errors import EventLoopNotInstalledError

__all__ = ["check_requested", "loop_factory", "run", "running_loop_name"]

T = TypeVar("T")


def loop_factory(name: str | None = None) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """What makes the loop `name` (default: GRCTL_EVENT_LOOP); None for asyncio's own.

    Raises:
        InvalidArgumentError: GRCTL_EVENT_LOOP names no known loop.
        EventLoopNotInstalledError: the loop's package is not installed.
    """
    name = name or settings.event_loop()
    if name == "asyncio":
        return None
    try:
        module = importlib.import_module(name)
    except ImportError:
        raise EventLoopNotInstalledError(name) from None
    factory: Callable[[], asyncio.AbstractEventLoop] = module.new_event_loop
    return factory


def run(main: Coroutine[Any, Any, T], *, loop: str | None = None) -> T:
    """`asyncio.run(main)` on the loop `loop` names (default: GRCTL_EVENT_LOOP).

    Raises:
        InvalidArgumentError: GRCTL_EVENT_LOOP names no known loop.
        EventLoopNotInstalledError: the loop's package is not installed.
    """
    try:
        factory = loop_factory(loop)
    except BaseException:
        main.close()  # never awaited: no "coroutine was never awaited" warning on top of the error
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def running_loop_name() -> str:
    """The loop this coroutine runs on: "uvloop" or "asyncio" (`Worker.run` compares it with the setting)."""
    return "uvloop" if type(asyncio.get_running_loop()).__module__.startswith("uvloop") else "asyncio"


def check_requested() -> None:
    """Raise if GRCTL_EVENT_LOOP asks for a loop that is not installed (`Worker.run` calls it).

    Raises:
        InvalidArgumentError: GRCTL_EVENT_LOOP names no known loop.
        EventLoopNotInstalledError: the loop's package is not installed.
    """
    loop_factory()
