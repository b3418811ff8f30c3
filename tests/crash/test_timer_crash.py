"""A durable timer survives a SIGKILL of its worker and fires exactly once after the restart."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest
from ulid import ULID

from grctl import Client, Connection
from grctl.models import HistoryKind
from tests.crash.test_replay import _spawn

pytestmark = [pytest.mark.kafka, pytest.mark.crash]


async def test_timer_survives_worker_crash(kafka_bootstrap: str, tmp_path: Path) -> None:
    ns = "timer" + str(ULID())[-10:].lower()
    side = tmp_path / "side"
    side.mkdir()
    state = tmp_path / "state"
    conn = await Connection.connect(kafka_bootstrap, ns, partitions=4)
    client = Client(conn)
    proc = _spawn(kafka_bootstrap, ns, state, "A", side, tmp_path / "a.log")
    try:
        handle = await client.start_workflow("TimerCrash", "timer-1")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if any(e.kind == HistoryKind.wait_started for e in await client.get_history("timer-1")):
                break
            await asyncio.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        await asyncio.sleep(5)  # the 3 s timer falls due while no worker runs
        proc = _spawn(kafka_bootstrap, ns, state, "B", side, tmp_path / "b.log")
        assert await handle.result(timeout=60) == "timed_out"
        history = await client.get_history("timer-1")
        assert [e.kind for e in history].count(HistoryKind.wait_timed_out) == 1
        assert (side / "timer-1.fired.calls").read_text().splitlines() == ["B"]
    finally:
        await client.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
