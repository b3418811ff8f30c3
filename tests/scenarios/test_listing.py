"""Listing runs from the workers' run indexes (issue "Run for weeks"): filters, paging, counts.

`Client.list_workflows` asks every partition's owner for a page of its index and merges them;
nothing reads the state topic.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from grctl import Client, Context, Directive, Workflow
from grctl.errors import InvalidArgumentError
from grctl.kafka.connection import Connection
from grctl.kafka.partitioner import partition_for
from tests.conftest import WorkerRunner

pytestmark = pytest.mark.kafka

done_wf = Workflow(workflow_type="Done")
open_wf = Workflow(workflow_type="Open")


@done_wf.start()
async def done_start(ctx: Context, n: int) -> Directive:
    return ctx.next.complete(n)


@open_wf.start()
async def open_start(ctx: Context, n: int) -> Directive:
    return ctx.next.wait()


@open_wf.event()
async def close(ctx: Context) -> Directive:
    return ctx.next.complete("closed")


WORKFLOWS = [done_wf, open_wf]


async def seed(client: Client, done: int, waiting: int) -> None:
    handles = [await client.start_workflow("Done", f"d-{i:03d}", {"n": i}) for i in range(done)]
    for h in handles:
        await h.result(timeout=30)
    for i in range(waiting):
        await client.start_workflow("Open", f"o-{i:03d}", {"n": i})


async def all_pages(client: Client, **kw: object) -> list[str]:
    seen: list[str] = []
    token = None
    while True:
        page = await client.list_workflows(page_token=token, **kw)  # type: ignore[arg-type]
        assert page.unavailable_partitions == []
        seen += [r.wf_id for r in page.runs]
        token = page.next_page_token
        if token is None:
            return seen


async def test_filters_paging_and_counts(workers: WorkerRunner, client: Client) -> None:
    await workers.start(WORKFLOWS)
    await seed(client, done=30, waiting=12)
    first = await client.list_workflows(limit=10, counts=True)
    assert len(first.runs) == 10 and first.next_page_token is not None
    assert first.counts == {"completed": {"Done": 30}, "running": {"Open": 12}}
    started = [r.started_at for r in first.runs]
    assert started == sorted(started, reverse=True)  # newest first
    everything = await all_pages(client, limit=7)
    assert sorted(everything) == sorted([f"d-{i:03d}" for i in range(30)] + [f"o-{i:03d}" for i in range(12)])
    assert len(everything) == len(set(everything))  # paging across partitions: no run twice, none missed
    running = await all_pages(client, status="running", limit=5)
    assert sorted(running) == [f"o-{i:03d}" for i in range(12)]
    by_type = await all_pages(client, workflow_type="Done", limit=50)
    assert len(by_type) == 30
    assert await all_pages(client, text="o-00") == [f"o-00{i}" for i in range(9, -1, -1)]
    later = await client.list_workflows(started_after=datetime.now(UTC) + timedelta(hours=1))
    assert later.runs == [] and later.next_page_token is None
    # A run that ends moves from one status to the other, in the index and in the counts.
    await client.send_event("o-000", "close")
    await (await client.get_workflow_handle("o-000")).result(timeout=30)
    page = await client.list_workflows(status=["running"], limit=50, counts=True)
    assert "o-000" not in [r.wf_id for r in page.runs]
    assert page.counts == {"completed": {"Done": 30, "Open": 1}, "running": {"Open": 11}}


async def test_bad_input_is_a_clear_error(workers: WorkerRunner, client: Client, connection: Connection) -> None:
    await workers.start(WORKFLOWS)
    await seed(client, done=3, waiting=0)
    with pytest.raises(InvalidArgumentError, match="unknown run status 'runing'"):
        await client.list_workflows(status="runing")
    with pytest.raises(InvalidArgumentError, match="limit must be an int from 1 to 1000"):
        await client.list_workflows(limit=0)
    with pytest.raises(InvalidArgumentError, match="not a page token"):
        await client.list_workflows(page_token="garbage!")
    with pytest.raises(InvalidArgumentError, match="aware datetime"):
        await client.list_workflows(started_after=datetime.now())  # naive on purpose
    token = (await client.list_workflows(limit=1)).next_page_token
    assert token is not None
    with pytest.raises(InvalidArgumentError, match="other filters"):
        await client.list_workflows(limit=1, page_token=token, status="failed")
    other_ns = await Connection.connect(connection.servers, connection.namespace + "x", partitions=4)
    other = Client(other_ns)
    try:
        with pytest.raises(InvalidArgumentError, match=f"namespace {connection.namespace!r}"):
            await other.list_workflows(limit=1, page_token=token)
    finally:
        await other.close()


async def test_a_listing_during_a_rebalance_never_silently_misses_a_partition(
    workers: WorkerRunner, client: Client
) -> None:
    await workers.start(WORKFLOWS)
    await seed(client, done=20, waiting=0)
    second = asyncio.create_task(workers.start(WORKFLOWS))  # the group rebalances: partitions move
    pages = []
    while not second.done():
        pages.append(await client.list_workflows(limit=100, timeout=5))
    await second
    pages.append(await client.list_workflows(limit=100, timeout=30))
    parts = client.connection.num_partitions
    every = [f"d-{i:03d}" for i in range(20)]
    for page in pages:
        # Each page has every run of the partitions it asked, and names the ones it could not:
        # a page naming an unavailable partition is still checked for all the others.
        missing = set(page.unavailable_partitions)
        assert missing <= set(range(parts)), page.unavailable_partitions
        expected = [w for w in every if partition_for(w, parts) not in missing]
        assert sorted(r.wf_id for r in page.runs) == expected, f"unavailable: {sorted(missing)}"
    assert not pages[-1].unavailable_partitions
    assert sorted(r.wf_id for r in pages[-1].runs) == every
