"""A task worker in Go (workers/go, franz-go) answering Python workflows (issue 28).

The Go binary is built by `tests.support.go_worker` (cached per source change) and runs as a
subprocess against the test's broker and namespace; the workflows run in a Python `Worker`.
Nothing is shared with the Python SDK: the JSON protocol of docs/remote-tasks.md is all the
two sides agree on.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from grctl import Client, Context, Directive, RetryPolicy, Workflow
from grctl.errors import RemoteTaskError
from grctl.kafka.connection import Connection
from grctl.models import HistoryKind
from tests.scenarios.support import HISTORY_WAIT_S
from tests.support.go_worker import build_go_worker

pytestmark = pytest.mark.kafka

QUEUE = "go-scoring"

wf = Workflow(workflow_type="GoRemote")


@wf.start()
async def start(ctx: Context, req: dict[str, Any]) -> Directive:
    hb = req.get("heartbeat_ms")
    try:
        out = await ctx.remote_task(
            req["task"],
            req.get("payload"),
            queue=QUEUE,
            heartbeat=timedelta(milliseconds=hb) if hb else None,
            retry_policy=RetryPolicy(**req["retry"]) if "retry" in req else None,
        )
    except RemoteTaskError as exc:
        return ctx.next.complete({"error": exc.error_type, "attempt": exc.attempt})
    return ctx.next.complete(out)


class GoWorker:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def stop(self) -> str:
        """SIGTERM, wait, and return what it printed (its final stats line)."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(self.proc.communicate(), 60)
        assert self.proc.returncode == 0, err.decode()
        return out.decode()


@pytest.fixture(scope="module")
def go_binary() -> str:
    return str(build_go_worker())


@pytest.fixture
async def go_worker(go_binary: str, connection: Connection) -> AsyncIterator[GoWorker]:
    proc = await asyncio.create_subprocess_exec(
        go_binary, "-brokers", connection.servers, "-namespace", connection.namespace, "-queue", QUEUE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env={**os.environ},
    )  # fmt: skip
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 60)
    assert line.startswith(b"ready "), line
    worker = GoWorker(proc)
    yield worker
    if proc.returncode is None:
        proc.kill()
        await proc.wait()


async def test_a_go_task_worker_answers_a_python_workflow(workers: Any, client: Client, go_worker: GoWorker) -> None:
    await workers.start([wf])
    req = {"task": "go_score", "payload": {"x": 4}}
    result = await asyncio.wait_for(client.run_workflow("GoRemote", "g1", {"req": req}), HISTORY_WAIT_S)
    assert result == {"score": 40, "by": "go", "attempt": 1}
    kinds = [e.kind for e in await client.get_history("g1")]
    assert kinds.count(HistoryKind.task_started) == 1 and kinds.count(HistoryKind.task_completed) == 1


async def test_go_errors_are_retried_by_the_workflows_policy(workers: Any, client: Client, go_worker: GoWorker) -> None:
    await workers.start([wf])
    retry = {"max_attempts": 3, "initial_delay_ms": 10, "backoff_multiplier": 1.0}
    flaky = {"task": "go_fail", "payload": {"succeed_at": 2}, "retry": retry}
    fatal = {"task": "go_fail", "payload": {"fatal": True}, "retry": retry}
    got = await asyncio.wait_for(
        asyncio.gather(
            client.run_workflow("GoRemote", "g2", {"req": flaky}),
            client.run_workflow("GoRemote", "g3", {"req": fatal}),
        ),
        HISTORY_WAIT_S,
    )
    assert got == ["ok at attempt 2", {"error": "Fatal", "attempt": 1}]


async def test_go_heartbeats_and_cancel(workers: Any, client: Client, go_worker: GoWorker) -> None:
    await workers.start([wf])
    beat = {"task": "go_beat", "payload": {"beats": 8}, "heartbeat_ms": 600}
    assert await asyncio.wait_for(client.run_workflow("GoRemote", "g4", {"req": beat}), HISTORY_WAIT_S) == "beat"
    handle = await client.start_workflow("GoRemote", "g5", {"req": {"task": "go_sleep", "payload": {"ms": 120_000}}})
    async with asyncio.timeout(HISTORY_WAIT_S):  # the Go worker has the request once describe shows it pending
        while (await client.describe("g5")).remote_task is None:
            await asyncio.sleep(0.05)
    await handle.cancel("stop")
    stats = await go_worker.stop()  # a cancelled task ends at once: the stop does not wait 120 s
    assert "cancelled=1" in stats, stats
