"""Exactly-once under SIGKILL: worker processes are killed at random moments while runs execute.

Every run of the 5-step `Counter` workflow increments a store counter and appends its step name
in every step. After the chaos, every run must have completed exactly once with count == 5 and
the steps in order, and the history topic must hold each step's `step.completed` exactly once
(a step may *start* more than once: a killed step re-executes; it may not *complete* twice).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from grctl import Client, Connection
from grctl.client.verify import verify_namespace
from grctl.engine.records import history_decoder
from grctl.kafka.partitioner import partition_for
from tests.crash.worker_proc import STEPS
from tests.support.topics import create_topic, read_committed

pytestmark = [pytest.mark.kafka, pytest.mark.crash]

ROOT = Path(__file__).resolve().parents[2]


class WorkerProcess:
    """A worker in a subprocess that the test can SIGKILL and restart with the same state dir."""

    def __init__(
        self,
        servers: str,
        namespace: str,
        state_dir: Path,
        log: Path,
        env: dict[str, str] | None = None,
        kafka_config: Mapping[str, str] | None = None,
    ) -> None:
        self.args = [
            sys.executable, "-m", "tests.crash.worker_proc",
            "--servers", servers, "--namespace", namespace, "--state-dir", str(state_dir),
        ]  # fmt: skip
        if kafka_config:  # a secured cluster's credentials, in a file beside the log (mode 0600)
            props = log.with_name(f"{log.stem}.kafka.properties")
            props.touch(mode=0o600)
            props.write_text("".join(f"{k}={v}\n" for k, v in kafka_config.items()))
            self.args += ["--kafka-config", str(props)]
        self.state_dir = state_dir
        self.log = log
        self.env = {**os.environ, **env} if env else None
        self.proc: subprocess.Popen[bytes] | None = None
        self.kills = 0
        self.wipes = 0

    def start(self) -> None:
        fh = open(self.log, "ab")  # noqa: SIM115  # handed to the child
        self.proc = subprocess.Popen(self.args, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, env=self.env)
        fh.close()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.kills += 1

    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def dump_stacks(self, timeout: float = 5.0) -> None:
        """Have a live worker write every thread's stack to its log (faulthandler on SIGUSR1)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        size = self.log.stat().st_size if self.log.exists() else 0
        self.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:  # until the dump is written (it ends the log's growth)
            if self.log.exists() and self.log.stat().st_size > size and "Thread 0x" in self.tail(200):
                return
            time.sleep(0.05)

    def tail(self, lines: int) -> str:
        """The last `lines` lines of the worker's log."""
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def read_history(servers: str, topic: str, partitions: int, config: Mapping[str, Any] | None = None) -> list[Any]:
    """Every committed history record of the namespace (each partition read to its end offset)."""
    return [
        history_decoder.decode(m.value())
        for m in read_committed(servers, topic, range(partitions), timeout=120, config=config)
    ]


def history_by_run(servers: str, conn: Connection) -> dict[str, list[Any]]:
    """The namespace's committed history records, by workflow id (read with `conn`'s credentials)."""
    by_run: dict[str, list[Any]] = defaultdict(list)
    for rec in read_history(servers, conn.topics.history, conn.num_partitions, conn.kafka_config):
        by_run[rec.wf_id].append(rec)
    return by_run


def assert_ran_once(wf_id: str, recs: list[Any], steps: list[str] | None = None) -> None:
    """One run, started once and completed once (not failed); `steps` each completed once, in order."""
    kinds = Counter(r.kind for r in recs)
    assert kinds["run.started"] == 1, (wf_id, kinds)
    assert kinds["run.completed"] == 1, (wf_id, kinds)
    assert kinds["run.failed"] == 0, (wf_id, kinds)
    assert len({r.run_id for r in recs}) == 1, (wf_id, {r.run_id for r in recs})
    if steps is not None:
        completed = [r.msg["step_name"] for r in recs if r.kind == "step.completed"]
        assert completed == steps, (wf_id, completed)


Chaos = Callable[[list[WorkerProcess], random.Random], Awaitable[None]]


