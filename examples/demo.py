"""A tour of grctl: the workflows of `examples.workflows`, a worker and a client, on a real Kafka.

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
from pathlib import Path

from confluent_kafka.admin import AdminClient
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table
from ulid import ULID

from examples.workflows import WORKFLOWS
from grctl import Client, Connection, Worker, WorkflowHandle

NAMESPACE = "demo"
# A demo namespace needs few partitions; the default (12) suits real deployments.
PARTITIONS = 4


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
