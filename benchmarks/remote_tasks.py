"""Remote tasks (issue 28): the round trip a remote task adds over a local `@task`, and throughput.

Usage: python -m benchmarks.remote_tasks [HOST:PORT] [--runs 3000] [--out benchmarks/results/remote_tasks.json]

One engine worker runs in this process; two task workers (`grctl.TaskWorker`, concurrency 64)
run as subprocesses of their own. Baseline in the same run: the same one-step workflow with a
local `@task` instead of the remote one.

1. Light load: 200 runs of each kind one after another, interleaved (local, remote, local, ...);
   start -> result latency per run, p50/p99, and the difference of the medians.
2. Throughput: `--runs` runs of each kind started at once (500 in flight at most); completed
   runs per second (one task per run: remote tasks per second through one engine worker).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ulid import ULID

from grctl import Client, Connection, Context, Directive, Worker, Workflow, task
from grctl.taskworker import TaskWorker

QUEUE = "bench"
ROOT = Path(__file__).resolve().parents[1]

local_wf = Workflow(workflow_type="LocalTask")
remote_wf = Workflow(workflow_type="RemoteTask")


@task
async def echo_local(value: int) -> int:
    return value + 1


@local_wf.start()
async def local_start(ctx: Context, value: int) -> Directive:
    return ctx.next.complete(await echo_local(value))


@remote_wf.start()
async def remote_start(ctx: Context, value: int) -> Directive:
    return ctx.next.complete(await ctx.remote_task("echo", value, queue=QUEUE))


async def echo(value: int) -> int:
    return value + 1


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return round(values[min(len(values) - 1, int(q * len(values)))], 2)


async def task_worker_main(servers: str, namespace: str) -> None:
    conn = await Connection.connect(servers, namespace, create_namespace=False)
    async with TaskWorker([echo], conn, queue=QUEUE, concurrency=int(os.environ.get("BENCH_TASK_CONCURRENCY", "64"))):
        print("ready", flush=True)  # the parent waits for it
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until stdin closes


async def main(args: argparse.Namespace) -> dict[str, Any]:
    logging.basicConfig(level=logging.WARNING)
    servers = args.servers or os.environ.get("GRCTL_KAFKA_SERVERS", "127.0.0.1:9092")
    ns = "rt" + str(ULID())[-8:].lower()
    conn = await Connection.connect(servers, ns, partitions=12)
    # The queue topic exists before the task workers join (they create it if missing, too).
    async with TaskWorker([echo], conn, queue=QUEUE, concurrency=1):
        pass
    argv = [sys.executable, "-m", "benchmarks.remote_tasks", servers, "--task-worker", ns]
    procs = [subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT) for _ in range(2)]
    for p in procs:
        assert p.stdout is not None
        assert p.stdout.readline().startswith(b"ready")
    worker = Worker([local_wf, remote_wf], conn, state_dir=tempfile.mkdtemp(prefix="grctl-rt-"))
    running = asyncio.create_task(worker.run())
    await worker.wait_until_ready(60)
    client = Client(conn)
    out: dict[str, Any] = {"servers": servers, "partitions": 12, "task_workers": 2}
    try:
        for kind in ("LocalTask", "RemoteTask"):  # warm up both paths
            for i in range(20):
                await client.run_workflow(kind, f"warm-{kind}-{i}", {"value": i})
        lat: dict[str, list[float]] = {"LocalTask": [], "RemoteTask": []}
        for i in range(200):
            for kind in ("LocalTask", "RemoteTask"):
                t0 = time.perf_counter()
                assert await client.run_workflow(kind, f"lat-{kind}-{i}", {"value": i}) == i + 1
                lat[kind].append((time.perf_counter() - t0) * 1000)
        for kind, values in lat.items():
            out[f"{kind}_latency_ms"] = {"p50": pct(values, 0.5), "p99": pct(values, 0.99), "n": len(values)}
        out["remote_adds_p50_ms"] = round(out["RemoteTask_latency_ms"]["p50"] - out["LocalTask_latency_ms"]["p50"], 2)
        out["remote_adds_p99_ms"] = round(out["RemoteTask_latency_ms"]["p99"] - out["LocalTask_latency_ms"]["p99"], 2)
        sem = asyncio.Semaphore(500)
        for kind in ("LocalTask", "RemoteTask"):

            async def one(i: int, kind: str = kind) -> Any:
                async with sem:
                    h = await client.start_workflow(kind, f"tp-{kind}-{i}", {"value": i})
                    return await h.result(timeout=600)

            t0 = time.perf_counter()
            results = await asyncio.gather(*(one(i) for i in range(args.runs)))
            elapsed = time.perf_counter() - t0
            assert results == [i + 1 for i in range(args.runs)]
            out[f"{kind}_runs_per_s"] = round(args.runs / elapsed, 1)
        out["runs"] = args.runs
    finally:
        await client.close()
        await worker.stop()
        await running
        for p in procs:
            assert p.stdin is not None
            p.stdin.close()
            p.wait(60)
    print(json.dumps(out, indent=2))  # the benchmark's report
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("servers", nargs="?")
    ap.add_argument("--runs", type=int, default=3000)
    ap.add_argument("--out")
    ap.add_argument("--task-worker", metavar="NAMESPACE")
    ns = ap.parse_args()
    if ns.task_worker:
        asyncio.run(task_worker_main(ns.servers, ns.task_worker))
    else:
        report = asyncio.run(main(ns))
        if ns.out:
            Path(ns.out).write_text(json.dumps(report, indent=2) + "\n")
