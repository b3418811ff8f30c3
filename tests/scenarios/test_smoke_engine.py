"""End-to-end smoke test of the engine on the real broker: a two-step run with a store."""

from __future__ import annotations

import pytest

from grctl import Client, Context, Directive, Workflow
from grctl.models import HistoryKind

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
