"""A durable timer survives a SIGKILL of its worker and fires exactly once after the restart."""

from __future__ import annotations

import asyncio
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from ulid import ULID

from grctl import Client, Connection
from grctl.models import HistoryEvent, HistoryKind, WaitStarted
from tests.crash.test_replay import _spawn
from tests.support.wait import wait_until_async

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
        await client.wait_for_workers(60)
        handle = await client.start_workflow("TimerCrash", "timer-1")

        async def wait_started() -> HistoryEvent | None:
            history = await client.get_history("timer-1")
            return next((e for e in history if e.kind == HistoryKind.wait_started), None)

        # wait.started commits in the same transaction as the wait's timer.
        started = await wait_until_async("worker A committed wait.started of timer-1", wait_started, 30)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert isinstance(started.msg, WaitStarted) and started.msg.timeout_ms and started.timestamp is not None
        # The timer falls due while no worker runs: its due time is the wait's start plus its timeout.
        due = started.timestamp + timedelta(milliseconds=started.msg.timeout_ms)
        while (now := datetime.now(UTC)) < due:
            await asyncio.sleep((due - now).total_seconds())
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
