"""A poison record in `directives` goes to `dead-letter` with its reason; the partition keeps moving."""

from __future__ import annotations

import asyncio

import pytest
from confluent_kafka import Producer

from grctl import Client, Connection, Context, Directive, Workflow
from grctl.engine.records import StartCmd, encoder
from grctl.kafka.partitioner import partition_for
from tests.support.topics import read_committed

pytestmark = pytest.mark.kafka

wf = Workflow(workflow_type="Poisoned")


@wf.start()
async def start(ctx: Context, n: int) -> Directive:
    return ctx.next.complete(n * 2)


def dead_letters(servers: str, topic: str, partition: int) -> list[tuple[bytes, dict[str, bytes]]]:
    """Every committed record of the dead-letter partition, read to its end offset (value, headers)."""
    return [(m.value(), dict(m.headers() or [])) for m in read_committed(servers, topic, [partition])]


async def test_poison_records_go_to_dead_letter_and_partition_moves_on(
    workers, client: Client, connection: Connection, kafka_bootstrap: str
) -> None:
    await workers.start([wf])
    wf_id = "poison-neighbour"
    part = partition_for(wf_id, connection.num_partitions)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    directives = connection.topics.directives
    # 1. bytes that are not msgpack; 2. msgpack of an unknown record type; 3. a record on the wrong partition.
    producer.produce(directives, b"\xc1\xff not msgpack", wf_id.encode(), partition=part)
    producer.produce(
        directives, encoder.encode({"t": "launch-missiles", "wf_id": wf_id}), wf_id.encode(), partition=part
    )
    other = next(f"misplaced-{i}" for i in range(1000) if partition_for(f"misplaced-{i}", 4) != part)
    wrong = StartCmd(wf_id=other, run_id="01J00000000000000000000000", wf_type="Poisoned", input={"n": 1})
    producer.produce(directives, encoder.encode(wrong), other.encode(), partition=part)
    producer.flush(10)

    # Runs on the same partition, sent after the poison, still complete.
    assert await client.run_workflow("Poisoned", wf_id, {"n": 21}) == 42

    # The run completed after the poison records were applied, so their dead letters are committed.
    dead = await asyncio.to_thread(dead_letters, kafka_bootstrap, connection.topics.dead_letter, part)
    reasons = sorted(h["grctl.reason"].decode() for _, h in dead)
    assert len(dead) == 3, reasons
    assert any("undecodable" in r for r in reasons)
    assert any("wrong partition" in r for r in reasons)
    assert dead[0][0] == b"\xc1\xff not msgpack"
    assert all(h["grctl.topic"].decode() == directives for _, h in dead)
