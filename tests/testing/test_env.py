"""grctl.testing.WorkflowEnvironment: the real engine in process, with a clock that skips ahead."""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import os
import random
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from grctl import Context, Directive, Workflow
from grctl.errors import InvalidArgumentError, RegistrationError, TestEnvironmentError, WorkflowError
from grctl.testing import WorkflowEnvironment
from tests.testing import comparison

REPO = Path(__file__).resolve().parents[2]

# A workflow that waits 7 days for an approval, with a timeout branch, then sleeps 24 hours.
review = Workflow(workflow_type="Review")


@review.start()
async def review_start(ctx: Context, doc: str) -> Directive:
    ctx.store.put("doc", doc)
    return ctx.next.wait(timeout=timedelta(days=7), on_timeout=review_expired)


@review.event()
async def review_approve(ctx: Context, by: str) -> Directive:
    ctx.store.put("by", by)
    return ctx.next.step(review_publish)


@review.step(timeout=timedelta(hours=25))
async def review_publish(ctx: Context) -> Directive:
    before = await ctx.now()
    await ctx.sleep(timedelta(hours=24))  # a day of embargo
    after = await ctx.now()
    return ctx.next.complete({"by": await ctx.store.get("by"), "embargo_h": (after - before) / timedelta(hours=1)})


@review.step()
async def review_expired(ctx: Context) -> Directive:
    return ctx.next.complete({"by": None, "embargo_h": 0})


START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


async def test_a_7_day_wait_and_a_24_hour_sleep_run_both_branches_without_waiting() -> None:
    async with WorkflowEnvironment([review], start_time=START) as env:
        approved = await env.client.start_workflow("Review", "doc-1", {"doc": "spec"})
        await approved.send("review_approve", {"by": "alice"})
        assert await approved.result() == {"by": "alice", "embargo_h": 24.0}
        assert env.now() - START == timedelta(hours=24)  # the approval came at once, then the embargo

        expired = await env.client.start_workflow("Review", "doc-2", {"doc": "draft"})
        assert await expired.result() == {"by": None, "embargo_h": 0}
        assert env.now() - START == timedelta(days=8)  # the 7-day timeout fired, on the virtual clock
        kinds = [str(e.kind) for e in await env.history("doc-2")]
        assert kinds == [
            "run.started", "step.started", "step.completed", "wait.started", "wait.timed_out",
            "step.started", "step.completed", "run.completed",
        ]  # fmt: skip


async def test_the_clock_stands_still_unless_a_test_waits_for_a_result_or_sleeps() -> None:
    async with WorkflowEnvironment([review], start_time=START) as env:
        handle = await env.client.start_workflow("Review", "doc-3", {"doc": "spec"})
        await env.settle()
        assert env.now() == START
        assert (await handle.describe()).status == "running"
        await env.sleep(timedelta(days=6, hours=23))  # not yet expired
        await handle.send("review_approve", {"by": "bob"})
        await env.sleep(timedelta(hours=23))
        assert (await handle.describe()).status == "running"  # an hour of embargo left
        await env.sleep(timedelta(hours=1))
        assert await handle.result() == {"by": "bob", "embargo_h": 24.0}


async def test_step_timeouts_use_the_virtual_clock() -> None:
    wf = Workflow(workflow_type="Slow")

    @wf.start(timeout=timedelta(minutes=1))
    async def start(ctx: Context) -> Directive:
        await ctx.sleep(timedelta(hours=1))  # longer than the step may take
        return ctx.next.complete("late")

    async with WorkflowEnvironment([wf], start_time=START) as env:
        handle = await env.client.start_workflow("Slow", "s-1")
        with pytest.raises(WorkflowError, match="StepTimeout"):
            await handle.result()
        assert env.now() - START < timedelta(minutes=2)


async def test_the_workflow_timeout_fires_on_the_virtual_clock() -> None:
    async with WorkflowEnvironment([review], start_time=START) as env:
        handle = await env.client.start_workflow("Review", "doc-4", {"doc": "spec"}, timeout=timedelta(days=2))
        with pytest.raises(TimeoutError):
            await handle.result()
        assert env.now() - START == timedelta(days=2)


@pytest.mark.parametrize("name", sorted(comparison.SCENARIOS))
async def test_the_comparison_scenarios_run_in_process(name: str) -> None:
    comparison.CALLS.clear()
    async with WorkflowEnvironment(comparison.WORKFLOWS) as env:
        out = await comparison.SCENARIOS[name](env, f"cmp-{name}")
    assert out.get("error") != "unexpected"
    expected: dict[str, Any] = {
        "approved": {"result": {"approved_by": "alice"}, "query": 12},
        "expired": {"result": {"approved_by": None}},
        "retried": {"result": ["cmp-retried-short done", "cmp-retried-durable done"]},
        "task_fails": {"error": "WorkflowError"},
        "children": {"result": 30},
        "cancelled": {"error": "CancelledError", "status": "cancelled"},
    }[name]
    assert {k: out[k] for k in expected} == expected


