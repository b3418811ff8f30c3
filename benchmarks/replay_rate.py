"""How fast `grctl replay --namespace --all` and `grctl deploy check` go over runs in flight (issue 26).

Starts `RUNS` runs of a 3-step order flow (`ctx.now`, store writes, a task, `ctx.random`, then a
wait for an event) on one in-process worker of a fresh namespace, waits until every one waits,
stops the worker, and then runs, as a user would from a shell:

- `grctl replay --app benchmarks.replay_rate:WORKFLOWS --namespace NS --all --json`: every run
  in flight read from the topics and replayed; the command reports the replay rate (runs/s
  replayed in process) and the wall time includes reading the state and history topics;
- `grctl deploy check --app ... --json`: the same, with the structural check.

``python -m benchmarks.replay_rate [RUNS]`` (default 10,000; about 2 minutes on 2 cores) against
``GRCTL_KAFKA_SERVERS`` (default the dev broker on 127.0.0.1:9092); results in
benchmarks/results/replay/results.json.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from ulid import ULID

from grctl import Client, Connection, Context, Directive, Worker, Workflow, task
from grctl.client.inflight import runs_in_flight
from grctl.kafka.topics import admin_client, delete_namespace
from grctl.models.run_info import RunStateKind

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "replay" / "results.json"
RUNS = 10_000
PARTITIONS = 8

order = Workflow(workflow_type="ReplayBenchOrder")


@task
async def charge(amount: int) -> int:
    return amount * 2


@order.start()
async def start(ctx: Context, amount: int) -> Directive:
    ctx.store.put("amount", amount)
    ctx.store.put("at", (await ctx.now()).isoformat())
    return ctx.next.step(pack)


@order.step()
async def pack(ctx: Context) -> Directive:
    ctx.store.put("charged", await charge(await ctx.store.get("amount")))
    ctx.store.put("luck", await ctx.random())
    return ctx.next.wait(timedelta(hours=1))


@order.event()
async def approve(ctx: Context) -> Directive:
    return ctx.next.complete(await ctx.store.get("charged"))


WORKFLOWS = [order]


def grctl(ns: str, *args: str) -> tuple[float, dict[str, object]]:
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "grctl", "-n", ns, *args, "--json"], cwd=ROOT, capture_output=True, text=True,
        timeout=1200, check=False,
    )  # fmt: skip
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"grctl {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return wall, json.loads(done.stdout)


async def fill(servers: str, ns: str, runs: int) -> float:
    """Start `runs` runs and wait until each waits for its event; seconds taken."""
    conn = await Connection.connect(servers, ns, partitions=PARTITIONS)
    with tempfile.TemporaryDirectory() as tmp:
        worker = Worker(WORKFLOWS, conn, state_dir=Path(tmp))
        task_ = asyncio.create_task(worker.run())
        await worker.wait_until_ready(120)
        client = Client(conn)
        t0 = time.perf_counter()
        sem = asyncio.Semaphore(500)

        async def one(i: int) -> None:
            async with sem:
                await client.start_workflow("ReplayBenchOrder", f"o-{i}", {"amount": i})

        await asyncio.gather(*(one(i) for i in range(runs)))
        while True:  # every run waiting for its event, as the state topic holds it
            found = await asyncio.to_thread(runs_in_flight, conn)
            if len(found.runs) == runs and all(r.state == RunStateKind.wait for r in found.runs):
                break
            await asyncio.sleep(2)
        took = time.perf_counter() - t0
        await client.close()
        await worker.stop(shutdown_timeout=5)
        await task_
    await conn.close()
    return took


def main() -> int:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else RUNS
    servers = os.environ.get("GRCTL_KAFKA_SERVERS", "127.0.0.1:9092")
    os.environ["GRCTL_KAFKA_SERVERS"] = servers
    ns = f"bench-replay-{str(ULID()).lower()[-8:]}"
    fill_s = asyncio.run(fill(servers, ns, runs))
    print(f"{runs:,} runs in flight in {fill_s:.1f} s", flush=True)
    try:
        replay_wall, replay = grctl(
            ns, "replay", "--app", "benchmarks.replay_rate:WORKFLOWS", "--namespace", ns, "--all"
        )
        check_wall, check = grctl(ns, "deploy", "check", "--app", "benchmarks.replay_rate:WORKFLOWS")
    finally:
        conn = asyncio.run(Connection.connect(servers, ns))
        delete_namespace(admin_client(conn.client_config()), conn.topics, timeout=30)
        asyncio.run(conn.close())
    assert replay["runs"] == runs and not replay["diverged"], replay
    assert check["ok"] and check["runs"] == runs, check
    result = {
        "runs_in_flight": runs,
        "partitions": PARTITIONS,
        "replay": {
            "command": f"grctl replay --app benchmarks.replay_rate:WORKFLOWS --namespace NS --all ({runs:,} runs)",
            "wall_s": round(replay_wall, 2),
            "replayed_runs_per_s": replay["runs_per_second"],
            "replay_only_s": replay["seconds"],
            "steps": replay["steps"],
            "runs_per_s_wall": round(runs / replay_wall, 1),
        },
        "deploy_check": {
            "command": "grctl deploy check --app benchmarks.replay_rate:WORKFLOWS",
            "wall_s": round(check_wall, 2),
            "runs_per_s_wall": round(runs / check_wall, 1),
        },
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
