"""Limiters end to end (issue 29): `ctx.limit` sections against limiters kept by a real worker on a real broker.

Each test has its own namespace (the `connection` fixture). The limited steps hold their section
open on an in-process gate the test opens, so "how many are inside at once" is observed, not timed.
"""

from __future__ import annotations

import asyncio
import itertools
import urllib.request
from collections import defaultdict
from typing import Any

import pytest

from grctl import Client, Context, Directive, Limiter, Workflow, WorkflowError
from grctl.errors import InvalidArgumentError, LimiterInUseError, LimiterNotFoundError
from grctl.models import HistoryKind
from grctl.models.run_info import RunStatus
from grctl.testing import Replayer

pytestmark = pytest.mark.kafka

wf = Workflow(workflow_type="Limited")

#: Runs inside a limited section now, by limiter; the most ever inside at once.
inside: dict[str, int] = defaultdict(int)
most: dict[str, int] = defaultdict(int)
entered: list[str] = []
gates: dict[str, asyncio.Event] = {}


def gate(wf_id: str) -> asyncio.Event:
    if wf_id not in gates:
        gates[wf_id] = asyncio.Event()
    return gates[wf_id]


@pytest.fixture(autouse=True)
def _reset() -> None:
    inside.clear()
    most.clear()
    entered.clear()
    gates.clear()


@wf.start()
async def start(ctx: Context, req: dict[str, Any]) -> Directive:
    limiter = req["limiter"]
    async with ctx.limit(limiter, key=req.get("key"), fairness=req.get("fairness"), priority=req.get("priority")):
        inside[limiter] += 1
        most[limiter] = max(most[limiter], inside[limiter])
        entered.append(ctx.run.wf_id)
        try:
            await gate(ctx.run.wf_id).wait()
        finally:
            inside[limiter] -= 1
        if req.get("fail"):
            raise RuntimeError("the downstream call failed")
    return ctx.next.complete("done")


@wf.step()
async def unused(ctx: Context) -> Directive:
    return ctx.next.complete(None)


async def until(what: str, check: Any, timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        assert loop.time() < deadline, f"timed out after {timeout:.0f}s waiting until {what}"
        await asyncio.sleep(0.05)


async def start_runs(client: Client, ids: list[str], limiter: str, **kw: Any) -> list[Any]:
    return [await client.start_workflow("Limited", i, {"limiter": limiter, **kw}) for i in ids]


async def test_concurrency_holds_across_runs_and_every_permit_comes_back(workers: Any, client: Client) -> None:
    worker = await workers.start([wf], metrics_port=0)
    await client.set_limiter("api", concurrency=2)
    ids = [f"c{i}" for i in range(8)]
    handles = await start_runs(client, ids, "api")

    async def two_inside_six_waiting() -> bool:
        d = await client.describe_limiter("api")
        return inside["api"] == 2 and d.in_use == 2 and d.waiting == 6

    await until("2 runs are inside and 6 wait", two_inside_six_waiting)
    waiting = next(i for i in ids if i not in entered)
    info = await client.describe(waiting)
    assert info.permits is not None and info.permits["waiting_for"]["limiter"] == "api"
    assert isinstance(info.permits["waiting_for"]["position"], int)
    for i in ids:  # open the gates in order: each release lets the next one in
        gates.setdefault(i, asyncio.Event()).set()
    assert [await h.result(timeout=60) for h in handles] == ["done"] * 8
    assert most["api"] == 2
    d = await client.describe_limiter("api")
    assert (d.in_use, d.waiting, d.granted, d.released) == (0, 0, 8, 8)
    events = await client.get_history("c0")
    kinds = [e.kind for e in events]
    assert kinds.index(HistoryKind.permit_requested) < kinds.index(HistoryKind.permit_granted)
    assert kinds.index(HistoryKind.permit_released) < kinds.index(HistoryKind.run_completed)
    # The worker that keeps the limiter exports it.
    assert worker.metrics_address is not None
    url = f"http://127.0.0.1:{worker.metrics_address[1]}/metrics"
    text = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read().decode())
    assert 'grctl_limiter_grants_total{limiter="api"} 8.0' in text
    assert 'grctl_limiter_releases_total{limiter="api"} 8.0' in text
    assert 'grctl_limiter_in_use{limiter="api"} 0.0' in text
    assert 'grctl_limiter_concurrency_limit{limiter="api"} 2.0' in text
    assert "grctl_limiter_wait_seconds_count 8.0" in text
    # The replayer places the grant at its journal position: the run replays.
    replayed = Replayer([wf]).replay(events)
    assert replayed.ok, replayed.divergence


async def test_cancel_terminate_and_a_failing_section_give_their_permits_back(workers: Any, client: Client) -> None:
    await workers.start([wf])
    await client.set_limiter("api", concurrency=1)
    holder, *_ = await start_runs(client, ["holder"], "api")
    await until("the holder is inside", lambda: _true(inside["api"] == 1))
    waiting = []
    for n, (i, fail) in enumerate([("w1", False), ("w2", True), ("w3", False)], start=1):
        # One at a time, so that the limiter hears them in this order (they are on other partitions).
        waiting += await start_runs(client, [i], "api", fail=fail)
        await until(f"{n} wait", lambda n=n: _waiting(client, "api", n))
    # A waiting run cancelled: its request leaves the queue (it never enters).
    await client.cancel_run("w1", reason="not needed")
    await until("2 wait", lambda: _waiting(client, "api", 2))
    # The holder terminated (its step is still inside): the engine gives the permit back.
    await client.cancel_run("holder", reason="stuck", terminate=True)
    await until("w2 is inside", lambda: _true("w2" in entered))
    # w2's section fails: the step fails, and its permit comes back with that outcome.
    gate("w2").set()
    with pytest.raises(WorkflowError, match="downstream call failed"):
        await waiting[1].result(timeout=30)
    gate("w3").set()
    assert await waiting[2].result(timeout=30) == "done"
    assert "w1" not in entered
    d = await client.describe_limiter("api")
    assert (d.in_use, d.waiting) == (0, 0)
    assert (await client.describe("holder")).status == RunStatus.terminated
    assert (await client.describe("w1")).status == RunStatus.cancelled
    assert holder.run_info.wf_id == "holder"


