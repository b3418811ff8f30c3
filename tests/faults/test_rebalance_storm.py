"""A rebalance storm (issue 15, part 3): three worker processes join and leave for two minutes.

Every 2-5 s one of three workers is stopped gracefully (SIGTERM) or SIGKILLed, or a stopped
one starts again (same state folder: static membership, local state reused), while the mixed
load of tests/faults/harness.py runs on the session's broker. Every run's result and history is
checked, `verify_namespace` is clean, and the longest stall of any partition is recorded in
build/test-output/faults/rebalance-storm.json. GRCTL_FAULT_SCALE scales the duration.
"""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import pytest

from tests.faults.harness import FaultContext, env_scale, run_with_fault

pytestmark = [pytest.mark.kafka, pytest.mark.crash]

STORM_S = 120.0


async def test_three_workers_joining_and_leaving_for_two_minutes(kafka_bootstrap: str, tmp_path: Path) -> None:
    storm_s = STORM_S * env_scale()

    async def storm(ctx: FaultContext) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + storm_s - 10.0  # the last 10 s run undisturbed so every run can end
        while loop.time() < end:
            await asyncio.sleep(ctx.rng.uniform(2.0, 5.0))
            alive = [w for w in ctx.workers if w.proc is not None and w.proc.poll() is None]
            stopped = [w for w in ctx.workers if w not in alive]
            if stopped and (len(alive) == 1 or ctx.rng.random() < 0.5):
                ctx.rng.choice(stopped).start()
                continue
            victim = ctx.rng.choice(alive)
            ctx.mark()
            if ctx.rng.random() < 0.5:
                victim.kill()
            else:
                await asyncio.to_thread(victim.stop)
        for w in ctx.workers:  # everyone back for the end of the load
            if w.proc is None or w.proc.poll() is not None:
                w.start()

    ns = f"storm{secrets.token_hex(4)}"
    report = await run_with_fault(kafka_bootstrap, ns, tmp_path, storm, name="rebalance-storm", rate=30.0,
                                  duration_s=storm_s, workers_total=3)  # fmt: skip
    assert report.faults >= storm_s / 10  # the storm really stormed
