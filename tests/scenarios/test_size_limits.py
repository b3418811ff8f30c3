"""Size limits of user values (issue "One oversized value stalls a whole worker").

Each test runs in a namespace whose topics take records of at most 128 KiB (a real
`max.message.bytes` on the broker), so the limits the client and the worker learn are real
ones and the values stay small. For each kind of value: over the limit, the clear error at the
right place, the run (or call) fails, and 100 ordinary runs on the same worker complete
meanwhile; just under the limit, the run works end to end, through a worker restart that
restores it from the changelog.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource
from ulid import ULID

from grctl import Client, Context, Directive, Workflow
from grctl.engine.records import StartCmd, encoder
from grctl.errors import PayloadTooLargeError, WorkflowError, WorkflowNotFoundError
from grctl.kafka.connection import Connection
from grctl.kafka.limits import ENVELOPE_RESERVE_BYTES, RECORD_FRAMING_BYTES
from grctl.kafka.partitioner import partition_for
from grctl.kafka.retry import retry_while_leaderless
from grctl.kafka.topics import TopicNames, admin_client, delete_namespace, ensure_namespace
from grctl.models import HistoryKind
from grctl.worker import task
from grctl.worker.context import QueryContext
from tests.conftest import WorkerRunner
from tests.scenarios.support import of_kind, wait_for_history, wait_for_kind

pytestmark = pytest.mark.kafka

TOPIC_MAX = 128 * 1024
VALUE_LIMIT = TOPIC_MAX - RECORD_FRAMING_BYTES - ENVELOPE_RESERVE_BYTES
OVER = VALUE_LIMIT + 1_000
UNDER = VALUE_LIMIT - 2_000  # the encoded str takes a few bytes more than its length
ORDINARY_RUNS = 100

sizes = Workflow(workflow_type="Sizes")
child_wf = Workflow(workflow_type="SizesChild")
ordinary = Workflow(workflow_type="Ordinary")


@task
async def make_text(n: int) -> str:
    return "x" * n


@task
async def count_chars(text: str) -> int:
    return len(text)


@sizes.start()
async def sizes_start(ctx: Context, kind: str, n: int) -> Directive:
    ctx.store.put("n", n)
    if kind == "store":
        ctx.store.put("blob", "x" * n)
        return ctx.next.complete("stored")
    if kind == "result":
        return ctx.next.complete("x" * n)
    if kind == "task_result":
        await make_text(n)
        return ctx.next.complete("task ran")
    if kind == "task_args":
        return ctx.next.complete(await count_chars("x" * n))
    if kind == "child_input":
        await ctx.start_child("SizesChild", f"{ctx.run.wf_id}-child", {"text": "x" * n, "mode": "echo"})
        return ctx.next.complete("child started")
    if kind == "child_result":
        result = await ctx.run_child("SizesChild", f"{ctx.run.wf_id}-child", {"text": "", "mode": str(n)})
        return ctx.next.complete(len(result))
    if kind == "to_parent":
        await ctx.start_child("SizesChild", f"{ctx.run.wf_id}-child", {"text": "", "mode": f"parent:{n}"})
        return ctx.next.wait()
    if kind == "query":
        ctx.store.put("answer_size", n)
        return ctx.next.wait()
    if kind == "all_under":
        ctx.store.put("blob", "x" * n)
        await make_text(n)
        return ctx.next.wait()
    raise AssertionError(kind)


@sizes.event()
async def finish(ctx: Context, text: str) -> Directive:
    blob = await ctx.store.get("blob", str)
    return ctx.next.complete(f"{len(blob)}+{len(text)}")


@sizes.event()
async def from_child(ctx: Context, payload: Any) -> Directive:
    return ctx.next.complete("parent got it")


@sizes.query()
async def big_answer(ctx: QueryContext) -> str:
    return "x" * await ctx.store.get("answer_size", int)


@child_wf.start()
async def child_start(ctx: Context, text: str, mode: str) -> Directive:
    if mode.startswith("parent:"):
        await ctx.send_to_parent("from_child", "x" * int(mode.split(":")[1]))
        return ctx.next.complete("sent")
    if mode == "echo":
        return ctx.next.complete(len(text))
    return ctx.next.complete("x" * int(mode))


@ordinary.start()
async def ordinary_start(ctx: Context, i: int) -> Directive:
    ctx.store.put("i", i)
    return ctx.next.complete(i * 2)


WORKFLOWS = [sizes, child_wf, ordinary]


@pytest.fixture
async def small(kafka_bootstrap: str, unique_name: str) -> AsyncIterator[Connection]:
    """A namespace whose topics take records of at most TOPIC_MAX bytes."""
    ns = "t" + unique_name.lower().replace("_", "-")[-20:]
    admin = admin_client({"bootstrap.servers": kafka_bootstrap})
    names = TopicNames(ns)
    capped = {
        role: {"max.message.bytes": str(TOPIC_MAX)}
        for role in ("directives", "history", "state", "replies", "dead-letter")
    }
    ensure_namespace(admin, names, partitions=4, extra_configs=capped)
    conn = await Connection.connect(kafka_bootstrap, ns, partitions=4)
    yield conn
    with contextlib.suppress(Exception):
        delete_namespace(admin, names, timeout=10)


@pytest.fixture
async def small_client(small: Connection) -> AsyncIterator[Client]:
    c = Client(small)
    yield c
    await c.close()


@pytest.fixture
async def small_workers(small: Connection, tmp_path: Path) -> AsyncIterator[WorkerRunner]:
    runner = WorkerRunner(small, tmp_path / "state")
    yield runner
    await runner.stop_all()


async def ordinary_runs_meanwhile(client: Client, prefix: str) -> list[Any]:
    handles = [await client.start_workflow("Ordinary", f"{prefix}-{i}", {"i": i}) for i in range(ORDINARY_RUNS)]
    return [await h.result(timeout=60) for h in handles]


async def handle_once_started(client: Client, wf_id: str) -> Any:
    """A handle on `wf_id` once a run of it exists (a child starts after its parent's step commits)."""
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        try:
            return await client.get_workflow_handle(wf_id)
        except WorkflowNotFoundError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.1)


