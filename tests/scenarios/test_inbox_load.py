"""Inbox under load: 1,000 events sent to one run while its steps run, each handled once, in order."""

from __future__ import annotations

import asyncio

import pytest

from grctl import Client, Context, Directive, Workflow

pytestmark = pytest.mark.kafka

EVENTS = 1000

wf = Workflow(workflow_type="InboxLoad")


@wf.start()
async def start(ctx: Context) -> Directive:
    ctx.store.put("seen", [])
    return ctx.next.wait()


@wf.event()
async def item(ctx: Context, n: int) -> Directive:
    seen = await ctx.store.get("seen", list[int])
    seen.append(n)
    ctx.store.put("seen", seen)
    if len(seen) == EVENTS:
        return ctx.next.complete(seen)
    return ctx.next.wait()


async def test_inbox_1000_events_handled_once_in_order(workers, client: Client) -> None:
    await workers.start([wf])
    handle = await client.start_workflow("InboxLoad", "inbox-1")
    await asyncio.gather(*(handle.send("item", {"n": i}) for i in range(EVENTS)))
    assert await handle.result(timeout=240) == list(range(EVENTS))
