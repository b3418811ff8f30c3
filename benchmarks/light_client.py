"""What a light client costs beside a busy namespace (issue 14's third target).

A web handler that starts one run a second and awaits its result should pay for its own run,
not for the whole namespace's traffic. The scenario (`python -m benchmarks run -s client_cpu`)
keeps the namespace busy with `Chain10` runs from the benchmark process and starts this
module as a separate process, the light client, which starts and awaits one `OneStep` run a
second and reports the CPU time it used (its process, every thread) over that time.

It uses only the public API (`Client`, `Connection`) and the shared harness, so the same
file measures an older grctl too: copy it into that checkout's `benchmarks/` and run
``python -m benchmarks.light_client scenario --servers HOST:PORT`` there (the closing note of
issue 14 gives both figures).

Light client alone: ``python -m benchmarks.light_client client --servers S --namespace NS --seconds 30``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from datetime import timedelta
from typing import Any

from benchmarks.harness import ROOT, Bench, Row, ScenarioResult, make_progress, servers_from_env, temp_root
from grctl import Client, Connection

#: Runs the light client starts and awaits per second.
LIGHT_RATE = 1.0
#: Its CPU budget, in cores.
LIGHT_CPU_TARGET = 0.02
#: The namespace's load while it is measured, in steps per second.
BUSY_STEPS_TARGET = 5_000
CHAIN_STEPS = 10
#: The workflow timeout of each light run (bounds its wait too).
RUN_TIMEOUT = timedelta(seconds=60)


async def light_client(servers: str, ns: str, seconds: float, rate: float) -> dict[str, Any]:
    """Start and await `rate` runs a second for `seconds`; the CPU this process used meanwhile."""
    conn = await Connection.connect(servers, ns, create_namespace=False)
    client = Client(conn)
    try:
        await client.run_workflow("OneStep", f"light-warm-{os.getpid()}", None, timeout=RUN_TIMEOUT)
        wall0, cpu0, t_start = time.perf_counter(), time.process_time(), time.time()
        done = wrong = 0
        latencies: list[float] = []
        i = 0
        while (elapsed := time.perf_counter() - wall0) < seconds:
            if i < elapsed * rate:
                t = time.perf_counter()
                out = await client.run_workflow("OneStep", f"light-{os.getpid()}-{i}", None, timeout=RUN_TIMEOUT)
                latencies.append((time.perf_counter() - t) * 1000)
                done += 1
                wrong += out != "ok"
                i += 1
            else:
                await asyncio.sleep(min(0.05, (i / rate) - elapsed))  # pacing, not synchronisation
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        return {"runs": done, "wrong": wrong, "wall_s": wall, "cpu_s": cpu, "cores": cpu / wall,
                "t_start": t_start, "t_end": time.time(), "latency_ms": sorted(latencies)}  # fmt: skip
    finally:
        await client.close()


async def client_cpu(bench: Bench) -> ScenarioResult:
    """A client awaiting one run a second: its CPU while the namespace runs ≥ 5,000 steps/s."""
    from benchmarks.scenarios import engine

    res = ScenarioResult("client_cpu")
    seconds, conc = bench.size(60, 20), 1000
    res.params = {"light_client_runs_per_s": LIGHT_RATE, "light_client_seconds": seconds,
                  "load": f"Chain10 runs, {conc} in flight, from the benchmark process"}  # fmt: skip
    async with engine(bench, "clientcpu") as eng:
        client = eng.client
        stop = asyncio.Event()
        ends: list[float] = []
        wrong: list[Any] = []

        async def loader(k: int) -> None:
            i = 0
            while not stop.is_set():
                out = await client.run_workflow("Chain10", f"load-{k}-{i}", {"steps": CHAIN_STEPS})
                ends.append(time.time())
                if out != 1:
                    wrong.append(out)
                i += 1

        loaders = [asyncio.create_task(loader(k)) for k in range(conc)]
        await asyncio.sleep(5.0)  # let the load reach its pace before measuring beside it
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "benchmarks.light_client", "client", "--servers", bench.servers,
            "--namespace", eng.conn.namespace, "--seconds", str(seconds), "--rate", str(LIGHT_RATE),
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        out, err = await proc.communicate()
        stop.set()
        await asyncio.gather(*loaders, return_exceptions=True)
    if not res.check("the light client ran", proc.returncode == 0, err.decode()[-2000:]):
        return res
    light = json.loads(out.decode().strip().splitlines()[-1])
    window = light["t_end"] - light["t_start"]
    steps_per_s = sum(light["t_start"] <= t <= light["t_end"] for t in ends) * CHAIN_STEPS / window
    res.check("every load run completed with the right result", not wrong, f"{len(wrong)} wrong, e.g. {wrong[:3]}")
    res.check("every light run completed with the right result", light["wrong"] == 0 and light["runs"] > 0,
              f"{light['wrong']} wrong of {light['runs']}")  # fmt: skip
    lat = light.pop("latency_ms")
    res.metrics = {**light, "namespace_steps_per_s": round(steps_per_s),
                   "light_latency_ms_p50": lat[len(lat) // 2] if lat else None}  # fmt: skip
    res.rows += [
        Row(f"light client CPU ({LIGHT_RATE:g} run/s awaited, separate process)", round(light["cores"] * 100, 2),
            "% of a core", f"≤ {LIGHT_CPU_TARGET * 100:g} %", light["cores"] <= LIGHT_CPU_TARGET),
        Row("namespace load meanwhile", round(steps_per_s), "steps/s", f"≥ {BUSY_STEPS_TARGET:,}",
            steps_per_s >= BUSY_STEPS_TARGET),
    ]  # fmt: skip
    return res


async def _scenario(servers: str, quick: bool) -> int:
    with make_progress() as progress:
        bench = Bench(servers=servers, quick=quick, progress=progress, tmp=temp_root())
        res = await client_cpu(bench)
    print(json.dumps(res.to_json(), indent=2, default=str))
    return 0 if res.status == "ok" else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.light_client", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    c = sub.add_parser("client", help="be the light client")
    c.add_argument("--servers", required=True)
    c.add_argument("--namespace", required=True)
    c.add_argument("--seconds", type=float, default=30.0)
    c.add_argument("--rate", type=float, default=LIGHT_RATE)
    s = sub.add_parser("scenario", help="run the client_cpu scenario alone and print its result as JSON")
    s.add_argument("--servers", default=servers_from_env())
    s.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    if args.command == "client":
        print(json.dumps(asyncio.run(light_client(args.servers, args.namespace, args.seconds, args.rate))))
        return 0
    return asyncio.run(_scenario(args.servers, args.quick))


if __name__ == "__main__":
    sys.exit(main())
