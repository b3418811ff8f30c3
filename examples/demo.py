"""A tour of grctl in one file: two workflows, a worker and a client, on a real Kafka.

Run it with ``scripts/demo`` (starts a local broker first), or by hand::

    grctl dev kafka start           # a local broker on 127.0.0.1:9092
    python -m examples.demo         # GRCTL_KAFKA_SERVERS overrides the address

The worker runs in this process for convenience; in production workers are their own
processes (see ``examples/demo_worker.py`` and ``deploy/``). Workflow ids get a ULID suffix so
the demo can run again and again against the same broker.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from confluent_kafka.admin import AdminClient
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table
from ulid import ULID

from grctl import Client, Connection, Context, Directive, RetryPolicy, Worker, Workflow, WorkflowHandle
from grctl.worker import ChildOutcome, task

NAMESPACE = "demo"
# A demo namespace needs few partitions; the default (12) suits real deployments.
PARTITIONS = 4

# --------------------------------------------------------------------------------------------
# Order: three steps that hand typed data to each other through the run's store.

order = Workflow(workflow_type="Order")


@dataclass
class Order:
    """What the first step stores; the later steps read it back as an Order."""

    order_id: str
    items: list[str]
    unit_price: float
    received_at: datetime


@order.start()
async def receive(ctx: Context, order_id: str, items: list[str], unit_price: float) -> Directive:
    # ctx.now() is recorded in the run's journal: a re-executed step gets the same time back.
    ctx.store.put("order", Order(order_id, items, unit_price, received_at=await ctx.now()))
    ctx.logger.info("order %s received: %d item(s)", order_id, len(items))
    return ctx.next.step(price)


_quote_attempts: dict[str, int] = {}


@task(retry_policy=RetryPolicy(max_attempts=3, initial_delay_ms=50, backoff_multiplier=2.0))
async def quote(order_id: str, items: int, unit_price: float) -> float:
    """A side effect with retries: the pricing service fails the first call of every order."""
    _quote_attempts[order_id] = _quote_attempts.get(order_id, 0) + 1
    if _quote_attempts[order_id] == 1:
        raise ConnectionError(f"pricing service busy for {order_id}")
    return round(items * unit_price, 2)


@order.step()
async def price(ctx: Context) -> Directive:
    received = await ctx.store.get("order", Order)  # typed get: a dataclass again
    # The task's outcome is journaled: a re-executed step gets it back without calling again.
    total = await quote(received.order_id, len(received.items), received.unit_price)
    ctx.store.put("total", total)
    ctx.logger.info("order %s priced at %.2f", received.order_id, total)
    return ctx.next.step(ship)


@order.step()
async def ship(ctx: Context) -> Directive:
    received = await ctx.store.get("order", Order)
    total = await ctx.store.get("total", float)
    elapsed_ms = (await ctx.now() - received.received_at).total_seconds() * 1000
    ctx.logger.info("order %s shipped %.0f ms after it arrived", received.order_id, elapsed_ms)
    return ctx.next.complete({"order": received.order_id, "total": total, "status": "shipped"})


# --------------------------------------------------------------------------------------------
# Approval: waits durably for an event.

approval = Workflow(workflow_type="Approval")


@approval.start()
async def request(ctx: Context, document: str) -> Directive:
    ctx.store.put("document", document)
    ctx.logger.info("approval of %r requested", document)
    # A durable timer: without an `approve` event within 60 s the run fails with a timeout.
    return ctx.next.wait(timeout=timedelta(seconds=60))


@approval.event()
async def approve(ctx: Context, approver: str) -> Directive:
    document = await ctx.store.get("document", str)
    ctx.logger.info("%r approved by %s", document, approver)
    return ctx.next.complete(f"{document} approved by {approver}")


# --------------------------------------------------------------------------------------------
# Batch: a parent that fans out one child Order per line and collects their outcomes.

batch = Workflow(workflow_type="Batch")


@batch.start()
async def split(ctx: Context, lines: list[list[str]]) -> Directive:
    # Each child start is committed with this step's journal: a re-executed step starts none twice.
    for n, items in enumerate(lines, start=1):
        child_input = {"order_id": f"{ctx.run.wf_id}/{n}", "items": items, "unit_price": 2.0}
        await ctx.start_child("Order", f"{ctx.run.wf_id}-line-{n}", child_input, on_completed_step=collect)
    ctx.store.put("expected", len(lines))
    ctx.store.put("totals", [])
    ctx.logger.info("batch of %d orders started", len(lines))
    return ctx.next.wait()


@batch.step()
async def collect(ctx: Context, outcome: ChildOutcome) -> Directive:
    totals = await ctx.store.get("totals", list[float])
    totals.append(outcome.unwrap()["total"] if outcome.ok else 0.0)
    ctx.store.put("totals", totals)
    if len(totals) < await ctx.store.get("expected", int):
        return ctx.next.wait()  # more children to come
    ctx.logger.info("batch complete: %d orders, %.2f in all", len(totals), sum(totals))
    return ctx.next.complete({"orders": len(totals), "total": sum(totals)})


#: Every worker of a namespace serves the same types: `examples.demo_worker` imports this list.
WORKFLOWS = [order, approval, batch]

# --------------------------------------------------------------------------------------------
# The driver: a worker in this process, a client that starts runs and prints what happened.

console = Console()


def setup_logging() -> None:
    """Show the workflows' ctx.logger lines (with their step); keep the engine's logs to warnings."""
    handler = RichHandler(console=console, show_path=False, log_time_format="%H:%M:%S.%f")
    handler.setFormatter(logging.Formatter("%(step)-8s %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    logging.getLogger("grctl.workflow").setLevel(logging.INFO)


async def demo_state_dir(conn: Connection) -> Path:
    """The worker's local state folder: one per Kafka cluster, reused by the next demo run.

    Reusing it keeps the worker's identity, so a rerun takes over the partitions at once instead
    of waiting for the previous run's group membership to time out; a new cluster (say, after
    `grctl dev kafka wipe`) gets a fresh folder.
    """
    admin = AdminClient(conn.client_config())
    metadata = await asyncio.to_thread(admin.list_topics, timeout=10)
    return Path(tempfile.gettempdir()) / f"grctl-demo-state-{metadata.cluster_id}"


async def drive(client: Client, suffix: str) -> None:
    """Start three orders and one approval, approve it, print the results and one history."""
    handles: dict[str, WorkflowHandle] = {}
    for n, items in enumerate([["book"], ["pen", "ink"], ["lamp", "desk", "chair"]], start=1):
        order_input = {"order_id": f"A-{n}", "items": items, "unit_price": 9.5}
        handles[f"order-{n}"] = await client.start_workflow("Order", f"order-{n}-{suffix}", order_input)
    review = await client.start_workflow("Approval", f"approval-{suffix}", {"document": "Q3 budget"})
    handles["approval"] = review
    lines = {"lines": [["tea"], ["cup", "saucer"], ["pot", "tray", "spoon"]]}
    handles["batch"] = await client.start_workflow("Batch", f"batch-{suffix}", lines)
    await review.send("approve", {"approver": "alice"})
    results = await asyncio.gather(*(h.result(timeout=30) for h in handles.values()))

    table = Table(title="results", title_justify="left")
    table.add_column("workflow id")
    table.add_column("result")
    for name, result in zip(handles, results, strict=True):
        table.add_row(f"{name}-…", str(result))
    console.print()
    console.print(table)

    history = await client.get_history(handles["order-1"].run_info.wf_id)
    table = Table(title="history of order-1", title_justify="left")
    table.add_column("+ms", justify="right")
    table.add_column("kind")
    table.add_column("step")
    first = history[0].timestamp
    for event in history:
        ms = (event.timestamp - first).total_seconds() * 1000 if event.timestamp and first else 0
        table.add_row(f"{ms:.0f}", str(event.kind), getattr(event.msg, "step_name", ""))
    console.print()
    console.print(table)


async def main() -> None:
    """Connect, run a worker in this process, drive it with a client, stop the worker."""
    setup_logging()
    t0 = time.monotonic()
    suffix = str(ULID()).lower()
    conn = await Connection.connect(namespace=NAMESPACE, partitions=PARTITIONS)
    console.print(f"connected to {conn.servers}, namespace {conn.namespace!r}")
    console.print(f"workflow ids: <name>-{suffix}")

    worker = Worker(WORKFLOWS, conn, state_dir=await demo_state_dir(conn))
    worker_task = asyncio.create_task(worker.run())
    client = Client(conn)
    try:
        await worker.wait_until_ready(60)
        console.print(f"worker ready after {time.monotonic() - t0:.1f} s")
        await drive(client, suffix)
    finally:
        await client.close()
        await worker.stop(shutdown_timeout=5)
        await worker_task
    console.print(f"done in {time.monotonic() - t0:.1f} s")


if __name__ == "__main__":
    asyncio.run(main())
