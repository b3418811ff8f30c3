"""The comparison set: workflows run both in process (`grctl_env`) and on a broker (`grctl_kafka_env`).

Each scenario drives one feature through the client (events, timers, tasks with retries,
children, queries, cancel) with durations short enough for a real broker; the in-process
environment skips them. `normalized` keeps what must agree between the two: each event's
kind and payload, without timestamps, durations, ids and the random part of a retry delay.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import msgspec

from grctl import Context, Directive, RetryPolicy, Workflow, task
from grctl.models.history import HistoryEvent
from tests.support.wait import wait_until_async

# ------------------------------------------------------------------ events and timers

approval = Workflow(workflow_type="CmpApproval")


@approval.start()
async def approval_start(ctx: Context, amount: int, timeout_s: float) -> Directive:
    ctx.store.put("amount", amount)
    return ctx.next.wait(timeout=timedelta(seconds=timeout_s), on_timeout=approval_expired)


@approval.event()
async def approve(ctx: Context, by: str) -> Directive:
    ctx.store.put("by", by)
    return ctx.next.step(approval_pause)


@approval.step()
async def approval_pause(ctx: Context) -> Directive:
    await ctx.sleep(timedelta(milliseconds=300))
    return ctx.next.complete({"approved_by": await ctx.store.get("by")})


@approval.step()
async def approval_expired(ctx: Context) -> Directive:
    return ctx.next.complete({"approved_by": None})


@approval.query()
async def amount(ctx: Any) -> int:
    return int(await ctx.store.get("amount"))


# ------------------------------------------------------------------ tasks with retries

#: Calls of `flaky` per key (reset before each scenario run).
CALLS: dict[str, int] = {}


@task(retry_policy=RetryPolicy(max_attempts=3, initial_delay_ms=50, backoff_multiplier=1.0))
async def flaky(key: str) -> str:
    CALLS[key] = CALLS.get(key, 0) + 1
    if CALLS[key] < 3:
        raise ConnectionError(f"attempt {CALLS[key]} of {key} refused")
    return f"{key} done"


@task(retry_policy=RetryPolicy(max_attempts=2, initial_delay_ms=2_000, backoff_multiplier=1.0))
async def slow_retry(key: str) -> str:
    CALLS[key] = CALLS.get(key, 0) + 1
    if CALLS[key] < 2:
        raise TimeoutError(f"{key} timed out")
    return f"{key} done"


@task(retry_policy=RetryPolicy(max_attempts=2, initial_delay_ms=50))
async def broken(key: str) -> str:
    raise ValueError(f"{key} is broken")


retries = Workflow(workflow_type="CmpRetries")


@retries.start()
async def retries_start(ctx: Context, key: str) -> Directive:
    first = await flaky(f"{key}-short")
    second = await slow_retry(f"{key}-durable")  # a back-off of 2 s: a durable resume timer
    return ctx.next.complete([first, second])


failing = Workflow(workflow_type="CmpFailing")


@failing.start()
async def failing_start(ctx: Context, key: str) -> Directive:
    await broken(key)
    return ctx.next.complete("unreachable")


# ------------------------------------------------------------------ children

child = Workflow(workflow_type="CmpChild")


@child.start()
async def child_start(ctx: Context, n: int) -> Directive:
    return ctx.next.complete(n * 10)


parent = Workflow(workflow_type="CmpParent")


@parent.start()
async def parent_start(ctx: Context, n: int) -> Directive:
    total = 0
    for i in range(n):
        total += await ctx.run_child("CmpChild", f"{ctx.run.wf_id}-child-{i}", {"n": i + 1})
    return ctx.next.complete(total)


# ------------------------------------------------------------------ cancel

forever = Workflow(workflow_type="CmpForever")


@forever.start()
async def forever_start(ctx: Context) -> Directive:
    ctx.store.put("state", "waiting")
    return ctx.next.wait()


@forever.event()
async def poke(ctx: Context) -> Directive:
    return ctx.next.wait()


WORKFLOWS = [approval, retries, failing, child, parent, forever]

# ------------------------------------------------------------------ scenarios

Scenario = Callable[[Any, str], Awaitable[dict[str, Any]]]


async def waiting(handle: Any) -> None:
    """Until the run waits for an event: what the scenario sends next then meets the same run state."""

    async def check() -> bool:
        return bool((await handle.describe()).waiting_for_event)

    await wait_until_async(f"run {handle.run_info.wf_id} waits for an event", check, timeout=30.0, interval=0.05)


async def approved(env: Any, wf_id: str) -> dict[str, Any]:
    handle = await env.client.start_workflow("CmpApproval", wf_id, {"amount": 12, "timeout_s": 30})
    await waiting(handle)
    asked = await handle.query("amount")
    await handle.send("approve", {"by": "alice"})
    return {"result": await handle.result(), "query": asked, "ids": [wf_id]}


async def expired(env: Any, wf_id: str) -> dict[str, Any]:
    handle = await env.client.start_workflow("CmpApproval", wf_id, {"amount": 99, "timeout_s": 1})
    return {"result": await handle.result(), "ids": [wf_id]}


async def retried(env: Any, wf_id: str) -> dict[str, Any]:
    handle = await env.client.start_workflow("CmpRetries", wf_id, {"key": wf_id})
    return {"result": await handle.result(), "ids": [wf_id]}


async def task_fails(env: Any, wf_id: str) -> dict[str, Any]:
    handle = await env.client.start_workflow("CmpFailing", wf_id, {"key": wf_id})
    try:
        await handle.result()
    except Exception as exc:  # the run's failure is what is compared
        return {"error": type(exc).__name__, "ids": [wf_id]}
    return {"error": None, "ids": [wf_id]}


async def children(env: Any, wf_id: str) -> dict[str, Any]:
    handle = await env.client.start_workflow("CmpParent", wf_id, {"n": 2})
    return {"result": await handle.result(), "ids": [wf_id, f"{wf_id}-child-0", f"{wf_id}-child-1"]}


async def cancelled(env: Any, wf_id: str) -> dict[str, Any]:
    handle = await env.client.start_workflow("CmpForever", wf_id)
    await waiting(handle)
    await handle.send("poke")
    await waiting(handle)
    await handle.cancel("test is over")
    try:
        await handle.result()
    except BaseException as exc:  # CancelledError: the run was cancelled
        return {"error": type(exc).__name__, "status": str((await handle.describe()).status), "ids": [wf_id]}
    return {"error": None, "ids": [wf_id]}


SCENARIOS: dict[str, Scenario] = {
    "approved": approved,
    "expired": expired,
    "retried": retried,
    "task_fails": task_fails,
    "children": children,
    "cancelled": cancelled,
}

#: Payload fields that differ between two runs of the same code: times, durations, ids, a
#: stack traces (their file paths), the worker.
VOLATILE = frozenset(
    {"duration_ms", "until_ms", "ended_ms", "retry_at_ms", "run_id", "parent_run_id",
     "child_run_id", "stack_trace", "worker_id", "value"}
)  # fmt: skip


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in sorted(value.items()) if k not in VOLATILE}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def normalized(events: list[HistoryEvent]) -> list[tuple[str, Any]]:
    """(kind, payload) of each event, timestamps, durations and ids aside."""
    return [(str(e.kind), _strip(msgspec.to_builtins(e.msg))) for e in events]
