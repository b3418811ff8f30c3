"""A Kafka-native pipeline: topics start runs and feed them events, runs publish to topics.

- `orders`: each record (JSON ``{"order": ..., "amount": ...}``, keyed by order id) starts an
  `Order` run whose workflow id is the order id;
- `payments`: each record (keyed by order id) delivers a ``paid`` event to that order's run;
- the run's ship step emits one record per order to `shipments` (`ctx.emit`), in the
  transaction that commits the step;
- every ended run publishes its outcome to `order-results` (`Workflow(results_topic=...)`).

Run it against a broker (``grctl dev kafka start``, or GRCTL_KAFKA_SERVERS)::

    python -m examples.pipeline --orders 1000

It creates the topics (prefixed with a fresh run name, so it can run again), runs a worker in
this process, produces N orders and, once their runs exist, a payment for each, and exits 0 only
when every order produced exactly one shipment and one completed result (read back with
read_committed), else 1. (An event for a workflow id that has no run yet is refused; a payment
that can come before its order would start the run instead, or wait in the order's source.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from ulid import ULID

from grctl import Client, Connection, Context, Directive, Worker, Workflow
from grctl.worker import SendEvent, Source, SourceRecord, StartRun

PARTITIONS = 3


def build(topics: dict[str, str]) -> tuple[Workflow, list[Source]]:
    """The Order workflow and the two sources that drive it."""
    order = Workflow(workflow_type="Order", results_topic=topics["results"])

    @order.start()
    async def start(ctx: Context, order: str, amount: int) -> Directive:
        ctx.store.put("amount", amount)
        return ctx.next.wait()  # for its payment

    @order.event()
    async def paid(ctx: Context, amount: int) -> Directive:
        if amount != await ctx.store.get("amount"):
            return ctx.next.fail(f"paid {amount}, owed {await ctx.store.get('amount')}")
        return ctx.next.step(ship)

    @order.step()
    async def ship(ctx: Context) -> Directive:
        ctx.emit(topics["shipments"], {"order": ctx.run.wf_id, "at": (await ctx.now()).isoformat()}, key=ctx.run.wf_id)
        return ctx.next.complete({"order": ctx.run.wf_id, "shipped": True})

    def to_order(rec: SourceRecord) -> StartRun:
        return StartRun("Order", {"order": rec.value["order"], "amount": rec.value["amount"]}, id=rec.value["order"])

    def to_payment(rec: SourceRecord) -> SendEvent:
        return SendEvent(rec.value["order"], "paid", {"amount": rec.value["amount"]})

    return order, [Source(topics["orders"], to_order), Source(topics["payments"], to_payment)]


def create_topics(admin: AdminClient, names: list[str]) -> None:
    rf = min(3, len(admin.list_topics(timeout=10).brokers))
    futures = admin.create_topics([NewTopic(n, num_partitions=PARTITIONS, replication_factor=rf) for n in names])
    for fut in futures.values():
        fut.result(30)
    deadline = time.monotonic() + 30
    while not all(
        (m := admin.list_topics(topic=n, timeout=10).topics.get(n)) is not None
        and m.error is None
        and all(p.leader >= 0 for p in m.partitions.values())
        for n in names
    ):
        if time.monotonic() > deadline:
            raise SystemExit(f"topics {names} have no leaders after 30 s")
        time.sleep(0.1)


def produce(servers: str, topic: str, n: int) -> None:
    """N records ``{"order": "order-<i>", "amount": ...}`` keyed by order id (orders, or their payments)."""
    producer = Producer({"bootstrap.servers": servers, "enable.idempotence": True, "linger.ms": 5})
    for i in range(n):
        order = f"order-{i}"
        producer.produce(topic, json.dumps({"order": order, "amount": 10 + i % 7}), order)
        if i % 1000 == 999:
            producer.poll(0)
    if producer.flush(60) != 0:
        raise SystemExit(f"the records for {topic} were not all acknowledged within 60 s")


async def wait_for_runs(client: Client, n: int, timeout: float) -> None:
    """Until the namespace holds `n` runs: a payment is for an order that exists (its run waits for it)."""
    deadline = time.monotonic() + timeout
    while True:
        page = await client.list_workflows(limit=1, counts=True)
        total = sum(sum(by_type.values()) for by_type in (page.counts or {}).values())
        if total >= n:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"only {total} of {n} orders started a run within {timeout:.0f} s")
        await asyncio.sleep(0.2)


def read_until(servers: str, topic: str, n: int, timeout: float) -> list[dict[str, object]]:
    """`n` committed records of `topic` (or fewer, if `timeout` passes), then whatever else is there."""
    consumer = Consumer({"bootstrap.servers": servers, "group.id": f"{topic}-check", "enable.auto.commit": False,
                         "isolation.level": "read_committed"})  # fmt: skip
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
    out: list[dict[str, object]] = []
    deadline = time.monotonic() + timeout
    quiet_until = None
    try:
        while time.monotonic() < deadline:
            msgs = [m for m in consumer.consume(1000, 0.5) if m.error() is None]
            out += [json.loads(m.value()) for m in msgs]
            if len(out) >= n:  # then a moment more, so that a duplicate would be seen too
                quiet_until = quiet_until or time.monotonic() + 2.0
                if time.monotonic() > quiet_until:
                    break
        return out
    finally:
        consumer.close()


async def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--orders", type=int, default=1000, help="orders to produce")
    ap.add_argument("--servers", default=os.environ.get("GRCTL_KAFKA_SERVERS", "127.0.0.1:9092"))
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for every result")
    args = ap.parse_args(argv)
    run = f"pipeline-{str(ULID()).lower()[-8:]}"
    topics = {r: f"{run}-{r}" for r in ("orders", "payments", "shipments", "results")}
    admin = AdminClient({"bootstrap.servers": args.servers})
    create_topics(admin, list(topics.values()))
    order, sources = build(topics)
    conn = await Connection.connect(args.servers, run, partitions=4)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as state:
        worker = Worker([order], conn, state_dir=Path(state), sources=sources)
        task = asyncio.create_task(worker.run())
        await worker.wait_until_ready(60)
        client = Client(conn)
        await asyncio.to_thread(produce, args.servers, topics["orders"], args.orders)
        await wait_for_runs(client, args.orders, args.timeout)  # payments come once orders exist
        await client.close()
        await asyncio.to_thread(produce, args.servers, topics["payments"], args.orders)
        results = await asyncio.to_thread(read_until, args.servers, topics["results"], args.orders, args.timeout)
        elapsed = time.monotonic() - t0
        shipments = await asyncio.to_thread(read_until, args.servers, topics["shipments"], args.orders, 30)
        await worker.stop()
        await task
    await conn.close()
    wanted = {f"order-{i}" for i in range(args.orders)}
    shipped = Counter(str(s["order"]) for s in shipments)
    ended = Counter(str(r["wf_id"]) for r in results)
    completed = {str(r["wf_id"]) for r in results if r["status"] == "completed"}
    ok = set(shipped) == wanted == set(ended) == completed and set(shipped.values()) == set(ended.values()) == {1}
    sys.stdout.write(
        f"{args.orders} orders in {elapsed:.1f}s ({args.orders / elapsed:.0f} orders/s): {len(shipped)} shipped, "
        f"{len(completed)} completed, duplicates {sum(n - 1 for n in shipped.values())} shipments / "
        f"{sum(n - 1 for n in ended.values())} results -> {'OK' if ok else 'MISMATCH'} (topics {run}-*)\n"
    )
    admin.delete_topics(list(topics.values()))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
