"""Step scenarios STEP-1..10 of BEHAVIOUR.md §3 (not the crash test STEP-8), and step failures
users rely on (§2.2, §2.3)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from grctl import Client, Context, Directive, Workflow
from grctl.errors import WorkflowError
from grctl.models import ErrorDetails, HistoryKind, RunStatus, StepFailed, StepTimeout
from grctl.worker.task import task
from tests.scenarios.support import (
    history,
    kinds,
    of_kind,
    partition_settled,
    run_kinds,
    start,
    step_events,
    step_kinds,
    wait_for_kind,
)

pytestmark = pytest.mark.kafka

STARTED, COMPLETED, FAILED, TIMEOUT = "step.started", "step.completed", "step.failed", "step.timeout"


# "failing wf": start raises ValueError(msg).
failing_wf = Workflow(workflow_type="StepFailing")


@failing_wf.start()
async def failing_start(ctx: Context) -> Directive:
    raise ValueError("step exploded: code=42")


# "echo wf": start(value: str) -> echo_task(value) -> complete.
@task
async def echo_task(value: str) -> str:
    return value


echo_wf = Workflow(workflow_type="StepEcho")


@echo_wf.start()
async def echo_start(ctx: Context, value: str) -> Directive:
    return ctx.next.complete(await echo_task(value))


# "two-step wf": start -> two_step_second -> complete("two-step-ok").
two_step_wf = Workflow(workflow_type="StepTwoStep")


@two_step_wf.start()
async def two_step_start(ctx: Context) -> Directive:
    return ctx.next.step(two_step_second)


@two_step_wf.step()
async def two_step_second(ctx: Context) -> Directive:
    return ctx.next.complete("two-step-ok")


# "blocking-step wf": start -> blocking_step (sleeps 60 s, timeout 0.1 s).
blocking_step_wf = Workflow(workflow_type="StepBlocking")


@blocking_step_wf.start()
async def blocking_start(ctx: Context) -> Directive:
    return ctx.next.step(blocking_step)


@blocking_step_wf.step(timeout=timedelta(milliseconds=100))
async def blocking_step(ctx: Context) -> Directive:
    await asyncio.sleep(60)
    return ctx.next.complete("not reached")


# STEP-7: a step that succeeds within a short timeout, and a witness whose step outlives the
# same timeout (see test_step_7_no_step_timeout_on_success).
STEP_7_TIMEOUT = timedelta(seconds=1)
quick_step_wf = Workflow(workflow_type="StepQuickWithTimeout")


@quick_step_wf.start()
async def quick_start(ctx: Context) -> Directive:
    return ctx.next.step(quick_step)


@quick_step_wf.step(timeout=STEP_7_TIMEOUT)
async def quick_step(ctx: Context) -> Directive:
    return ctx.next.complete(await echo_task("quick"))


witness_wf = Workflow(workflow_type="StepTimeoutWitness")


@witness_wf.start()
async def witness_start(ctx: Context) -> Directive:
    return ctx.next.step(witness_step)


@witness_wf.step(timeout=STEP_7_TIMEOUT)
async def witness_step(ctx: Context) -> Directive:
    await asyncio.Event().wait()  # never ends: only its timeout ends it
    return ctx.next.complete("not reached")


# Step failures beyond the numbered scenarios.
async def not_a_step(ctx: Context) -> Directive:
    """Never registered with @wf.step()."""
    return ctx.next.complete("not reached")


undefined_step_wf = Workflow(workflow_type="StepUndefinedNext")


@undefined_step_wf.start()
async def undefined_next_start(ctx: Context) -> Directive:
    return ctx.next.step(not_a_step)


no_directive_wf = Workflow(workflow_type="StepNoDirective")


@no_directive_wf.start()
async def no_directive_start(ctx: Context) -> Any:
    return "not a directive"


fail_directive_wf = Workflow(workflow_type="StepFailDirective")


@fail_directive_wf.start()
async def fail_directive_start(ctx: Context) -> Directive:
    return ctx.next.fail(ErrorDetails(type="PaymentDeclined", message="card declined"))


# Binding of the start input (BEHAVIOUR.md §2.3).
binding_wf = Workflow(workflow_type="StepBinding")


@binding_wf.start()
async def binding_start(ctx: Context, name: str, count: int) -> Directive:
    return ctx.next.complete({"name": name, "count": count})


default_wf = Workflow(workflow_type="StepBindingDefault")


@default_wf.start()
async def default_start(ctx: Context, name: str = "anonymous") -> Directive:
    return ctx.next.complete(name)


# "asyncio wf": the step's own asyncio.timeout and TaskGroup, before its first suspension.
# They bind to asyncio.current_task(): that must be the step's task, not an engine loop's.
asyncio_wf = Workflow(workflow_type="StepOwnAsyncio")


async def _slow(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "slow"


@asyncio_wf.start()
async def asyncio_start(ctx: Context) -> Directive:
    try:
        async with asyncio.timeout(0.2):
            await asyncio.sleep(5)
        timed_out = False
    except TimeoutError:
        timed_out = True
    async with asyncio.TaskGroup() as tg:
        first = tg.create_task(_slow(0.05))
        second = tg.create_task(_slow(0.01))
    return ctx.next.complete({"timed_out": timed_out, "group": [first.result(), second.result()]})


ALL = [
    quick_step_wf,
    witness_wf,
    asyncio_wf,
    failing_wf,
    echo_wf,
    two_step_wf,
    blocking_step_wf,
    undefined_step_wf,
    no_directive_wf,
    fail_directive_wf,
    binding_wf,
    default_wf,
]


def _step_failed(events: list[Any]) -> tuple[str, ErrorDetails]:
    """The step name and error of the run's only `step.failed` event."""
    failed = of_kind(events, HistoryKind.step_failed)
    assert len(failed) == 1, kinds(events)
    msg = failed[0].msg
    assert isinstance(msg, StepFailed)
    assert msg.error is not None
    return msg.step_name, msg.error


