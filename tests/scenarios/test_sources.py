"""Runs started and events delivered from the records of any topic (issue 17, part 1).

A worker with `sources=[...]` consumes its source topics in the workers' group; each record is
routed to one directive in the transaction that commits its source offset. Checked here with a
real broker: records start runs under ids derived from the record, events from a source reach a
waiting run in source order, bad records go to dead-letter with their reason while the
partition moves on. (Exactly once across SIGKILLs: tests/crash/test_sources_crash.py.)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Iterator

import pytest
from confluent_kafka.admin import AdminClient

from grctl import Client, Context, Directive, Workflow
from grctl.errors import EmitTopicNotFoundError, RegistrationError, WorkflowNotFoundError
from grctl.worker import SendEvent, Source, SourceRecord, StartRun
from tests.conftest import WorkerRunner
from tests.support.topics import create_topic, produce_all, read_committed_until

pytestmark = pytest.mark.kafka

ORDERS = 200


@pytest.fixture
def topics(kafka_bootstrap: str, unique_name: str) -> Iterator[dict[str, str]]:
    names = {r: f"{unique_name}-{r}" for r in ("orders", "payments", "results")}
    create_topic(kafka_bootstrap, names["orders"], partitions=3)
    create_topic(kafka_bootstrap, names["payments"], partitions=2)
    create_topic(kafka_bootstrap, names["results"])
    yield names
    AdminClient({"bootstrap.servers": kafka_bootstrap}).delete_topics(list(names.values()))


def order_flow(results: str) -> Workflow:
    wf = Workflow(workflow_type="SrcOrder", results_topic=results)

    @wf.start()
    async def start(ctx: Context, order: str, amount: int, payments: int = 0) -> Directive:
        ctx.store.put("paid", [])
        ctx.store.put("expected", payments)
        if payments == 0:
            return ctx.next.complete({"order": order, "amount": amount})
        return ctx.next.wait()

    @wf.event()
    async def paid(ctx: Context, seq: int) -> Directive:
        seen = [*(await ctx.store.get("paid")), seq]
        ctx.store.put("paid", seen)
        if len(seen) == await ctx.store.get("expected"):
            return ctx.next.complete({"paid": seen})
        return ctx.next.wait()

    return wf


def route_order(rec: SourceRecord) -> StartRun | None:
    if rec.value.get("skip"):
        return None
    if rec.value.get("explode"):
        raise RuntimeError("route refused the order")
    if rec.value.get("nonsense"):
        return "not a directive"  # type: ignore[return-value]
    if rec.value.get("unknown"):
        return StartRun("NoSuchType")
    payments = rec.value.get("payments", 0)
    wf_id = rec.value["order"] if payments else None  # None: the id is derived from the record
    return StartRun("SrcOrder", {"order": rec.value["order"], "amount": rec.value["amount"], "payments": payments},
                    id=wf_id)  # fmt: skip


def route_payment(rec: SourceRecord) -> SendEvent:
    return SendEvent(rec.key_str or "", "paid", {"seq": rec.value["seq"]})


async def results(servers: str, topic: str, n: int) -> dict[str, dict[str, object]]:
    """The first `n` results records (read in a thread: the worker runs on this test's event loop)."""
    msgs = await asyncio.to_thread(read_committed_until, servers, topic, [0], n)
    return {json.loads(m.value())["wf_id"]: json.loads(m.value()) for m in msgs}


async def produce(servers: str, topic: str, records: list[tuple[str, str | bytes]]) -> None:
    await asyncio.to_thread(produce_all, servers, topic, records)


async def test_source_records_start_one_run_each_with_ids_from_the_record(
    kafka_bootstrap: str, topics: dict[str, str], workers: WorkerRunner
) -> None:
    await workers.start([order_flow(topics["results"])], sources=[Source(topics["orders"], route_order)])
    await produce(kafka_bootstrap, topics["orders"],
                  [(f"o-{i}", json.dumps({"order": f"o-{i}", "amount": i})) for i in range(ORDERS)])  # fmt: skip
    done = await results(kafka_bootstrap, topics["results"], ORDERS)
    assert len(done) == ORDERS  # one run per record, ids <topic>-<partition>-<offset>
    assert all(wf_id.startswith(f"{topics['orders']}-") for wf_id in done)
    assert sorted(r["result"]["amount"] for r in done.values()) == list(range(ORDERS))  # type: ignore[index]
    assert {r["status"] for r in done.values()} == {"completed"}


async def test_events_from_a_source_reach_a_waiting_run_in_source_order(
    kafka_bootstrap: str, topics: dict[str, str], workers: WorkerRunner, client: Client
) -> None:
    await workers.start(
        [order_flow(topics["results"])],
        sources=[Source(topics["orders"], route_order), Source(topics["payments"], route_payment)],
    )
    produce_all(
        kafka_bootstrap, topics["orders"], [("acc", json.dumps({"order": "acc-1", "amount": 5, "payments": 20}))]
    )
    handle = None
    deadline = time.monotonic() + 60
    while handle is None:  # the run exists once the worker routed the order (each try asks its owner)
        assert time.monotonic() < deadline, "the order never started a run"
        with contextlib.suppress(WorkflowNotFoundError):
            handle = await client.get_workflow_handle("acc-1")
    await produce(kafka_bootstrap, topics["payments"], [("acc-1", json.dumps({"seq": i})) for i in range(20)])
    assert await handle.result(timeout=60) == {"paid": list(range(20))}


async def test_bad_records_go_to_dead_letter_with_their_reason_and_the_partition_moves_on(
    kafka_bootstrap: str, topics: dict[str, str], workers: WorkerRunner
) -> None:
    worker = await workers.start([order_flow(topics["results"])], sources=[Source(topics["orders"], route_order)])
    ns = worker._connection.topics  # type: ignore[union-attr]
    bad = [b"{not json", json.dumps({"explode": True}), json.dumps({"nonsense": True}), json.dumps({"order": "x"}),
           json.dumps({"unknown": True})]  # fmt: skip
    await produce(kafka_bootstrap, topics["orders"], [("k", v) for v in bad])
    await produce(kafka_bootstrap, topics["orders"], [("k", json.dumps({"skip": True}))])
    await produce(kafka_bootstrap, topics["orders"], [("k", json.dumps({"order": "after", "amount": 1}))])
    done = await results(kafka_bootstrap, topics["results"], 1)
    assert [r["result"] for r in done.values()] == [{"order": "after", "amount": 1}]
    parts = range(worker._connection.num_partitions)  # type: ignore[union-attr]
    letters = await asyncio.to_thread(read_committed_until, kafka_bootstrap, ns.dead_letter, parts, 5)
    reasons = sorted(dict(m.headers() or [])["grctl.reason"].decode() for m in letters)
    assert any(r.startswith("cannot decode the value (json)") for r in reasons)
    assert any("the route raised RuntimeError: route refused the order" in r for r in reasons)
    assert any("the route returned str, not StartRun, SendEvent or None" in r for r in reasons)
    assert any("KeyError" in r for r in reasons)  # the route's own bug: a record without "amount"
    assert any("StartRun of workflow type 'NoSuchType', which this worker does not serve" in r for r in reasons)
    assert all(dict(m.headers() or [])["grctl.topic"].decode() == topics["orders"] for m in letters)


async def wait_until(what: str, check: Callable[[], Awaitable[bool]], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"not within {timeout:.0f} s: {what}"
        await asyncio.sleep(0.1)


async def test_sources_pause_while_too_many_runs_are_in_flight_and_resume_after(
    kafka_bootstrap: str, topics: dict[str, str], workers: WorkerRunner, client: Client
) -> None:
    src = Source(topics["orders"], route_order, max_in_flight=2)
    worker = await workers.start([order_flow(topics["results"])], sources=[src])
    waiting = [(f"w{i}", json.dumps({"order": f"w{i}", "amount": 1, "payments": 1})) for i in range(3)]
    await produce(kafka_bootstrap, topics["orders"], waiting)

    async def runs() -> int:
        page = await client.list_workflows(limit=1, counts=True)
        return sum(sum(t.values()) for t in (page.counts or {}).values())

    async def paused() -> bool:
        return bool(worker.source_partitions) and all(worker.source_partitions.values())

    await wait_until("3 waiting runs", lambda: _ge(runs(), 3))
    await wait_until("the source paused (3 runs in flight > 2)", paused)
    await produce(
        kafka_bootstrap, topics["orders"], [(f"o{i}", json.dumps({"order": f"o{i}", "amount": i})) for i in range(5)]
    )
    for i in range(3):  # the waiting runs end: in flight drops, the source resumes and routes the rest
        await client.send_event(f"w{i}", "paid", {"seq": 0})

    async def resumed() -> bool:
        return not any(worker.source_partitions.values())

    await wait_until("the source resumed", resumed)
    done = await results(kafka_bootstrap, topics["results"], 8)
    assert len(done) == 8 and {r["status"] for r in done.values()} == {"completed"}
    # What pausing means: the records produced while paused started no run until a waiting
    # run ended and brought the runs in flight under the limit (the worker's own clock stamps
    # both, so the order of the stamps is the order of the events).
    page = await client.list_workflows(limit=100)
    waiting_ids = {f"w{i}" for i in range(3)}
    ends = [r.ended_at for r in page.runs if r.wf_id in waiting_ids]
    starts = [r.started_at for r in page.runs if r.wf_id not in waiting_ids]
    assert len(ends) == 3 and len(starts) == 5 and None not in ends + starts
    first_end = min(e for e in ends if e is not None)
    early = [s for s in starts if s is not None and s < first_end]
    assert not early, f"{len(early)} runs started from records produced while paused, before any waiting run ended"


async def _ge(value: Awaitable[int], n: int) -> bool:
    return await value >= n


def deep(data: bytes) -> object:
    """A deserializer whose value nests 3,000 lists deep (deeper than the codec goes)."""
    value: object = data.decode()
    for _ in range(3000):
        value = [value]
    return value


async def test_a_value_too_deep_for_the_codec_is_dead_lettered_and_the_next_record_runs(
    kafka_bootstrap: str, topics: dict[str, str], workers: WorkerRunner
) -> None:
    def route(rec: SourceRecord) -> StartRun:
        if rec.key == b"deep":
            return StartRun("SrcOrder", {"order": rec.value, "amount": 1, "payments": 0})
        return StartRun("SrcOrder", {"order": "after-deep", "amount": 2, "payments": 0})

    worker = await workers.start([order_flow(topics["results"])], sources=[Source(topics["orders"], route,
                                 deserializer=deep)])  # fmt: skip
    await produce(kafka_bootstrap, topics["orders"], [("deep", "x"), ("next", "y")])
    done = await results(kafka_bootstrap, topics["results"], 1)
    assert [r["result"] for r in done.values()] == [{"order": "after-deep", "amount": 2}]
    parts = range(worker._connection.num_partitions)  # type: ignore[union-attr]
    dead_letter = worker._connection.topics.dead_letter  # type: ignore[union-attr]
    (letter,) = await asyncio.to_thread(read_committed_until, kafka_bootstrap, dead_letter, parts, 1)
    assert dict(letter.headers() or [])["grctl.reason"].decode().startswith("RecursionError")


async def test_a_missing_source_topic_stops_the_worker_at_start(
    workers: WorkerRunner, unique_name: str, topics: dict[str, str]
) -> None:
    with pytest.raises(EmitTopicNotFoundError, match=rf"'{unique_name}-nowhere'.*\(a source topic; "):
        await workers.start([order_flow(topics["results"])], sources=[Source(f"{unique_name}-nowhere", route_order)])


def test_sources_are_checked_at_definition() -> None:
    with pytest.raises(Exception, match="a topic of your own"):
        Source("grctl.default.directives", route_order)
    with pytest.raises(Exception, match="unknown format"):
        Source("t", route_order, format="xml")  # type: ignore[arg-type]
    with pytest.raises(RegistrationError, match="listed twice"):
        from grctl import Worker

        Worker([order_flow("r")], sources=[Source("t", route_order), Source("t", route_payment)])
