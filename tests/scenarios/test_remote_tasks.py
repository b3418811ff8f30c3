"""Remote tasks end to end (issue 28): a Python `TaskWorker` on a queue topic, a real broker.

Each test gets its own namespace (the `connection` fixture) and so its own queue topics.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from datetime import timedelta
from typing import Any

import pytest
from confluent_kafka import Producer

from grctl import Client, Context, Directive, RetryPolicy, Workflow
from grctl.client import WorkflowError
from grctl.errors import RemoteTaskError
from grctl.kafka.connection import Connection
from grctl.kafka.partitioner import partition_for
from grctl.models import HistoryKind
from grctl.taskworker import NonRetryableError, TaskContext, TaskWorker
from grctl.testing import Replayer
from tests.scenarios.support import HISTORY_WAIT_S

pytestmark = pytest.mark.kafka

QUEUE = "scoring"

wf = Workflow(workflow_type="Remote")


@wf.start()
async def start(ctx: Context, req: dict[str, Any]) -> Directive:
    which, x, o = req["which"], req.get("x", 1), req.get("opts") or {}
    timeout = timedelta(milliseconds=o["timeout_ms"]) if "timeout_ms" in o else None
    to_start = timedelta(milliseconds=o["schedule_to_start_ms"]) if "schedule_to_start_ms" in o else None
    heartbeat = timedelta(milliseconds=o["heartbeat_ms"]) if "heartbeat_ms" in o else None
    policy = RetryPolicy(**o["retry"]) if "retry" in o else None
    before = await ctx.now()  # a journaled value before the call: replay must keep the position
    try:
        out = await ctx.remote_task(
            which,
            {"x": x},
            queue=QUEUE,
            timeout=timeout,
            heartbeat=heartbeat,
            retry_policy=policy,
            schedule_to_start=to_start,
        )
    except RemoteTaskError as exc:
        return ctx.next.complete({"error": exc.error_type, "attempt": exc.attempt})
    if o.get("single"):
        return ctx.next.complete({"out": out})
    second = await ctx.remote_task("double", {"x": x}, queue=QUEUE)  # a second call in the same step
    ctx.store.put("before", before.isoformat())
    return ctx.next.complete({"out": out, "second": second})


calls: dict[str, int] = {}
gate = asyncio.Event()


def count(name: str) -> int:
    calls[name] = calls.get(name, 0) + 1
    return calls[name]


async def score(payload: dict[str, Any]) -> dict[str, Any]:
    count("score")
    return {"score": payload["x"] * 10}


async def double(payload: dict[str, Any]) -> int:
    count("double")
    return int(payload["x"]) * 2


async def flaky(payload: dict[str, Any]) -> str:
    if count("flaky") < 3:
        raise RuntimeError("not yet")
    return "ok"


async def refuses(payload: dict[str, Any]) -> str:
    count("refuses")
    raise NonRetryableError("never")


async def slow_first(payload: dict[str, Any], task: TaskContext) -> str:
    count("slow_first")
    if task.attempt == 1:
        await asyncio.sleep(30)  # past the 800 ms start-to-close timeout: cancelled before it answers
        return "late"
    return f"attempt {task.attempt}"


async def beats(payload: dict[str, Any], task: TaskContext) -> str:
    for i in range(8):
        task.heartbeat({"done": i})
        await asyncio.sleep(0.15)
    return "beat"


async def waits(payload: dict[str, Any]) -> str:
    count("waits")
    gate.set()
    await asyncio.Event().wait()  # until cancelled
    return "never"


HANDLERS = [score, double, flaky, refuses, slow_first, beats, waits]


@pytest.fixture(autouse=True)
def _reset() -> None:
    calls.clear()
    gate.clear()


@pytest.fixture
async def task_worker(connection: Connection) -> Any:
    tw = TaskWorker(HANDLERS, connection, queue=QUEUE, concurrency=8, metrics_port=0)
    await tw.start()
    yield tw
    await tw.stop(timeout=5)


async def test_remote_task_end_to_end(workers: Any, client: Client, task_worker: TaskWorker) -> None:
    await workers.start([wf])
    result = await asyncio.wait_for(
        client.run_workflow("Remote", "r1", {"req": {"which": "score", "x": 4}}), HISTORY_WAIT_S
    )
    assert result == {"out": {"score": 40}, "second": 8}
    assert calls == {"score": 1, "double": 1}  # each asked once, though the step ran three times
    history = await client.get_history("r1")
    kinds = [str(e.kind) for e in history]
    assert kinds.count(HistoryKind.task_started) == 2 and kinds.count(HistoryKind.task_completed) == 2
    assert kinds.count(HistoryKind.step_started) == 3 and kinds.count(HistoryKind.step_completed) == 1
    # The task worker's own metrics: what it ran, per queue.
    assert task_worker.metrics_address is not None
    url = f"http://127.0.0.1:{task_worker.metrics_address[1]}/metrics"
    text = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read().decode())
    assert 'grctl_taskworker_completed_total{queue="scoring"} 2.0' in text
    # The replayer places the remote outcomes at their journal positions: the run replays.
    replayed = Replayer([wf]).replay(history)
    assert replayed.ok, replayed.divergence


async def test_remote_task_retried_by_policy(workers: Any, client: Client, task_worker: TaskWorker) -> None:
    await workers.start([wf])
    opts = {"retry": {"max_attempts": 3, "initial_delay_ms": 10, "backoff_multiplier": 1.0}}
    result = await asyncio.wait_for(
        client.run_workflow("Remote", "r2", {"req": {"which": "flaky", "opts": opts}}), HISTORY_WAIT_S
    )
    assert result["out"] == "ok" and calls["flaky"] == 3
    kinds = [str(e.kind) for e in await client.get_history("r2")]
    assert kinds.count(HistoryKind.task_attempt_failed) == 2


async def test_remote_task_non_retryable_error_reaches_the_step(
    workers: Any, client: Client, task_worker: TaskWorker
) -> None:
    await workers.start([wf])
    opts = {"retry": {"max_attempts": 3, "initial_delay_ms": 10}}
    result = await asyncio.wait_for(
        client.run_workflow("Remote", "r3", {"req": {"which": "refuses", "opts": opts}}), HISTORY_WAIT_S
    )
    assert result == {"error": "NonRetryableError", "attempt": 1}
    assert calls["refuses"] == 1
    replayed = Replayer([wf]).replay(await client.get_history("r3"))
    assert replayed.ok, replayed.divergence


async def test_remote_task_timeout_retries_and_cancels_the_timed_out_attempt(
    workers: Any, client: Client, task_worker: TaskWorker
) -> None:
    worker = await workers.start([wf], metrics_port=0)
    opts = {"timeout_ms": 800, "retry": {"max_attempts": 2, "initial_delay_ms": 10}}
    result = await asyncio.wait_for(
        client.run_workflow("Remote", "r4", {"req": {"which": "slow_first", "opts": opts}}), HISTORY_WAIT_S
    )
    assert result.get("out") == "attempt 2", result
    assert worker.metrics is not None and worker.metrics.task_timeouts.get("start_to_close") == 1
    async with asyncio.timeout(HISTORY_WAIT_S):  # attempt 1 was told to stop: nobody waits for it
        while task_worker.stats.cancelled < 1:
            await asyncio.sleep(0.05)


async def test_late_and_duplicate_answers_are_dropped_and_counted(
    workers: Any, client: Client, connection: Connection
) -> None:
    """Answers written by hand, as a worker in any language would: only the current attempt's counts."""
    async with TaskWorker([score], connection, queue=QUEUE, concurrency=1):
        pass  # makes the queue topic; nobody consumes it: this test answers by hand
    worker = await workers.start([wf], metrics_port=0)
    opts = {"timeout_ms": 1500, "retry": {"max_attempts": 3, "initial_delay_ms": 10}, "single": True}
    handle = await client.start_workflow("Remote", "r11", {"req": {"which": "score", "opts": opts}})
    async with asyncio.timeout(HISTORY_WAIT_S):  # attempt 1 times out; attempt 2 is sent
        while ((await client.describe("r11")).remote_task or {}).get("attempt") != 2:
            await asyncio.sleep(0.05)
    pending = (await client.describe("r11")).remote_task
    assert pending is not None
    producer = Producer(connection.client_config())
    part = partition_for("r11", connection.num_partitions)

    def answer(attempt: int, value: Any) -> None:
        rec = {"t": "task_result", "wf_id": "r11", "run_id": handle.run_info.id, "task_id": pending["task_id"],
               "attempt": attempt, "ok": True, "result": value, "worker": "by-hand"}  # fmt: skip
        producer.produce(connection.topics.directives, json.dumps(rec).encode(), key=b"r11", partition=part)
        producer.flush(10)

    answer(1, "late")  # attempt 1 timed out: fenced
    answer(2, {"score": 7})  # the current attempt: applied
    answer(2, {"score": 8})  # the same attempt again: a duplicate
    result = await asyncio.wait_for(handle.future, HISTORY_WAIT_S)
    assert result["out"] == {"score": 7}
    assert worker.metrics is not None
    async with asyncio.timeout(HISTORY_WAIT_S):
        while sum(worker.metrics.task_dropped.values()) < 2:
            await asyncio.sleep(0.05)
    assert worker.metrics.task_dropped.get("late") == 1
    assert worker.metrics.task_dropped.get("duplicate", 0) + worker.metrics.task_dropped.get("run_ended", 0) == 1


