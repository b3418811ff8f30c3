"""Cost of journaled calls inside a real step: ctx.now() and a trivial @task, in µs per call.

Usage: python -m benchmarks.call_cost [--servers HOST:PORT] [--calls 2000]
The step runs in a real worker; each call is recorded in the journal and staged for the next
group commit (no network round trip per call), which is what the figure measures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time

from ulid import ULID

from grctl import Client, Connection, Context, Directive, Worker, Workflow
from grctl.worker import task

wf = Workflow(workflow_type="CallCost")


@task
async def noop(i: int) -> int:
    return i


@wf.start()
async def start(ctx: Context, calls: int) -> Directive:
    t0 = time.perf_counter()
    for _ in range(calls):
        await ctx.now()
    now_us = (time.perf_counter() - t0) / calls * 1e6
    t0 = time.perf_counter()
    for i in range(calls):
        await noop(i)
    task_us = (time.perf_counter() - t0) / calls * 1e6
    return ctx.next.complete({"ctx_now_us": round(now_us, 1), "task_call_us": round(task_us, 1), "calls": calls})


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--servers", default=os.environ.get("GRCTL_KAFKA_SERVERS", "127.0.0.1:9092"))
    ap.add_argument("--calls", type=int, default=2000)
    args = ap.parse_args()
    conn = await Connection.connect(args.servers, "cost" + str(ULID())[-8:].lower(), partitions=1)
    worker = Worker([wf], conn, state_dir=tempfile.mkdtemp(prefix="grctl-cost-"))
    running = asyncio.create_task(worker.run())
    await worker.wait_until_ready(60)
    client = Client(conn)
    try:
        results = [await client.run_workflow("CallCost", f"c{i}", {"calls": args.calls}) for i in range(3)]
    finally:
        await client.close()
        await worker.stop()
        await running
    best = min(results, key=lambda r: r["ctx_now_us"] + r["task_call_us"])
    print(json.dumps({"runs": results, "best": best}, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
