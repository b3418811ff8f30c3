"""A bounded soak with faults (issue 15, part 6): not part of CI; run it with scripts/fault-soak.

Ten minutes (GRCTL_FAULT_SOAK_S) of the mixed load of tests/faults/harness.py on the local
3-node cluster with two workers, and every 30-60 s a random fault: a worker SIGKILLed and
restarted, a broker SIGKILLed for 10-20 s, or a broker SIGSTOPped for 10-20 s. At the end every
run's result and history is checked and `verify_namespace` must be clean; the report goes to
build/test-output/faults/fault-soak.json.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from pathlib import Path

import pytest

from tests.conftest import LocalCluster
from tests.faults.harness import FaultContext, run_with_fault

pytestmark = [
    pytest.mark.kafka,
    pytest.mark.cluster,
    pytest.mark.crash,
    pytest.mark.skipif(os.environ.get("GRCTL_FAULT_SOAK") != "1", reason="the fault soak runs via scripts/fault-soak"),
    pytest.mark.timeout(0),
]


async def test_fault_soak(cluster3: LocalCluster, tmp_path: Path) -> None:
    soak_s = float(os.environ.get("GRCTL_FAULT_SOAK_S", "600"))

    async def faults(ctx: FaultContext) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + soak_s - 40.0  # the last faults leave time for every run to end
        while loop.time() < end:
            await asyncio.sleep(ctx.rng.uniform(30.0, 60.0))
            kind = ctx.rng.choice(["worker-kill", "broker-kill", "broker-pause"])
            node = ctx.rng.randint(1, cluster3.brokers)
            outage = ctx.rng.uniform(10.0, 20.0)
            ctx.mark()
            print(
                f"fault soak: {kind} (node {node}, {outage:.0f} s)"
                if kind != "worker-kill"
                else "fault soak: worker-kill"
            )
            if kind == "worker-kill":
                worker = ctx.rng.choice(ctx.workers)
                worker.kill()
                await asyncio.sleep(ctx.rng.uniform(0.5, 3.0))
                worker.start()
            elif kind == "broker-kill":
                await asyncio.to_thread(cluster3.kill_node, node)
                await asyncio.sleep(outage)
                await asyncio.to_thread(cluster3.restart_node, node)
            else:
                cluster3.pause_node(node)
                try:
                    await asyncio.sleep(outage)
                finally:
                    cluster3.resume_node(node)

    report = await run_with_fault(cluster3.bootstrap, f"soak{secrets.token_hex(4)}", tmp_path, faults,
                                  name="fault-soak", rate=25.0, duration_s=soak_s, workers_total=2)  # fmt: skip
    assert report.faults >= soak_s / 90
