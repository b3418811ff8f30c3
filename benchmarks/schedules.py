"""The schedules scenario (issue 27): many schedules ticking every minute on one worker.

`python -m benchmarks run -s schedules` (on request: about 5 minutes). 20,000 schedules
(`* * * * *`, the 1-step `OneStep`, overlap skip) on one worker owning 12 partitions; after they
are created, the scenario measures the ticks of `GRCTL_BENCH_SCHEDULE_TICKS` (3) whole minutes
(`--quick`: 200 schedules ticking every 5 seconds, a smoke of the harness):

- lateness: the firing's time (the worker's clock when it staged the tick's start, recorded in
  the schedule's ring of recent ticks) minus the tick's time, p50/p99/max over every tick. A tick
  fired ahead (its run committed up to `FIRE_LEAD_MS` before its time, the run's start step
  waiting for the tick) counts negative;
- the runs' end: for a sample of the ticks' runs (`SAMPLE` schedules, every measured tick), the
  run's end minus its tick (`describe`): when a 1-step run scheduled at T is done;
- the worker's CPU per tick (process CPU seconds over the minutes measured / ticks fired);
- every schedule fired once per minute (a check), and the state kept per schedule (its encoded
  record, bounded by its ring: tests/unit/test_schedules.py simulates a day of ticks).

With `GRCTL_BENCH_SCHEDULE_JITTER_S` (default 0) every schedule has that jitter and the
lateness shown is the jitter's spread plus the engine's lateness. Without it, the spread the
jitter would give is computed from `jitter_ms` for the same ids (30 s), and labelled so.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from typing import Any

from benchmarks.harness import Bench, Row, ScenarioResult, gather_limited, percentiles
from grctl.engine.records import encoder
from grctl.engine.schedule_spec import jitter_ms, tick_iso
from grctl.engine.schedules import FIRE_LEAD_MS

MINUTE_MS = 60_000
#: Schedules created at once (each create waits for its worker's answer).
CREATE_CONCURRENCY = 500
#: After the last measured minute: how long the firings of its ticks may take to show.
DRAIN_S = 15.0
#: The jitter whose spread is computed when the run measures without jitter.
COMPUTED_JITTER_MS = 30_000
#: Schedules whose runs are described (every measured tick) for the runs' end after the tick.
SAMPLE = 500


async def schedules(bench: Bench) -> ScenarioResult:
    """20,000 schedules every minute on one worker: lateness p50/p99, CPU per tick, state per schedule."""
    from benchmarks.scenarios import engine  # the harness's namespace and worker processes

    res = ScenarioResult("schedules")
    n = bench.size(20_000, 200)
    minutes = int(os.environ.get("GRCTL_BENCH_SCHEDULE_TICKS", "3"))
    # --quick ticks every 5 seconds (a smoke of the harness: tests/kafka/test_benchmarks_quick.py).
    cron, period_ms = ("*/5 * * * * *", 5_000) if bench.quick else ("* * * * *", MINUTE_MS)
    jitter_s = float(os.environ.get("GRCTL_BENCH_SCHEDULE_JITTER_S", "0"))
    res.params = {"schedules": n, "cron": cron, "ticks_measured": minutes, "jitter_s": jitter_s,
                  "partitions": 12, "workers": 1, "workflow": "OneStep", "overlap": "skip"}  # fmt: skip
    async with engine(bench, "schedules", partitions=12, workers=1) as eng:
        client = eng.client
        worker = eng.workers[0]
        task = bench.task(f"schedules: create {n}", n)

        async def create(i: int) -> Any:
            handle = await client.create_schedule(
                f"sched-{i:05d}", workflow_type="OneStep", cron=cron, jitter=jitter_s or None
            )
            bench.progress.advance(task)
            return handle

        t0 = time.perf_counter()
        created = await gather_limited((create(i) for i in range(n)), CREATE_CONCURRENCY)
        create_s = time.perf_counter() - t0
        failed = [c for c in created if isinstance(c, BaseException)]
        if not res.check("every schedule created", not failed, repr(failed[:3])):
            return res
        # Measure whole periods, from the first one that starts after the creates.
        first_ms = ((int(time.time() * 1000) + FIRE_LEAD_MS + 2_000) // period_ms + 1) * period_ms
        end_ms = first_ms + minutes * period_ms  # ticks in [first_ms, end_ms)
        drain_s = DRAIN_S if not bench.quick else 3.0
        # From before the first measured tick's firing (up to the lead ahead of it).
        await asyncio.sleep(max(0.0, (first_ms - FIRE_LEAD_MS) / 1000 - time.time() - 1.0))
        cpu0 = worker.cpu_seconds()
        await asyncio.sleep(max(0.0, (end_ms - period_ms) / 1000 - time.time() + jitter_s + drain_s))
        cpu1 = worker.cpu_seconds()
        t1 = time.perf_counter()
        found = await client.list_schedules(timeout=120)
        list_s = time.perf_counter() - t1
        rss = worker.rss_mb()
        sample = random.Random(27).sample(range(n), min(SAMPLE, n))
        sampled_ticks = range(first_ms, end_ms, period_ms)

        async def run_end(i: int, tick: int) -> float | None:
            info = await client.describe(f"sched-{i:05d}:{tick_iso(tick)}")
            if info.ended_at is None:
                return None
            return info.ended_at.timestamp() * 1000 - tick

        ends = await gather_limited((run_end(i, t) for i in sample for t in sampled_ticks), 100)
    lateness: list[float] = []
    per_schedule: dict[str, int] = {}
    sizes: list[int] = []
    for d in found:
        sizes.append(len(encoder.encode(d.record)))
        for e in d.record.recent:
            if first_ms <= e.tick_ms < end_ms and e.action == "started":
                lateness.append(e.at_ms - e.tick_ms)
                per_schedule[d.id] = per_schedule.get(d.id, 0) + 1
    fired = len(lateness)
    expected = n * minutes
    res.check("every schedule listed", len(found) == n, f"{len(found)} of {n}")
    res.check(
        "every schedule fired once per measured tick",
        fired == expected and all(v == minutes for v in per_schedule.values()),
        f"{fired} of {expected} ticks; skipped {sum(d.skipped for d in found)}, missed {sum(d.missed for d in found)}",
    )
    late = percentiles(lateness)
    ended = [e for e in ends if isinstance(e, float)]
    run_end = percentiles(ended)
    ahead = sum(1 for v in lateness if v < 0)
    cpu_s = cpu1 - cpu0
    spread = (
        percentiles([jitter_ms(f"sched-{i:05d}", first_ms, COMPUTED_JITTER_MS) for i in range(n)])
        if not jitter_s
        else None
    )
    res.metrics = {
        "create_seconds": round(create_s, 1),
        "creates_per_s": round(n / create_s, 1),
        "ticks_fired": fired,
        "lateness_ms": late,
        "fired_ahead": ahead,
        "run_end_after_tick_ms": run_end,
        "run_end_sampled": {"described": len(ends), "ended": len(ended)},
        "worker_cpu_seconds": round(cpu_s, 2),
        "worker_cpu_ms_per_tick": round(cpu_s * 1000 / fired, 3) if fired else None,
        "worker_cpu_cores": round(cpu_s / ((end_ms - first_ms) / 1000 + jitter_s + drain_s), 3),
        "state_bytes_per_schedule": {
            "mean": round(sum(sizes) / len(sizes)) if sizes else 0,
            "max": max(sizes, default=0),
        },
        "list_seconds": round(list_s, 1),
        "worker_rss_mb": round(rss, 1),
        "computed_jitter_spread_ms": spread,
    }  # fmt: skip
    label = "with jitter" if jitter_s else "jitter off"
    state = res.metrics["state_bytes_per_schedule"]
    res.rows += [
        Row(f"create {n:,} schedules", round(n / create_s), "schedules/s"),
        Row(f"tick lateness p50 / p99 ({n:,} schedules, cron {cron!r}, {label})",
            f"{late.get('p50', 0):.0f} / {late.get('p99', 0):.0f}", "ms",
            "p99 < 1000 ms" if not jitter_s else "", late.get("p99", 1e9) < 1000 if not jitter_s else None),
        Row("ticks fired ahead of their time (the run's start step waits for the tick)",
            f"{ahead:,} of {fired:,}", "ticks"),
        Row(f"run ended after its tick p50 / p99 ({len(ended):,} runs of {len(sample)} schedules)",
            f"{run_end.get('p50', 0):.0f} / {run_end.get('p99', 0):.0f}", "ms"),
        Row("worker CPU per tick", res.metrics["worker_cpu_ms_per_tick"], "ms"),
        Row("state per schedule (encoded record, mean / max)",
            f"{state['mean']} / {state['max']}", "bytes"),
    ]  # fmt: skip
    if spread is not None:
        res.rows.append(
            Row(f"jitter 30s spread p50 / p99 / max (computed for these {n:,} ids, not measured)",
                " / ".join(f"{spread.get(k, 0) / 1000:.1f}" for k in ("p50", "p99", "max")), "s")
        )  # fmt: skip
    res.notes.append(
        "lateness: the worker's clock when it staged a tick's start minus the tick's time (the commit follows within "
        "the group-commit linger; negative: fired ahead, the run's start step waiting for its tick); the runs' end "
        "after the tick is read from a sample of the runs (describe)"
    )
    res.check("every sampled run ended", len(ended) == len(ends), f"{len(ended)} of {len(ends)}")
    return res
