"""End-to-end smoke test of the engine on the real broker: a two-step run with a store."""

from __future__ import annotations

import gc

import pytest

from grctl import Client, Context, Directive, Workflow
from grctl.models import HistoryKind
from grctl.worker import gc_tuning

pytestmark = pytest.mark.kafka

wf = Workflow(workflow_type="Smoke")


@wf.start()
async def start(ctx: Context, name: str) -> Directive:
    ctx.store.put("name", name)
    return ctx.next.step(greet)


@wf.step()
async def greet(ctx: Context) -> Directive:
    return ctx.next.complete(f"Hello, {await ctx.store.get('name')}!")


async def test_two_step_run_completes_with_store(workers, client: Client) -> None:
    await workers.start([wf])
    assert await client.run_workflow("Smoke", "smoke-1", {"name": "World"}) == "Hello, World!"
    kinds = [e.kind for e in await client.get_history("smoke-1")]
    assert kinds == [
        HistoryKind.run_started,
        HistoryKind.step_started,
        HistoryKind.step_completed,
        HistoryKind.step_started,
        HistoryKind.step_completed,
        HistoryKind.run_completed,
    ]


async def test_a_running_worker_tunes_the_collector_and_puts_it_back_when_it_stops(
    workers, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GRCTL_GC", raising=False)
    before = gc.get_threshold()
    assert before != gc_tuning.THRESHOLDS, "another worker of this process still runs"
    await workers.start([wf])
    assert gc.get_threshold() == gc_tuning.THRESHOLDS
    assert await client.run_workflow("Smoke", "smoke-gc", {"name": "GC"}) == "Hello, GC!"
    await workers.stop_all()
    assert gc.get_threshold() == before