async def test_remote_task_heartbeats_keep_it_alive_and_show_in_describe(
    workers: Any, client: Client, task_worker: TaskWorker
) -> None:
    await workers.start([wf])
    opts = {"heartbeat_ms": 600, "timeout_ms": 10_000}
    handle = await client.start_workflow("Remote", "r5", {"req": {"which": "beats", "opts": opts}})
    seen: dict[str, Any] | None = None
    async with asyncio.timeout(HISTORY_WAIT_S):
        while seen is None or seen.get("last_heartbeat_ms") is None:
            seen = (await client.describe("r5")).remote_task
            await asyncio.sleep(0.05)
    assert seen["queue"] == QUEUE and seen["attempt"] == 1 and seen["deadline"] == "heartbeat"
    assert (await asyncio.wait_for(handle.future, HISTORY_WAIT_S))["out"] == "beat"  # 1.2 s > heartbeat 0.6 s


async def test_remote_task_schedule_to_start_timeout_without_a_worker(
    workers: Any, client: Client, connection: Connection
) -> None:
    """No task worker on the queue: the attempt times out before any start, and so does its retry."""
    async with TaskWorker([score], connection, queue=QUEUE, concurrency=1):
        pass  # makes the queue topic; from here on nobody consumes it
    await workers.start([wf])
    opts = {"schedule_to_start_ms": 300, "retry": {"max_attempts": 2, "initial_delay_ms": 10}}
    result = await asyncio.wait_for(
        client.run_workflow("Remote", "r9", {"req": {"which": "score", "opts": opts}}), HISTORY_WAIT_S
    )
    assert result == {"error": "ScheduleToStartTimeout", "attempt": 2}