async def fails_with_payload_too_large(client: Client, handle: Any, what: str) -> WorkflowError:
    with pytest.raises(WorkflowError) as info:
        await handle.result(timeout=60)
    err = info.value
    assert err.error_type == "PayloadTooLargeError", err
    assert what in str(err) and f"{VALUE_LIMIT:,}" in str(err), str(err)
    return err


def test_the_limits_are_learned_from_the_topics(small: Connection) -> None:
    limits = small.limits
    assert set(limits.record_bytes.values()) == {TOPIC_MAX - RECORD_FRAMING_BYTES}
    assert limits.value_bytes == VALUE_LIMIT
    assert limits.producer_max_bytes == TOPIC_MAX


async def test_limits_can_be_lowered_but_not_raised(small: Connection) -> None:
    lower = await Connection.connect(small.servers, small.namespace, max_value_bytes=10_000)
    assert lower.limits.value_bytes == 10_000
    higher = await Connection.connect(small.servers, small.namespace, max_value_bytes=10 * TOPIC_MAX)
    assert higher.limits.value_bytes == VALUE_LIMIT


@pytest.mark.parametrize(
    ("kind", "what"),
    [
        ("store", "store value 'blob'"),
        ("result", "run result"),
        ("task_result", "the recorded task 'make_text'"),
        ("child_input", "child input"),
    ],
)
async def test_a_value_over_the_limit_fails_its_run_at_the_call_and_nothing_else(
    small_workers: WorkerRunner, small_client: Client, kind: str, what: str
) -> None:
    await small_workers.start(WORKFLOWS)
    big = await small_client.start_workflow("Sizes", f"big-{kind}", {"kind": kind, "n": OVER})
    results = await ordinary_runs_meanwhile(small_client, f"ord-{kind}")
    assert results == [i * 2 for i in range(ORDINARY_RUNS)]
    await fails_with_payload_too_large(small_client, big, what)
    events = await small_client.get_history(big.run_info.wf_id, run_id=big.run_info.id)
    (failed,) = of_kind(events, HistoryKind.step_failed)
    assert failed.msg.error.type == "PayloadTooLargeError"


async def test_a_child_result_over_the_limit_fails_the_child_and_the_parent_is_told(
    small_workers: WorkerRunner, small_client: Client
) -> None:
    await small_workers.start(WORKFLOWS)
    parent = await small_client.start_workflow("Sizes", "big-child-result", {"kind": "child_result", "n": OVER})
    assert await ordinary_runs_meanwhile(small_client, "ord-cr") == [i * 2 for i in range(ORDINARY_RUNS)]
    with pytest.raises(WorkflowError, match="PayloadTooLargeError: run result"):
        await parent.result(timeout=60)
    child = await handle_once_started(small_client, "big-child-result-child")
    err = await fails_with_payload_too_large(small_client, child, "run result")
    assert err.wf_id == "big-child-result-child"


async def test_a_payload_sent_to_the_parent_over_the_limit_fails_the_child(
    small_workers: WorkerRunner, small_client: Client
) -> None:
    await small_workers.start(WORKFLOWS)
    await small_client.start_workflow("Sizes", "big-to-parent", {"kind": "to_parent", "n": OVER})
    assert await ordinary_runs_meanwhile(small_client, "ord-tp") == [i * 2 for i in range(ORDINARY_RUNS)]
    child = await handle_once_started(small_client, "big-to-parent-child")
    await fails_with_payload_too_large(small_client, child, "event payload")