def kill_and_restart(kills: int, wipe_state: bool) -> Chaos:
    """SIGKILL a random worker `kills` times, restarting it (same state dir, or wiped) after a moment."""

    async def chaos(workers: list[WorkerProcess], rng: random.Random) -> None:
        for _ in range(kills):
            await asyncio.sleep(rng.uniform(1.0, 4.0))
            victim = rng.choice([w for w in workers if w.proc is not None and w.proc.poll() is None])
            if wipe_state:
                # A worker killed before its first assignment has no partition folder to wipe (a
                # run failed so): kill it once it holds one, so that the restore is from the changelog.
                deadline = asyncio.get_running_loop().time() + 60
                while not (victim.state_dir.exists() and any(db.is_dir() for db in victim.state_dir.iterdir())):
                    assert asyncio.get_running_loop().time() < deadline, f"{victim.state_dir} never got a partition"
                    await asyncio.sleep(0.1)
            victim.kill()
            if wipe_state:
                # The RocksDB folders go (one per partition); the worker's identity file stays.
                wiped = [db for db in victim.state_dir.iterdir() if db.is_dir()]
                for db in wiped:
                    shutil.rmtree(db)  # an error here is the test's: a wipe that did not happen proves nothing
                assert wiped and not any(db.exists() for db in wiped), f"nothing wiped in {victim.state_dir}"
                victim.wipes += 1
            await asyncio.sleep(rng.uniform(0.2, 1.5))
            victim.start()

    return chaos


async def run_chaos(
    kafka_bootstrap: str,
    unique_name: str,
    tmp_path: Path,
    *,
    runs: int,
    chaos: Chaos,
    workers_total: int = 2,
    workers_at_start: int = 2,
    pace_s: float = 0.0,
    emits: bool = False,
    inspect: Callable[[dict[str, list[Any]]], None] | None = None,
) -> list[WorkerProcess]:
    ns = "crash" + unique_name[-12:].lower()
    conn = await Connection.connect(kafka_bootstrap, ns, partitions=8)
    env = None
    if emits:  # every Counter step emits one record to a topic of its own (ctx.emit)
        emit_topic = f"emits-{ns}"
        create_topic(kafka_bootstrap, emit_topic, partitions=3)
        env = {"GRCTL_CRASH_EMIT_TOPIC": emit_topic}
    workers = [
        WorkerProcess(kafka_bootstrap, ns, tmp_path / f"state-{i}", tmp_path / f"worker-{i}.log", env)
        for i in range(workers_total)
    ]
    for w in workers[:workers_at_start]:
        w.start()
    client = Client(conn)
    rng = random.Random(1234)
    try:
        await client.wait_for_workers(60)
        started = time.monotonic()
        chaos_task = asyncio.create_task(chaos(workers, rng))
        sem = asyncio.Semaphore(200)

        async def start_one(i: int) -> Any:
            await asyncio.sleep(pace_s * i / runs)  # spread the starts so the chaos meets load
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
    by_run = history_by_run(kafka_bootstrap, conn)
    assert len(by_run) == runs
    for wf_id, recs in by_run.items():
        assert_ran_once(wf_id, recs, STEPS)
    if inspect is not None:
        inspect(by_run)
    # And the checker users run after an incident agrees: nothing lost, duplicated or orphaned.
    report = await asyncio.get_running_loop().run_in_executor(None, lambda: verify_namespace(conn))
    assert report.clean and report.runs == runs, report.to_dict()
    if emits:  # each committed step emitted exactly once, whatever was killed and re-executed
        emitted = Counter(
            (v["wf_id"], v["step"])
            for v in (json.loads(m.value()) for m in read_committed(kafka_bootstrap, emit_topic, range(3), timeout=120))
        )
        assert set(emitted) == {(f"run-{i}", step) for i in range(runs) for step in STEPS}
        assert set(emitted.values()) == {1}, [k for k, n in emitted.items() if n != 1][:10]
    return workers


async def test_crash_sigkill_workers_exactly_once(kafka_bootstrap: str, unique_name: str, tmp_path: Path) -> None:
    """2,000 runs over 2 worker processes, one of them SIGKILLed and restarted 5 times.

    Every step also emits a record to a topic of its own (`ctx.emit`): exactly one per step
    and run ends up committed there.
    """
    workers = await run_chaos(kafka_bootstrap, unique_name, tmp_path, runs=int(os.environ.get("GRCTL_CRASH_RUNS", "2000")),
                              chaos=kill_and_restart(5, wipe_state=False), pace_s=5.0, emits=True)  # fmt: skip
    assert sum(w.kills for w in workers) == 5


