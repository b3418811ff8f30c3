"""Kafka topics in and out: records of your topics start runs and deliver events; runs emit records.

Run it against a broker (`python docs/examples/sources.py`): it creates three topics named after
the namespace, writes an order and its payment, and prints the run's result.
"""

import asyncio
import json
import os
import time

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from grctl import Client, Connection

# --8<-- [start:workflow]
from grctl import Context, Directive, Worker, Workflow
from grctl.worker import SendEvent, Source, StartRun

PREFIX = os.environ.get("GRCTL_NAMESPACE", "default")  # topics of your own, here named after the namespace
ORDERS, PAYMENTS, SHIPMENTS = f"{PREFIX}.orders", f"{PREFIX}.payments", f"{PREFIX}.shipments"

order = Workflow(workflow_type="PaidOrder", results_topic=f"{PREFIX}.order-results")  # each outcome, as JSON


@order.start()
async def start(ctx: Context, order: str, amount: int) -> Directive:
    ctx.store.put("amount", amount)
    return ctx.next.wait()


@order.event()
async def paid(ctx: Context, amount: int) -> Directive:
    ctx.emit(SHIPMENTS, {"order": ctx.run.wf_id}, key=ctx.run.wf_id)  # produced with this step's commit
    return ctx.next.complete({"shipped": True, "paid": amount})


SOURCES = [
    Source(ORDERS, lambda rec: StartRun("PaidOrder", rec.value, id=rec.value["order"])),
    Source(PAYMENTS, lambda rec: SendEvent(rec.value["order"], "paid", {"amount": rec.value["amount"]})),
]


def make_worker(conn) -> Worker:
    return Worker([order], conn, sources=SOURCES)


# --8<-- [end:workflow]


def create_topics(conn: Connection, topics: list[str]) -> None:
    """Create the example's topics (once) and wait until brokers know them."""
    admin = AdminClient(conn.client_config())
    for fut in admin.create_topics([NewTopic(t, 1, 1) for t in topics]).values():
        try:
            fut.result()
        except Exception as exc:  # already there from an earlier run
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise
    while any(admin.list_topics(t, timeout=10).topics[t].error for t in topics):
        time.sleep(0.1)  # a new topic's metadata reaches every broker a moment later


async def main() -> None:
    conn = await Connection.connect()
    create_topics(conn, [ORDERS, PAYMENTS, SHIPMENTS, f"{PREFIX}.order-results"])
    worker = make_worker(conn)
    running = asyncio.create_task(worker.run())
    await worker.wait_until_ready(30)
    producer = Producer(conn.client_config())
    producer.produce(ORDERS, json.dumps({"order": "A-1", "amount": 30}).encode(), b"A-1")
    producer.flush(10)
    async with Client(conn) as client:
        for _ in range(100):  # the source starts the run; wait until it exists
            try:
                handle = await client.get_workflow_handle("A-1")
                break
            except Exception:
                await asyncio.sleep(0.1)
        producer.produce(PAYMENTS, json.dumps({"order": "A-1", "amount": 30}).encode(), b"A-1")
        producer.flush(10)
        print(await handle.result())  # {'shipped': True, 'paid': 30}
    await worker.stop()
    await running


if __name__ == "__main__":
    asyncio.run(main())
