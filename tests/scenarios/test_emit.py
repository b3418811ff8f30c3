"""Publishing to topics from steps (`ctx.emit`) and results topics (issue 17, parts 2 and 3).

Emitted records and results records are produced in the transaction that commits the step (or
ends the run), so a `read_committed` reader sees exactly one per committed step; a step that
raises published nothing. A missing topic or an oversized record fails that step's run with a
clear error and the worker goes on. (Exactly once across SIGKILLs: tests/crash.)
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator

import pytest
from confluent_kafka.admin import AdminClient

from grctl import Client, Context, Directive, Workflow
from grctl.errors import EmitTopicNotFoundError, WorkflowError
from tests.conftest import WorkerRunner
from tests.support.topics import create_topic, read_committed

pytestmark = pytest.mark.kafka

RUNS = 30


@pytest.fixture
def topics(kafka_bootstrap: str, unique_name: str) -> Iterator[dict[str, str]]:
    """Two topics of the test's own: shipments (3 partitions) and results (1), deleted after it."""
    names = {"shipments": f"{unique_name}-shipments", "results": f"{unique_name}-results",
             "small": f"{unique_name}-small"}  # fmt: skip
    create_topic(kafka_bootstrap, names["shipments"], partitions=3)
    create_topic(kafka_bootstrap, names["results"])
    create_topic(kafka_bootstrap, names["small"], config={"max.message.bytes": "4096"})
    yield names
    AdminClient({"bootstrap.servers": kafka_bootstrap}).delete_topics(list(names.values()))


def shipping(topics: dict[str, str]) -> Workflow:
    wf = Workflow(workflow_type="Ship", results_topic=topics["results"])

    @wf.start()
    async def start(ctx: Context, order: str, items: int) -> Directive:
        for i in range(items):
            ctx.emit(topics["shipments"], {"order": order, "item": i}, key=order, headers={"kind": "item"})
        ctx.store.put("items", items)
        return ctx.next.step(finish)

    @wf.step()
    async def finish(ctx: Context) -> Directive:
        order = ctx.run.wf_id
        if order.startswith("bad-"):
            ctx.emit(topics["shipments"], {"order": order, "item": "never"}, key=order)
            raise ValueError("refused after emitting")
        if order.startswith("missing-"):
            ctx.emit("no-such-topic-" + order, {"order": order})
        if order.startswith("big-"):
            ctx.emit(topics["small"], "x" * 10_000, format="raw")
        ctx.emit(topics["shipments"], {"order": order, "item": "done"}, key=order, format="json")
        return ctx.next.complete({"shipped": await ctx.store.get("items")})

    return wf


def values(servers: str, topic: str, partitions: int) -> list[dict[str, object]]:
    return [json.loads(m.value()) for m in read_committed(servers, topic, range(partitions))]


async def test_emits_and_results_are_committed_once_per_step_and_run(
    kafka_bootstrap: str, topics: dict[str, str], workers: WorkerRunner, client: Client
) -> None:
    await workers.start([shipping(topics)])
    handles = [
        await client.start_workflow("Ship", f"order-{i}", {"order": f"order-{i}", "items": i % 3}) for i in range(RUNS)
    ]
    assert [await h.result(timeout=60) for h in handles] == [{"shipped": i % 3} for i in range(RUNS)]
    shipped = Counter((v["order"], v["item"]) for v in values(kafka_bootstrap, topics["shipments"], 3))
    expected = {(f"order-{i}", item) for i in range(RUNS) for item in [*range(i % 3), "done"]}
    assert set(shipped) == expected and set(shipped.values()) == {1}
    results = values(kafka_bootstrap, topics["results"], 1)
    assert sorted(r["wf_id"] for r in results) == sorted(f"order-{i}" for i in range(RUNS))
    first = next(r for r in results if r["wf_id"] == "order-2")
    assert first["status"] == "completed" and first["result"] == {"shipped": 2} and first["wf_type"] == "Ship"
    assert first["ended_ms"] >= first["started_ms"]


async def test_a_step_that_raises_publishes_nothing_and_its_failure_is_a_result(
    kafka_bootstrap: str, topics: dict[str, str], workers: WorkerRunner, client: Client
) -> None:
    await workers.start([shipping(topics)])
    bad = await client.start_workflow("Ship", "bad-1", {"order": "bad-1", "items": 2})
    good = await client.start_workflow("Ship", "order-ok", {"order": "order-ok", "items": 0})
    with pytest.raises(WorkflowError, match="refused after emitting"):
        await bad.result(timeout=60)
    assert await good.result(timeout=60) == {"shipped": 0}
    shipped = {(v["order"], v["item"]) for v in values(kafka_bootstrap, topics["shipments"], 3)}
    # The start step committed its two items; the failed step's emit never became visible.
    assert shipped == {("bad-1", 0), ("bad-1", 1), ("order-ok", "done")}
    (failed,) = [r for r in values(kafka_bootstrap, topics["results"], 1) if r["wf_id"] == "bad-1"]
    assert failed["status"] == "failed" and "refused after emitting" in json.dumps(failed["error"])


async def test_a_missing_topic_or_an_oversized_record_fails_that_run_only(
    kafka_bootstrap: str, topics: dict[str, str], workers: WorkerRunner, client: Client
) -> None:
    await workers.start([shipping(topics)])
    missing = await client.start_workflow("Ship", "missing-1", {"order": "missing-1", "items": 0})
    big = await client.start_workflow("Ship", "big-1", {"order": "big-1", "items": 0})
    ok = [await client.start_workflow("Ship", f"order-{i}", {"order": f"order-{i}", "items": 1}) for i in range(10)]
    with pytest.raises(WorkflowError, match=r"EmitTopicNotFoundError|cannot emit to topic 'no-such-topic-missing-1'"):
        await missing.result(timeout=60)
    with pytest.raises(WorkflowError, match=r"a record emitted to '.*-small' of workflow id 'big-1' is 10,\d{3} bytes"):
        await big.result(timeout=60)
    assert [await h.result(timeout=60) for h in ok] == [{"shipped": 1}] * 10


async def test_a_worker_whose_results_topic_is_missing_does_not_start(workers: WorkerRunner, unique_name: str) -> None:
    wf = Workflow(workflow_type="NoResults", results_topic=f"{unique_name}-absent")

    @wf.start()
    async def start(ctx: Context) -> Directive:
        return ctx.next.complete(None)

    with pytest.raises(EmitTopicNotFoundError, match=rf"{unique_name}-absent.*the results topic of 'NoResults'"):
        await workers.start([wf])
