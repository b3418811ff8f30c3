"""Exactly one run per source record across worker SIGKILLs and a rebalance (issue 17).

Records of a 3-partition topic start `Counter` runs (ids derived from the record) on two worker
processes; one is SIGKILLed and restarted three times while the records are routed and the runs
execute, and a third worker joins (a rebalance that moves source partitions too). Then: every
record started exactly one run (the history has one run.started and one run.completed per
derived id, each step completed once), the results topic holds exactly one record per run
(read_committed), and `verify_namespace` is clean.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections import Counter
from pathlib import Path

import pytest

from grctl import Connection
from grctl.client.verify import verify_namespace
from tests.crash.test_crash_exactly_once import WorkerProcess, assert_ran_once, history_by_run
from tests.crash.worker_proc import STEPS
from tests.support.topics import create_topic, produce_all, read_committed, read_committed_until

pytestmark = [pytest.mark.kafka, pytest.mark.crash]

RECORDS = int(os.environ.get("GRCTL_SOURCE_CRASH_RECORDS", "5000"))
SOURCE_PARTITIONS = 3


async def test_each_source_record_starts_exactly_one_run_across_sigkills(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    ns = "src" + unique_name[-12:].lower()
    source, results = f"{unique_name}-orders", f"{unique_name}-results"
    create_topic(kafka_bootstrap, source, partitions=SOURCE_PARTITIONS)
    create_topic(kafka_bootstrap, results)
    conn = await Connection.connect(kafka_bootstrap, ns, partitions=8)
    env = {"GRCTL_CRASH_SOURCE_TOPIC": source, "GRCTL_CRASH_RESULTS_TOPIC": results}
    workers = [
        WorkerProcess(kafka_bootstrap, ns, tmp_path / f"state-{i}", tmp_path / f"worker-{i}.log", env) for i in range(3)
    ]
    rng = random.Random(17)
    try:
        for w in workers[:2]:
            w.start()

        async def paced() -> None:  # the records arrive over ~8 s, across the kills
            chunk = RECORDS // 10
            for c in range(10):
                batch = [(f"k{i}", str(i)) for i in range(c * chunk, RECORDS if c == 9 else (c + 1) * chunk)]
                await asyncio.to_thread(produce_all, kafka_bootstrap, source, batch)
                await asyncio.sleep(0.8)

        produce = asyncio.create_task(paced())
        for _ in range(3):  # SIGKILLs while records are routed and runs execute
            await asyncio.sleep(rng.uniform(1.0, 3.0))  # the chaos' pace, not a synchronisation
            workers[0].kill()
            await asyncio.sleep(rng.uniform(0.2, 1.0))
            workers[0].start()
        workers[2].start()  # a rebalance: source partitions move too
        await produce
        t0 = time.monotonic()
        done = await asyncio.to_thread(read_committed_until, kafka_bootstrap, results, [0], RECORDS, 300)
        print(f"{RECORDS} records -> runs done {time.monotonic() - t0:.1f}s after the last kill")
    finally:
        for w in workers:
            w.stop()
    assert sum(w.kills for w in workers) == 3
    # Exactly one result per record, and nothing more behind them.
    every = [json.loads(m.value()) for m in await asyncio.to_thread(read_committed, kafka_bootstrap, results, [0])]
    ids = Counter(r["wf_id"] for r in every)
    expected = {f"{source}-{p}-{o}" for p in range(SOURCE_PARTITIONS) for o in range(RECORDS)}
    assert set(ids) <= expected and len(ids) == RECORDS and set(ids.values()) == {1}, ids.most_common(3)
    assert {r["status"] for r in every} == {"completed"} and len(done) == RECORDS
    # The history: one run per record, started and completed once, each step completed once.
    by_run = history_by_run(kafka_bootstrap, conn)
    assert set(by_run) == set(ids)
    for wf_id, recs in by_run.items():
        assert_ran_once(wf_id, recs, STEPS)
    report = await asyncio.get_running_loop().run_in_executor(None, lambda: verify_namespace(conn))
    assert report.clean and report.runs == RECORDS, report.to_dict()