async def test_task_arguments_over_the_limit_are_described_by_a_preview(
    small_workers: WorkerRunner, small_client: Client
) -> None:
    await small_workers.start(WORKFLOWS)
    handle = await small_client.start_workflow("Sizes", "big-args", {"kind": "task_args", "n": OVER})
    assert await ordinary_runs_meanwhile(small_client, "ord-ta") == [i * 2 for i in range(ORDINARY_RUNS)]
    assert await handle.result(timeout=60) == OVER
    events = await small_client.get_history("big-args", run_id=handle.run_info.id)
    (started,) = of_kind(events, HistoryKind.task_started)
    args = started.msg.args
    assert args["truncated"] is True and args["size"] > OVER and len(args["preview"]) <= 1024


async def test_a_query_answer_over_the_limit_is_refused_with_the_error(
    small_workers: WorkerRunner, small_client: Client
) -> None:
    await small_workers.start(WORKFLOWS)
    handle = await small_client.start_workflow("Sizes", "big-answer", {"kind": "query", "n": OVER})
    await wait_for_kind(small_client, handle, HistoryKind.wait_started)
    with pytest.raises(WorkflowError, match=r"answer of query 'big_answer'.* over the limit"):
        await handle.query("big_answer")
    assert await ordinary_runs_meanwhile(small_client, "ord-q") == [i * 2 for i in range(ORDINARY_RUNS)]
    await small_client.send_event("big-answer", "from_child", {"payload": None})
    assert await handle.result(timeout=60) == "parent got it"


async def test_the_client_refuses_a_start_input_over_the_limit_before_sending_anything(
    small: Connection, small_client: Client
) -> None:
    before = _end_offsets(small)
    with pytest.raises(PayloadTooLargeError) as info:
        await small_client.start_workflow("Sizes", "too-big-input", {"kind": "store", "n": 1, "pad": "x" * OVER})
    err = info.value
    assert (err.what, err.wf_id, err.limit) == ("start input", "too-big-input", VALUE_LIMIT) and err.size > OVER
    assert _end_offsets(small) == before


async def test_the_client_refuses_an_event_payload_over_the_limit_and_the_run_goes_on(
    small_workers: WorkerRunner, small_client: Client
) -> None:
    await small_workers.start(WORKFLOWS)
    handle = await small_client.start_workflow("Sizes", "big-event", {"kind": "all_under", "n": 10})
    await wait_for_kind(small_client, handle, HistoryKind.wait_started)
    with pytest.raises(PayloadTooLargeError, match="payload of event 'finish'"):
        await handle.send("finish", {"text": "x" * OVER})
    assert await ordinary_runs_meanwhile(small_client, "ord-ev") == [i * 2 for i in range(ORDINARY_RUNS)]
    await handle.send("finish", {"text": "small"})
    assert await handle.result(timeout=60) == "10+5"


async def test_the_worker_rejects_a_start_over_the_limit_written_by_another_producer(
    small: Connection, small_workers: WorkerRunner, small_client: Client
) -> None:
    """A start record the directives topic accepts but whose input the engine cannot carry."""
    await small_workers.start(WORKFLOWS)
    pad = "x" * OVER
    cmd = StartCmd(wf_id="foreign", run_id=str(ULID()), wf_type="Sizes", input={"kind": "store", "n": 1, "pad": pad})
    value = encoder.encode(cmd)
    assert VALUE_LIMIT < len(value) < TOPIC_MAX - RECORD_FRAMING_BYTES
    producer = Producer({"bootstrap.servers": small.servers})
    producer.produce(small.topics.directives, value, b"foreign", partition_for("foreign", small.num_partitions))
    assert producer.flush(10) == 0
    assert await ordinary_runs_meanwhile(small_client, "ord-foreign") == [i * 2 for i in range(ORDINARY_RUNS)]
    # The rejection is in history (the engine's answer to a start nobody waits on).
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        events = await small_client.get_history("foreign", run_id=cmd.run_id)
        rejected = of_kind(events, HistoryKind.run_rejected)
        if rejected:
            break
        assert asyncio.get_running_loop().time() < deadline, f"the oversized start was not rejected: {events}"
        await asyncio.sleep(0.1)
    assert not of_kind(events, HistoryKind.run_started)
    assert rejected[0].msg.code == "payload_too_large" and "start input" in rejected[0].msg.message


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("result", "x" * UNDER),
        ("task_result", "task ran"),
        ("child_input", "child started"),
        ("child_result", UNDER),
        ("to_parent", "parent got it"),
    ],
)
async def test_a_value_just_under_the_limit_goes_through(
    small_workers: WorkerRunner, small_client: Client, kind: str, expected: Any
) -> None:
    await small_workers.start(WORKFLOWS)
    handle = await small_client.start_workflow("Sizes", f"under-{kind}", {"kind": kind, "n": UNDER})
    assert await handle.result(timeout=60) == expected


