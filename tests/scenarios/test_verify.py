"""`grctl verify` against a real namespace: clean after ordinary runs, and it names what was broken.

The broken cases are written into the topics the way a bug or a fault would leave them: a
second `step.completed` of a step in `history`, a store value of a run that never existed in
`state` (plain records, visible to read_committed readers like the engine's own).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from datetime import timedelta

import msgspec
import pytest
from confluent_kafka import Producer

from grctl import Client, Context, Directive, Workflow
from grctl.client.verify import verify_namespace
from grctl.engine import keys
from grctl.engine.records import HistoryRecord
from grctl.errors import InvalidArgumentError
from grctl.kafka.connection import Connection
from grctl.kafka.partitioner import partition_for
from grctl.worker import task
from tests.conftest import WorkerRunner

pytestmark = pytest.mark.kafka

shop = Workflow(workflow_type="VerifyShop")
child = Workflow(workflow_type="VerifyChild")


@task
async def price(n: int) -> int:
    return 3 * n


@shop.start()
async def shop_start(ctx: Context, n: int) -> Directive:
    ctx.store.put("n", n)
    return ctx.next.step(shop_price)


@shop.step()
async def shop_price(ctx: Context) -> Directive:
    n = await ctx.store.get("n")
    total = await price(n)
    doubled = await ctx.run_child("VerifyChild", f"{ctx.run.wf_id}-child", {"n": total})
    return ctx.next.wait() if n == 0 else ctx.next.complete(doubled)


@shop.event()
async def release(ctx: Context) -> Directive:
    return ctx.next.complete("released")


@child.start()
async def child_start(ctx: Context, n: int) -> Directive:
    return ctx.next.complete(2 * n)


async def _verify(connection: Connection, **kw: timedelta) -> dict:
    loop = asyncio.get_running_loop()
    report = await loop.run_in_executor(None, lambda: verify_namespace(connection, **kw))
    return report.to_dict()


def _cli_verify(connection: Connection) -> tuple[int, dict]:
    done = subprocess.run(
        [sys.executable, "-m", "grctl", "-s", connection.servers, "-n", connection.namespace, "verify", "--json"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    return done.returncode, json.loads(done.stdout)


async def test_verify_is_clean_after_runs_with_tasks_children_and_events(
    workers: WorkerRunner, client: Client, connection: Connection
) -> None:
    await workers.start([shop, child])
    results = [await client.run_workflow("VerifyShop", f"shop-{n}", {"n": n}) for n in range(1, 6)]
    assert results == [6 * n for n in range(1, 6)]
    waiting = await client.start_workflow("VerifyShop", "shop-0", {"n": 0})
    await waiting.send("release")
    assert await waiting.result(timeout=30) == "released"
    report = await _verify(connection)
    assert report["clean"], report
    assert report["runs"] == 12 and report["counts"] == {"lost": 0, "duplicated": 0, "orphaned": 0, "leaked": 0}
    code, body = await asyncio.get_running_loop().run_in_executor(None, _cli_verify, connection)
    assert code == 0 and body["clean"] and body["runs"] == 12


async def test_verify_names_a_duplicated_step_and_orphaned_state(
    workers: WorkerRunner, client: Client, connection: Connection
) -> None:
    await workers.start([shop, child])
    handle = await client.start_workflow("VerifyShop", "shop-7", {"n": 7})
    assert await handle.result(timeout=30) == 42
    run_id = handle.run_info.id
    producer = Producer(connection.client_config())
    again = HistoryRecord(kind="step.completed", wf_id="shop-7", run_id=run_id, ts_ms=int(time.time() * 1000),
                          msg={"step_name": "shop_price"})  # fmt: skip
    producer.produce(
        connection.topics.history, msgspec.msgpack.encode(again), b"shop-7",
        partition=partition_for("shop-7", connection.num_partitions),
    )  # fmt: skip
    stray = keys.store_key("shop-7", "01NOSUCHRUN", "n")
    producer.produce(
        connection.topics.state, b"\x07", stray, partition=partition_for("shop-7", connection.num_partitions)
    )
    assert producer.flush(10) == 0
    code, body = await asyncio.get_running_loop().run_in_executor(None, _cli_verify, connection)
    assert code == 1 and not body["clean"]
    assert body["counts"] == {"lost": 0, "duplicated": 1, "orphaned": 1, "leaked": 0}
    assert body["findings"] == [
        {"kind": "duplicated", "wf_id": "shop-7", "run_id": run_id,
         "what": "step.completed written 2 times for step number 2"},
        {"kind": "orphaned", "wf_id": "shop-7", "run_id": "01NOSUCHRUN",
         "what": "a store value of a run that has no run record and no timer"},
    ]  # fmt: skip
    # --since: runs started before the window are not judged; the orphan is state, still seen.
    recent = await _verify(connection, since=timedelta(milliseconds=1))
    assert recent["runs"] == 0 and recent["counts"]["orphaned"] == 1


async def test_verify_refuses_a_bad_window(connection: Connection) -> None:
    with pytest.raises(InvalidArgumentError, match="since must be a positive timedelta"):
        await _verify(connection, since=timedelta(0))
