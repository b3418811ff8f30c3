"""Exactly-once under SIGKILL: worker processes are killed at random moments while runs execute.

Every run of the 5-step `Counter` workflow increments a store counter and appends its step name
in every step. After the chaos, every run must have completed exactly once with count == 5 and
the steps in order, and the history topic must hold each step's `step.completed` exactly once
(a step may *start* more than once: a killed step re-executes; it may not *complete* twice).
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, TopicPartition

from grctl import Client, Connection
from grctl.engine.records import history_decoder
from tests.crash.worker_proc import STEPS

pytestmark = [pytest.mark.kafka, pytest.mark.crash]

ROOT = Path(__file__).resolve().parents[2]


class WorkerProcess:
    """A worker in a subprocess that the test can SIGKILL and restart with the same state dir."""

    def __init__(self, servers: str, namespace: str, state_dir: Path, log: Path) -> None:
        self.args = [
            sys.executable, "-m", "tests.crash.worker_proc",
            "--servers", servers, "--namespace", namespace, "--state-dir", str(state_dir),
        ]  # fmt: skip
        self.state_dir = state_dir
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.kills = 0

    def start(self) -> None:
        fh = open(self.log, "ab")  # noqa: SIM115  # handed to the child
        self.proc = subprocess.Popen(self.args, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT)
        fh.close()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.kills += 1

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def read_history(servers: str, topic: str, partitions: int) -> list[Any]:
    """Every committed history record of the namespace."""
    c = Consumer(
        {
            "bootstrap.servers": servers,
            "group.id": "crash-check",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
        }
    )
    ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)[1] for p in range(partitions)}
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    out = []
    pending = {p for p, end in ends.items() if end > 0}
    deadline = time.monotonic() + 120
    while pending and time.monotonic() < deadline:
        for m in c.consume(5000, 1.0):
            if m.error() is not None:
                if m.error().code() == KafkaError._PARTITION_EOF:
                    pending.discard(m.partition())
                continue
            out.append(history_decoder.decode(m.value()))
            if m.offset() >= ends[m.partition()] - 1:
                pending.discard(m.partition())
    c.close()
    return out


async def run_chaos(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path, *, runs: int, kills: int, wipe_state: bool
) -> None:
    ns = "crash" + unique_name[-12:].lower()
    conn = await Connection.connect(kafka_bootstrap, ns, partitions=8)
    workers = [
        WorkerProcess(kafka_bootstrap, ns, tmp_path / f"state-{i}", tmp_path / f"worker-{i}.log") for i in range(2)
    ]
    for w in workers:
        w.start()
    client = Client(conn)
    rng = random.Random(1234)
    try:
        started = time.monotonic()

        async def chaos() -> None:
            for _ in range(kills):
                await asyncio.sleep(rng.uniform(1.0, 4.0))
                victim = rng.choice(workers)
                victim.kill()
                if wipe_state:
                    shutil.rmtree(victim.state_dir, ignore_errors=True)
                await asyncio.sleep(rng.uniform(0.2, 1.5))
                victim.start()

        chaos_task = asyncio.create_task(chaos())
        sem = asyncio.Semaphore(200)

        async def start_one(i: int) -> Any:
            async with sem:
                return await client.start_workflow("Counter", f"run-{i}", None)

        handles = await asyncio.gather(*(start_one(i) for i in range(runs)))
        results = await asyncio.gather(*(h.result(timeout=240) for h in handles))
        await chaos_task
        elapsed = time.monotonic() - started
        print(f"{runs} runs, {sum(w.kills for w in workers)} kills, all results in {elapsed:.1f}s")
        for r in results:
            assert r == {"count": 5, "steps": STEPS}
    finally:
        await client.close()
        for w in workers:
            w.stop()

    # The history topic: each run started once, completed once, each step completed once.
    records = read_history(kafka_bootstrap, conn.topics.history, conn.num_partitions)
    by_run: dict[str, list[Any]] = defaultdict(list)
    for r in records:
        by_run[r.wf_id].append(r)
    assert len(by_run) == runs
    for wf_id, recs in by_run.items():
        kinds = Counter(r.kind for r in recs)
        assert kinds["run.started"] == 1, (wf_id, kinds)
        assert kinds["run.completed"] == 1, (wf_id, kinds)
        assert kinds["run.failed"] == 0, (wf_id, kinds)
        completed = [r.msg["step_name"] for r in recs if r.kind == "step.completed"]
        assert completed == STEPS, (wf_id, completed)
        assert len({r.run_id for r in recs}) == 1
    assert sum(w.kills for w in workers) == kills


async def test_crash_sigkill_workers_exactly_once(kafka_bootstrap: str, unique_name: str, tmp_path: Path) -> None:
    """2,000 runs over 2 worker processes, one of them SIGKILLed and restarted 5 times."""
    await run_chaos(kafka_bootstrap, unique_name, tmp_path, runs=int(os.environ.get("GRCTL_CRASH_RUNS", "2000")),
                    kills=5, wipe_state=False)  # fmt: skip


async def test_crash_sigkill_with_state_wiped_restores_from_changelog(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    """Same, but the killed worker's RocksDB folder is deleted: it rebuilds from the changelog."""
    await run_chaos(kafka_bootstrap, unique_name, tmp_path, runs=int(os.environ.get("GRCTL_CRASH_RUNS", "2000")) // 2,
                    kills=3, wipe_state=True)  # fmt: skip
