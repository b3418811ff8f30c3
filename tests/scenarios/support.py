"""Helpers shared by the acceptance-scenario tests (BEHAVIOUR.md section 3).

History is read through the public `Client.get_history`, always with the handle's run id so a
poll never depends on `describe`. Polls are bounded (`HISTORY_WAIT_S`) and fail with the kinds
seen last, so a hung run shows where it stopped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import msgspec
import pydantic

from grctl import Client, WorkflowHandle
from grctl.models import HistoryEvent, HistoryKind


class StructPayload(msgspec.Struct):
    """The msgspec Struct the scenarios send and expect back (BEHAVIOUR.md EXEC-27, EVT-9, CHILD-17)."""

    name: str
    count: int
    tags: list[str]


class ModelPayload(pydantic.BaseModel):
    """The pydantic model the scenarios send and expect back (EXEC-28, EVT-10)."""

    name: str
    count: int
    tags: list[str]


#: Upper bound of every history poll: far above the engine's latency (tens of ms), far below
#: the pytest timeout.
HISTORY_WAIT_S = 15.0
POLL_INTERVAL_S = 0.1
#: "Unless noted, workflows are started with timeout=30s and input={}" (BEHAVIOUR.md §3).
DEFAULT_WF_TIMEOUT = timedelta(seconds=30)

STEP_KINDS = frozenset(
    {
        HistoryKind.step_started,
        HistoryKind.step_completed,
        HistoryKind.step_failed,
        HistoryKind.step_timeout,
        HistoryKind.step_cancelled,
    }
)

History = list[HistoryEvent]
Predicate = Callable[[History], bool]


def kinds(events: Sequence[HistoryEvent]) -> list[str]:
    """Every event's kind, in order."""
    return [str(e.kind) for e in events]


def step_kinds(events: Sequence[HistoryEvent]) -> list[str]:
    """The `step.*` kinds, in order."""
    return [str(e.kind) for e in events if e.kind in STEP_KINDS]


def step_events(events: Sequence[HistoryEvent]) -> list[HistoryEvent]:
    """The `step.*` events, in order."""
    return [e for e in events if e.kind in STEP_KINDS]


def run_kinds(events: Sequence[HistoryEvent]) -> list[str]:
    """The `run.*` kinds, in order."""
    return [str(e.kind) for e in events if str(e.kind).startswith("run.")]


def of_kind(events: Sequence[HistoryEvent], kind: HistoryKind) -> list[HistoryEvent]:
    """The events of one kind, in order."""
    return [e for e in events if e.kind == kind]


def index_of(events: Sequence[HistoryEvent], kind: HistoryKind, start: int = 0) -> int:
    """Position of the first event of `kind` at or after `start` (-1 if none)."""
    for i in range(start, len(events)):
        if events[i].kind == kind:
            return i
    return -1


def has_kind(kind: HistoryKind) -> Predicate:
    """Predicate: the history contains an event of `kind`."""
    return lambda events: any(e.kind == kind for e in events)


def count_of(kind: HistoryKind, n: int) -> Predicate:
    """Predicate: the history contains at least `n` events of `kind`."""
    return lambda events: len(of_kind(events, kind)) >= n


def steps_begin_with(expected: Sequence[str]) -> Predicate:
    """Predicate: the step kinds start with `expected` (e.g. [started, completed, started])."""
    want = [str(k) for k in expected]
    return lambda events: step_kinds(events)[: len(want)] == want


async def start(
    client: Client,
    wf_type: str,
    wf_id: str,
    input: Any = None,  # the API's parameter name
    *,
    timeout: timedelta | None = DEFAULT_WF_TIMEOUT,
    return_type: type | None = None,
) -> WorkflowHandle:
    """Start a run the way the scenarios do: `input={}` and a 30 s workflow timeout by default."""
    return await client.start_workflow(
        wf_type, wf_id, {} if input is None else input, timeout=timeout, return_type=return_type
    )


async def history(client: Client, handle: WorkflowHandle) -> History:
    """The history of the handle's run (read by run id: no describe involved)."""
    return await client.get_history(handle.run_info.wf_id, run_id=handle.run_info.id)


async def wait_for_history(
    client: Client, handle: WorkflowHandle, predicate: Predicate, timeout: float = HISTORY_WAIT_S
) -> History:
    """Poll the run's history until `predicate` holds; return that history.

    Raises:
        AssertionError: the predicate did not hold within `timeout` seconds.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        events = await history(client, handle)
        if predicate(events):
            return events
        if loop.time() >= deadline:
            raise AssertionError(
                f"history of run {handle.run_info.id} (wf_id {handle.run_info.wf_id!r}) did not reach the "
                f"expected state within {timeout}s; kinds seen: {kinds(events)}"
            )
        await asyncio.sleep(POLL_INTERVAL_S)


async def wait_for_kind(client: Client, handle: WorkflowHandle, kind: HistoryKind) -> History:
    """Poll until the run's history contains `kind`."""
    return await wait_for_history(client, handle, has_kind(kind))


async def partition_settled(client: Client, handle: WorkflowHandle, wf_type: str, input: Any = None) -> History:
    """The ended run's history once everything its worker staged until now is committed.

    For checks that nothing follows an event (a cancelled step reporting late). Instead of
    waiting a while and hoping, this starts a new run of the same workflow id, so on the same
    partition: a partition's directives are applied in order and its transactions commit in
    order, so once the new run's start is acknowledged (a reply committed with it), every
    event staged for the ended run before that start was applied is in history.

    Args:
        client: the test's client.
        handle: the ended run.
        wf_type: a quick workflow type the test's worker serves, for the new run.
        input: the new run's input.
    """
    await start(client, wf_type, handle.run_info.wf_id, input)
    return await history(client, handle)