async def test_crash_next_step_replays_the_journal_and_keeps_the_outcome() -> None:
    wf = Workflow(workflow_type="Stamp")
    calls: list[str] = []

    @wf.start()
    async def start(ctx: Context) -> Directive:
        stamp = await ctx.now()
        token = await ctx.uuid4()
        calls.append("live" if not ctx.is_replaying else "replayed")
        return ctx.next.complete({"stamp": stamp.isoformat(), "token": str(token)})

    async with WorkflowEnvironment([wf], start_time=START) as env:
        env.crash_next_step()
        handle = await env.client.start_workflow("Stamp", "st-1")
        result = await handle.result()
        assert env.crashes == 1
        history = await env.history("st-1")
        kinds = [str(e.kind) for e in history]
        assert kinds.count("step.started") == 2  # executed twice: before and after the crash
        assert kinds.count("timestamp.recorded") == 1  # recorded once, replayed the second time
        recorded = next(e for e in history if str(e.kind) == "uuid.recorded").msg.value
        assert result["token"] == recorded


async def test_crash_next_step_finds_code_that_does_not_replay() -> None:
    wf = Workflow(workflow_type="Dice")
    rng = random.Random(7)

    @wf.start()
    async def start(ctx: Context) -> Directive:
        if rng.random() < 0.5:  # not journaled: a re-execution may take the other branch
            await ctx.now()
        else:
            await ctx.uuid4()
        return ctx.next.complete("rolled")

    failures = 0
    async with WorkflowEnvironment([wf]) as env:
        for i in range(8):
            env.crash_next_step()
            handle = await env.client.start_workflow("Dice", f"dice-{i}")
            try:
                await handle.result()
            except WorkflowError as exc:
                assert "NonDeterminismError" in str(exc)
                failures += 1
    assert failures > 0


async def test_the_client_api_works_in_process() -> None:
    async with WorkflowEnvironment(comparison.WORKFLOWS, partitions=3) as env:
        client = env.client
        handle = await client.start_workflow("CmpForever", "f-1")
        again = await client.get_workflow_handle("f-1")
        info = await client.describe("f-1")
        assert info.status == "running" and info.wf_type == "CmpForever"
        page = await client.list_workflows(status="running")
        assert [r.wf_id for r in page.runs] == ["f-1"]
        await client.send_event("f-1", "poke")
        await handle.terminate("stop")
        with pytest.raises(BaseException, match=r"terminated|cancel"):
            await again.result()
        with pytest.raises(WorkflowError):
            await client.send_event("f-1", "poke")  # the run ended
        assert await client.run_workflow("CmpParent", "p-1", {"n": 3}) == 60


def test_bad_arguments_are_refused_with_the_reason() -> None:
    with pytest.raises(InvalidArgumentError, match="partitions"):
        WorkflowEnvironment([review], partitions=0)
    with pytest.raises(InvalidArgumentError, match="aware"):
        WorkflowEnvironment([review], start_time=datetime(2026, 1, 1))  # the error under test
    with pytest.raises(RegistrationError):
        WorkflowEnvironment([review, review])


async def test_the_fixture_serves_the_workflows_of_grctl_workflows(grctl_env: WorkflowEnvironment) -> None:
    assert await grctl_env.client.run_workflow("CmpChild", "c-1", {"n": 4}) == 40


@pytest.fixture
def grctl_workflows() -> list[Workflow]:
    return comparison.WORKFLOWS


async def test_emits_and_results_topics_are_kept_in_process() -> None:
    wf = Workflow(workflow_type="Emitter", results_topic="emitter-results")

    @wf.start()
    async def start(ctx: Context, n: int) -> Directive:
        ctx.emit("numbers", {"n": n}, key=ctx.run.wf_id)
        return ctx.next.complete(n * 2)

    async with WorkflowEnvironment([wf]) as env:
        assert await env.client.run_workflow("Emitter", "em-1", {"n": 21}) == 42
        [record] = env.emitted("numbers")
        assert record.key() == b"em-1" and json.loads(record.value()) == {"n": 21}
        [outcome] = env.emitted("emitter-results")
        assert json.loads(outcome.value())["status"] == "completed"


async def test_a_second_client_sees_the_runs_of_the_first() -> None:
    async with WorkflowEnvironment(comparison.WORKFLOWS, partitions=2) as env:
        await env.client.start_workflow("CmpForever", "shared-1")
        other = env.new_client()
        handle = await other.get_workflow_handle("shared-1")
        await handle.cancel("from the other client")
        with pytest.raises(asyncio.CancelledError):
            await handle.result()


