"""Rebalances with the KIP-848 group protocol: a worker joining stops only the partitions it takes.

Worker A owns every partition of the namespace, with runs going through; worker B joins. A's
owned partitions are sampled on the event loop all along. With `group_protocol="consumer"` the
partitions A keeps never leave it (only the ones B takes are revoked); with the classic eager
protocol A gives up everything at once (the sampler sees it own nothing), which is what the new
protocol removes. Every run completes either way.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from grctl import Client, Connection, Context, Directive, Worker, Workflow
from grctl.errors import InvalidArgumentError
from tests.conftest import WorkerRunner
from tests.support.wait import wait_until_async

pytestmark = pytest.mark.kafka

hop = Workflow(workflow_type="Hop")


@hop.start()
async def hop_start(ctx: Context, n: int) -> Directive:
    if n <= 0:
        return ctx.next.complete("done")
    ctx.store.put("n", n - 1)
    return ctx.next.step(hop_again)


@hop.step()
async def hop_again(ctx: Context) -> Directive:
    n = await ctx.store.get("n")
    if n <= 0:
        return ctx.next.complete("done")
    ctx.store.put("n", n - 1)
    return ctx.next.step(hop_again)


def owned(worker: Worker) -> frozenset[int]:
    session = worker.session
    return frozenset(session.partitions.processors) if session is not None else frozenset()


@pytest.mark.parametrize("protocol", ["consumer", "classic"])
async def test_a_joining_worker_stops_only_the_partitions_it_takes(
    protocol: str, connection: Connection, client: Client, workers: WorkerRunner
) -> None:
    every = frozenset(range(connection.num_partitions))
    a = await workers.start([hop], group_protocol=protocol)

    async def a_owns_all() -> bool:
        return owned(a) == every

    await wait_until_async("worker A owns every partition", a_owns_all, 60)
    samples: list[frozenset[int]] = []
    sampling = True

    async def sample() -> None:
        while sampling:
            samples.append(owned(a))
            await asyncio.sleep(0.005)  # the sampling interval, not a synchronisation

    sampler = asyncio.create_task(sample())
    handles = [await client.start_workflow("Hop", f"hop-{protocol}-{i}", 200) for i in range(40)]
    b = await workers.start([hop], group_protocol=protocol)

    async def shared() -> bool:
        mine, theirs = owned(a), owned(b)
        return bool(mine) and bool(theirs) and mine | theirs == every and not mine & theirs

    await wait_until_async("A and B share the partitions", shared, 90, seen=lambda: (owned(a), owned(b)))
    sampling = False
    await sampler
    kept = owned(a)
    assert kept and samples
    if protocol == "consumer":
        # Only the partitions B took were revoked: A never stopped one it kept.
        assert all(kept <= s for s in samples), sorted(min(samples, key=len))
    else:
        assert any(not s for s in samples)  # eager: every partition stopped at once
    results = await asyncio.gather(*(h.result(timeout=120) for h in handles))
    assert results == ["done"] * len(handles)


def test_an_unknown_group_protocol_is_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="group_protocol must be one of classic, consumer"):
        Worker([hop], group_protocol="cooperative")


async def test_a_fatal_consumer_error_restarts_the_session_instead_of_stalling_it(
    connection: Connection, workers: WorkerRunner, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """librdkafka reports a fatal error as code _FATAL with `fatal()` false: the session must end.

    Two workers forced onto one static instance id (KIP-848 refuses the second one's id while
    the first holds it: UNRELEASED_INSTANCE_ID, fatal). The second must keep restarting its
    session, and join once the first has left; it stalled for good before.
    """
    same_id = {"consumer": {"group.instance.id": f"dup-{connection.namespace}"}}
    a = await workers.start([hop], group_protocol="consumer", kafka_config=same_id)
    b = Worker([hop], connection, state_dir=tmp_path / "b", group_protocol="consumer", kafka_config=same_id)
    task = asyncio.create_task(b.run())
    try:

        async def restarted() -> bool:
            return _logged(caplog, "session restarts in")

        await wait_until_async("the second worker's session restarted after the fatal error", restarted, 60)
        assert _logged(caplog, "instance ID is still used")
        await a.stop(shutdown_timeout=1)
        await b.wait_until_ready(60)  # it joined once the first member left
        assert b.session is not None and owned(b) == frozenset(range(connection.num_partitions))
    finally:
        await b.stop(shutdown_timeout=1)
        await asyncio.wait_for(task, 30)


def _logged(caplog: pytest.LogCaptureFixture, text: str) -> bool:
    return any(text in r.getMessage() for r in caplog.records)