async def test_a_query_answer_just_under_the_limit_is_answered(
    small_workers: WorkerRunner, small_client: Client
) -> None:
    await small_workers.start(WORKFLOWS)
    handle = await small_client.start_workflow("Sizes", "under-query", {"kind": "query", "n": UNDER})
    await wait_for_kind(small_client, handle, HistoryKind.wait_started)
    assert await handle.query("big_answer") == "x" * UNDER


async def test_values_just_under_the_limit_work_through_a_restore_from_the_changelog(
    small_workers: WorkerRunner, small_client: Client, tmp_path: Path
) -> None:
    await small_workers.start(WORKFLOWS, state_dir=tmp_path / "first")
    start_input = {"kind": "all_under", "n": UNDER, "pad": "z" * (UNDER - 100)}
    handle = await small_client.start_workflow("Sizes", "just-under", start_input)
    await wait_for_kind(small_client, handle, HistoryKind.wait_started)
    await small_workers.stop_all()
    # A new worker on an empty disk: everything comes back from the compacted changelog.
    await small_workers.start(WORKFLOWS, state_dir=tmp_path / "second")
    await handle.send("finish", {"text": "y" * UNDER})
    assert await handle.result(timeout=60) == f"{UNDER}+{UNDER}"


async def test_a_topic_limit_lowered_under_a_running_worker_fails_the_one_run_within_one_retry(
    small: Connection, small_workers: WorkerRunner, small_client: Client
) -> None:
    """The loop of the issue: a batch the broker refuses again and again.

    The state topic's max.message.bytes drops under a worker that learned the old limit; its
    next batch with a large store value is refused by the broker. The session restarts once,
    learns the new limit, the step re-executes and its put now fails at the call: one run
    fails naming the error, and every other run completes.
    """
    await small_workers.start(WORKFLOWS)
    assert await ordinary_runs_meanwhile(small_client, "ord-warm") == [i * 2 for i in range(ORDINARY_RUNS)]
    lowered = 32 * 1024
    admin = admin_client(small.client_config())
    res = ConfigResource("topic", small.topics.state, incremental_configs=[
        ConfigEntry("max.message.bytes", str(lowered), incremental_operation=AlterConfigOpType.SET)
    ])  # fmt: skip
    for fut in admin.incremental_alter_configs([res]).values():
        fut.result(10)
    # The controller has committed the change; the broker applies it when its metadata catches up.
    # A run started before that is accepted whole (a CI run failed so), so wait until the broker
    # itself describes the new limit.
    await wait_until_broker_reports(admin, small.topics.state, "max.message.bytes", str(lowered))
    big = await small_client.start_workflow("Sizes", "big-after-lowering", {"kind": "store", "n": 60_000})
    results = await ordinary_runs_meanwhile(small_client, "ord-lowered")
    assert results == [i * 2 for i in range(ORDINARY_RUNS)]
    with pytest.raises(WorkflowError) as info:
        await big.result(timeout=60)
    assert info.value.error_type == "PayloadTooLargeError" and "store value 'blob'" in str(info.value)
    events = await wait_for_history(small_client, big, lambda ev: any(e.kind == HistoryKind.run_failed for e in ev))
    assert len(of_kind(events, HistoryKind.run_failed)) == 1


async def wait_until_broker_reports(admin: Any, topic: str, name: str, value: str, timeout: float = 30.0) -> None:
    """Poll the broker's DescribeConfigs until topic config `name` reads `value`."""
    res = ConfigResource("topic", topic)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        described = admin.describe_configs([res])[res].result(10)
        if described[name].value == value:
            return
        assert loop.time() < deadline, f"the broker still reports {name}={described[name].value}, not {value}"
        await asyncio.sleep(0.1)


def _end_offsets(conn: Connection) -> list[int]:
    c = Consumer({"bootstrap.servers": conn.servers, "group.id": "probe", "enable.auto.commit": False})
    try:
        return [_end_offset(c, TopicPartition(conn.topics.directives, p)) for p in range(conn.num_partitions)]
    finally:
        c.close()


def _end_offset(c: Consumer, tp: TopicPartition) -> int:
    """The end offset of `tp`; a topic created a moment ago may not have its leader yet.

    librdkafka does not call NOT_LEADER_FOR_PARTITION retriable here (a CI run failed on it): the
    toolkit's leaderless retry knows it.
    """
    return retry_while_leaderless(lambda: c.get_watermark_offsets(tp, timeout=10, cached=False)[1], timeout=30)