async def test_crash_sigkill_with_state_wiped_restores_from_changelog(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    """Same, but the killed worker's RocksDB folder is deleted: it rebuilds from the changelog."""
    workers = await run_chaos(kafka_bootstrap, unique_name, tmp_path,
                              runs=int(os.environ.get("GRCTL_CRASH_RUNS", "2000")) // 2,
                              chaos=kill_and_restart(3, wipe_state=True), pace_s=5.0)  # fmt: skip
    assert sum(w.kills for w in workers) == 3
    assert sum(w.wipes for w in workers) == 3
    # Each wiped worker rebuilt its partitions from the changelog (its log says so, with records).
    restored = [
        int(m) for w in workers if w.wipes for m in re.findall(r"restored (\d+) changelog records", w.tail(100_000))
    ]
    assert any(n > 0 for n in restored), restored


async def test_rebalance_workers_join_and_leave(kafka_bootstrap: str, unique_name: str, tmp_path: Path) -> None:
    """Workers join and leave (gracefully) during load: partitions move, nothing is lost or doubled."""

    async def churn(workers: list[WorkerProcess], rng: random.Random) -> None:
        await asyncio.sleep(1.0)
        workers[1].start()  # 1 -> 2 workers
        await asyncio.sleep(2.0)
        workers[2].start()  # 2 -> 3 workers
        await asyncio.sleep(2.0)
        workers[0].stop()  # graceful leave: 3 -> 2
        await asyncio.sleep(2.0)
        workers[1].stop()  # 2 -> 1
        await asyncio.sleep(1.0)
        workers[0].start()  # back to 2

    def partitions_moved(by_run: dict[str, list[Any]]) -> None:
        # Who executed the steps of each partition: with workers joining and leaving, partitions
        # must have moved (more than one worker ran steps of them), and every worker took some.
        executors: dict[int, set[str]] = defaultdict(set)
        for wf_id, recs in by_run.items():
            executors[partition_for(wf_id, 8)] |= {r.worker_id for r in recs if r.kind == "step.completed"}
        moved = [p for p, ids in executors.items() if len(ids) > 1]
        assert len(moved) >= 4, {p: sorted(ids) for p, ids in executors.items()}
        assert len(set().union(*executors.values())) >= 3, "each of the 3 worker processes ran steps"

    await run_chaos(kafka_bootstrap, unique_name, tmp_path, runs=int(os.environ.get("GRCTL_CRASH_RUNS", "2000")) // 2,
                    chaos=churn, workers_total=3, workers_at_start=1, pace_s=8.0, inspect=partitions_moved)  # fmt: skip


async def test_fan_out_children_under_crashes(kafka_bootstrap: str, unique_name: str, tmp_path: Path) -> None:
    """200 parents x 10 children over 2 workers, one SIGKILLed twice: every child runs once, every
    parent receives exactly 10 outcomes."""
    parents = int(os.environ.get("GRCTL_FANOUT_PARENTS", "200"))
    ns = "fan" + unique_name[-12:].lower()
    conn = await Connection.connect(kafka_bootstrap, ns, partitions=8)
    workers = [
        WorkerProcess(kafka_bootstrap, ns, tmp_path / f"state-{i}", tmp_path / f"worker-{i}.log") for i in range(2)
    ]
    for w in workers:
        w.start()
    client = Client(conn)
    try:
        await client.wait_for_workers(60)
        chaos = asyncio.create_task(kill_and_restart(2, wipe_state=False)(workers, random.Random(7)))
        handles = []
        for i in range(parents):
            handles.append(await client.start_workflow("FanOut", f"p{i}"))
            await asyncio.sleep(5.0 / parents)  # spread over the chaos
        results = await asyncio.gather(*(h.result(timeout=300) for h in handles))
        await chaos
        assert all(r == list(range(10)) for r in results)
    finally:
        await client.close()
        for w in workers:
            w.stop()
    assert sum(w.kills for w in workers) == 2
    records = read_history(kafka_bootstrap, conn.topics.history, conn.num_partitions)
    by_wf: dict[str, list[Any]] = defaultdict(list)
    for r in records:
        by_wf[r.wf_id].append(r)
    assert len(by_wf) == parents * 11
    for wf_id, recs in by_wf.items():
        kinds = Counter(r.kind for r in recs)
        assert kinds["run.started"] == 1 and kinds["run.completed"] == 1, (wf_id, kinds)
        if "-" not in wf_id:  # a parent
            assert kinds["child.started"] == 10, (wf_id, kinds)
            assert kinds["event.received"] == 10, (wf_id, kinds)
            assert kinds["step.completed"] == 11, (wf_id, kinds)
    report = await asyncio.get_running_loop().run_in_executor(None, lambda: verify_namespace(conn))
    assert report.clean and report.runs == parents * 11, report.to_dict()