# --------------------------------------------------------------------------------------------


async def test_step_1_failing_step_events(workers, client: Client) -> None:
    await workers.start(ALL)
    handle = await start(client, "StepFailing", "step-1")
    events = await wait_for_kind(client, handle, HistoryKind.run_failed)
    assert step_kinds(events) == [STARTED, FAILED]
    step_name, error = _step_failed(events)
    assert step_name == "start"
    assert error.type == "ValueError"
    assert "step exploded: code=42" in error.message


async def test_step_2_failing_step_fails_run(workers, client: Client) -> None:
    await workers.start(ALL)
    handle = await start(client, "StepFailing", "step-2")
    with pytest.raises(WorkflowError, match="ValueError: step exploded: code=42"):
        await handle.result(timeout=30)
    assert handle.run_info.status == RunStatus.failed  # also when run.failed is read in the same fetch as run.started
    assert run_kinds(await history(client, handle)) == ["run.started", "run.failed"]


async def test_step_3_failure_message_kept(workers, client: Client) -> None:
    await workers.start(ALL)
    handle = await start(client, "StepFailing", "step-3")
    events = await wait_for_kind(client, handle, HistoryKind.run_failed)
    assert _step_failed(events)[1].message == "step exploded: code=42"


async def test_step_4_single_step_events(workers, client: Client) -> None:
    await workers.start(ALL)
    handle = await start(client, "StepEcho", "step-4", {"value": "ok"})
    assert await handle.result(timeout=30) == "ok"
    assert step_kinds(await history(client, handle)) == [STARTED, COMPLETED]


async def test_step_5_two_step_events(workers, client: Client) -> None:
    await workers.start(ALL)
    handle = await start(client, "StepTwoStep", "step-5")
    assert await handle.result(timeout=30) == "two-step-ok"
    steps = step_events(await history(client, handle))
    assert [str(e.kind) for e in steps] == [STARTED, COMPLETED, STARTED, COMPLETED]
    assert [e.msg.step_name for e in steps] == ["start", "start", "two_step_second", "two_step_second"]


async def test_step_6_echo_result(workers, client: Client) -> None:
    await workers.start(ALL)
    handle = await start(client, "StepEcho", "step-6", {"value": "task-result-value"})
    assert await handle.result(timeout=30) == "task-result-value"


async def test_step_code_may_use_asyncio_timeout_and_task_groups(workers, client: Client) -> None:
    await workers.start(ALL)
    handle = await start(client, "StepOwnAsyncio", "step-own-asyncio")
    assert await handle.result(timeout=30) == {"timed_out": True, "group": ["slow", "slow"]}
    again = await start(client, "StepTwoStep", "step-own-asyncio-after")  # the worker is unharmed
    assert await again.result(timeout=30) == "two-step-ok"


async def test_step_7_no_step_timeout_on_success(workers, client: Client) -> None:
    """A step that succeeds within its (short) timeout never gets a step.timeout, also after the deadline.

    Checking at once proves nothing (a late timeout would come after the check). So a witness
    run of the same workflow id, on the same partition, started after the first run ended, runs
    a step that only its timeout of the same length ends: once the witness's step.timeout is in
    history, the first step's deadline has passed, and the partition's order puts any timeout of
    it before the witness's.
    """
    await workers.start(ALL)
    handle = await start(client, "StepQuickWithTimeout", "step-7")
    assert await handle.result(timeout=30) == "quick"
    witness = await start(client, "StepTimeoutWitness", "step-7")
    with pytest.raises(WorkflowError, match="step witness_step timed out"):
        await witness.result(timeout=30)
    witnessed = await history(client, witness)
    assert of_kind(witnessed, HistoryKind.step_timeout), "the witness's timeout is the clock of this check"
    events = await history(client, handle)
    assert not of_kind(events, HistoryKind.step_timeout)
    assert run_kinds(events) == ["run.started", "run.completed"]