async def test_remote_task_heartbeat_timeout(workers: Any, client: Client, task_worker: TaskWorker) -> None:
    """A started attempt that goes silent past its heartbeat timeout fails as HeartbeatTimeout."""
    await workers.start([wf])
    opts = {"heartbeat_ms": 300, "timeout_ms": 60_000}
    result = await asyncio.wait_for(
        client.run_workflow("Remote", "r10", {"req": {"which": "waits", "opts": opts}}), HISTORY_WAIT_S
    )
    assert result == {"error": "HeartbeatTimeout", "attempt": 1}
    async with asyncio.timeout(HISTORY_WAIT_S):  # the timed-out attempt is cancelled on the task worker
        while task_worker.stats.cancelled < 1:
            await asyncio.sleep(0.05)


async def test_remote_task_cancel_reaches_the_task_worker(
    workers: Any, client: Client, task_worker: TaskWorker
) -> None:
    await workers.start([wf])
    handle = await client.start_workflow("Remote", "r6", {"req": {"which": "waits"}})
    await asyncio.wait_for(gate.wait(), HISTORY_WAIT_S)
    await handle.cancel("no longer needed")
    async with asyncio.timeout(HISTORY_WAIT_S):
        while task_worker.stats.cancelled < 1:
            await asyncio.sleep(0.05)
    assert calls["waits"] == 1


async def test_bad_answers_are_dead_lettered_and_never_stall_the_partition(
    workers: Any, client: Client, connection: Connection, task_worker: TaskWorker
) -> None:
    worker = await workers.start([wf], metrics_port=0)
    n = connection.num_partitions
    part = partition_for("r7", n)
    producer = Producer(connection.client_config())
    for value in (b"{not json", b'{"t":"task_result","wf_id":"r7"}', b'{"t":"task_result","wf_id":"r7","run_id":"x",'
                  b'"task_id":"1.0","attempt":1,"ok":true}'):  # fmt: skip
        producer.produce(connection.topics.directives, value, key=b"r7", partition=part)
    producer.flush(10)
    # The partition goes on: a run on it completes, and the three records are dead-lettered.
    result = await asyncio.wait_for(client.run_workflow("Remote", "r7", {"req": {"which": "score"}}), HISTORY_WAIT_S)
    assert result["out"] == {"score": 10}
    assert worker.metrics is not None
    async with asyncio.timeout(HISTORY_WAIT_S):
        while sum(worker.metrics.dead_letters.values()) < 3:
            await asyncio.sleep(0.05)


async def test_a_queue_without_a_topic_fails_the_step_clearly(workers: Any, client: Client) -> None:
    await workers.start([wf])
    with pytest.raises(WorkflowError, match=r"grctl\..*\.tasks\.scoring"):
        await asyncio.wait_for(client.run_workflow("Remote", "r8", {"req": {"which": "score"}}), HISTORY_WAIT_S)
