"""`grctl worker --processes 2`: a child SIGKILLed under load is restarted by the supervisor; 0 lost, 0 duplicated.

The supervisor runs the crash tests' workflows (tests/crash/worker_proc.py) in two worker
processes. While 400 five-step `Counter` runs go through, the test SIGKILLs a child twice (each
time the supervisor starts it again on its own state slot); then every run has completed, its
history shows each step once, `grctl verify` is clean, the supervisor's endpoint counted the
restarts and merged both children's metrics, and a SIGTERM stops everything with status 0.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from grctl import Client, Connection
from grctl.client.verify import verify_namespace
from grctl.worker.supervisor import free_port
from tests.crash.test_crash_exactly_once import ROOT, assert_ran_once, history_by_run
from tests.crash.worker_proc import STEPS
from tests.support.wait import wait_until, wait_until_async

pytestmark = [pytest.mark.kafka, pytest.mark.crash]

RUNS = 400
KILLS = 2


def children(pid: int) -> set[int]:
    """The child processes of `pid` (Linux: /proc/<pid>/task/<pid>/children)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return {int(p) for p in path.read_text().split()} if path.exists() else set()


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


async def test_supervised_workers_restart_a_killed_child_and_lose_nothing(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    ns = "sup" + unique_name[-12:].lower()
    conn = await Connection.connect(kafka_bootstrap, ns, partitions=8)
    port = free_port()
    log = tmp_path / "supervisor.log"
    argv = [
        sys.executable, "-m", "grctl", "--servers", kafka_bootstrap, "-n", ns,
        "worker", "--app", "tests.crash.worker_proc", "--processes", "2", "--state-dir", str(tmp_path / "state"),
        "--metrics-port", str(port), "--metrics-host", "127.0.0.1", "--shutdown-timeout", "10",
    ]  # fmt: skip
    with open(log, "ab") as fh:
        supervisor = subprocess.Popen(argv, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT)
    client = Client(conn)
    try:
        await client.wait_for_workers(60)
        await asyncio.to_thread(
            wait_until, "both children are ready", lambda: get(port, "/ready")[0] == 200, 120,
            seen=lambda: get(port, "/ready"),
        )  # fmt: skip
        first = children(supervisor.pid)
        assert len(first) == 2 and (tmp_path / "state" / "p0").is_dir() and (tmp_path / "state" / "p1").is_dir()
        sem = asyncio.Semaphore(100)

        async def start_one(i: int) -> object:
            async with sem:
                handle = await client.start_workflow("Counter", f"run-{i}", None)
                return await handle.result(timeout=240)

        runs = [asyncio.create_task(start_one(i)) for i in range(RUNS)]
        killed: set[int] = set()
        for k in range(KILLS):
            # Under load: once a share of the runs has completed, kill a child.
            share = (k + 1) * RUNS // (KILLS + 2)

            async def done_enough(share: int = share) -> bool:
                return sum(r.done() for r in runs) >= share

            await wait_until_async(f"{share} runs done", done_enough, 240)
            victim = sorted(children(supervisor.pid))[k % 2]
            os.kill(victim, signal.SIGKILL)
            killed.add(victim)
            await asyncio.to_thread(
                wait_until, "the supervisor started a new child",
                lambda: len(children(supervisor.pid)) == 2 and not children(supervisor.pid) & killed, 60,
                seen=lambda: children(supervisor.pid),
            )  # fmt: skip
        results = await asyncio.gather(*runs)
        assert all(r == {"count": 5, "steps": STEPS} for r in results)
        code, text = get(port, "/metrics")
        assert code == 200
        families = {f.name: f for f in text_string_to_metric_families(text)}
        restarts = families["grctl_worker_process_restarts"].samples
        assert sum(s.value for s in restarts) == KILLS
        # The children's own metrics, one family, a sample per process.
        assert {s.labels["process"] for s in families["grctl_steps_completed"].samples} == {"0", "1"}
    finally:
        await client.close()
        if supervisor.poll() is None:
            supervisor.send_signal(signal.SIGTERM)
    try:
        code = await asyncio.to_thread(supervisor.wait, 90)
    except subprocess.TimeoutExpired:
        supervisor.kill()
        raise AssertionError(f"the supervisor did not stop on SIGTERM; its log:\n{log.read_text()[-3000:]}") from None
    assert code == 0, log.read_text()[-3000:]
    assert "killed by SIGKILL" in log.read_text()
    by_run = history_by_run(kafka_bootstrap, conn)
    assert len(by_run) == RUNS
    for wf_id, recs in by_run.items():
        assert_ran_once(wf_id, recs, STEPS)
    report = await asyncio.get_running_loop().run_in_executor(None, lambda: verify_namespace(conn))
    assert report.clean and report.runs == RUNS, report.to_dict()
