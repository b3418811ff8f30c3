"""TASK scenarios of BEHAVIOUR.md §3: `@task`, retries, recorded outcomes (no crash here)."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pydantic
import pytest

from grctl import Client, Context, Directive, RetryPolicy, Workflow
from grctl.client import WorkflowError
from grctl.models import HistoryKind
from grctl.worker import task

pytestmark = pytest.mark.kafka

calls: dict[str, int] = {}


def count(name: str) -> int:
    calls[name] = calls.get(name, 0) + 1
    return calls[name]


@pytest.fixture(autouse=True)
def _reset_calls() -> None:
    calls.clear()


class StructPayload(msgspec.Struct):
    name: str
    count: int


class ModelPayload(pydantic.BaseModel):
    name: str
    count: int


@task
async def explode() -> None:
    count("explode")
    raise ValueError("task exploded: code=123")


@task(retry_policy=RetryPolicy(max_attempts=3, initial_delay_ms=1, backoff_multiplier=1.0))
async def always_fails() -> None:
    n = count("always_fails")
    raise RuntimeError(f"retry exhausted attempt {n}")


@task(retry_policy=RetryPolicy(max_attempts=3, initial_delay_ms=1, non_retryable_errors=["ValueError"]))
async def not_retryable() -> None:
    count("not_retryable")
    raise ValueError("fail immediately")


@task(retry_policy=RetryPolicy(max_attempts=3, initial_delay_ms=1))
async def cancels() -> None:
    count("cancels")
    raise asyncio.CancelledError()


@task(retry_policy=RetryPolicy(max_attempts=3, initial_delay_ms=1, backoff_multiplier=1.0))
async def flaky() -> str:
    if count("flaky") < 3:
        raise RuntimeError("not yet")
    return "ok"


@task(retry_policy=RetryPolicy(max_attempts=3, initial_delay_ms=1, retryable_errors=["TimeoutError"]))
async def times_out_twice() -> str:
    if count("times_out_twice") < 3:
        raise TimeoutError("slow")
    return "ok"


@task(retry_policy=RetryPolicy(max_attempts=3, initial_delay_ms=1, retryable_errors=["TimeoutError"]))
async def wrong_error() -> str:
    count("wrong_error")
    raise ValueError("wrong error type")


@task(retry_policy=RetryPolicy(max_attempts=3, initial_delay_ms=2000, backoff_multiplier=1.0))
async def slow_flaky() -> str:
    if count("slow_flaky") < 3:
        raise RuntimeError("not yet")
    return "ok"


@task
async def inspect_payload(value: Any) -> Any:
    return value


@task
async def echo_struct(value: StructPayload) -> StructPayload:
    assert isinstance(value, StructPayload)
    return value


@task
async def echo_model(value: ModelPayload) -> ModelPayload:
    assert isinstance(value, ModelPayload)
    return value


TASKS = {
    "explode": explode,
    "always_fails": always_fails,
    "not_retryable": not_retryable,
    "flaky": flaky,
    "times_out_twice": times_out_twice,
    "wrong_error": wrong_error,
    "slow_flaky": slow_flaky,
}

wf = Workflow(workflow_type="Tasks")


@wf.start()
async def start(ctx: Context, which: str) -> Directive:
    return ctx.next.complete(await TASKS[which]())


@wf.event()
async def unused(ctx: Context) -> Directive:
    return ctx.next.complete(None)


cancel_wf = Workflow(workflow_type="TaskCancel")


@cancel_wf.start()
async def cancel_start(ctx: Context) -> Directive:
    try:
        await cancels()
    except asyncio.CancelledError:
        return ctx.next.complete("cancelled")
    return ctx.next.complete("not cancelled")


payload_wf = Workflow(workflow_type="TaskPayload")


@payload_wf.start()
async def payload_start(ctx: Context, kind: str, value: Any) -> Directive:
    if kind == "struct":
        out = await echo_struct(msgspec.convert(value, StructPayload))
        assert isinstance(out, StructPayload)
        return ctx.next.complete(out)
    if kind == "model":
        out2 = await echo_model(ModelPayload.model_validate(value))
        assert isinstance(out2, ModelPayload)
        return ctx.next.complete(out2)
    result = await inspect_payload(value)
    assert type(result) is type(value)
    return ctx.next.complete(result)


async def task_kinds(client: Client, wf_id: str) -> list[tuple[str, Any]]:
    out = []
    for e in await client.get_history(wf_id):
        if e.kind.value.startswith("task."):
            out.append((e.kind.value, getattr(e.msg, "attempt", None)))
    return out


@pytest.fixture
async def running(workers) -> None:
    await workers.start([wf, cancel_wf, payload_wf])


async def test_task_1_2_3_failure_without_policy(running, client: Client) -> None:
    with pytest.raises(WorkflowError, match=r"ValueError: task exploded: code=123"):
        await client.run_workflow("Tasks", "t1", {"which": "explode"})
    assert calls["explode"] == 1


async def test_task_4_9_17_retries_exhausted(running, client: Client) -> None:
    with pytest.raises(WorkflowError, match="RuntimeError: retry exhausted attempt 3"):
        await client.run_workflow("Tasks", "t4", {"which": "always_fails"})
    assert calls["always_fails"] == 3
    assert await task_kinds(client, "t4") == [
        ("task.started", None),
        ("task.attempt_failed", 1),
        ("task.attempt_failed", 2),
        ("task.failed", None),
    ]


async def test_task_5_19_non_retryable(running, client: Client) -> None:
    with pytest.raises(WorkflowError, match="ValueError: fail immediately"):
        await client.run_workflow("Tasks", "t5", {"which": "not_retryable"})
    assert calls["not_retryable"] == 1
    assert [k for k, _ in await task_kinds(client, "t5")] == ["task.started", "task.failed"]


async def test_task_6_21_cancelled_error_is_never_retried(running, client: Client) -> None:
    assert await client.run_workflow("TaskCancel", "t6") == "cancelled"
    assert calls["cancels"] == 1
    assert [k for k, _ in await task_kinds(client, "t6")] == ["task.started", "task.cancelled"]


async def test_task_7_8_16_flaky_task_succeeds(running, client: Client) -> None:
    assert await client.run_workflow("Tasks", "t8", {"which": "flaky"}) == "ok"
    assert calls["flaky"] == 3
    assert await task_kinds(client, "t8") == [
        ("task.started", None),
        ("task.attempt_failed", 1),
        ("task.attempt_failed", 2),
        ("task.completed", None),
    ]


async def test_task_20_retryable_errors_filter(running, client: Client) -> None:
    assert await client.run_workflow("Tasks", "t20a", {"which": "times_out_twice"}) == "ok"
    assert calls["times_out_twice"] == 3
    with pytest.raises(WorkflowError, match="ValueError: wrong error type"):
        await client.run_workflow("Tasks", "t20b", {"which": "wrong_error"})
    assert calls["wrong_error"] == 1


@pytest.mark.parametrize("value", ["hello", 42, 3.5, True, None, {"a": [1, 2]}, ["x", 3, {"e": True}]])
async def test_task_22_23_26_27_30_payload_round_trip(running, client: Client, value: Any) -> None:
    result = await client.run_workflow("TaskPayload", f"t22-{type(value).__name__}", {"kind": "any", "value": value})
    assert result == value and type(result) is type(value)
    started = [e for e in await client.get_history(f"t22-{type(value).__name__}") if e.kind == HistoryKind.task_started]
    assert started[0].msg.args == {"value": value}


async def test_task_24_25_28_29_struct_and_model(running, client: Client) -> None:
    d = {"name": "n", "count": 3}
    assert await client.run_workflow("TaskPayload", "t25", {"kind": "struct", "value": d}) == d
    assert await client.run_workflow("TaskPayload", "t24", {"kind": "model", "value": d}) == d
    started = [e for e in await client.get_history("t24") if e.kind == HistoryKind.task_started]
    assert started[0].msg.args == {"value": d}


async def test_task_called_outside_a_step_is_a_clear_error() -> None:
    with pytest.raises(LookupError, match="inside a step"):
        await inspect_payload(1)


async def test_long_retry_backoff_suspends_the_step_on_a_durable_timer(running, client: Client) -> None:
    """Back-offs of 2 s or more end the step execution; a durable timer re-executes it, and the
    journal carries the attempt count across (issue 5)."""
    assert await client.run_workflow("Tasks", "t-slow", {"which": "slow_flaky"}) == "ok"
    assert calls["slow_flaky"] == 3
    history = await client.get_history("t-slow")
    kinds = [e.kind.value for e in history]
    assert kinds.count("step.started") == 3  # the first execution and two resumptions
    assert kinds.count("task.started") == 1
    assert kinds.count("task.attempt_failed") == 2
    assert kinds.count("step.completed") == 1
