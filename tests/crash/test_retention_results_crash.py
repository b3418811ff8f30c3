"""Retention and per-client results across worker SIGKILLs (issue "Run for weeks").

- A worker is SIGKILLed around the time the retention timers of ended runs fall due, and
  restarted: every run is deleted in the end, each of its keys ends tombstoned, none comes back.
- Runs wait for events while their worker is SIGKILLed: the clients that watch them (the one
  that started them, and a second one) still get every outcome, from the reply partition.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from grctl import Client, Connection
from grctl.engine import keys
from grctl.errors import WorkflowNotFoundError
from grctl.kafka.settings_topic import NamespaceSettings, write_settings
from tests.crash.test_crash_exactly_once import WorkerProcess
from tests.support.topics import read_committed
from tests.support.wait import wait_until_async

pytestmark = [pytest.mark.kafka, pytest.mark.crash]

RETENTION_MS = 4_000
RUNS = 50


async def test_retention_survives_a_sigkill_around_its_due_time(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    ns = "retk" + unique_name[-12:].lower()
    conn = await Connection.connect(kafka_bootstrap, ns, partitions=4)
    write_settings(conn, NamespaceSettings(run_retention_ms=RETENTION_MS))
    worker = WorkerProcess(kafka_bootstrap, ns, tmp_path / "state", tmp_path / "worker.log")
    worker.start()
    client = Client(conn)
    try:
        await client.wait_for_workers(60)
        handles = [await client.start_workflow("Counter", f"r-{i}") for i in range(RUNS)]
        for h in handles:
            assert (await h.result(timeout=120))["count"] == 5
        # Kill somewhere between just before and just after the runs' retention falls due.
        await asyncio.sleep(random.Random(3).uniform(RETENTION_MS / 1000 - 1, RETENTION_MS / 1000 + 1))
        worker.kill()
        worker.start()

        async def all_gone() -> bool:
            for i in range(RUNS):
                try:
                    await client.describe(f"r-{i}")
                    return False
                except WorkflowNotFoundError:
                    pass
            return True

        await client.wait_for_workers(60)
        await wait_until_async("every run is deleted after the restart", all_gone, 120)
    finally:
        await client.close()
        worker.stop()
    last: dict[bytes, bytes | None] = {}
    for m in read_committed(kafka_bootstrap, conn.topics.state, range(conn.num_partitions)):
        last[m.key() or b""] = m.value()
    for i in range(RUNS):
        held = {k: v for k, v in last.items() if keys.wf_id_of(k) == f"r-{i}"}
        assert keys.run_key(f"r-{i}") in held
        assert all(v is None for v in held.values()), f"r-{i} keeps {[k for k, v in held.items() if v is not None]}"


async def test_watched_outcomes_arrive_across_a_worker_sigkill(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    ns = "outk" + unique_name[-12:].lower()
    conn = await Connection.connect(kafka_bootstrap, ns, partitions=4)
    worker = WorkerProcess(kafka_bootstrap, ns, tmp_path / "state", tmp_path / "worker.log")
    worker.start()
    first, second = Client(conn), Client(conn)
    try:
        await first.wait_for_workers(60)
        started = [await first.start_workflow("Waiter", f"w-{i}") for i in range(RUNS)]
        others = [await second.get_workflow_handle(f"w-{i}") for i in range(RUNS)]
        worker.kill()
        worker.start()
        await first.wait_for_workers(60)
        for i in range(RUNS):
            await first.send_event(f"w-{i}", "release", {"value": i})
        assert [await h.result(timeout=120) for h in started] == list(range(RUNS))
        assert [await h.result(timeout=120) for h in others] == list(range(RUNS))
    finally:
        await first.close()
        await second.close()
        worker.stop()
