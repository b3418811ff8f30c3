"""Remote tasks under SIGKILL (issue 28): engine workers and task workers killed while tasks are in flight.

300 `RemoteChain` runs (three remote tasks each, in a row) over two engine worker processes and
two task worker processes; one engine worker and one task worker are SIGKILLed and restarted at
random moments. Afterwards every run has the right result, each task's outcome was applied
exactly once (the history, and `grctl verify`), and the executions, at least one per task, are
counted and reported (a killed task worker's unfinished tasks run again).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from grctl import Client, Connection
from grctl.client.verify import verify_namespace
from tests.crash.test_crash_exactly_once import ROOT, WorkerProcess, history_by_run

pytestmark = [pytest.mark.kafka, pytest.mark.crash]

RUNS = 300
TASKS_PER_RUN = 3


class TaskWorkerProcess:
    def __init__(self, servers: str, namespace: str, executions: Path, log: Path) -> None:
        self.args = [
            sys.executable, "-m", "tests.crash.task_worker_proc",
            "--servers", servers, "--namespace", namespace, "--executions", str(executions),
        ]  # fmt: skip
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.kills = 0

    def start(self) -> None:
        fh = open(self.log, "ab")  # noqa: SIM115  # handed to the child
        self.proc = subprocess.Popen(self.args, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ})
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
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


async def test_remote_tasks_sigkill_engine_and_task_workers(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    ns = "crashrt" + unique_name[-10:].lower()
    conn = await Connection.connect(kafka_bootstrap, ns, partitions=8)
    executions = tmp_path / "executions.txt"
    engines = [
        WorkerProcess(kafka_bootstrap, ns, tmp_path / f"state-{i}", tmp_path / f"worker-{i}.log") for i in range(2)
    ]
    taskers = [TaskWorkerProcess(kafka_bootstrap, ns, executions, tmp_path / f"tasks-{i}.log") for i in range(2)]
    for p in (*engines, *taskers):
        p.start()
    rng = random.Random(2828)
    client = Client(conn)

    async def chaos() -> None:
        # An engine worker, a task worker, then either: each kind is killed at least once.
        for victims in (engines, taskers, [*engines, *taskers]):
            await asyncio.sleep(rng.uniform(0.5, 2.0))
            victim: Any = rng.choice(victims)
            victim.kill()
            await asyncio.sleep(rng.uniform(0.2, 1.0))
            victim.start()

    try:
        await client.wait_for_workers(60)
        started = time.monotonic()
        chaos_task = asyncio.create_task(chaos())
        sem = asyncio.Semaphore(100)

        async def one(i: int) -> Any:
            await asyncio.sleep(4.0 * i / RUNS)  # spread: the kills meet tasks in flight
            async with sem:
                return await client.start_workflow("RemoteChain", f"rc-{i}", {"n": i})

        handles = await asyncio.gather(*(one(i) for i in range(RUNS)))
        results = await asyncio.gather(*(h.result(timeout=300) for h in handles))
        await chaos_task
        elapsed = time.monotonic() - started
    finally:
        await client.close()
        for p in (*engines, *taskers):
            p.stop()
    assert results == [i + 6 for i in range(RUNS)]

    by_run = history_by_run(kafka_bootstrap, conn)
    applied: Counter[tuple[str, str]] = Counter()
    for wf_id, recs in by_run.items():
        assert sum(r.kind == "run.completed" for r in recs) == 1, wf_id
        for r in recs:
            if r.kind in ("task.completed", "task.failed") and (r.msg or {}).get("remote"):
                applied[(wf_id, r.msg["task_id"])] += 1
    assert len(applied) == RUNS * TASKS_PER_RUN
    assert set(applied.values()) == {1}, [k for k, n in applied.items() if n != 1][:10]
    report = await asyncio.get_running_loop().run_in_executor(None, lambda: verify_namespace(conn))
    assert report.clean and report.runs == RUNS, report.to_dict()

    lines = executions.read_text().split("\n")
    ran = Counter(line.split()[0] for line in lines if line.strip())
    assert len(ran) == RUNS * TASKS_PER_RUN  # every task ran at least once
    kills = f"{sum(p.kills for p in engines)} engine + {sum(p.kills for p in taskers)} task worker kills"
    print(
        f"{RUNS} runs x {TASKS_PER_RUN} remote tasks, {kills}, all results in {elapsed:.1f}s; "
        f"{sum(ran.values())} executions for {len(ran)} tasks ({sum(n > 1 for n in ran.values())} ran more than once), "
        f"each outcome applied once"
    )
