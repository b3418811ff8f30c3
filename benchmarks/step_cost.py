"""What a step costs the worker's Python, without Kafka: event loops and interpreters compared (issue 32).

The broker-backed `runtimes` scenario (benchmarks/scenarios.py) measures the worker's steps/s and
CPU per step beside a broker, a client and, on a shared machine, other people's work: under load
the worker gets a fraction of a core and steps/s measures the scheduler. This measure takes the
broker, the client's Kafka side and the scheduler out: 10-step chains (`benchmarks.workflows`'
`Chain10`, 1,000 in flight) on `grctl.testing`'s in-process environment, which runs the engine a
worker runs (state machine, partition processor with its RocksDB store, group commit, step
executor) over lists in memory instead of Kafka. It reports the process's CPU time per step
(`time.process_time`, all threads), which another process on the same cores raises far less
than it lowers steps/s. What it leaves out: librdkafka's produce and poll calls and the
worker's Kafka threads (about a third of the worker's CPU per step with a broker).

``python -m benchmarks.step_cost [--rounds N] [--runs N] RUNTIME...`` where a runtime is `LOOP`
or `LOOP@PYTHON` (an interpreter with grctl installed) as in `GRCTL_BENCH_RUNTIMES`: rounds of
one child process per runtime (the order rotates per round); per runtime the median CPU per
step and steps/s, and per round the ratios to the first runtime. Writes `--out` (JSON).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
STEPS = 10


async def chains(runs: int, conc: int) -> dict[str, Any]:
    from benchmarks.workflows import chain
    from grctl.testing import WorkflowEnvironment
    from grctl.worker import gc_tuning
    from grctl.worker.event_loop import running_loop_name

    gc_tuning.tune()  # as a worker does when it starts (GRCTL_GC=python: Python's own settings)
    async with WorkflowEnvironment([chain], partitions=12, max_concurrent_steps=1000) as env:
        sem = asyncio.Semaphore(conc)

        async def one(i: int) -> Any:
            async with sem:
                handle = await env.client.start_workflow("Chain10", f"c-{i}", {"steps": STEPS})
                return await handle.result()

        await asyncio.gather(*(one(i) for i in range(min(200, runs))))  # warm: imports, caches, RocksDB
        c0, t0 = time.process_time(), time.perf_counter()
        results = await asyncio.gather(*(one(i) for i in range(200, 200 + runs)))
        cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    if any(r != 1 for r in results):
        raise RuntimeError(f"wrong results: {[r for r in results if r != 1][:3]}")
    steps = runs * STEPS
    return {
        "python": platform.python_version(),
        "loop": running_loop_name(),
        "cpu_us_per_step": round(cpu / steps * 1e6, 2),
        "steps_per_s": round(steps / wall, 1),
        "cpu_utilisation": round(cpu / wall, 2),
        "gc": os.environ.get("GRCTL_GC") or "tuned",
    }


def child(argv: list[str]) -> None:
    from grctl.worker.event_loop import run

    runs, conc, loop = int(argv[0]), int(argv[1]), argv[2]
    print(json.dumps(run(chains(runs, conc), loop=loop)))  # the parent reads it


def measure(runtime: str, runs: int, conc: int) -> dict[str, Any]:
    loop, _, python = runtime.partition("@")
    proc = subprocess.run(
        [python or sys.executable, "-m", "benchmarks.step_cost", "--child", str(runs), str(conc), loop],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"{runtime}: exit {proc.returncode}\n{proc.stderr[-2000:]}")
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    if out["loop"] != loop:
        raise RuntimeError(f"{runtime}: ran on {out['loop']}")
    return out


def main(argv: list[str]) -> int:
    if argv[:1] == ["--child"]:
        child(argv[1:])
        return 0
    ap = argparse.ArgumentParser(prog="python -m benchmarks.step_cost", description=__doc__)
    ap.add_argument("runtimes", nargs="+", help="LOOP or LOOP@PYTHON; the first is the reference")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=3000, help="10-step chains per measurement")
    ap.add_argument("--concurrency", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "step_cost.json")
    args = ap.parse_args(argv)
    rounds: list[dict[str, dict[str, Any]]] = []
    for r in range(args.rounds):
        got: dict[str, dict[str, Any]] = {}
        for k in range(len(args.runtimes)):
            rt = args.runtimes[(r + k) % len(args.runtimes)]
            got[rt] = measure(rt, args.runs, args.concurrency)
            print(f"round {r + 1} {rt}: {got[rt]}", file=sys.stderr)  # progress
        rounds.append(got)
    first = args.runtimes[0]
    summary = {}
    for rt in args.runtimes:
        ms = [g[rt] for g in rounds]
        summary[rt] = {
            "python": ms[0]["python"],
            "loop": ms[0]["loop"],
            "cpu_us_per_step": statistics.median(m["cpu_us_per_step"] for m in ms),
            "steps_per_s": statistics.median(m["steps_per_s"] for m in ms),
            "cpu_per_step_vs_first": round(
                statistics.median(g[rt]["cpu_us_per_step"] / g[first]["cpu_us_per_step"] for g in rounds), 3
            ),
            "steps_per_s_vs_first": round(
                statistics.median(g[rt]["steps_per_s"] / g[first]["steps_per_s"] for g in rounds), 3
            ),
        }
    doc = {
        "command": "python -m benchmarks.step_cost " + " ".join(sys.argv[1:]),
        "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_average_at_end": os.getloadavg(),
        "runs": args.runs,
        "rounds": rounds,
        "summary": summary,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"{'runtime':48} {'CPU µs/step':>12} {'steps/s':>9} {'CPU vs first':>13} {'steps/s vs first':>17}")
    for rt, s in summary.items():
        label = f"Python {s['python']}, {s['loop']} ({rt})"
        print(  # the command's output
            f"{label:48} {s['cpu_us_per_step']:>12.1f} {s['steps_per_s']:>9,.0f} "
            f"{s['cpu_per_step_vs_first']:>13.2f} {s['steps_per_s_vs_first']:>17.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
