"""The two reproductions of the issue "One oversized value stalls a whole worker", on a real Kafka.

With the broker's default limits (topics take 1,048,588 bytes, the producer 1,000,000):

1. a start step does `ctx.store.put("blob", "x" * 2_000_000)`; a 10-byte run starts meanwhile;
2. start records written by another producer straight to `directives`, one with a 900 KiB input
   (under the value limit) and one with a 985 KB input (over it, still under what the producer
   and the topic take).

Before the fix the first made the worker's transaction fail with MSG_SIZE_TOO_LARGE and its
session restart forever, and the 900 KB start did the same (the run record held the input
twice). Now: the put fails in the step with PayloadTooLargeError, the small run completes at
once, the 900 KiB run completes, and the 985 KB start is rejected with the same error.

    grctl dev kafka start                  # or GRCTL_KAFKA_SERVERS=host:port
    python -m examples.oversized
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from rich.console import Console
from ulid import ULID

from grctl import Client, Connection, Context, Directive, Worker, Workflow
from grctl.engine.records import StartCmd, encoder
from grctl.errors import WorkflowError
from grctl.kafka.partitioner import partition_for
from grctl.kafka.topics import delete_namespace

out = Console(highlight=False, soft_wrap=True)
blob = Workflow(workflow_type="Blob")


@blob.start()
async def start(ctx: Context, size: int, pad: str) -> Directive:
    if size:
        ctx.store.put("blob", "x" * size)
    return ctx.next.complete(f"stored {size} bytes, input of {len(pad)} bytes")


async def outcome(handle: Any) -> str:
    try:
        return f"completed: {await handle.result(timeout=60)}"
    except WorkflowError as exc:
        return f"failed: {exc.error_type}: {exc.error_message}"


async def main() -> None:
    ns = f"oversized-{str(ULID()).lower()[-8:]}"
    conn = await Connection.connect(namespace=ns, partitions=4)
    limits = conn.limits
    out.print(
        f"namespace {ns}: value limit {limits.value_bytes:,} bytes, records {min(limits.record_bytes.values()):,}"
    )
    with tempfile.TemporaryDirectory() as state:
        worker = Worker([blob], conn, state_dir=Path(state))
        running = asyncio.create_task(worker.run())
        await worker.wait_until_ready(60)
        client = Client(conn)
        try:
            # 1. A 2 MB store value, and a 10-byte run started right after it.
            t0 = time.monotonic()
            big = await client.start_workflow("Blob", "blob-2mb", {"size": 2_000_000, "pad": ""})
            small = await client.start_workflow("Blob", "small", {"size": 10, "pad": ""})
            out.print(
                f"10-byte run: {await outcome(small)} ({(time.monotonic() - t0) * 1000:.0f} ms after both started)"
            )
            out.print(f"2 MB put:    {await outcome(big)}")
            # 2. Starts from another producer, past the client's own check.
            producer = Producer({"bootstrap.servers": conn.servers})
            runs = {}
            for name, pad in (("input-900kb", 900 * 1024), ("input-985kb", 985_000)):
                cmd = StartCmd(wf_id=name, run_id=str(ULID()), wf_type="Blob", input={"size": 0, "pad": "p" * pad})
                producer.produce(conn.topics.directives, encoder.encode(cmd), name.encode(), partition_for(name, 4))
                runs[name] = cmd.run_id
            producer.flush(30)
            for name, run_id in runs.items():
                out.print(f"{name}: {await wait_outcome(client, name, run_id)}")
        finally:
            await client.close()
            await worker.stop()
            await running
            delete_namespace(AdminClient(conn.client_config()), conn.topics)


async def wait_outcome(client: Client, wf_id: str, run_id: str) -> str:
    """The end of a run started by another producer (or its rejection), read from its history."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for event in await client.get_history(wf_id, run_id=run_id):
            if event.kind == "run.completed":
                return f"completed: {event.msg.result}"
            if event.kind == "run.rejected":
                return f"rejected ({event.msg.code}): {event.msg.message}"
            if event.kind == "run.failed":
                return f"failed: {event.msg.error}"
        await asyncio.sleep(0.2)
    return "no outcome within 60 s"


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    asyncio.run(main())