async def test_step_9_step_timeout_events(workers, client: Client) -> None:
    await workers.start(ALL)
    handle = await start(client, "StepBlocking", "step-9")
    with pytest.raises(WorkflowError, match="step blocking_step timed out"):
        await handle.result(timeout=30)
    events = await history(client, handle)
    assert step_kinds(events) == [STARTED, COMPLETED, STARTED, TIMEOUT]
    timeout_msg = of_kind(events, HistoryKind.step_timeout)[0].msg
    assert isinstance(timeout_msg, StepTimeout)
    assert timeout_msg.step_name == "blocking_step"
    # the cancelled step must not report anything afterwards
    settled = await partition_settled(client, handle, "StepEcho", {"value": "after"})
    assert step_kinds(settled) == [STARTED, COMPLETED, STARTED, TIMEOUT]


async def test_step_10_step_timeout_fails_run(workers, client: Client) -> None:
    await workers.start(ALL)
    handle = await start(client, "StepBlocking", "step-10")
    with pytest.raises(WorkflowError):
        await handle.result(timeout=30)
    assert run_kinds(await history(client, handle)) == ["run.started", "run.failed"]


# --------------------------------------------------------------------------------------------
# Beyond the numbered scenarios.


async def test_next_step_to_undefined_step_fails_run(workers, client: Client) -> None:
    """`ctx.next.step(fn)` with a function that is not a registered step fails the step, and the
    message names the step (BEHAVIOUR.md §2.2: "Step handler 'x' is not defined.")."""
    await workers.start(ALL)
    handle = await start(client, "StepUndefinedNext", "step-undefined")
    with pytest.raises(WorkflowError, match="Step handler 'not_a_step' is not defined"):
        await handle.result(timeout=30)
    events = await history(client, handle)
    assert step_kinds(events) == [STARTED, FAILED]
    assert run_kinds(events) == ["run.started", "run.failed"]


async def test_non_directive_return_fails_run(workers, client: Client) -> None:
    """A handler returning something other than a Directive fails its step with
    `NextDirectiveMissingError` (BEHAVIOUR.md §1.13, §2.2)."""
    await workers.start(ALL)
    handle = await start(client, "StepNoDirective", "step-no-directive")
    with pytest.raises(WorkflowError, match="NextDirectiveMissingError"):
        await handle.result(timeout=30)
    events = await history(client, handle)
    assert _step_failed(events)[1].type == "NextDirectiveMissingError"
    assert run_kinds(events) == ["run.started", "run.failed"]


async def test_next_fail_fails_run_after_completed_step(workers, client: Client) -> None:
    """`ctx.next.fail(error)`: the step completes, then the run fails with that error (§2.1)."""
    await workers.start(ALL)
    handle = await start(client, "StepFailDirective", "step-fail-directive")
    with pytest.raises(WorkflowError, match="PaymentDeclined: card declined"):
        await handle.result(timeout=30)
    events = await history(client, handle)
    assert step_kinds(events) == [STARTED, COMPLETED]
    assert run_kinds(events) == ["run.started", "run.failed"]


async def test_binding_start_input_several_params(workers, client: Client) -> None:
    """§2.3 rule 3: each parameter takes its key from the input dict; extra keys are ignored."""
    await workers.start(ALL)
    handle = await start(client, "StepBinding", "step-bind", {"name": "n", "count": 2, "extra": "x"})
    assert await handle.result(timeout=30) == {"name": "n", "count": 2}


async def test_binding_start_input_wrong_type_fails_run(workers, client: Client) -> None:
    """Values are converted strictly to the annotation: a str for an int parameter fails the step."""
    await workers.start(ALL)
    handle = await start(client, "StepBinding", "step-bind-type", {"name": "n", "count": "two"})
    with pytest.raises(WorkflowError, match="count"):
        await handle.result(timeout=30)
    assert step_kinds(await history(client, handle)) == [STARTED, FAILED]


async def test_binding_start_input_none_uses_default(workers, client: Client) -> None:
    """§2.3 rule 1: with no input the handler is called with ctx only, so defaults apply."""
    await workers.start(ALL)
    handle = await client.start_workflow("StepBindingDefault", "step-bind-none", None, timeout=timedelta(seconds=30))
    assert await handle.result(timeout=30) == "anonymous"
