"""`@wf.query` handlers answered by the owning worker from committed state (spec README rule 3)."""

from __future__ import annotations

import pytest

from grctl import Client, Context, Directive, Workflow
from grctl.client import WorkflowError, WorkflowNotFoundError
from grctl.models import HistoryKind
from grctl.worker.context import QueryContext
from tests.scenarios.support import count_of, wait_for_history, wait_for_kind

pytestmark = pytest.mark.kafka

wf = Workflow(workflow_type="Queried")


@wf.start()
async def start(ctx: Context) -> Directive:
    ctx.store.put("count", 1)
    return ctx.next.wait()


@wf.event()
async def bump(ctx: Context) -> Directive:
    ctx.store.put("count", await ctx.store.get("count", int) + 1)
    return ctx.next.wait()


@wf.query()
async def count(ctx: QueryContext) -> int:
    return await ctx.store.get("count", int)


@wf.query("times")
async def times(ctx: QueryContext, factor: int) -> int:
    return factor * await ctx.store.get("count", int)


@wf.query()
async def writes(ctx: QueryContext) -> None:
    ctx.store.put("count", 0)  # type: ignore[attr-defined]


async def test_query_reads_committed_store(workers, client: Client) -> None:
    await workers.start([wf])
    handle = await client.start_workflow("Queried", "q1")
    await wait_for_kind(client, handle, HistoryKind.wait_started)  # the start step has committed
    assert await handle.query("count") == 1
    await handle.send("bump")
    await wait_for_history(client, handle, count_of(HistoryKind.wait_started, 2))
    assert await handle.query("count") == 2
    assert await handle.query("times", {"factor": 10}) == 20


async def test_query_errors(workers, client: Client) -> None:
    await workers.start([wf])
    handle = await client.start_workflow("Queried", "q2")
    await wait_for_kind(client, handle, HistoryKind.wait_started)
    with pytest.raises(WorkflowError, match="has no query 'nope'"):
        await handle.query("nope")
    with pytest.raises(WorkflowError, match="read-only"):
        await handle.query("writes")
    with pytest.raises(WorkflowNotFoundError):
        await client.query("no-such-run", "count")
