"""Execution scenarios EXEC-1..38 of BEHAVIOUR.md §3, and run operations users rely on."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from ulid import ULID

from grctl import Client, Context, Directive, Workflow, WorkflowHandle
from grctl.client import (
    WorkflowAlreadyRunningError,
    WorkflowError,
    WorkflowNotFoundError,
)
from grctl.errors import WorkflowTypeNotRegisteredError
from grctl.models import HistoryKind, RunCancelled, RunInfo, RunStatus, StepTimeout
from grctl.worker.task import task
from tests.scenarios.support import (
    ModelPayload,
    StructPayload,
    history,
    index_of,
    kinds,
    of_kind,
    partition_settled,
    run_kinds,
    start,
    step_events,
    step_kinds,
    steps_begin_with,
    wait_for_history,
    wait_for_kind,
)

pytestmark = pytest.mark.kafka

STARTED, COMPLETED, TIMEOUT = "step.started", "step.completed", "step.timeout"


# --------------------------------------------------------------------------------------------
# Shared workflows of BEHAVIOUR.md §3.

# "completing wf": start -> complete("ok").
completing_wf = Workflow(workflow_type="ExecCompleting")


@completing_wf.start()
async def completing_start(ctx: Context) -> Directive:
    return ctx.next.complete("ok")


# A completing wf whose result is its input.
echo_result_wf = Workflow(workflow_type="ExecEchoResult")


@echo_result_wf.start()
async def echo_result_start(ctx: Context, result: str) -> Directive:
    return ctx.next.complete(result)


# "failing wf": start raises ValueError(msg).
failing_wf = Workflow(workflow_type="ExecFailing")


@failing_wf.start()
async def failing_start(ctx: Context) -> Directive:
    raise ValueError("workflow exploded")


# "waiting wf": start -> wait(); event finish(result: str = "done") -> complete(result).
waiting_wf = Workflow(workflow_type="ExecWaiting")


@waiting_wf.start()
async def waiting_start(ctx: Context) -> Directive:
    return ctx.next.wait()


@waiting_wf.event()
async def finish(ctx: Context, result: str = "done") -> Directive:
    return ctx.next.complete(result)


# "slow-step wf": start -> slow_step (timeout 30 s) -> complete. The original's step sleeps 2 s
# and the test cancels within them; here the step runs until the test has cancelled (at most
# SLOW_STEP_MAX_S), so a slow history poll cannot let it finish first. The worker runs in the
# test's event loop, so an asyncio.Event the test creates can release it.
SLOW_STEP_MAX_S = 10.0
_slow_step_release: dict[str, asyncio.Event] = {}
slow_step_wf = Workflow(workflow_type="ExecSlowStep")


@slow_step_wf.start()
async def slow_step_start(ctx: Context) -> Directive:
    return ctx.next.step(slow_step)


@slow_step_wf.step(timeout=timedelta(seconds=30))
async def slow_step(ctx: Context) -> Directive:
    await asyncio.wait_for(_slow_step_release[ctx.run.wf_id].wait(), SLOW_STEP_MAX_S)
    return ctx.next.complete("slow-done")


# "blocking-step wf" with the step timeout overridden to 30 s (EXEC-36..38).
blocking_step_wf = Workflow(workflow_type="ExecBlockingStep")


@blocking_step_wf.start()
async def blocking_step_start(ctx: Context) -> Directive:
    return ctx.next.step(blocking_step)


@blocking_step_wf.step(timeout=timedelta(seconds=30))
async def blocking_step(ctx: Context) -> Directive:
    await asyncio.sleep(60)
    return ctx.next.complete("not reached")


# "blocking-start wf": start(timeout=0.5 s) sleeps 60 s.
blocking_start_wf = Workflow(workflow_type="ExecBlockingStart")


@blocking_start_wf.start(timeout=timedelta(milliseconds=500))
async def blocking_start_start(ctx: Context) -> Directive:
    await asyncio.sleep(60)
    return ctx.next.complete("not reached")


# EXEC-25/26: any input reaches `value: Any` with its type.
any_input_wf = Workflow(workflow_type="ExecAnyInput")


@any_input_wf.start()
async def any_input_start(ctx: Context, value: Any) -> Directive:
    return ctx.next.complete({"value": value, "type": type(value).__name__})


# EXEC-27/28: typed inputs.
struct_input_wf = Workflow(workflow_type="ExecStructInput")


@struct_input_wf.start()
async def struct_input_start(ctx: Context, value: StructPayload) -> Directive:
    if not isinstance(value, StructPayload):
        raise TypeError(f"expected StructPayload, got {type(value).__name__}")
    return ctx.next.complete(value)


model_input_wf = Workflow(workflow_type="ExecModelInput")


@model_input_wf.start()
async def model_input_start(ctx: Context, value: ModelPayload) -> Directive:
    if not isinstance(value, ModelPayload):
        raise TypeError(f"expected ModelPayload, got {type(value).__name__}")
    return ctx.next.complete(value)


# EXEC-29..33: complete() with values of every kind.
COMPLETE_VALUES: dict[str, Any] = {
    "str": "hello",
    "int": 42,
    "float": 3.5,
    "bool": True,
    "dict": {"name": "dict-case", "count": 2, "nested": {"ok": True}},
    "list": ["list-case", 3, {"enabled": True}],
    "model": ModelPayload(name="model-output", count=31, tags=["m"]),
    "struct": StructPayload(name="struct-output", count=32, tags=["a", "b"]),
    "none": None,
}

complete_value_wf = Workflow(workflow_type="ExecCompleteValue")


@complete_value_wf.start()
async def complete_value_start(ctx: Context, case: str) -> Directive:
    return ctx.next.complete(COMPLETE_VALUES[case])


# EXEC-6: three steps, each calling a task; two runs at once must overlap. The original's tasks
# sleep 50 ms and hope that the runs meet; here a task stays active until a task of the other run
# is active too (at most EXEC_6_MEET_S): a worker that ran the two runs one after the other never
# gets there, and max_active stays 1.
EXEC_6_MEET_S = 10.0
_exec6: dict[str, Any] = {"active": 0, "max_active": 0, "met": None}


async def _tracked_task() -> None:
    met: asyncio.Event = _exec6["met"]
    _exec6["active"] += 1
    _exec6["max_active"] = max(_exec6["max_active"], _exec6["active"])
    if _exec6["active"] >= 2:
        met.set()
    try:
        async with asyncio.timeout(EXEC_6_MEET_S):
            await met.wait()
    except TimeoutError:
        pass  # never met: the test's max_active check fails
    finally:
        _exec6["active"] -= 1


@task
async def step_one_task(name: str) -> str:
    await _tracked_task()
    return f"one:{name}"


@task
async def step_two_task(name: str) -> str:
    await _tracked_task()
    return f"two:{name}"


@task
async def step_three_task(name: str, value: int) -> str:
    await _tracked_task()
    return f"three:{name}:{value}"


three_step_wf = Workflow(workflow_type="ExecThreeStep")


@three_step_wf.start()
async def three_step_start(ctx: Context, name: str, value: int) -> Directive:
    ctx.store.put("name", name)
    ctx.store.put("value", value)
    await step_one_task(name)
    return ctx.next.step(three_step_two)


@three_step_wf.step()
async def three_step_two(ctx: Context) -> Directive:
    name = await ctx.store.get("name", str)
    await step_two_task(name)
    return ctx.next.step(three_step_three)


@three_step_wf.step()
async def three_step_three(ctx: Context) -> Directive:
    name = await ctx.store.get("name", str)
    value = await ctx.store.get("value", int)
    return ctx.next.complete(await step_three_task(name, value))


ALL = [
    completing_wf,
    echo_result_wf,
    failing_wf,
    waiting_wf,
    slow_step_wf,
    blocking_step_wf,
    blocking_start_wf,
    any_input_wf,
    struct_input_wf,
    model_input_wf,
    complete_value_wf,
    three_step_wf,
]


# --------------------------------------------------------------------------------------------
# EXEC-1..4: cancel while a step runs.


async def _cancel_slow_step(workers: Any, client: Client, wf_id: str) -> WorkflowHandle:
    """Start the slow-step wf, cancel it once its second step started, then let the step finish."""
    release = _slow_step_release[wf_id] = asyncio.Event()
    await workers.start(ALL)
    handle = await start(client, "ExecSlowStep", wf_id)
    await wait_for_history(client, handle, steps_begin_with([STARTED, COMPLETED, STARTED]))
    await handle.cancel("stop please")
    release.set()
    return handle


async def test_exec_1_cancel_during_step_records_cancel_received(workers, client: Client) -> None:
    handle = await _cancel_slow_step(workers, client, "exec-1")
    events = await wait_for_kind(client, handle, HistoryKind.run_cancel_received)
    assert len(of_kind(events, HistoryKind.run_cancel_received)) == 1


async def test_exec_2_cancelled_step_completes_first(workers, client: Client) -> None:
    handle = await _cancel_slow_step(workers, client, "exec-2")
    events = await wait_for_kind(client, handle, HistoryKind.run_cancelled)
    assert step_kinds(events) == [STARTED, COMPLETED, STARTED, COMPLETED]
    assert [e.msg.step_name for e in step_events(events)] == ["start", "start", "slow_step", "slow_step"]


async def test_exec_3_cancel_order(workers, client: Client) -> None:
    handle = await _cancel_slow_step(workers, client, "exec-3")
    events = await wait_for_kind(client, handle, HistoryKind.run_cancelled)
    received = index_of(events, HistoryKind.run_cancel_received)
    completed = index_of(events, HistoryKind.step_completed, received + 1)
    cancelled = index_of(events, HistoryKind.run_cancelled)
    assert 0 <= received < completed < cancelled, kinds(events)
    assert run_kinds(events) == ["run.started", "run.cancel_received", "run.cancelled"]
    msg = events[cancelled].msg
    assert isinstance(msg, RunCancelled)
    assert msg.reason == "stop please"


async def test_exec_4_cancel_during_step_future_raises(workers, client: Client) -> None:
    handle = await _cancel_slow_step(workers, client, "exec-4")
    with pytest.raises(asyncio.CancelledError):
        await handle.result(timeout=15)


# --------------------------------------------------------------------------------------------


async def test_exec_5_cancel_while_waiting(workers, client: Client) -> None:
    await workers.start(ALL)
    handle = await start(client, "ExecWaiting", "exec-5")
    await wait_for_kind(client, handle, HistoryKind.wait_started)
    await handle.cancel("no longer needed")
    events = await wait_for_kind(client, handle, HistoryKind.run_cancelled)
    assert not of_kind(events, HistoryKind.run_cancel_received)
    assert run_kinds(events) == ["run.started", "run.cancelled"]


async def test_exec_6_concurrent_runs(workers, client: Client) -> None:
    """Two runs of a 3-step wf at once both complete, and their tasks overlap in time."""
    _exec6.update(active=0, max_active=0, met=asyncio.Event())
    await workers.start(ALL)
    payload = {"name": "same", "value": 42}
    h1, h2 = await asyncio.gather(
        start(client, "ExecThreeStep", "exec-6-a", payload),
        start(client, "ExecThreeStep", "exec-6-b", payload),
    )
    results = await asyncio.gather(h1.result(timeout=30), h2.result(timeout=30))
    assert list(results) == ["three:same:42", "three:same:42"]
    assert _exec6["max_active"] >= 2


async def test_exec_7_describe_running(workers, client: Client) -> None:
    await workers.start(ALL)
    handle = await start(client, "ExecWaiting", "exec-7")
    info = await client.describe("exec-7")
    assert isinstance(info, RunInfo)
    assert (info.id, info.wf_id, info.wf_type) == (handle.run_info.id, "exec-7", "ExecWaiting")
    await handle.send("finish", {"result": "ok"})
    assert await handle.result(timeout=30) == "ok"


async def test_exec_8_describe_unknown(workers, client: Client) -> None:
    await workers.start(ALL)
    with pytest.raises(WorkflowNotFoundError):
        await client.describe(f"unknown-{ULID()}")


async def test_exec_9_completing_run_events(workers, client: Client) -> None:
    await workers.start(ALL)
    handle = await start(client, "ExecCompleting", "exec-9")
    assert await handle.future == "ok"
    events = await client.get_history("exec-9")
    assert run_kinds(events) == ["run.started", "run.completed"]


async def test_exec_10_history_by_run_id_without_describe(workers, client: Client) -> None:
    """With an explicit run id `get_history` must not call `describe`.

    Shown without mocks: the worker is stopped first, so a describe could not be answered
    (it would wait 15 s and raise `WorkflowError`); the history still comes back at once.
    """
    worker = await workers.start(ALL)
    handle = await start(client, "ExecCompleting", "exec-10")
    assert await handle.result(timeout=30) == "ok"
    await worker.stop(shutdown_timeout=2.0)
    async with asyncio.timeout(10):
        events = await client.get_history("exec-10", run_id=handle.run_info.id)
    assert run_kinds(events) == ["run.started", "run.completed"]
    assert {e.run_id for e in events} == {handle.run_info.id}


async def test_exec_11_history_of_latest_run_only(workers, client: Client) -> None:
    await workers.start(ALL)
    first = await start(client, "ExecEchoResult", "exec-11", {"result": "complete"})
    assert await first.result(timeout=30) == "complete"
    second = await start(client, "ExecEchoResult", "exec-11", {"result": "complete"})
    assert await second.result(timeout=30) == "complete"
    assert first.run_info.id != second.run_info.id
    events = await client.get_history("exec-11")
    assert events
    assert {e.run_id for e in events} == {second.run_info.id}
    assert run_kinds(events) == ["run.started", "run.completed"]


async def test_exec_12_handle_run_info(workers, client: Client) -> None:
    await workers.start(ALL)
    handle = await start(client, "ExecCompleting", "exec-12")
    assert handle.run_info.wf_id == "exec-12"
    assert handle.run_info.wf_type == "ExecCompleting"
    assert isinstance(handle.run_info.id, str) and handle.run_info.id
    assert await handle.result(timeout=30) == "ok"


async def test_exec_13_future_resolves(workers, client: Client) -> None:
    await workers.start(ALL)
    handle = await start(client, "ExecCompleting", "exec-13")
    assert await asyncio.wait_for(handle.future, 30) == "ok"


async def test_exec_14_run_workflow(workers, client: Client) -> None:
    await workers.start(ALL)
    assert await client.run_workflow("ExecCompleting", "exec-14", {}, timedelta(seconds=30)) == "ok"


async def test_exec_15_failing_future_raises(workers, client: Client) -> None:
    await workers.start(ALL)
    handle = await start(client, "ExecFailing", "exec-15")
    with pytest.raises(WorkflowError, match="ValueError: workflow exploded"):
        await asyncio.wait_for(handle.future, 30)


async def test_exec_16_failing_run_workflow_raises(workers, client: Client) -> None:
    await workers.start(ALL)
    with pytest.raises(WorkflowError, match="ValueError: workflow exploded"):
        await client.run_workflow("ExecFailing", "exec-16", {}, timedelta(seconds=30))


async def test_exec_17_workflow_timeout(workers, client: Client) -> None:
    """A waiting run started with timeout=2 s: its future raises `TimeoutError`.

    Spec README rule 3: the engine enforces the workflow timeout (a durable timer): the future
    itself fails (not just the caller's wait), history ends with `run.timeout`, and describe
    reports `timed_out`. The original only had the client-side wait of `run_workflow`.
    """
    await workers.start(ALL)
    handle = await start(client, "ExecWaiting", "exec-17", timeout=timedelta(seconds=2))
    done, _ = await asyncio.wait([handle.future], timeout=15)
    assert handle.future in done, "the run was not timed out by the engine within 15 s"
    with pytest.raises(TimeoutError):
        handle.future.result()
    events = await history(client, handle)
    assert run_kinds(events) == ["run.started", "run.timeout"]
    # Not before its 2 s: both timestamps are the engine's (the timer is due at run.started + 2 s).
    (started,) = of_kind(events, HistoryKind.run_started)
    (timed_out,) = of_kind(events, HistoryKind.run_timeout)
    assert started.timestamp is not None and timed_out.timestamp is not None
    assert timed_out.timestamp - started.timestamp >= timedelta(seconds=2)
    assert (await client.describe("exec-17")).status == RunStatus.timed_out


async def test_exec_18_start_active_id_raises(workers, client: Client) -> None:
    await workers.start(ALL)
    handle = await start(client, "ExecWaiting", "exec-18")
    with pytest.raises(WorkflowAlreadyRunningError):
        await start(client, "ExecWaiting", "exec-18")
    await handle.send("finish")
    assert await handle.result(timeout=30) == "done"


async def test_exec_19_cancel_after_start_future_raises(workers, client: Client) -> None:
    await workers.start(ALL)
    handle = await start(client, "ExecWaiting", "exec-19")
    await handle.cancel("cancel right away")
    with pytest.raises(asyncio.CancelledError):
        await handle.result(timeout=15)


async def test_exec_20_cancel_without_reason(workers, client: Client) -> None:
    await workers.start(ALL)
    handle = await start(client, "ExecWaiting", "exec-20")
    await wait_for_kind(client, handle, HistoryKind.wait_started)
    await handle.cancel()
    events = await wait_for_kind(client, handle, HistoryKind.run_cancelled)
    msg = of_kind(events, HistoryKind.run_cancelled)[0].msg
    assert isinstance(msg, RunCancelled)
    assert msg.reason is None
    with pytest.raises(asyncio.CancelledError):
        await handle.result(timeout=5)


async def test_exec_21_handle_of_unknown_id(workers, client: Client) -> None:
    await workers.start(ALL)
    with pytest.raises(WorkflowNotFoundError):
        await client.get_workflow_handle(f"unknown-{ULID()}")


async def test_exec_22_attached_handle(workers, client: Client) -> None:
    await workers.start(ALL)
    handle = await start(client, "ExecWaiting", "exec-22")
    attached = await client.get_workflow_handle("exec-22")
    assert attached.run_info.id == handle.run_info.id
    assert attached.run_info.wf_id == "exec-22"
    assert attached.run_info.wf_type == "ExecWaiting"
    await attached.send("finish", {"result": "attached-ok"})
    assert await attached.result(timeout=30) == "attached-ok"
    assert await handle.result(timeout=30) == "attached-ok"


async def test_exec_23_attach_after_completion(workers, client: Client) -> None:
    await workers.start(ALL)
    handle = await start(client, "ExecEchoResult", "exec-23", {"result": "done"})
    assert await handle.result(timeout=30) == "done"
    handle.stop()
    attached = await client.get_workflow_handle("exec-23")
    assert attached.run_info.id == handle.run_info.id
    assert await asyncio.wait_for(attached.future, 10) == "done"


async def test_exec_24_unregistered_type(workers, client: Client) -> None:
    await workers.start(ALL)
    with pytest.raises(WorkflowTypeNotRegisteredError):
        await start(client, "ExecNoSuchType", "exec-24")


EXEC_25_CASES = [
    pytest.param("hello", id="str"),
    pytest.param(42, id="int"),
    pytest.param(3.5, id="float"),
    pytest.param(True, id="bool"),
    pytest.param(None, id="none"),
]


@pytest.mark.parametrize("value", EXEC_25_CASES)
async def test_exec_25_primitive_input(workers, client: Client, value: Any) -> None:
    await workers.start(ALL)
    handle = await start(client, "ExecAnyInput", "exec-25", {"value": value})
    out = await handle.result(timeout=30)
    assert out == {"value": value, "type": type(value).__name__}
    assert type(out["value"]) is type(value)


EXEC_26_CASES = [
    pytest.param({"name": "dict-case", "count": 2, "tags": ["a", "b"], "nested": {"ok": True}}, id="dict"),
    pytest.param(["list-case", 3, {"enabled": True}], id="list"),
]


@pytest.mark.parametrize("value", EXEC_26_CASES)
async def test_exec_26_container_input(workers, client: Client, value: Any) -> None:
    await workers.start(ALL)
    handle = await start(client, "ExecAnyInput", "exec-26", {"value": value})
    out = await handle.result(timeout=30)
    assert out == {"value": value, "type": type(value).__name__}


async def test_exec_27_struct_input_and_return_type(workers, client: Client) -> None:
    await workers.start(ALL)
    sent = StructPayload(name="struct-input", count=27, tags=["s"])
    handle = await start(client, "ExecStructInput", "exec-27", {"value": sent}, return_type=StructPayload)
    result = await handle.result(timeout=30)
    assert isinstance(result, StructPayload)
    assert result == sent


async def test_exec_28_pydantic_input_and_return_type(workers, client: Client) -> None:
    await workers.start(ALL)
    sent = ModelPayload(name="model-input", count=28, tags=["p"])
    handle = await start(client, "ExecModelInput", "exec-28", {"value": sent}, return_type=ModelPayload)
    result = await handle.result(timeout=30)
    assert isinstance(result, ModelPayload)
    assert result == sent


@pytest.mark.parametrize("case", ["str", "int", "float", "bool"])
async def test_exec_29_complete_primitive(workers, client: Client, case: str) -> None:
    await workers.start(ALL)
    handle = await start(client, "ExecCompleteValue", "exec-29", {"case": case})
    result = await handle.result(timeout=30)
    assert result == COMPLETE_VALUES[case]
    assert type(result) is type(COMPLETE_VALUES[case])


@pytest.mark.parametrize("case", ["dict", "list"])
async def test_exec_30_complete_container(workers, client: Client, case: str) -> None:
    await workers.start(ALL)
    handle = await start(client, "ExecCompleteValue", "exec-30", {"case": case})
    assert await handle.result(timeout=30) == COMPLETE_VALUES[case]


async def test_exec_31_return_type_pydantic(workers, client: Client) -> None:
    await workers.start(ALL)
    handle = await start(client, "ExecCompleteValue", "exec-31", {"case": "model"}, return_type=ModelPayload)
    result = await handle.result(30)
    assert isinstance(result, ModelPayload)
    assert result == COMPLETE_VALUES["model"]


async def test_exec_32_return_type_struct(workers, client: Client) -> None:
    await workers.start(ALL)
    handle = await start(client, "ExecCompleteValue", "exec-32", {"case": "struct"}, return_type=StructPayload)
    result = await handle.result(30)
    assert isinstance(result, StructPayload)
    assert result == COMPLETE_VALUES["struct"]


async def test_exec_33_complete_none(workers, client: Client) -> None:
    await workers.start(ALL)
    handle = await start(client, "ExecCompleteValue", "exec-33", {"case": "none"}, return_type=None)
    assert await handle.result(timeout=30, return_type=None) is None


async def test_exec_34_start_step_timeout_events(workers, client: Client) -> None:
    await workers.start(ALL)
    handle = await start(client, "ExecBlockingStart", "exec-34")
    events = await wait_for_kind(client, handle, HistoryKind.run_failed)
    assert step_kinds(events) == [STARTED, TIMEOUT]
    timeout_msg = of_kind(events, HistoryKind.step_timeout)[0].msg
    assert isinstance(timeout_msg, StepTimeout)
    assert timeout_msg.step_name == "start"


async def test_exec_35_start_step_timeout_fails_run(workers, client: Client) -> None:
    await workers.start(ALL)
    handle = await start(client, "ExecBlockingStart", "exec-35")
    with pytest.raises(WorkflowError, match="step start timed out"):
        await handle.result(timeout=30)
    assert run_kinds(await history(client, handle)) == ["run.started", "run.failed"]


# --------------------------------------------------------------------------------------------
# EXEC-36..38: terminate while a step runs.


async def _terminate_blocking_step(workers: Any, client: Client, wf_id: str) -> WorkflowHandle:
    await workers.start(ALL)
    handle = await start(client, "ExecBlockingStep", wf_id)
    await wait_for_history(client, handle, steps_begin_with([STARTED, COMPLETED, STARTED]))
    await handle.terminate("terminated by test")
    return handle


async def test_exec_36_terminate_records_terminated(workers, client: Client) -> None:
    handle = await _terminate_blocking_step(workers, client, "exec-36")
    events = await wait_for_kind(client, handle, HistoryKind.run_terminated)
    assert run_kinds(events) == ["run.started", "run.terminated"]
    assert of_kind(events, HistoryKind.run_terminated)[0].msg.reason == "terminated by test"


async def test_exec_37_terminate_stops_step_events(workers, client: Client) -> None:
    handle = await _terminate_blocking_step(workers, client, "exec-37")
    events = await wait_for_kind(client, handle, HistoryKind.run_terminated)
    assert step_kinds(events) == [STARTED, COMPLETED, STARTED]
    # nothing may follow: no completion, failure or timeout of the step
    events = await partition_settled(client, handle, "ExecCompleting")
    assert step_kinds(events) == [STARTED, COMPLETED, STARTED]
    assert kinds(events)[-1] == "run.terminated"


async def test_exec_38_terminate_future_raises(workers, client: Client) -> None:
    handle = await _terminate_blocking_step(workers, client, "exec-38")
    with pytest.raises(asyncio.CancelledError):
        await handle.result(timeout=15)


# --------------------------------------------------------------------------------------------
# Beyond the numbered scenarios.


async def test_describe_waiting_run(workers, client: Client) -> None:
    """describe of a waiting run: status running, waiting for an event.

    Spec README rule 3: a plain `wait()` waits forever, so there is no wait deadline (the
    original armed a 1 h timer that failed the run with `WaitTimeout`).
    """
    await workers.start(ALL)
    handle = await start(client, "ExecWaiting", "exec-describe-wait")
    await wait_for_kind(client, handle, HistoryKind.wait_started)
    info = await client.describe("exec-describe-wait")
    assert info.id == handle.run_info.id
    assert info.status == RunStatus.running
    assert info.waiting_for_event is True
    assert info.state == "wait"
    assert info.wait_deadline is None
    await handle.send("finish")
    assert await handle.result(timeout=30) == "done"
    info = await client.describe("exec-describe-wait")
    assert info.status == RunStatus.completed
    assert info.waiting_for_event is False


async def test_cancel_finished_run_raises(workers, client: Client) -> None:
    """Spec README rule 3: cancel of a finished run raises `WorkflowError` (the original
    ignored the server's refusal; its docs promised the error)."""
    await workers.start(ALL)
    handle = await start(client, "ExecCompleting", "exec-cancel-done")
    assert await handle.result(timeout=30) == "ok"
    with pytest.raises(WorkflowError):
        await handle.cancel("too late")
    assert run_kinds(await history(client, handle)) == ["run.started", "run.completed"]


async def test_terminate_finished_run_raises(workers, client: Client) -> None:
    """Spec README rule 3: terminate of a finished run raises `WorkflowError`."""
    await workers.start(ALL)
    handle = await start(client, "ExecFailing", "exec-terminate-done")
    with pytest.raises(WorkflowError, match="workflow exploded"):
        await handle.result(timeout=30)
    with pytest.raises(WorkflowError):
        await handle.terminate("too late")
    assert run_kinds(await history(client, handle)) == ["run.started", "run.failed"]


async def test_cancel_unknown_run_raises(workers, client: Client) -> None:
    """Spec README rule 3: cancel, terminate and send to an unknown workflow id raise
    `WorkflowNotFoundError`."""
    await workers.start(ALL)
    wf_id = f"unknown-{ULID()}"
    handle = WorkflowHandle(RunInfo(id=str(ULID()), wf_id=wf_id, wf_type="ExecWaiting"), client=client)
    with pytest.raises(WorkflowNotFoundError):
        await handle.cancel("nobody there")
    with pytest.raises(WorkflowNotFoundError):
        await handle.terminate("nobody there")
    with pytest.raises(WorkflowNotFoundError):
        await handle.send("finish")
    handle.discard()


async def test_result_wait_exceeded_raises_timeout(workers, client: Client) -> None:
    """A client-side wait that runs out raises `TimeoutError` (§2.11) and leaves the run and the
    handle usable."""
    await workers.start(ALL)
    handle = await start(client, "ExecWaiting", "exec-result-timeout")
    with pytest.raises(TimeoutError):
        await handle.result(timeout=0.5)
    assert not handle.future.done()
    await handle.send("finish", {"result": "after-timeout"})
    assert await handle.result(timeout=30) == "after-timeout"


async def test_workflow_timeout_during_step(workers, client: Client) -> None:
    """Spec README rule 3: the workflow timeout also ends a run whose step is still running:
    `run.timeout`, the step is cancelled and reports nothing, the future raises TimeoutError."""
    await workers.start(ALL)
    handle = await start(client, "ExecBlockingStep", "exec-timeout-step", timeout=timedelta(seconds=1))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(asyncio.shield(handle.future), 15)
    assert handle.future.done()
    assert (await client.describe("exec-timeout-step")).status == RunStatus.timed_out
    # "Reports nothing" needs the partition settled: a late step report would come after the
    # timeout, so the history is read after a new run of the same id was acknowledged.
    events = await partition_settled(client, handle, "ExecCompleting")
    assert run_kinds(events) == ["run.started", "run.timeout"]
    assert step_kinds(events) == [STARTED, COMPLETED, STARTED]
    assert kinds(events)[-1] == "run.timeout"


async def test_describe_reports_cancelled_and_terminated(workers, client: Client) -> None:
    """describe reports `cancelled` and `terminated` runs. Spec README rule 3: `RunStatus` has
    `terminated` (the original's Python enum lacked it, so describe of a terminated run failed)."""
    await workers.start(ALL)
    cancelled = await start(client, "ExecWaiting", "exec-describe-cancelled")
    await cancelled.cancel("bye")
    terminated = await start(client, "ExecWaiting", "exec-describe-terminated")
    await terminated.terminate("bye")
    for handle in (cancelled, terminated):
        with pytest.raises(asyncio.CancelledError):
            await handle.result(timeout=15)
    assert (await client.describe("exec-describe-cancelled")).status == RunStatus.cancelled
    assert (await client.describe("exec-describe-terminated")).status == RunStatus.terminated
