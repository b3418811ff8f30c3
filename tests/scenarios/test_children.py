"""CHILD scenarios of BEHAVIOUR.md §3: child workflows, outcomes, send_to_parent (no crash here)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pydantic
import pytest

from grctl import Client, Context, Directive, Workflow, WorkflowHandle
from grctl.client import WorkflowError
from grctl.models import HistoryKind
from grctl.worker import ChildOutcome
from tests.scenarios.support import StructPayload

pytestmark = pytest.mark.kafka


class ChildResult(pydantic.BaseModel):
    value: str
    count: int = 3


# ----------------------------------------------------------------------------- children

child = Workflow(workflow_type="Child")


@child.start()
async def child_start(ctx: Context, mode: str = "ok") -> Directive:
    if mode == "boom":
        raise RuntimeError("child boom")
    if mode == "value_error":
        raise ValueError("specific child error message")
    if mode == "model":
        return ctx.next.complete(ChildResult(value="child-result"))
    if mode == "struct":
        return ctx.next.complete(StructPayload(name="struct-output", count=13, tags=["a", "b"]))
    if mode == "slow":
        return ctx.next.step(child_blocks)
    if mode == "send":
        await ctx.send_to_parent("result_ready", "child-result")
        return ctx.next.complete("sent")
    if mode == "wait":
        return ctx.next.wait()
    return ctx.next.complete("child-result")


@child.event()
async def never(ctx: Context) -> Directive:
    return ctx.next.complete("never")


@child.step(timeout=timedelta(milliseconds=100))
async def child_blocks(ctx: Context) -> Directive:
    await asyncio.sleep(60)
    return ctx.next.complete("never")


echo_child = Workflow(workflow_type="EchoChild")


@echo_child.start()
async def echo_start(ctx: Context, value: Any) -> Directive:
    return ctx.next.complete(value)


struct_child = Workflow(workflow_type="StructChild")


@struct_child.start()
async def struct_start(ctx: Context, value: StructPayload) -> Directive:
    assert isinstance(value, StructPayload)
    return ctx.next.complete("ok")


struct_sender = Workflow(workflow_type="StructSender")


@struct_sender.start()
async def struct_sender_start(ctx: Context) -> Directive:
    await ctx.send_to_parent("struct_result", StructPayload(name="sent", count=2, tags=["z"]))
    return ctx.next.complete("sent")


sender_child = Workflow(workflow_type="SenderChild")


@sender_child.start()
async def sender_start(ctx: Context, value: Any) -> Directive:
    await ctx.send_to_parent("result", value)
    return ctx.next.complete("sent")


# ----------------------------------------------------------------------------- parents

parent = Workflow(workflow_type="Parent")


@parent.start()
async def parent_start(ctx: Context, mode: str, how: str) -> Directive:
    child_id = f"{ctx.run.wf_id}-child"
    if how == "callback":
        await ctx.start_child("Child", child_id, {"mode": mode}, on_completed_step=on_done)
        return ctx.next.wait()
    if how == "future":
        handle = await ctx.start_child("Child", child_id, {"mode": mode})
        return ctx.next.complete(await handle.future)
    if how == "run_child":
        return ctx.next.complete(await ctx.run_child("Child", child_id, {"mode": mode}))
    if how == "seed_start":
        handle = await ctx.start("Child", child_id, {"mode": mode})
        if not isinstance(handle, WorkflowHandle):  # the seed: "ctx.start() ... returns a WorkflowHandle"
            return ctx.next.complete(f"not a WorkflowHandle: {type(handle).__mro__}")
        return ctx.next.complete(await handle.result())
    if how == "fixed_id":
        handle = await ctx.start_child("Child", "dup-child", {"mode": mode})
        return ctx.next.complete(await handle.future)
    if how == "event":
        await ctx.start_child("Child", child_id, {"mode": "send"})
        return ctx.next.wait()
    raise ValueError(how)


@parent.step()
async def on_done(ctx: Context, outcome: ChildOutcome) -> Directive:
    if outcome.ok:
        return ctx.next.complete(outcome.result)
    assert outcome.error is not None
    if outcome.error.type == "StepTimeout":
        return ctx.next.complete(f"parent-received-timeout-callback:{outcome.status}")
    return ctx.next.complete(outcome.error.message)


@parent.event()
async def result_ready(ctx: Context, payload: str) -> Directive:
    return ctx.next.complete(payload)


model_parent = Workflow(workflow_type="ModelParent")


@model_parent.start()
async def model_parent_start(ctx: Context) -> Directive:
    await ctx.start_child("Child", f"{ctx.run.wf_id}-child", {"mode": "model"}, on_completed_step=on_model)
    return ctx.next.wait()


@model_parent.step()
async def on_model(ctx: Context, outcome: ChildOutcome[ChildResult]) -> Directive:
    assert isinstance(outcome.result, ChildResult)
    return ctx.next.complete(outcome.result.value)


payload_parent = Workflow(workflow_type="PayloadParent")


@payload_parent.start()
async def payload_parent_start(ctx: Context, kind: str, value: Any) -> Directive:
    cid = f"{ctx.run.wf_id}-child"
    if kind == "input":
        return ctx.next.complete(await ctx.run_child("EchoChild", cid, {"value": value}))
    if kind == "struct_input":
        return ctx.next.complete(await ctx.run_child("StructChild", cid, {"value": value}))
    if kind == "struct_output":
        return ctx.next.complete(await ctx.run_child("Child", cid, {"mode": "struct"}))
    if kind == "send":
        await ctx.start_child("SenderChild", cid, {"value": value})
        return ctx.next.wait()
    if kind == "send_struct":
        await ctx.start_child("StructSender", cid)
        return ctx.next.wait()
    raise ValueError(kind)


@payload_parent.event()
async def result(ctx: Context, payload: Any) -> Directive:
    return ctx.next.complete(payload)


@payload_parent.event()
async def struct_result(ctx: Context, payload: StructPayload) -> Directive:
    assert isinstance(payload, StructPayload)
    return ctx.next.complete({"type": type(payload).__name__, "name": payload.name})


@pytest.fixture
async def running(workers) -> None:
    await workers.start(
        [child, echo_child, struct_child, sender_child, struct_sender, parent, model_parent, payload_parent]
    )


async def test_child_1_callback_receives_ok_outcome(running, client: Client) -> None:
    assert await client.run_workflow("Parent", "c1", {"mode": "ok", "how": "callback"}) == "child-result"
    started = [e for e in await client.get_history("c1") if e.kind == HistoryKind.child_started]
    assert len(started) == 1 and started[0].msg.wf_id == "c1-child"


async def test_child_2_callback_receives_failure(running, client: Client) -> None:
    result = await client.run_workflow("Parent", "c2", {"mode": "boom", "how": "callback"})
    assert "boom" in result


async def test_child_3_typed_outcome(running, client: Client) -> None:
    assert await client.run_workflow("ModelParent", "c3") == "child-result"


async def test_child_4_5_awaited_child_failure_fails_parent(running, client: Client) -> None:
    with pytest.raises(WorkflowError, match="specific child error message"):
        await client.run_workflow("Parent", "c4", {"mode": "value_error", "how": "future"})


async def test_child_6_child_step_timeout_reaches_callback(running, client: Client) -> None:
    result = await client.run_workflow("Parent", "c6", {"mode": "slow", "how": "callback"})
    assert result == "parent-received-timeout-callback:failed"


async def test_child_12_send_to_parent(running, client: Client) -> None:
    assert await client.run_workflow("Parent", "c12", {"mode": "send", "how": "event"}) == "child-result"
    child_history = await client.get_history("c12-child")
    assert [e.kind for e in child_history].count(HistoryKind.parent_event_sent) == 1


async def test_child_13_run_child(running, client: Client) -> None:
    assert await client.run_workflow("Parent", "c13", {"mode": "ok", "how": "run_child"}) == "child-result"


async def test_child_14_future_in_same_step(running, client: Client) -> None:
    assert await client.run_workflow("Parent", "c14", {"mode": "ok", "how": "future"}) == "child-result"


async def test_child_seed_ctx_start_returns_handle(running, client: Client) -> None:
    """The seed page's `ctx.start(...)` launches a child and returns a `WorkflowHandle` (one
    implementation with start_child); the step checks the type and awaits the child through it."""
    assert await client.run_workflow("Parent", "cseed", {"mode": "ok", "how": "seed_start"}) == "child-result"


@pytest.mark.parametrize("value", ["hello", 42, 3.5, True, None, {"name": "n", "count": 1, "tags": ["x"]}, ["a", 3]])
async def test_child_15_16_18_input_and_output_round_trip(running, client: Client, value: Any) -> None:
    wf_id = f"c15-{type(value).__name__}"
    result = await client.run_workflow("PayloadParent", wf_id, {"kind": "input", "value": value})
    assert result == value and type(result) is type(value)


async def test_child_17_struct_input(running, client: Client) -> None:
    value = {"name": "n", "count": 2, "tags": ["t"]}
    assert await client.run_workflow("PayloadParent", "c17", {"kind": "struct_input", "value": value}) == "ok"


async def test_child_19_struct_output_arrives_as_dict(running, client: Client) -> None:
    result = await client.run_workflow("PayloadParent", "c19", {"kind": "struct_output", "value": None})
    assert result == {"name": "struct-output", "count": 13, "tags": ["a", "b"]}


@pytest.mark.parametrize("value", ["hello", 42, 3.5, True])
async def test_child_20_send_to_parent_payload_types(running, client: Client, value: Any) -> None:
    result = await client.run_workflow("PayloadParent", f"c20-{type(value).__name__}", {"kind": "send", "value": value})
    assert result == value and type(result) is type(value)


async def test_child_21_send_to_parent_struct_payload(running, client: Client) -> None:
    result = await client.run_workflow("PayloadParent", "c21", {"kind": "send_struct", "value": None})
    assert result == {"type": "StructPayload", "name": "sent"}


async def test_send_to_parent_without_parent_raises(running, client: Client) -> None:
    with pytest.raises(WorkflowError, match="RuntimeError: No parent workflow to send event to"):
        await client.run_workflow("SenderChild", "orphan", {"value": 1})


async def test_child_with_active_duplicate_id_is_reported_to_parent(running, client: Client) -> None:
    """A child that cannot start reaches the parent as a failed outcome (the original hung forever)."""
    await client.start_workflow("Child", "dup-child", {"mode": "wait"})
    with pytest.raises(WorkflowError, match="already has an active run"):
        await client.run_workflow("Parent", "dup", {"mode": "ok", "how": "fixed_id"}, timeout=timedelta(seconds=30))
