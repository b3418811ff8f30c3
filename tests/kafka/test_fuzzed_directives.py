"""Fuzzed records produced into `directives` at a real broker (issue 15, hostile input).

Hundreds of hostile records (random bytes, truncated envelopes, envelopes of a known kind with
wrong field types, unknown kinds, nesting past the recursion limit, at the top and inside a
start's input) go to the namespace's partitions among real runs started by a client, some of
them carrying garbage headers. Every hostile record ends in `dead-letter` with its reason and
offset, the worker's session never restarts, every run around them ends with its result, and
`verify` finds the namespace clean. A record over the topic's size limit is refused by the
broker and never reaches the worker.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import msgspec
import pytest
from confluent_kafka import KafkaError, Producer
from confluent_kafka.admin import AdminClient, ConfigResource

from grctl import Client, Connection, Context, Directive, Workflow
from grctl.client.verify import verify_namespace
from grctl.engine.records import StartCmd, directive_decoder, encoder
from grctl.kafka.partitioner import partition_for
from tests.support.topics import read_committed

pytestmark = pytest.mark.kafka

wf = Workflow(workflow_type="Fuzzed")


@wf.start()
async def start(ctx: Context, n: int) -> Directive:
    ctx.store.put("n", n)
    return ctx.next.step(double)


@wf.step()
async def double(ctx: Context) -> Directive:
    return ctx.next.complete(await ctx.store.get("n") * 2)


def hostile_records(rng: random.Random, wf_id: str, count: int) -> list[bytes]:
    """`count` records that no directive decoder accepts, of every hostile kind in turn."""
    valid = encoder.encode(StartCmd(wf_id=wf_id, run_id="01J00000000000000000000000", wf_type="Fuzzed", input={"n": 1}))
    envelope = msgspec.msgpack.encode({"t": "start", "wf_id": wf_id, "run_id": "r", "wf_type": "Fuzzed"})
    wrong_types: list[dict[str, Any]] = [
        {"t": "start", "wf_id": 7, "run_id": "r", "wf_type": "Fuzzed"},
        {"t": "start", "wf_id": wf_id, "run_id": ["r"], "wf_type": "Fuzzed"},
        {"t": "event", "wf_id": wf_id, "event_name": {"x": 1}},
        {"t": "cancel", "wf_id": wf_id, "terminate": "yes"},
        {"t": "next", "wf_id": wf_id, "run_id": "r", "seq": "one"},
        {"t": "start", "wf_id": wf_id, "run_id": "r", "wf_type": "Fuzzed", "reply_to": "me"},
    ]
    makers = [
        lambda: rng.randbytes(rng.randint(1, 200)),
        lambda: valid[: rng.randint(1, len(valid) - 1)],
        lambda: encoder.encode(rng.choice(wrong_types)),
        lambda: encoder.encode({"t": rng.choice(["launch", "", "START", "next2"]), "wf_id": wf_id}),
        lambda: b"\x91" * rng.randint(20_000, 200_000) + b"\xc0",
        lambda: bytes([envelope[0] + 1]) + envelope[1:] + encoder.encode("input") + b"\x81\xa1k" * 50_000 + b"\xc0",
    ]
    out: list[bytes] = []
    while len(out) < count:
        data = makers[len(out) % len(makers)]()
        try:
            directive_decoder.decode(data)
        except (msgspec.DecodeError, RecursionError):
            out.append(data)  # random bytes that happen to decode (never seen) are simply redrawn
    return out


def garbage_headers(rng: random.Random) -> list[tuple[str, bytes]]:
    names = ["", "grctl.reason", "traceparent", "x" * 300, "\u00e9\u00e8", "grctl.offset"]
    return [(rng.choice(names), rng.randbytes(rng.randint(0, 64))) for _ in range(rng.randint(1, 8))]


def topic_max_message_bytes(conn: Connection) -> int:
    admin = AdminClient(conn.client_config())
    resource = ConfigResource(ConfigResource.Type.TOPIC, conn.topics.directives)
    (future,) = admin.describe_configs([resource]).values()
    return int(future.result(timeout=30)["max.message.bytes"].value)


async def test_fuzzed_directives_go_to_dead_letter_and_the_runs_around_them_are_unaffected(
    workers, client: Client, connection: Connection, kafka_bootstrap: str
) -> None:
    worker = await workers.start([wf], metrics_port=0)
    assert worker.metrics is not None
    rng = random.Random(15)
    parts = connection.num_partitions
    directives = connection.topics.directives
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "message.max.bytes": 64 * 2**20})
    errors: list[KafkaError] = []

    def delivered(err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            errors.append(err)

    # A record over the topic's limit: the broker refuses it, so nothing reaches the worker.
    oversized = b"\x00" * (topic_max_message_bytes(connection) + 1024)
    producer.produce(directives, oversized, b"big", partition=0, on_delivery=delivered)
    producer.flush(30)
    assert [e.code() for e in errors] == [KafkaError.MSG_SIZE_TOO_LARGE]
    errors.clear()

    sent: dict[int, int] = dict.fromkeys(range(parts), 0)
    handles = []
    for i in range(40):
        wf_id = f"fuzz-{i}"
        part = partition_for(wf_id, parts)
        for data in hostile_records(rng, wf_id, 6):
            key = rng.choice([wf_id.encode(), b"", rng.randbytes(8)])
            producer.produce(directives, data, key, partition=part, headers=garbage_headers(rng), on_delivery=delivered)
            sent[part] += 1
        producer.flush(30)
        handles.append(await client.start_workflow("Fuzzed", wf_id, {"n": i}))
    # Valid starts carrying garbage headers are runs like any other.
    for i in range(40, 50):
        wf_id = f"fuzz-{i}"
        start = StartCmd(wf_id=wf_id, run_id=f"01J0000000000000000000{i:04d}", wf_type="Fuzzed", input={"n": i})
        producer.produce(directives, encoder.encode(start), wf_id.encode(), partition=partition_for(wf_id, parts),
                         headers=garbage_headers(rng), on_delivery=delivered)  # fmt: skip
    producer.flush(30)
    assert not errors
    for i in range(40, 50):
        handles.append(await client.get_workflow_handle(f"fuzz-{i}"))

    results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), 120)
    assert results == [2 * i for i in range(50)]

    for part, count in sent.items():
        dead = await asyncio.to_thread(read_committed, kafka_bootstrap, connection.topics.dead_letter, [part])
        reasons = [dict(m.headers() or [])["grctl.reason"].decode() for m in dead]
        assert len(dead) == count, (part, reasons)
        assert all(r.startswith("undecodable directive record") for r in reasons), reasons
        offsets = [int(dict(m.headers() or [])["grctl.offset"]) for m in dead]
        assert offsets == sorted(set(offsets)), "each hostile record is dead-lettered once, in order"
    assert worker.metrics.session_restarts == 0
    assert sum(worker.metrics.dead_letters.values()) == sum(sent.values())

    report = await asyncio.to_thread(verify_namespace, connection)
    assert report.clean, report
