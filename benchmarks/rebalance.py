"""The join scenario (issue 32): a second worker joins a loaded one; how long each partition stops.

`python -m benchmarks run -s join` (on request, about 2 minutes). For each group protocol, the
classic one (eager rebalances, the default) and KIP-848's (`GRCTL_GROUP_PROTOCOL=consumer`): one
worker owns the 12 partitions of a namespace while `CONCURRENCY` closed loops start and await
1-step runs; after `STEADY_S` a second worker process starts, and once both own their share the
load goes on for `AFTER_S`. Every completion is recorded with its partition. For each partition,
its stall is the longest gap between two completions from the join to the end; reported apart for
the partitions the first worker kept and for those that moved, next to the longest gap of the
steady window before the join (what a partition's gap is without a rebalance). Also counted: the
partitions the first worker revoked (its log).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from datetime import timedelta
from typing import Any

from benchmarks.harness import Bench, Row, ScenarioResult, WorkerProc, stop_workers, wait_for
from grctl.kafka.partitioner import partition_for

#: Runs in flight (closed loops).
CONCURRENCY = 100
#: Seconds of load before the second worker starts, and after both own their share.
STEADY_S = 10.0
AFTER_S = 10.0
PARTITIONS = 12
#: Failed runs after which the load stops (the scenario's check fails with them).
MAX_FAILURES = 100
RUN_TIMEOUT = timedelta(seconds=120)


def longest_gaps(done: list[tuple[float, int]], start: float, end: float, partitions: int) -> dict[int, float]:
    """Per partition, the longest time without a completion in [start, end] (seconds)."""
    times: dict[int, list[float]] = {p: [start] for p in range(partitions)}
    for t, p in done:
        if start <= t <= end:
            times[p].append(t)
    gaps = {}
    for p, ts in times.items():
        ts.append(end)
        gaps[p] = max(b - a for a, b in itertools.pairwise(ts))
    return gaps


class _Load:
    """Closed loops of 1-step runs; every completion recorded with its time and partition."""

    def __init__(self, client: Any, label: str) -> None:
        self.client = client
        self.label = label
        self.done: list[tuple[float, int]] = []
        self.failures: list[BaseException] = []
        self.running = True

    async def loop(self, k: int) -> None:
        i = 0
        while self.running:
            wf_id = f"{self.label}-{k}-{i}"
            i += 1
            try:
                await self.client.run_workflow("OneStep", wf_id, None, timeout=RUN_TIMEOUT)
            except Exception as exc:  # counted: a check of the scenario
                self.failures.append(exc)
                if len(self.failures) >= MAX_FAILURES:
                    self.running = False  # something is wrong: stop, the check reports it
                continue
            self.done.append((time.monotonic(), partition_for(wf_id, PARTITIONS)))


async def _measure(bench: Bench, protocol: str, steady: float, after: float) -> tuple[dict[str, Any], _Load]:
    from benchmarks.scenarios import engine

    env = {"GRCTL_GROUP_PROTOCOL": protocol}
    async with engine(bench, f"join-{protocol}", partitions=PARTITIONS, workers=1, env=env) as eng:
        first = eng.workers[0]
        load = _Load(eng.client, f"join-{protocol}")
        loops = [asyncio.create_task(load.loop(k)) for k in range(CONCURRENCY)]
        t0 = time.monotonic()
        await asyncio.sleep(steady)  # the steady window (a measurement span, not a synchronisation)
        t_join = time.monotonic()
        second = WorkerProc(bench, eng.conn, "w1", env=env).start()
        try:

            def shared() -> bool:
                a, b = first.owned(), second.owned()
                return bool(a) and bool(b) and not a & b and len(a | b) == PARTITIONS

            await wait_for(shared, 120, "both workers to own their share")
            t_shared = time.monotonic()
            await asyncio.sleep(after)
            load.running = False
            await asyncio.gather(*loops)
            t_end = time.monotonic()
            kept = first.owned()
            revoked = first.log_text().count(" revoked")
        finally:
            await asyncio.get_running_loop().run_in_executor(None, stop_workers, [second])
    before = longest_gaps(load.done, t0 + 1.0, t_join, PARTITIONS)
    during = longest_gaps(load.done, t_join, t_end, PARTITIONS)
    moved = [during[p] for p in range(PARTITIONS) if p not in kept]
    return {
        "partitions_revoked_by_first": revoked,
        "kept": sorted(kept),
        "join_to_shared_s": round(t_shared - t_join, 2),
        "stall_kept_max_s": round(max(during[p] for p in kept), 3),
        "stall_moved_max_s": round(max(moved), 3) if moved else None,
        "gap_before_join_max_s": round(max(before.values()), 3),
        "runs_completed": len(load.done),
    }, load


async def join(bench: Bench) -> ScenarioResult:
    """A second worker joins a loaded one, classic vs KIP-848: partitions revoked and their stall."""
    res = ScenarioResult("join")
    steady, after = (3.0, 3.0) if bench.quick else (STEADY_S, AFTER_S)
    res.params = {"partitions": PARTITIONS, "concurrency": CONCURRENCY, "steady_s": steady, "after_s": after}
    for protocol in ("classic", "consumer"):
        m, load = await _measure(bench, protocol, steady, after)
        res.check(f"{protocol}: every run completed", not load.failures, repr(load.failures[:3]))
        res.metrics[protocol] = m
        label = "classic (eager)" if protocol == "classic" else "consumer (KIP-848)"
        res.rows += [
            Row(f"{label}: partitions the first worker revoked", m["partitions_revoked_by_first"], "of 12"),
            Row(f"{label}: stall of the partitions it kept, worst", m["stall_kept_max_s"], "s"),
            Row(f"{label}: stall of the partitions that moved, worst", m["stall_moved_max_s"], "s"),
            Row(f"{label}: longest gap of a partition before the join (no rebalance)", m["gap_before_join_max_s"],
                "s"),
            Row(f"{label}: join to both owning their share", m["join_to_shared_s"], "s"),
        ]  # fmt: skip
    res.notes.append(
        "stall: per partition, the longest time without a completed run from the second worker's start to the end; "
        f"{CONCURRENCY} closed loops of 1-step runs"
    )
    return res
