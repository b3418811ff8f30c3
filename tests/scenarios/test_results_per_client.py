"""Results delivered per client (issue "Run for weeks"): no client reads the history topic.

A client reads only its own partition of `replies`: the start acknowledgement and the outcome
of every run it watches are written there by the owning worker, in the transactions of the
transitions themselves.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from confluent_kafka.admin import AdminClient

from grctl import Client, Context, Directive, Workflow
from grctl.errors import NoWorkerAnsweredError
from grctl.kafka.connection import Connection
from grctl.kafka.partitioner import partition_for
from tests.conftest import WorkerRunner

pytestmark = pytest.mark.kafka

gate = Workflow(workflow_type="Gate")


@gate.start()
async def gate_start(ctx: Context) -> Directive:
    return ctx.next.wait()


@gate.event()
async def open_gate(ctx: Context, value: str) -> Directive:
    return ctx.next.complete(value)


async def test_a_client_reads_only_its_own_reply_partition(
    workers: WorkerRunner, client: Client, connection: Connection
) -> None:
    await workers.start([gate])
    handle = await client.start_workflow("Gate", "gate-1")
    io = client._io
    assert io is not None
    assignment = io.assignment  # what the reader was assigned (librdkafka's assignment() blocks while it polls)
    expected = partition_for(client.id, connection.num_partitions)
    assert [(tp.topic, tp.partition) for tp in assignment] == [(connection.topics.replies, expected)]
    await handle.send("open_gate", {"value": "v"})
    assert await handle.result(timeout=30) == "v"


async def test_a_second_clients_handle_gets_the_outcome_of_a_run_the_first_started(
    workers: WorkerRunner, client: Client, connection: Connection
) -> None:
    await workers.start([gate])
    started = await client.start_workflow("Gate", "gate-2")
    other = Client(connection)
    try:
        watched = await other.get_workflow_handle("gate-2")
        again = await other.get_workflow_handle("gate-2")  # two handles of one client: both get it
        assert watched.run_info.id == started.run_info.id and not watched.future.done()
        await other.send_event("gate-2", "open_gate", {"value": "both"})
        assert await started.result(timeout=30) == "both"
        assert await watched.result(timeout=30) == "both"
        assert await again.result(timeout=30) == "both"
        late = await other.get_workflow_handle("gate-2")  # after the end: settled from the answer
        assert late.future.done() and await late.result() == "both"
    finally:
        await other.close()


async def test_without_a_worker_calls_fail_at_once_saying_so(connection: Connection, client: Client) -> None:
    with pytest.raises(NoWorkerAnsweredError, match="has no running worker"):
        await client.start_workflow("Gate", "nobody")
    with pytest.raises(NoWorkerAnsweredError, match="has no running worker"):
        await client.describe("nobody")
    with pytest.raises(NoWorkerAnsweredError, match=r"joined its group within 0\.5s"):
        await client.wait_for_workers(0.5)


async def test_a_group_that_just_emptied_is_between_sessions_and_requests_wait_for_it(
    connection: Connection, client: Client, workers: WorkerRunner
) -> None:
    # A worker restarting (or a session restarting after a broker failure) leaves the group
    # empty for a few seconds: a client that saw workers moments ago sends its requests and
    # waits for them, instead of failing at once with "no running worker" (the broker-fault
    # tests met this: starts refused while the one worker's session restarted).
    await workers.start([gate])
    first = await client.start_workflow("Gate", "before-restart")
    await workers.stop_all()
    admin = AdminClient(connection.client_config())
    group = f"grctl.{connection.namespace}.workers"
    deadline = time.monotonic() + 60
    while admin.describe_consumer_groups([group])[group].result(10).members:  # static member expires
        assert time.monotonic() < deadline, "the stopped worker never left the group"
        await asyncio.sleep(0.2)
    client.request_timeout = 1.0
    with pytest.raises(NoWorkerAnsweredError, match="accepted run") as raised:
        await client.start_workflow("Gate", "during-restart")
    assert raised.value.timeout > 0  # sent and waited for, not refused before sending
    await workers.start([gate])
    late = await client.get_workflow_handle("during-restart")  # the queued start was served
    assert late.run_info.status == "running" and late.run_info.id != first.run_info.id
