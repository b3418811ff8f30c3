"""OpenTelemetry traces of runs, recorded by the real SDK into its in-memory exporter.

A client starts a parent run; its step calls a task that fails once and then succeeds, and
starts a child. Every span must be in the client's trace, the steps children of the start
span, the task attempts children of their step, the child's steps children of the step that
started it, and each run must have its `grctl.run` span with its status.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from grctl import Client, Context, Directive, RetryPolicy, Workflow, tracing
from grctl.worker import task
from tests.support.wait import wait_until_async

pytestmark = pytest.mark.kafka

parent = Workflow(workflow_type="TracedParent")
child = Workflow(workflow_type="TracedChild")
attempts: dict[str, int] = {}


@task(retry_policy=RetryPolicy(max_attempts=3, initial_delay_ms=10))
async def flaky(key: str) -> str:
    attempts[key] = attempts.get(key, 0) + 1
    if attempts[key] == 1:
        raise ConnectionError("first attempt fails")
    return "ok"


@parent.start()
async def parent_start(ctx: Context, key: str) -> Directive:
    await flaky(key)
    result = await ctx.run_child("TracedChild", f"{key}-child", {"n": 2})
    return ctx.next.step(finish) if result == 4 else ctx.next.fail(RuntimeError("bad child result"))


@parent.step()
async def finish(ctx: Context) -> Directive:
    return ctx.next.complete("parent done")


@child.start()
async def child_start(ctx: Context, n: int) -> Directive:
    return ctx.next.complete(2 * n)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.enable(provider)
    try:
        yield exporter
    finally:
        tracing.disable()
        provider.shutdown()


async def test_a_run_with_a_task_and_a_child_is_one_trace(spans: InMemorySpanExporter, workers, client: Client) -> None:
    await workers.start([parent, child])
    handle = await client.start_workflow("TracedParent", "traced-1", {"key": "traced-1"})
    assert await handle.result(timeout=30) == "parent done"

    def by_name() -> dict[str, list[ReadableSpan]]:
        out: dict[str, list[ReadableSpan]] = {}
        for s in spans.get_finished_spans():
            out.setdefault(s.name, []).append(s)
        return out

    async def both_runs_ended() -> dict[str, list[ReadableSpan]] | None:
        got = by_name()
        return got if "grctl.run TracedParent" in got and "grctl.run TracedChild" in got else None

    got = await wait_until_async("both run spans are exported", both_runs_ended, 15, seen=lambda: sorted(by_name()))
    assert got is not None
    (start,) = got["grctl.start TracedParent"]
    trace_id = start.context.trace_id
    assert {s.context.trace_id for s in spans.get_finished_spans()} == {trace_id}, "one trace for everything"

    parent_steps = {
        s.attributes["grctl.step"]: s
        for s in got["grctl.step TracedParent.start"] + got["grctl.step TracedParent.finish"]
    }
    assert set(parent_steps) == {"start", "finish"}
    for step in parent_steps.values():
        assert step.parent is not None and step.parent.span_id == start.context.span_id
        assert step.attributes["grctl.wf_id"] == "traced-1"
    first_step = parent_steps["start"]

    task_attempts = sorted(got["grctl.task flaky"], key=lambda s: s.attributes["grctl.task_attempt"])
    assert [s.attributes["grctl.task_attempt"] for s in task_attempts] == [1, 2]
    assert all(s.parent is not None and s.parent.span_id == first_step.context.span_id for s in task_attempts)
    assert task_attempts[0].status.status_code == StatusCode.ERROR
    assert any(e.name == "exception" for e in task_attempts[0].events)
    assert task_attempts[1].status.status_code != StatusCode.ERROR

    (child_step,) = got["grctl.step TracedChild.start"]
    assert child_step.parent is not None and child_step.parent.span_id == first_step.context.span_id
    assert child_step.attributes["grctl.wf_id"] == "traced-1-child"

    (parent_run,) = got["grctl.run TracedParent"]
    assert parent_run.attributes["grctl.status"] == "completed"
    assert parent_run.parent is not None and parent_run.parent.span_id == start.context.span_id
    assert parent_run.start_time is not None and parent_run.end_time is not None
    assert parent_run.start_time <= first_step.start_time
    (child_run,) = got["grctl.run TracedChild"]
    assert child_run.parent is not None and child_run.parent.span_id == first_step.context.span_id


async def test_a_failed_step_marks_its_span_and_its_run_span(
    spans: InMemorySpanExporter, workers, client: Client
) -> None:
    failing = Workflow(workflow_type="TracedFailing")

    @failing.start()
    async def start(ctx: Context) -> Directive:
        raise ValueError("no such order")

    await workers.start([failing])
    handle = await client.start_workflow("TracedFailing", "traced-fail", {})
    with pytest.raises(Exception, match="no such order"):
        await handle.result(timeout=30)

    async def run_span() -> list[ReadableSpan] | None:
        found = [s for s in spans.get_finished_spans() if s.name == "grctl.run TracedFailing"]
        return found or None

    (run,) = await wait_until_async("the run span is exported", run_span, 15)  # type: ignore[misc]
    assert run.status.status_code == StatusCode.ERROR and "no such order" in (run.status.description or "")
    (step,) = [s for s in spans.get_finished_spans() if s.name == "grctl.step TracedFailing.start"]
    assert step.status.status_code == StatusCode.ERROR
    assert step.attributes["grctl.step_outcome"] == "error"
