"""Exactly one run per tick under SIGKILL: workers are killed while schedules fire every second.

Schedules of the 5-step `Counter` (tests/crash/worker_proc.py) tick every second with overlap
`allow_all`, so every tick must start a run. Worker processes are SIGKILLed at random moments
and restarted on the same state. Then the schedules are paused and every run is awaited. Every
tick from a schedule's first to its last must have started exactly one run (a tick whose run
start was lost, or fired twice, shows here), every run completed once (but the run of a tick
fired ahead that the final pause withdrew: cancelled before it began), and `grctl verify`
(which knows the schedule invariants) finds nothing.

GRCTL_SCHEDULE_CRASH_S sets how long the chaos lasts (default 60 s).
"""

from __future__ import annotations

import asyncio
import os
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from grctl import Client, Connection
from grctl.client.verify import verify_namespace
from tests.crash.test_crash_exactly_once import WorkerProcess, kill_and_restart, read_history
from tests.crash.worker_proc import STEPS
from tests.support.wait import wait_until_async

pytestmark = [pytest.mark.kafka, pytest.mark.crash]

SCHEDULES = 4
CHAOS_S = float(os.environ.get("GRCTL_SCHEDULE_CRASH_S", "60"))


async def test_schedules_fire_exactly_once_per_tick_while_workers_are_killed(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    ns = "schedcrash" + unique_name[-10:].lower()
    conn = await Connection.connect(kafka_bootstrap, ns, partitions=8)
    workers = [
        WorkerProcess(kafka_bootstrap, ns, tmp_path / f"state-{i}", tmp_path / f"worker-{i}.log") for i in range(2)
    ]
    for w in workers:
        w.start()
    client = Client(conn)
    rng = random.Random(27)
    ids = [f"every-second-{i}" for i in range(SCHEDULES)]
    try:
        await client.wait_for_workers(60)
        for sid in ids:
            await client.create_schedule(sid, workflow_type="Counter", interval="every 1s", overlap="allow_all")
        kills = max(1, int(CHAOS_S / 6))
        chaos = kill_and_restart(kills, wipe_state=False)
        await asyncio.gather(chaos(workers, rng), asyncio.sleep(CHAOS_S))
        for sid in ids:
            await client.get_schedule_handle(sid).pause("end of the chaos")
        descriptions = {sid: await client.get_schedule_handle(sid).describe() for sid in ids}

        async def all_ended() -> bool:
            listed = await client.list_schedules()
            return all(not d.running for d in listed)

        await wait_until_async("every run a schedule started has ended", all_ended, 240, interval=1.0)
        print(f"{sum(d.fired for d in descriptions.values())} ticks fired, {sum(w.kills for w in workers)} kills")
    finally:
        await client.close()
        for w in workers:
            w.stop()

    history = read_history(kafka_bootstrap, conn.topics.history, conn.num_partitions)
    starts: dict[str, list[int]] = defaultdict(list)
    by_run: dict[str, list[Any]] = defaultdict(list)
    for rec in history:
        by_run[rec.run_id].append(rec)
        if rec.kind == "run.started" and (rec.msg or {}).get("schedule_id"):
            starts[rec.msg["schedule_id"]].append(int(rec.msg["scheduled_ms"]))
    for sid in ids:
        ticks = sorted(starts[sid])
        last = descriptions[sid].record.last_tick_ms
        assert last is not None and ticks, sid
        assert len(ticks) == len(set(ticks)), f"{sid}: a tick started twice"
        assert ticks == list(range(ticks[0], last + 1, 1000)), f"{sid}: ticks missing"
        assert descriptions[sid].missed == 0
    # The pause at the end withdraws a run fired ahead whose tick had not come (at most one per
    # schedule, the schedule's last tick): it never began, and ends cancelled.
    withdrawn = {e.run_id for d in descriptions.values() for e in d.record.recent if e.action == "withdrawn"}
    assert len(withdrawn) <= len(ids)
    for sid in ids:
        assert all(e.tick_ms == descriptions[sid].record.last_tick_ms
                   for e in descriptions[sid].record.recent if e.action == "withdrawn"), sid  # fmt: skip
    for run_id, recs in by_run.items():
        kinds = [r.kind for r in recs]
        if run_id in withdrawn:
            assert kinds == ["run.started", "run.cancelled"], (run_id, kinds)
            assert "withdrawn" in recs[-1].msg["reason"], recs[-1].msg
            continue
        assert kinds.count("run.started") == 1 and kinds.count("run.completed") == 1, (run_id, kinds)
        completed = [r.msg["step_name"] for r in recs if r.kind == "step.completed"]
        assert completed == STEPS, (run_id, completed)
    report = await asyncio.get_running_loop().run_in_executor(None, lambda: verify_namespace(conn))
    assert report.clean, report.to_dict()
