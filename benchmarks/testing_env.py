"""How long tests take on grctl.testing's in-process environment, and on a broker (issue 30).

Three measures, each the median of `REPEATS` runs:

1. the 7-day review of tests/testing/test_env.py (a 7-day wait for an approval with a timeout
   branch, then a 24-hour sleep), both branches, in process: wall time per branch;
2. the comparison scenarios of tests/testing/comparison.py (events, timers, tasks with retries,
   children, queries, cancel), in process: wall time of the set;
3. the same set on a broker (`KafkaWorkflowEnvironment`: a namespace, a worker and a client),
   unless `--no-broker`: wall time of the set, the environment's start and stop excluded.

``python -m benchmarks.testing_env [--no-broker]`` against ``GRCTL_KAFKA_SERVERS`` (default the
dev broker on 127.0.0.1:9092); prints a table and writes benchmarks/results/testing_env.json.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from grctl.settings import EngineSettings
from grctl.testing import KafkaWorkflowEnvironment, WorkflowEnvironment
from tests.testing import comparison
from tests.testing.test_env import review

REPEATS = 5
OUT = Path(__file__).parent / "results" / "testing_env.json"


async def review_branches() -> tuple[float, float]:
    async with WorkflowEnvironment([review]) as env:
        t0 = time.perf_counter()
        approved = await env.client.start_workflow("Review", "doc-1", {"doc": "spec"})
        await approved.send("review_approve", {"by": "alice"})
        await approved.result()
        t1 = time.perf_counter()
        expired = await env.client.start_workflow("Review", "doc-2", {"doc": "draft"})
        await expired.result()
        t2 = time.perf_counter()
    return t1 - t0, t2 - t1


async def scenario_set(env: Any, tag: str) -> float:
    t0 = time.perf_counter()
    for name, scenario in sorted(comparison.SCENARIOS.items()):
        comparison.CALLS.clear()
        await scenario(env, f"{tag}-{name}")
    return time.perf_counter() - t0


async def main(broker: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    branches = [await review_branches() for _ in range(REPEATS)]
    out["review_approved_branch_ms"] = 1000 * statistics.median(b[0] for b in branches)
    out["review_timeout_branch_ms"] = 1000 * statistics.median(b[1] for b in branches)
    sets = []
    for i in range(REPEATS):
        async with WorkflowEnvironment(comparison.WORKFLOWS) as env:
            sets.append(await scenario_set(env, f"r{i}"))
    out["comparison_set_in_process_s"] = statistics.median(sets)
    if broker:
        servers = EngineSettings.from_env().kafka_servers
        sets = []
        for i in range(min(REPEATS, 3)):
            async with KafkaWorkflowEnvironment(comparison.WORKFLOWS, servers=servers) as env:
                sets.append(await scenario_set(env, f"r{i}"))
        out["comparison_set_on_broker_s"] = statistics.median(sets)
    return out


if __name__ == "__main__":
    result = asyncio.run(main("--no-broker" not in sys.argv[1:]))
    for key, value in result.items():
        print(f"{key:32} {value:10.3f}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
