"""Limiters (issue 29): what an uncontended acquire adds to a step, and how many grants one limiter makes.

Usage: python -m benchmarks.limiters [HOST:PORT] [--runs 3000] [--out benchmarks/results/limiters/limiters.json]

One engine worker runs in this process (12 partitions); the client too. Baseline in the same run:
the same one-step workflow without a `ctx.limit` section.

1. Light load: 200 runs of each kind one after another, interleaved (plain, limited, plain, ...);
   start -> result latency per run, p50/p99, and the difference of the medians: what an
   uncontended acquire (its request, the grant, the step's re-execution, the release) adds. With
   one worker every request stays in the worker (`LocalInputs`); at the end (4.) a second worker
   joins and the same is measured again, split by whether the run's partition and the limiter's
   are owned by the same worker or not (request and grant then go through Kafka).
2. Grants per second, uncontended: `--runs` limited runs started at once (500 in flight at most)
   on a limiter of concurrency 100,000, against `--runs` plain runs the same way: completed runs
   per second, and their ratio. Every run's grant is made by the one partition that keeps the
   limiter.
3. Grants per second, contended: the same runs on a limiter of concurrency 20: each grant waits
   for a release, so this is the permit's cycle (release -> grant -> re-execution -> release).
4. Light load again with two workers (see 1.).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from ulid import ULID

from grctl import Client, Connection, Context, Directive, Worker, Workflow
from grctl.kafka.partitioner import partition_for

plain_wf = Workflow(workflow_type="Plain")
limited_wf = Workflow(workflow_type="Limited")


@plain_wf.start()
async def plain_start(ctx: Context, value: int) -> Directive:
    return ctx.next.complete(value + 1)


@limited_wf.start()
async def limited_start(ctx: Context, value: int, limiter: str) -> Directive:
    async with ctx.limit(limiter, fairness=f"t{value % 4}"):
        value += 1
    return ctx.next.complete(value)


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return round(values[min(len(values) - 1, int(q * len(values)))], 2)


async def latency(client: Client, n: int, tag: str, same_owner: Any = None) -> dict[str, Any]:
    """Plain and limited runs one after another, interleaved; with `same_owner`, limited runs split by
    whether the worker that owns the run's partition also keeps the limiter (the request stays in the
    worker) or not (request and grant go through Kafka)."""
    plain: list[float] = []
    limited: dict[str, list[float]] = {"local": [], "across": []}
    for i in range(n):
        for kind in ("Plain", "Limited"):
            wf_id = f"lat-{tag}-{kind}-{i}"
            payload: dict[str, Any] = {"value": i}
            if kind == "Limited":
                payload["limiter"] = "open"
            t0 = time.perf_counter()
            await client.run_workflow(kind, wf_id, payload)
            ms = (time.perf_counter() - t0) * 1000
            if kind == "Plain":
                plain.append(ms)
            else:
                limited["local" if same_owner is None or same_owner(wf_id) else "across"].append(ms)
    out: dict[str, Any] = {"runs_each": n, "plain_p50_ms": pct(plain, 0.5), "plain_p99_ms": pct(plain, 0.99)}
    for where, values in limited.items():
        if values:
            out[f"limited_{where}_runs"] = len(values)
            out[f"limited_{where}_p50_ms"] = pct(values, 0.5)
            out[f"limited_{where}_p99_ms"] = pct(values, 0.99)
            out[f"acquire_{where}_adds_p50_ms"] = round(pct(values, 0.5) - pct(plain, 0.5), 2)
    return out


def owner_of(workers: list[Worker], partition: int) -> int | None:
    for n, w in enumerate(workers):
        session = w.session
        if session is not None and partition in session.partitions.processors:
            return n
    return None


async def throughput(client: Client, kind: str, runs: int, limiter: str | None, tag: str) -> float:
    sem = asyncio.Semaphore(500)

    async def one(i: int) -> Any:
        payload: dict[str, Any] = {"value": i}
        if limiter is not None:
            payload["limiter"] = limiter
        async with sem:
            h = await client.start_workflow(kind, f"{tag}-{i}", payload)
            return await h.result(timeout=600)

    t0 = time.perf_counter()
    results = await asyncio.gather(*(one(i) for i in range(runs)))
    elapsed = time.perf_counter() - t0
    assert results == [i + 1 for i in range(runs)]
    return runs / elapsed


async def main(args: argparse.Namespace) -> dict[str, Any]:
    logging.basicConfig(level=logging.WARNING)
    servers = args.servers or os.environ.get("GRCTL_KAFKA_SERVERS", "127.0.0.1:9092")
    ns = "lim" + str(ULID())[-8:].lower()
    conn = await Connection.connect(servers, ns, partitions=12)
    with tempfile.TemporaryDirectory(prefix="grctl-bench-lim-") as tmp:
        worker = Worker([plain_wf, limited_wf], conn, state_dir=Path(tmp) / "w")
        running = asyncio.create_task(worker.run())
        await worker.wait_until_ready(60)
        try:
            async with Client(conn) as client:
                await client.set_limiter("open", concurrency=100_000)
                await client.set_limiter("twenty", concurrency=20)
                # Warm up both paths (topics, caches) before measuring.
                await client.run_workflow("Plain", "warm-p", {"value": 0})
                await client.run_workflow("Limited", "warm-l", {"value": 0, "limiter": "open"})
                lat = await latency(client, args.light, "one")
                plain_rate = await throughput(client, "Plain", args.runs, None, "tp")
                open_rate = await throughput(client, "Limited", args.runs, "open", "to")
                plain_rate2 = await throughput(client, "Plain", args.runs, None, "tp2")  # the baseline again, after
                twenty_rate = await throughput(client, "Limited", args.runs, "twenty", "tt")
                twenty = await client.describe_limiter("twenty")
                opened = await client.describe_limiter("open")
                # A second worker (in this process): the runs of its partitions reach the limiter through Kafka.
                second = Worker([plain_wf, limited_wf], conn, state_dir=Path(tmp) / "w2")
                running2 = asyncio.create_task(second.run())
                both = [worker, second]
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 120
                while not all(w.session is not None and len(w.session.partitions.processors) == 6 for w in both):
                    assert loop.time() < deadline, "the two workers did not share the 12 partitions"
                    await asyncio.sleep(0.2)
                limiter_owner = owner_of(both, partition_for("open", 12))

                def same_owner(wf_id: str) -> bool:
                    return owner_of(both, partition_for(wf_id, 12)) == limiter_owner

                lat2 = await latency(client, args.light, "two", same_owner)
                await second.stop()
                await running2
        finally:
            await worker.stop()
            await running
    baseline = (plain_rate + plain_rate2) / 2
    return {
        "servers": servers,
        "partitions": 12,
        "light_load_one_worker": lat,
        "light_load_two_workers": lat2,
        "runs": args.runs,
        "plain_runs_per_s": [round(plain_rate, 1), round(plain_rate2, 1)],
        "uncontended_grants_per_s": round(open_rate, 1),
        "uncontended_ratio_to_plain": round(open_rate / baseline, 3),
        "contended_c20_grants_per_s": round(twenty_rate, 1),
        "contended_ratio_to_plain": round(twenty_rate / baseline, 3),
        "mean_wait_ms_contended": round(twenty.mean_wait_ms, 1),
        "granted": {"open": opened.granted, "twenty": twenty.granted},
        "left": {"open": [opened.in_use, opened.waiting], "twenty": [twenty.in_use, twenty.waiting]},
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("servers", nargs="?")
    ap.add_argument("--runs", type=int, default=3000)
    ap.add_argument("--light", type=int, default=200)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "limiters" / "limiters.json")
    ns = ap.parse_args()
    result = asyncio.run(main(ns))
    print(json.dumps(result, indent=2))
    ns.out.parent.mkdir(parents=True, exist_ok=True)
    ns.out.write_text(json.dumps(result, indent=2) + "\n")