async def test_changing_the_limit_at_runtime_lets_waiting_runs_in(workers: Any, client: Client) -> None:
    await workers.start([wf])
    await client.set_limiter("api", concurrency=1)
    await start_runs(client, [f"r{i}" for i in range(4)], "api")
    await until("1 inside, 3 waiting", lambda: _waiting(client, "api", 3))
    described = await client.set_limiter("api", concurrency=3)
    assert described.spec.concurrency == 3
    await until("3 inside", lambda: _true(inside["api"] == 3))
    for i in range(4):
        gate(f"r{i}").set()
    await until("all released", lambda: _idle(client, "api"))
    assert most["api"] == 3


async def test_a_better_priority_is_served_first(workers: Any, client: Client) -> None:
    await workers.start([wf])
    await client.set_limiter("api", concurrency=1)
    await start_runs(client, ["busy"], "api")
    await until("busy is inside", lambda: _true(inside["api"] == 1))
    for i in range(3):
        await start_runs(client, [f"low{i}"], "api", priority=5)
        await until(f"{i + 1} wait", lambda i=i: _waiting(client, "api", i + 1))
    await client.start_workflow("Limited", "urgent", {"limiter": "api"}, priority=1)
    await until("4 wait", lambda: _waiting(client, "api", 4))
    for name in ["busy", "urgent", "low0", "low1", "low2"]:
        gate(name).set()
    await until("all released", lambda: _idle(client, "api"))
    assert entered == ["busy", "urgent", "low0", "low1", "low2"]


async def test_a_rate_spaces_the_grants_by_the_limiter_s_own_clock(workers: Any, client: Client) -> None:
    await workers.start([wf])
    await client.set_limiter("slow", rate="5/s", burst=1)
    handles = await start_runs(client, [f"s{i}" for i in range(5)], "slow")
    for i in range(5):
        gate(f"s{i}").set()
    assert [await h.result(timeout=60) for h in handles] == ["done"] * 5
    granted = []
    for i in range(5):
        events = await client.get_history(f"s{i}")
        (g,) = [e for e in events if e.kind == HistoryKind.permit_granted]
        granted.append(g.msg.granted_ms)  # type: ignore[attr-defined]
    granted.sort()
    # One permit per 200 ms after the bucket's one: the limiter never grants sooner (its timer).
    assert all(b - a >= 200 for a, b in itertools.pairwise(granted)), granted


async def test_an_unknown_limiter_fails_the_step_with_a_clear_error(workers: Any, client: Client) -> None:
    await workers.start([wf])
    h = await client.start_workflow("Limited", "u1", {"limiter": "nope"})
    with pytest.raises(WorkflowError) as info:
        await h.result(timeout=30)
    assert info.value.error_type == "LimiterNotFoundError"
    assert "grctl limiter set nope" in str(info.value)
    with pytest.raises(LimiterNotFoundError):
        await client.describe_limiter("nope")


async def test_declared_limiters_are_created_and_runtime_changes_stand(workers: Any, client: Client) -> None:
    await workers.start([wf], limiters=[Limiter("declared", concurrency=4, rate="100/s")])
    await until("the declaration is applied", lambda: _exists(client, "declared"))
    assert (await client.describe_limiter("declared")).spec.concurrency == 4
    await client.set_limiter("declared", concurrency=2, rate="100/s")
    await workers.start([wf], limiters=[Limiter("declared", concurrency=4, rate="100/s")])  # a second worker
    listed = await client.list_limiters()
    assert [(d.name, d.spec.concurrency, d.rate) for d in listed] == [("declared", 2, "100/s")]


async def test_bad_limiter_input_is_refused_before_anything_is_sent(workers: Any, client: Client) -> None:
    await workers.start([wf])
    with pytest.raises(InvalidArgumentError, match="a whole number from 1 to"):
        await client.set_limiter("api", concurrency=0)
    with pytest.raises(InvalidArgumentError, match="rate must look like"):
        await client.set_limiter("api", rate="fast")
    with pytest.raises(InvalidArgumentError, match="needs a concurrency, a rate or a per-key limit"):
        await client.set_limiter("api")
    with pytest.raises(LimiterNotFoundError):
        await client.delete_limiter("api")
    await client.set_limiter("api", concurrency=1)
    await start_runs(client, ["d0"], "api")
    await until("d0 is inside", lambda: _true(inside["api"] == 1))
    with pytest.raises(LimiterInUseError, match="1 permits held"):
        await client.delete_limiter("api")
    gate("d0").set()
    await until("released", lambda: _idle(client, "api"))
    await client.delete_limiter("api")
    assert await client.list_limiters() == []


async def _true(value: bool) -> bool:
    return value


async def _waiting(client: Client, name: str, n: int) -> bool:
    return (await client.describe_limiter(name)).waiting == n


async def _idle(client: Client, name: str) -> bool:
    d = await client.describe_limiter(name)
    return d.in_use == 0 and d.waiting == 0


async def _exists(client: Client, name: str) -> bool:
    try:
        await client.describe_limiter(name)
    except LimiterNotFoundError:
        return False
    return True