def test_grctl_workflows_must_be_defined_by_the_user(tmp_path: Path) -> None:
    (tmp_path / "test_user.py").write_text("async def test_needs_workflows(grctl_env):\n    pass\n")
    installed = {ep.name for ep in importlib.metadata.entry_points(group="pytest11")}
    plugin = [] if "grctl" in installed else ["-p", "grctl.testing.pytest_plugin"]
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *plugin, "-o", "asyncio_mode=auto",
         "-o", "asyncio_default_fixture_loop_scope=function", "test_user.py"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 1, run.stdout + run.stderr
    assert "define a fixture `grctl_workflows`" in run.stdout


def test_a_source_in_a_registry_format_is_refused_with_the_reason() -> None:
    from grctl.worker import Source, StartRun

    avro = Source("orders", lambda rec: StartRun("Review", rec.value), format="avro")
    with pytest.raises(InvalidArgumentError, match="schema registry"):
        WorkflowEnvironment([review], sources=[avro])
    with pytest.raises(InvalidArgumentError, match="not a Source"):
        WorkflowEnvironment([review], sources=["orders"])  # type: ignore[list-item]


async def test_an_environment_used_outside_its_lifetime_says_so() -> None:
    env = WorkflowEnvironment([review])
    with pytest.raises(TestEnvironmentError, match="not running"):
        env.crash_next_step()
    async with env:
        pass
    with pytest.raises(TestEnvironmentError, match="not running"):
        await env.sleep(1)
    with pytest.raises(TestEnvironmentError, match="started already"):
        await env.start()


# --------------------------------------------------------------------------- remote tasks (issue 28)

remote_wf = Workflow(workflow_type="RemoteInProcess")


@remote_wf.start()
async def remote_start(ctx: Context, x: int) -> Directive:
    from grctl import RetryPolicy
    from grctl.errors import RemoteTaskError

    policy = RetryPolicy(max_attempts=3, initial_delay_ms=60_000)  # a minute between attempts
    try:
        out = await ctx.remote_task("score", {"x": x}, queue="scoring", retry_policy=policy)
    except RemoteTaskError as exc:
        return ctx.next.complete({"error": exc.error_type, "attempt": exc.attempt})
    return ctx.next.complete(out)


async def test_remote_tasks_are_answered_by_the_environments_task_handlers() -> None:
    calls: list[int] = []

    async def score(payload: dict[str, Any]) -> int:
        calls.append(payload["x"])
        if len(calls) < 2:
            raise RuntimeError("busy")  # retried after the policy's minute, on the virtual clock
        return payload["x"] * 10

    async with WorkflowEnvironment([remote_wf], task_handlers={"score": score}) as env:
        assert await asyncio.wait_for(env.client.run_workflow("RemoteInProcess", "r1", {"x": 4}), 10) == 40
        assert calls == [4, 4]
        kinds = [str(e.kind) for e in await env.history("r1")]
        assert kinds.count("task.attempt_failed") == 1 and kinds.count("task.completed") == 1
    async with WorkflowEnvironment([remote_wf], task_handlers={"other": score}) as env:
        result = await asyncio.wait_for(env.client.run_workflow("RemoteInProcess", "r2", {"x": 4}), 10)
        assert result == {"error": "UnknownTask", "attempt": 1}


limited_wf = Workflow(workflow_type="LimitedInProcess")


@limited_wf.start()
async def limited_start(ctx: Context, n: int) -> Directive:
    async with ctx.limit("slow-api", key=f"k{n % 2}"):
        at = await ctx.now()
    return ctx.next.complete(at.isoformat())


async def test_a_rate_limit_runs_on_the_skipping_clock_and_a_crash_keeps_the_permit_counted_once() -> None:
    from grctl import Limiter

    start = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    async with WorkflowEnvironment([limited_wf], limiters=[Limiter("slow-api", rate="1/min")], start_time=start) as env:
        env.crash_next_step()  # the first step that finishes re-runs from its journal: its permit holds once
        handles = [await env.client.start_workflow("LimitedInProcess", f"l{i}", {"n": i}) for i in range(3)]
        ends = sorted([await asyncio.wait_for(h.result(), 10) for h in handles])
        # One permit a minute on the environment's clock: three runs take two virtual minutes, no real one.
        assert [datetime.fromisoformat(e) - start for e in ends] == [timedelta(0), timedelta(minutes=1),
                                                                     timedelta(minutes=2)]  # fmt: skip
        assert env.crashes == 1
        d = await env.client.describe_limiter("slow-api")
        assert (d.in_use, d.waiting, d.granted, d.released) == (0, 0, 3, 3)
