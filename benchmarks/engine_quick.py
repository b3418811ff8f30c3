"""Quick engine figures (issue 4): chain throughput and 1-step latency, one worker process.

Usage: python -m benchmarks.engine_quick [--servers HOST:PORT] [--runs 1000] [--steps 10]
Writes benchmarks/results/engine_quick.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ulid import ULID

from grctl import Client, Connection

ROOT = Path(__file__).resolve().parents[1]


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--servers", default=os.environ.get("GRCTL_KAFKA_SERVERS", "127.0.0.1:9092"))
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--latency-runs", type=int, default=200)
    ap.add_argument("--partitions", type=int, default=12)
    args = ap.parse_args()
    ns = "bench" + str(ULID())[-10:].lower()
    conn = await Connection.connect(args.servers, ns, partitions=args.partitions)
    state = tempfile.mkdtemp(prefix="grctl-bench-")
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "benchmarks.workflows",
            "--servers",
            args.servers,
            "--namespace",
            ns,
            "--state-dir",
            state,
        ],
        cwd=ROOT,
    )
    client = Client(conn)
    out: dict[str, object] = {"partitions": args.partitions, "worker_processes": 1}
    try:
        await client.run_workflow("OneStep", "warmup", None)  # waits for the worker to own its partitions
        # 1. Latency at light load: one run at a time.
        lat = []
        for i in range(args.latency_runs):
            t0 = time.perf_counter()
            assert await client.run_workflow("OneStep", f"lat-{i}", None) == "ok"
            lat.append((time.perf_counter() - t0) * 1000)
        out["one_step_latency_ms"] = {
            "p50": round(pct(lat, 0.50), 1), "p95": round(pct(lat, 0.95), 1), "p99": round(pct(lat, 0.99), 1),
            "mean": round(statistics.mean(lat), 1), "n": len(lat),
        }  # fmt: skip
        # 2. Throughput: N concurrent runs of a K-step chain.
        t0 = time.perf_counter()
        handles = await asyncio.gather(
            *(client.start_workflow("Chain10", f"chain-{i}", {"steps": args.steps}) for i in range(args.runs))
        )
        t_started = time.perf_counter() - t0
        results = await asyncio.gather(*(h.result(timeout=600) for h in handles))
        elapsed = time.perf_counter() - t0
        assert all(r == 1 for r in results), "wrong results"
        out["chain"] = {
            "runs": args.runs, "steps_per_run": args.steps, "seconds": round(elapsed, 2),
            "starts_accepted_s": round(t_started, 2),
            "steps_per_s": round(args.runs * args.steps / elapsed, 1), "runs_per_s": round(args.runs / elapsed, 1),
        }  # fmt: skip
    finally:
        await client.close()
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
    print(json.dumps(out, indent=2))
    res = ROOT / "benchmarks" / "results"
    res.mkdir(parents=True, exist_ok=True)
    (res / "engine_quick.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
